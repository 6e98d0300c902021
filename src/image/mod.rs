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
mod unpack;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use digest::Digest;
pub use error::{ImageError, StoreError, UnpackError};
pub use oci::{Compression, Descriptor, ImageConfig, ImageManifest, Platform, ProcessDefaults};
pub use prune::{InUse, PruneReport};
pub use pull::{NoProgress, PullProgress};
pub use registry::{docker_login, Login, Registries, INSECURE_REGISTRIES_ENV};
pub use rootfs::{mount_rootfs, unmount_rootfs, RootfsPaths};
pub use store::ContentStore;
pub use unpack::unpack_layer;

use crate::manifest::ImageRef;
use oci::{ManifestKind, ANNOTATION_PULLED, ANNOTATION_REF_NAME, MEDIA_OCI_MANIFEST};

/// The local image store under a wharf root.
pub struct ImageStore {
    content: ContentStore,
    /// One directory per layer, named by the hex of its diff_id.
    layers: PathBuf,
    tmp: PathBuf,
    in_flight: KeyedLocks,
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
        self.descriptor
            .annotations
            .get(ANNOTATION_PULLED)
            .map(String::as_str)
    }
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let tmp = root.join("tmp");
        let layers = root.join("layers/sha256");
        fs::create_dir_all(&layers).map_err(|source| StoreError::Io {
            path: layers.clone(),
            source,
        })?;
        Ok(ImageStore {
            content: ContentStore::open(&root.join("images"), &tmp)?,
            layers,
            tmp,
            in_flight: KeyedLocks::default(),
        })
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
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

    /// The image stored under `name` (a full reference), if any.
    pub fn get(&self, name: &str) -> Result<Option<LocalImage>, ImageError> {
        let store_error = |source| ImageError::Store {
            image: name.to_owned(),
            source,
        };
        let Some(descriptor) = self.content.lookup(name).map_err(store_error)? else {
            return Ok(None);
        };
        let manifest: ImageManifest = self.read_json(name, &descriptor.digest)?;
        self.with_config(name, descriptor, manifest).map(Some)
    }

    /// For a reference pinned by digest: the image whose manifest is stored under that
    /// digest, whatever name it was pulled as (a tag that has moved since keeps its old
    /// content until pruned). None when the reference has no digest, the manifest is
    /// not stored, or the digest names an index.
    pub fn get_pinned(&self, image: &ImageRef) -> Result<Option<LocalImage>, ImageError> {
        let name = image.to_string();
        let Some(digest) = image.digest.as_deref() else {
            return Ok(None);
        };
        let digest = Digest::parse(digest).map_err(|message| ImageError::Invalid {
            image: name.clone(),
            message,
        })?;
        if !self.content.has_blob(&digest) {
            return Ok(None);
        }
        let bytes = self
            .content
            .read_blob(&digest)
            .map_err(|source| ImageError::Store {
                image: name.clone(),
                source,
            })?;
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
        self.with_config(&name, descriptor, manifest).map(Some)
    }

    fn with_config(
        &self,
        name: &str,
        descriptor: Descriptor,
        manifest: ImageManifest,
    ) -> Result<LocalImage, ImageError> {
        let config: ImageConfig = self.read_json(name, &manifest.config.digest)?;
        Ok(LocalImage {
            name: name.to_owned(),
            descriptor,
            manifest,
            config,
        })
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        digest: &Digest,
    ) -> Result<T, ImageError> {
        let bytes = self
            .content
            .read_blob(digest)
            .map_err(|source| ImageError::Store {
                image: name.to_owned(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|err| ImageError::Invalid {
            image: name.to_owned(),
            message: format!("blob {digest} is not a readable manifest or config: {err}"),
        })
    }

    /// Whether every layer of the image is unpacked (it can run).
    pub fn is_complete(&self, image: &LocalImage) -> bool {
        self.layer_dirs(image).iter().all(|dir| dir.is_dir())
    }

    /// Every stored image, sorted by name.
    pub fn list(&self) -> Result<Vec<LocalImage>, ImageError> {
        let index = self.content.index().map_err(|source| ImageError::Store {
            image: self.content.dir().display().to_string(),
            source,
        })?;
        let mut names: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        let mut images = Vec::new();
        for name in names {
            images.extend(self.get(&name)?);
        }
        Ok(images)
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
