//! Images: pulling from registries into a local OCI layout (`<root>/images`),
//! unpacking each layer once (`<root>/layers`), and overlay root filesystems built
//! from them for containers.

mod digest;
mod error;
mod import;
mod oci;
mod prune;
mod pull;
mod registry;
mod rootfs;
mod store;
mod tar_guard;
mod unpack;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use digest::{Digest, DigestError};
pub use error::{ImageError, StoreError, UnpackError};
pub use oci::{Compression, Descriptor, ImageConfig, ImageManifest, Platform, ProcessDefaults};
pub use prune::{InUse, PruneReport};
pub use pull::{NoProgress, PullProgress};
pub use registry::{docker_login, Login, Registries, INSECURE_REGISTRIES_ENV};
pub use rootfs::{detach, mount_rootfs, unmount_rootfs, RootfsPaths};
pub use store::{ContentStore, StoreLock};
pub use unpack::{unpack_layer, unpack_layer_limited, LayerLimits, MAX_LAYER_SIZE_ENV};

use crate::manifest::ImageRef;
use oci::{ManifestKind, ANNOTATION_PULLED, ANNOTATION_REF_NAME, MEDIA_OCI_MANIFEST};

/// The local image store under a wharf root.
pub struct ImageStore {
    content: ContentStore,
    /// One directory per layer, named by the hex of its diff_id.
    layers: PathBuf,
    tmp: PathBuf,
    in_flight: KeyedLocks,
    /// Bounds on each layer unpacked and the free space it needs.
    limits: LayerLimits,
}

/// A stored image: its index entry, manifest and config.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub name: String,
    pub descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfig,
}

impl LocalImage {
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// Bytes of its blobs as stored (compressed layers, config and manifest).
    pub fn size(&self) -> u64 {
        self.descriptor.size
            + self.manifest.config.size
            + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// When it was pulled or imported, as recorded (RFC 3339).
    pub fn pulled(&self) -> Option<&str> {
        pulled(&self.descriptor)
    }
}

/// A name whose image cannot be read, as `list` reports it instead of failing for
/// every image.
#[derive(Debug, Clone)]
pub struct BrokenImage {
    pub name: String,
    /// Its index entry.
    pub descriptor: Descriptor,
    /// What is wrong and what to do: which blob is missing and that pulling the
    /// image again or removing the name fixes it.
    pub problem: String,
}

impl BrokenImage {
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    pub fn pulled(&self) -> Option<&str> {
        pulled(&self.descriptor)
    }
}

fn pulled(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations
        .get(ANNOTATION_PULLED)
        .map(String::as_str)
}

/// An image as the store holds it.
enum Stored {
    Readable(Box<LocalImage>),
    /// A blob it needs is not stored (as after a prune that raced an import before
    /// prune took the store lock): it must be pulled again.
    MissingBlob(Digest),
}

impl Stored {
    fn readable(self) -> Option<LocalImage> {
        match self {
            Stored::Readable(image) => Some(*image),
            Stored::MissingBlob(_) => None,
        }
    }
}

/// Refuses an image whose config lists another number of diff_ids than its manifest
/// has layers: pairing them up would silently leave layers out.
fn check_diff_ids(
    image: &str,
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> Result<(), ImageError> {
    if config.rootfs.diff_ids.len() == manifest.layers.len() {
        return Ok(());
    }
    Err(ImageError::Invalid {
        image: image.to_owned(),
        message: format!(
            "the manifest has {} layers but the config lists {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        ),
    })
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let tmp = root.join("tmp");
        let layers = root.join("layers/sha256");
        store::create_private_dir(&layers).map_err(|source| StoreError::Io {
            path: layers.clone(),
            source,
        })?;
        Ok(ImageStore {
            content: ContentStore::open(&root.join("images"), &tmp)?,
            layers,
            tmp,
            in_flight: KeyedLocks::default(),
            limits: LayerLimits::from_env()?,
        })
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Holds the store lock shared until dropped. Pulls and imports take it before
    /// they look for or write blobs and keep it until the name is recorded, so that
    /// `prune` never removes what they wrote or found but have not named yet. Waits
    /// while a prune runs.
    pub async fn lock_for_writing(&self) -> Result<StoreLock, StoreError> {
        self.content.lock_shared().await
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers.join(diff_id.hex())
    }

    /// The layer directories of an image, bottom layer first.
    pub fn layer_dirs(&self, image: &LocalImage) -> Vec<PathBuf> {
        image
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|diff_id| self.layer_dir(diff_id))
            .collect()
    }

    /// The image stored under `name` (a full reference), if any. None also when a
    /// blob it needs is missing: such a name is as good as absent, a pull fetches
    /// it again and `list` reports it.
    pub fn get(&self, name: &str) -> Result<Option<LocalImage>, ImageError> {
        let store_error = |source| ImageError::Store {
            image: name.to_owned(),
            source,
        };
        let Some(descriptor) = self.content.lookup(name).map_err(store_error)? else {
            return Ok(None);
        };
        self.load(name, descriptor).map(Stored::readable)
    }

    /// The image an index entry names.
    fn load(&self, name: &str, descriptor: Descriptor) -> Result<Stored, ImageError> {
        let Some(bytes) = self.read_if_stored(name, &descriptor.digest)? else {
            return Ok(Stored::MissingBlob(descriptor.digest));
        };
        let manifest: ImageManifest = parse_json(name, &descriptor.digest, &bytes)?;
        self.with_config(name, descriptor, manifest)
    }

    /// For a reference pinned by digest: the image whose manifest is stored under that
    /// digest, whatever name it was pulled as (a tag that has moved since keeps its old
    /// content until pruned). None when the reference has no digest, the manifest or
    /// its config is not stored, or the digest names an index.
    pub fn get_pinned(&self, image: &ImageRef) -> Result<Option<LocalImage>, ImageError> {
        let name = image.to_string();
        let Some(digest) = image.digest.as_deref() else {
            return Ok(None);
        };
        let digest = Digest::parse(digest).map_err(|error| ImageError::InvalidDigest {
            image: name.clone(),
            error,
        })?;
        let Some(bytes) = self.read_if_stored(&name, &digest)? else {
            return Ok(None);
        };
        let unreadable = |err: serde_json::Error| ImageError::Invalid {
            image: name.clone(),
            message: format!("blob {digest} is not a readable manifest: {err}"),
        };
        let kind: ManifestKind = serde_json::from_slice(&bytes).map_err(unreadable)?;
        if kind.is_index() {
            return Ok(None);
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(unreadable)?;
        let descriptor = Descriptor {
            media_type: manifest
                .media_type
                .clone()
                .unwrap_or_else(|| MEDIA_OCI_MANIFEST.into()),
            digest,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        self.with_config(&name, descriptor, manifest)
            .map(Stored::readable)
    }

    fn with_config(
        &self,
        name: &str,
        descriptor: Descriptor,
        manifest: ImageManifest,
    ) -> Result<Stored, ImageError> {
        let digest = &manifest.config.digest;
        let Some(bytes) = self.read_if_stored(name, digest)? else {
            return Ok(Stored::MissingBlob(digest.clone()));
        };
        let config: ImageConfig = parse_json(name, digest, &bytes)?;
        Ok(Stored::Readable(Box::new(LocalImage {
            name: name.to_owned(),
            descriptor,
            manifest,
            config,
        })))
    }

    /// A blob's bytes; None when it is not stored.
    fn read_if_stored(&self, name: &str, digest: &Digest) -> Result<Option<Vec<u8>>, ImageError> {
        match self.content.read_blob(digest) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(source) => Err(ImageError::Store {
                image: name.to_owned(),
                source,
            }),
        }
    }

    /// Whether every layer of the image is unpacked (it can run).
    pub fn is_complete(&self, image: &LocalImage) -> bool {
        self.layer_dirs(image).iter().all(|dir| dir.is_dir())
    }

    /// Every stored name, sorted: its image, or what is wrong with it. One damaged
    /// name does not hide the others.
    pub fn list(&self) -> Result<Vec<Result<LocalImage, Box<BrokenImage>>>, ImageError> {
        let index = self.content.index().map_err(|source| ImageError::Store {
            image: self.content.dir().display().to_string(),
            source,
        })?;
        let mut named: Vec<(String, Descriptor)> = index
            .manifests
            .into_iter()
            .filter_map(|d| Some((d.ref_name()?.to_owned(), d)))
            .collect();
        // Stable: of entries with one name, the first stays, the one `get` finds.
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.dedup_by(|a, b| a.0 == b.0);
        Ok(named
            .into_iter()
            .map(|(name, descriptor)| {
                let problem = match self.load(&name, descriptor.clone()) {
                    Ok(Stored::Readable(image)) => return Ok(*image),
                    Ok(Stored::MissingBlob(blob)) => format!(
                        "blob {blob} is missing; pull it again or run `wharf image rm {name}`"
                    ),
                    Err(err) => crate::error_chain(&err),
                };
                Err(Box::new(BrokenImage {
                    name,
                    descriptor,
                    problem,
                }))
            })
            .collect())
    }

    /// Records `descriptor` under `name`, replacing what that name pointed to.
    fn set_ref(&self, name: &str, mut descriptor: Descriptor) -> Result<(), ImageError> {
        descriptor
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), name.to_owned());
        self.content
            .sync()
            .and_then(|()| {
                self.content.update_index(|index| {
                    index.manifests.retain(|d| d.ref_name() != Some(name));
                    index.manifests.push(descriptor);
                    Ok(())
                })
            })
            .map_err(|source| ImageError::Store {
                image: name.to_owned(),
                source,
            })
    }

    /// Gives the image `source` the additional name `target`.
    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let image = self.get(source)?.ok_or_else(|| ImageError::Unknown {
            image: source.to_owned(),
        })?;
        self.set_ref(target, image.descriptor)
    }

    /// Removes the name `name`; content goes with `prune`.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        let removed = self
            .content
            .update_index(|index| {
                let before = index.manifests.len();
                index.manifests.retain(|d| d.ref_name() != Some(name));
                Ok(index.manifests.len() != before)
            })
            .map_err(|source| ImageError::Store {
                image: name.to_owned(),
                source,
            })?;
        if removed {
            Ok(())
        } else {
            Err(ImageError::Unknown {
                image: name.to_owned(),
            })
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    name: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|err| ImageError::Invalid {
        image: name.to_owned(),
        message: format!("blob {digest} is not a readable manifest or config: {err}"),
    })
}

/// One async mutex per key, so that concurrent pulls sharing a layer download and
/// unpack it once: the second waits, then finds it present.
#[derive(Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}
