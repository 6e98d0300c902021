use std::io;
use std::path::{Path, PathBuf};

use super::digest::{Digest, DigestError};
use super::unpack::MAX_LAYER_SIZE_ENV;
use crate::manifest::{ByteSize, InvalidImageRef};

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
    #[error("the registry sent more of blob {digest} than the {size} bytes its descriptor declares; the download was stopped and nothing was stored")]
    BlobTooLarge { digest: Digest, size: u64 },
    #[error("not enough free space in {}: {available_mib} MiB free, layer {digest} ({size} bytes compressed) needs at least {needed_mib} MiB; free space there and try again", path.display())]
    NoSpace {
        path: PathBuf,
        digest: Digest,
        size: u64,
        available_mib: u64,
        needed_mib: u64,
    },
    #[error("{name}: {message}; unset it or give a size such as 64Gi")]
    InvalidSetting { name: &'static str, message: String },
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
    #[error("it unpacks to more than {limit}, the limit for one layer; if the image is trusted, raise it with {var}", var = MAX_LAYER_SIZE_ENV)]
    TooLarge { limit: ByteSize },
    #[error("it holds more than {limit} entries, the limit for one layer: such an image is broken or hostile; rebuild it with fewer files per layer")]
    TooManyEntries { limit: u64 },
    #[error("{} carries the extended attribute {name}, which would act on the host; images may not set trusted.* or security.* attributes", path.display())]
    ForbiddenXattr { path: PathBuf, name: String },
    #[error("unpacking into {} would leave less than {reserve} free on its disk; free space there and try again", dir.display())]
    ReserveReached { dir: PathBuf, reserve: ByteSize },
    #[error("the disk holding {} is full; free space there and try again", dir.display())]
    DiskFull {
        dir: PathBuf,
        #[source]
        source: Box<UnpackError>,
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
    /// A digest wharf cannot use (the message names it).
    #[error("{image}: {error}")]
    InvalidDigest { image: String, error: DigestError },
    /// An image of an OCI layout carries a name that is not a valid reference.
    #[error("{image}: image name \"{}\": {name}; give one with --name", name.reference)]
    InvalidName {
        image: String,
        name: InvalidImageRef,
    },
    #[error("the local image store failed for {image}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
}
