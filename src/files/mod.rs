//! What wharf puts into containers besides the image: the contents of configs,
//! kept by digest (so that a rollback recreates the previous content), and secrets,
//! kept by name with their values by version. Both live under the root-only state
//! directory, every file 0600. A secret's value is read only to be put into a
//! container; everything else sees its name, size and version (a random id).

mod contents;
mod secrets;

pub use contents::ContentStore;
pub use secrets::{env_text, SecretInfo, SecretStore, SetOutcome, MAX_SECRETS, MAX_SECRET_BYTES};

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::manifest::FileRefs;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: crate::bounded_read::ReadError,
    },
    #[error("{0}")]
    InvalidName(String),
    #[error("the value is {size} bytes, more than the {} KiB a secret may have", MAX_SECRET_BYTES >> 10)]
    TooLarge { size: u64 },
    #[error("secret {0} is not set; `wharf secret ls` lists the secrets")]
    NotSet(String),
    #[error("the content {0} is not stored (it is kept while a container or an applied spec uses it); apply the manifests again")]
    ContentMissing(String),
    #[error("more than {0} secrets; remove some with `wharf secret rm`")]
    TooMany(usize),
    #[error("{} holds a damaged record: {message}", path.display())]
    Damaged { path: PathBuf, message: String },
}

/// Creates `path` (and its parents) as directories only root can enter.
fn private_dir(path: &Path) -> Result<(), FilesError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| FilesError::CreateDir {
            path: path.to_owned(),
            source,
        })
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it), 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FilesError> {
    let temporary = path.with_extension("tmp");
    let error = |source| FilesError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(error)?;
    fs::rename(&temporary, path).map_err(error)
}

/// Drops what nothing uses any more: contents and secret versions that neither
/// `in_use` (the containers there are, the services being applied) nor a secret's
/// current value names.
pub fn keep_only(root: &Path, in_use: &[&FileRefs]) -> Result<(), FilesError> {
    let digests: BTreeSet<&str> = in_use
        .iter()
        .flat_map(|refs| refs.configs.iter().map(String::as_str))
        .collect();
    let versions: BTreeSet<&str> = in_use
        .iter()
        .flat_map(|refs| refs.secrets.values().map(String::as_str))
        .collect();
    ContentStore::open(root)?.prune(&digests)?;
    SecretStore::open(root)?.prune(&versions)
}
