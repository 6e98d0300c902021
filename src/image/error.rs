use std::io;
use std::path::{Path, PathBuf};

use super::digest::Digest;

/// Errors of the local content and layer stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is corrupt: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("digest mismatch: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("download of {digest} failed")]
    Download {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} cannot be unpacked; nothing was stored")]
    Unpack {
        digest: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("layer media type {media_type} is not supported (layer {digest})")]
    UnsupportedLayer { digest: Digest, media_type: String },
}

/// Why a layer archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the archive is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("uncompressed content has digest {actual}, but the image config says {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("cannot {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot {what} {}", path.display())]
    Sys {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve {} inside the layer", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: pathrs::error::Error,
    },
}

impl UnpackError {
    pub fn corrupt(err: io::Error) -> Self {
        UnpackError::Corrupt(err.to_string())
    }

    pub fn io(what: &'static str) -> impl Fn(io::Error) -> Self {
        move |source| UnpackError::Io { what, source }
    }

    pub fn sys(what: &'static str, path: &Path) -> impl Fn(rustix::io::Errno) -> Self {
        let path = path.to_owned();
        move |errno| UnpackError::Sys {
            what,
            path: path.clone(),
            source: errno.into(),
        }
    }

    pub fn resolve(path: &Path) -> impl Fn(pathrs::error::Error) -> Self {
        let path = path.to_owned();
        move |source| UnpackError::Resolve {
            path: path.clone(),
            source,
        }
    }
}

/// Errors of image operations, naming the image (and the registry where one is involved).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot pull {image} from {registry}")]
    Registry {
        image: String,
        registry: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{image} offers no image for {host}; it has {available}")]
    NoPlatform {
        image: String,
        host: String,
        available: String,
    },
    #[error("{image} is not present locally and its pull policy is `never`; run `wharf pull {image}` or `wharf image import` first")]
    NotPresent { image: String },
    #[error("no image {image} is stored locally (see `wharf images`)")]
    Unknown { image: String },
    #[error("{image}: {message}")]
    Invalid { image: String, message: String },
    #[error("the local image store failed for {image}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
}
