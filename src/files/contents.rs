//! Config contents by digest: `<root>/contents/<sha256 hex>`, 0600.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{private_dir, write_private, FilesError};
use crate::manifest::MAX_CONFIG_BYTES;

pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, FilesError> {
        let dir = root.join("contents");
        private_dir(&dir)?;
        Ok(ContentStore { dir })
    }

    /// Stores `bytes` (once per digest); returns the digest.
    pub fn put(&self, bytes: &[u8]) -> Result<String, FilesError> {
        let digest = format!("{:x}", Sha256::digest(bytes));
        let path = self.dir.join(&digest);
        if !path.is_file() {
            write_private(&path, bytes)?;
        }
        Ok(digest)
    }

    /// The content stored under `digest`, checked against it.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, FilesError> {
        if !is_digest(digest) {
            return Err(FilesError::ContentMissing(digest.to_owned()));
        }
        let path = self.dir.join(digest);
        let bytes = match crate::bounded_read::read_regular(&path, MAX_CONFIG_BYTES) {
            Ok(bytes) => bytes,
            Err(crate::bounded_read::ReadError::Io(err))
                if err.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(FilesError::ContentMissing(digest.to_owned()))
            }
            Err(source) => return Err(FilesError::Read { path, source }),
        };
        if format!("{:x}", Sha256::digest(&bytes)) != digest {
            return Err(FilesError::Damaged {
                path,
                message: "its content does not match its digest".into(),
            });
        }
        Ok(bytes)
    }

    /// Removes every content whose digest is not in `keep`.
    pub fn prune(&self, keep: &BTreeSet<&str>) -> Result<(), FilesError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| FilesError::Read {
            path: self.dir.clone(),
            source: source.into(),
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !keep.contains(name.as_ref()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// 64 lowercase hex digits: nothing else is a file name here.
fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_kept_by_digest_and_pruned_when_unused() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(root.path()).expect("open");
        let old = store.put(b"listen 80\n").expect("put");
        let new = store.put(b"listen 8080\n").expect("put");
        assert_eq!(store.get(&old).expect("get"), b"listen 80\n");
        store.prune(&BTreeSet::from([new.as_str()])).expect("prune");
        assert!(matches!(
            store.get(&old),
            Err(FilesError::ContentMissing(_))
        ));
        assert_eq!(store.get(&new).expect("kept"), b"listen 8080\n");
        // A digest is never a path.
        assert!(matches!(
            store.get("../secrets"),
            Err(FilesError::ContentMissing(_))
        ));
    }
}
