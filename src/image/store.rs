//! The content store: an OCI image layout at `<root>/images` that standard tools
//! (skopeo, umoci) can read. Blobs are verified against their digest before they
//! appear under it; index.json changes are atomic and serialised between processes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use rustix::fs::syncfs;

use crate::lockfile::FileLock;
use tokio::io::AsyncWriteExt;

use super::digest::{Digest, Hasher};
use super::error::StoreError;
use super::oci::{Descriptor, Index};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

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
        .tempfile_in(dir)
}

/// Like [`temp_file`], for a directory.
pub fn temp_dir(dir: &Path, kind: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{kind}-{}-", std::process::id()))
        .tempdir_in(dir)
}

impl ContentStore {
    /// Opens (creating if needed) the layout in `dir`, with temporary files in `tmp`.
    pub fn open(dir: &Path, tmp: &Path) -> Result<Self, StoreError> {
        let at = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(at(&blobs))?;
        fs::create_dir_all(tmp).map_err(at(tmp))?;
        let layout = dir.join(LAYOUT_FILE);
        if !layout.exists() {
            fs::write(&layout, LAYOUT_CONTENT).map_err(at(&layout))?;
        }
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

    /// Changes index.json under an exclusive lock, replacing it atomically.
    pub fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lock_path = self.dir.join(".index.lock");
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
        tmp.persist(self.index_path())
            .map_err(|err| StoreError::Io {
                path: self.index_path(),
                source: err.error,
            })?;
        Ok(result)
    }
}
