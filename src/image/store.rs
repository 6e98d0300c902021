//! The content store: an OCI image layout at `<root>/images` that standard tools
//! (skopeo, umoci) can read. Blobs are verified against their digest before they
//! appear under it; index.json changes are atomic, durable and serialised between
//! processes. Everything the store makes is root's alone (0700 directories, 0600
//! files) whatever the umask: blobs and layers hold images' setuid files and secrets.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use futures_util::{Stream, StreamExt};
use rustix::fs::syncfs;

use crate::hostroot::PRIVATE_DIR_MODE;
use crate::lockfile::{record_lock, FileLock};
use tokio::io::AsyncWriteExt;

use super::digest::{Digest, Hasher};
use super::error::StoreError;
use super::oci::{Descriptor, Index};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
/// Serialises changes of index.json (see `update_index`).
const INDEX_LOCK: &str = ".index.lock";
/// Behind [`StoreLock`].
const STORE_LOCK: &str = ".store.lock";
/// Mode of every file the store writes.
const PRIVATE_FILE_MODE: u32 = 0o600;

#[derive(Debug)]
pub struct ContentStore {
    dir: PathBuf,
    /// Temporary files, on the same filesystem so that rename is atomic.
    tmp: PathBuf,
}

/// A temporary file in `dir`. Names are `<kind>-<pid>-<random>`
/// so that prune can tell leftovers of dead processes; guards remove them on drop,
/// including when a pull is cancelled midway.
pub fn temp_file(dir: &Path, kind: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{kind}-{}-", std::process::id()))
        .permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .tempfile_in(dir)
}

/// Like [`temp_file`], for a directory (0700: tempfile's default follows the umask).
pub fn temp_dir(dir: &Path, kind: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{kind}-{}-", std::process::id()))
        .permissions(fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .tempdir_in(dir)
}

/// Creates `dir` and its missing parents 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Creates (or truncates) the file `path`; a new one is 0600.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

/// Creates the empty file `path` 0600 unless it exists. Without opening it: closing
/// any descriptor of a file releases the record locks this process holds on it.
fn create_lock_file(path: &Path) -> io::Result<()> {
    let mode = rustix::fs::Mode::from_raw_mode(PRIVATE_FILE_MODE);
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::RegularFile,
        mode,
        0,
    ) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Makes the entries of `dir` durable, e.g. a file just renamed into it.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ContentStore {
    /// Opens (creating if needed) the layout in `dir`, with temporary files in `tmp`.
    pub fn open(dir: &Path, tmp: &Path) -> Result<Self, StoreError> {
        let at = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let blobs = dir.join("blobs/sha256");
        create_private_dir(&blobs).map_err(at(&blobs))?;
        create_private_dir(tmp).map_err(at(tmp))?;
        let layout = dir.join(LAYOUT_FILE);
        if !layout.exists() {
            create_private_file(&layout)
                .and_then(|mut file| file.write_all(LAYOUT_CONTENT.as_bytes()))
                .map_err(at(&layout))?;
        }
        // FileLock would create it with the umask's mode.
        let index_lock = dir.join(INDEX_LOCK);
        create_lock_file(&index_lock).map_err(at(&index_lock))?;
        let store = ContentStore {
            dir: dir.to_owned(),
            tmp: tmp.to_owned(),
        };
        if !store.index_path().exists() {
            store.update_index(|_| Ok(()))?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| StoreError::Io { path, source })
    }

    /// Stores `bytes` as the blob `digest`, refusing them if they do not match.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_blob_from(digest, bytes)
    }

    /// Copies a blob from `reader` into a temporary file, hashing as it goes, and
    /// moves it under its digest only once complete and verified.
    pub fn write_blob_from(
        &self,
        digest: &Digest,
        mut reader: impl Read,
    ) -> Result<(), StoreError> {
        let mut tmp = temp_file(&self.tmp, "blob").map_err(self.io_error(&self.tmp))?;
        let mut copy = || -> io::Result<Digest> {
            let mut hasher = Hasher::default();
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                tmp.write_all(&buffer[..n])?;
            }
            Ok(hasher.finish())
        };
        let actual = copy().map_err(self.io_error(&self.tmp))?;
        self.verify_and_commit(tmp.into_temp_path(), digest, actual)
    }

    /// Streams a blob of `size` bytes into a temporary file, hashing as it goes, and
    /// moves it under its digest only once complete and verified. `advance` is told
    /// each chunk's size.
    pub async fn write_blob_stream<S>(
        &self,
        digest: &Digest,
        size: u64,
        mut stream: S,
        advance: &(dyn Fn(u64) + Sync),
    ) -> Result<(), StoreError>
    where
        S: Stream<Item = io::Result<bytes::Bytes>> + Unpin,
    {
        let (file, tmp) = temp_file(&self.tmp, "blob")
            .map_err(self.io_error(&self.tmp))?
            .into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Hasher::default();
        let mut received = 0u64;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                received += chunk.len() as u64;
                file.write_all(&chunk).await?;
                advance(chunk.len() as u64);
            }
            file.flush().await
        }
        .await;
        match result {
            Ok(()) => self.verify_and_commit(tmp, digest, hasher.finish()),
            // The client checks digests too and fails the stream at its end; report
            // that as the mismatch it is.
            Err(_) if received == size => Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual: hasher.finish(),
            }),
            Err(source) => Err(StoreError::Download {
                digest: digest.clone(),
                source,
            }),
        }
    }

    fn verify_and_commit(
        &self,
        tmp: tempfile::TempPath,
        digest: &Digest,
        actual: Digest,
    ) -> Result<(), StoreError> {
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let target = self.blob_path(digest);
        tmp.persist(&target).map_err(|err| StoreError::Io {
            path: target,
            source: err.error,
        })?;
        Ok(())
    }

    fn io_error(&self, path: &Path) -> impl Fn(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io {
            path: path.clone(),
            source,
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path,
            message: source.to_string(),
        })
    }

    /// The descriptor stored under the reference name, if any.
    pub fn lookup(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .find(|d| d.ref_name() == Some(name)))
    }

    /// Makes every blob written so far durable. Blobs are not synced one by one
    /// (renaming a complete file is enough against a killed process); this one
    /// syncfs before a name is recorded covers a power loss too.
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.dir).map_err(self.io_error(&self.dir))?;
        syncfs(&dir).map_err(|errno| StoreError::Io {
            path: self.dir.clone(),
            source: errno.into(),
        })
    }

    /// Holds the store lock shared (see [`StoreLock`]), waiting while a prune runs.
    pub async fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        let path = self.dir.join(STORE_LOCK);
        let at = self.io_error(&path);
        tokio::task::spawn_blocking(move || StoreLock::take(&path, LockMode::Shared, true))
            .await
            .map_err(io::Error::other)
            .and_then(|taken| taken.and_then(was_taken))
            .map_err(at)
    }

    /// Holds the store lock exclusively (see [`StoreLock`]). When pulls or imports
    /// hold it, `waiting` is called, then this waits for them to finish.
    pub fn lock_exclusive(&self, waiting: impl FnOnce()) -> Result<StoreLock, StoreError> {
        let path = self.dir.join(STORE_LOCK);
        let at = self.io_error(&path);
        if let Some(lock) = StoreLock::take(&path, LockMode::Exclusive, false).map_err(&at)? {
            return Ok(lock);
        }
        waiting();
        StoreLock::take(&path, LockMode::Exclusive, true)
            .and_then(was_taken)
            .map_err(at)
    }

    /// Changes index.json under an exclusive lock, replacing it atomically.
    pub fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lock_path = self.dir.join(INDEX_LOCK);
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let _lock = FileLock::acquire(&lock_path).map_err(io_at(&lock_path))?;
        let mut index = match self.index() {
            Ok(index) => index,
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Index::default()
            }
            Err(err) => return Err(err),
        };
        let result = change(&mut index)?;
        let json = serde_json::to_vec_pretty(&index).map_err(|err| StoreError::Corrupt {
            path: self.index_path(),
            message: err.to_string(),
        })?;
        let mut tmp = temp_file(&self.tmp, "index").map_err(self.io_error(&self.tmp))?;
        tmp.write_all(&json).map_err(self.io_error(tmp.path()))?;
        // The new index on disk before it replaces the old one, and the rename on disk
        // before the caller goes on: after a power loss the index is one or the other,
        // whole.
        tmp.as_file()
            .sync_all()
            .map_err(self.io_error(tmp.path()))?;
        tmp.persist(self.index_path())
            .map_err(|err| StoreError::Io {
                path: self.index_path(),
                source: err.error,
            })?;
        sync_dir(&self.dir).map_err(self.io_error(&self.dir))?;
        Ok(result)
    }
}

/// The store lock: pulls and imports hold it shared from before they look for blobs
/// until their name is recorded; prune holds it exclusively. So prune never removes
/// a blob or layer that is written (or found, and about to be used) but not yet
/// named, and a pull never records a name whose content prune is removing.
///
/// Between processes it is a POSIX record lock on `<images>/.store.lock`, which a
/// container's forked init does not inherit (see `lockfile`). Within a process the
/// holders are counted and share one descriptor: closing any descriptor of the file
/// would release the process's record lock.
pub struct StoreLock {
    state: Arc<LockState>,
    mode: LockMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockMode {
    Shared,
    Exclusive,
}

/// This process's holders of one store lock.
#[derive(Default)]
struct LockState {
    holders: Mutex<Holders>,
    released: Condvar,
}

#[derive(Default)]
struct Holders {
    shared: usize,
    exclusive: bool,
    /// Open while anyone in this process holds the lock.
    file: Option<File>,
}

impl Holders {
    fn admit(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Shared => !self.exclusive,
            LockMode::Exclusive => !self.exclusive && self.shared == 0,
        }
    }
}

/// Store locks held in this process, by lock file.
static STORE_LOCKS: Mutex<BTreeMap<PathBuf, Arc<LockState>>> = Mutex::new(BTreeMap::new());

impl StoreLock {
    /// Takes the lock on `path` in `mode`; None when `wait` is false and it is taken.
    fn take(path: &Path, mode: LockMode, wait: bool) -> io::Result<Option<StoreLock>> {
        let state = STORE_LOCKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_owned())
            .or_default()
            .clone();
        let mut holders = state.holders.lock().unwrap_or_else(PoisonError::into_inner);
        while !holders.admit(mode) {
            if !wait {
                return Ok(None);
            }
            holders = state
                .released
                .wait(holders)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if holders.file.is_none() {
            // The first holder in this process takes the record lock for all of them.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(PRIVATE_FILE_MODE)
                .open(path)?;
            if !record_lock(&file, mode == LockMode::Shared, wait)? {
                return Ok(None);
            }
            holders.file = Some(file);
        }
        match mode {
            LockMode::Shared => holders.shared += 1,
            LockMode::Exclusive => holders.exclusive = true,
        }
        drop(holders);
        Ok(Some(StoreLock { state, mode }))
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let mut holders = self
            .state
            .holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.mode {
            LockMode::Shared => holders.shared = holders.shared.saturating_sub(1),
            LockMode::Exclusive => holders.exclusive = false,
        }
        if holders.shared == 0 && !holders.exclusive {
            // Closing the last descriptor releases the record lock.
            holders.file = None;
        }
        drop(holders);
        self.state.released.notify_all();
    }
}

fn was_taken(lock: Option<StoreLock>) -> io::Result<StoreLock> {
    lock.ok_or_else(|| io::Error::other("the store lock was not taken"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_take(path: &Path, mode: LockMode) -> Option<StoreLock> {
        StoreLock::take(path, mode, false).expect("lock file")
    }

    #[test]
    fn writers_share_the_store_lock_and_prune_excludes_them_within_a_process() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(STORE_LOCK);
        let first = try_take(&path, LockMode::Shared).expect("free");
        let second = try_take(&path, LockMode::Shared).expect("shared with the first");
        assert!(try_take(&path, LockMode::Exclusive).is_none());
        drop(first);
        assert!(
            try_take(&path, LockMode::Exclusive).is_none(),
            "the second writer still holds it"
        );
        drop(second);
        let pruning = try_take(&path, LockMode::Exclusive).expect("free again");
        assert!(try_take(&path, LockMode::Shared).is_none());
        drop(pruning);
        assert!(try_take(&path, LockMode::Shared).is_some());
    }
}
