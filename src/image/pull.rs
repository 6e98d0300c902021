//! Pulling an image into the store, honouring the pull policy.

use std::collections::BTreeMap;
use std::fs;

use futures_util::{StreamExt, TryStreamExt};

use super::digest::Digest;
use super::error::{ImageError, StoreError};
use super::oci::{
    Compression, Descriptor, ImageConfig, Platform, ANNOTATION_PULLED, ANNOTATION_RESOLVED,
};
use super::registry::Registries;
use super::store::temp_dir;
use super::unpack::unpack_layer;
use super::{ImageStore, LocalImage};
use crate::manifest::{ImageRef, PullPolicy};

/// Layers downloaded at once.
const CONCURRENT_LAYERS: usize = 4;

/// Told about blob downloads, e.g. to draw progress bars.
pub trait PullProgress: Sync {
    fn started(&self, digest: &Digest, size: u64);
    fn advanced(&self, digest: &Digest, bytes: u64);
    fn finished(&self, digest: &Digest);
}

/// Progress that is not shown.
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn started(&self, _: &Digest, _: u64) {}
    fn advanced(&self, _: &Digest, _: u64) {}
    fn finished(&self, _: &Digest) {}
}

impl ImageStore {
    /// Makes `image` present according to `policy` and returns it:
    /// `always` resolves the reference at the registry and fetches what is missing,
    /// `if-not-present` uses the stored image when it is complete, `never` only
    /// looks locally.
    pub async fn pull(
        &self,
        registries: &Registries,
        image: &ImageRef,
        policy: PullPolicy,
        progress: &dyn PullProgress,
    ) -> Result<LocalImage, ImageError> {
        let name = image.to_string();
        if policy != PullPolicy::Always {
            if let Some(local) = self.get(&name)? {
                if self.is_complete(&local) {
                    return Ok(local);
                }
            }
        }
        if policy == PullPolicy::Never {
            return Err(ImageError::NotPresent { image: name });
        }
        let store_error = |source| ImageError::Store {
            image: name.clone(),
            source,
        };

        let resolved = registries.resolve(image).await?;
        let manifest = &resolved.manifest;
        self.fetch_blob(registries, image, &manifest.config, progress)
            .await?;
        let config: ImageConfig = serde_json::from_slice(
            &self
                .content
                .read_blob(&manifest.config.digest)
                .map_err(store_error)?,
        )
        .map_err(|err| ImageError::Invalid {
            image: name.clone(),
            message: format!("unreadable image config: {err}"),
        })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Invalid {
                image: name.clone(),
                message: format!(
                    "the manifest has {} layers but the config lists {} diff_ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        futures_util::stream::iter(manifest.layers.iter().zip(&config.rootfs.diff_ids))
            .map(|(layer, diff_id)| async move {
                self.fetch_blob(registries, image, layer, progress).await?;
                self.ensure_layer(layer, diff_id)
                    .await
                    .map_err(|source| ImageError::Store {
                        image: image.to_string(),
                        source,
                    })
            })
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        // The manifest goes in last, so a name never points at missing content.
        self.content
            .write_blob(&resolved.digest, &resolved.bytes)
            .map_err(store_error)?;
        let annotations = BTreeMap::from([
            (ANNOTATION_PULLED.to_owned(), now_rfc3339()),
            (
                ANNOTATION_RESOLVED.to_owned(),
                resolved.resolved.to_string(),
            ),
        ]);
        let descriptor = Descriptor {
            media_type: resolved.media_type.clone(),
            digest: resolved.digest.clone(),
            size: resolved.bytes.len() as u64,
            annotations,
            platform: Some(Platform {
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: None,
            }),
        };
        self.set_ref(&name, descriptor)?;
        self.get(&name)?.ok_or(ImageError::Unknown { image: name })
    }

    /// Downloads a blob unless it is stored; concurrent calls for one digest download once.
    async fn fetch_blob(
        &self,
        registries: &Registries,
        image: &ImageRef,
        blob: &Descriptor,
        progress: &dyn PullProgress,
    ) -> Result<(), ImageError> {
        let _guard = self.in_flight.lock(format!("blob {}", blob.digest)).await;
        if self.content.has_blob(&blob.digest) {
            return Ok(());
        }
        let stream = registries.blob(image, blob).await?;
        progress.started(&blob.digest, blob.size);
        self.content
            .write_blob_stream(&blob.digest, blob.size, stream, &|bytes| {
                progress.advanced(&blob.digest, bytes)
            })
            .await
            .map_err(|source| ImageError::Store {
                image: image.to_string(),
                source,
            })?;
        progress.finished(&blob.digest);
        Ok(())
    }

    /// Unpacks a stored layer blob into its directory unless that exists. It is
    /// unpacked in a temporary directory and renamed when complete and verified.
    pub(super) async fn ensure_layer(
        &self,
        blob: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), StoreError> {
        let _guard = self.in_flight.lock(format!("layer {diff_id}")).await;
        let target = self.layer_dir(diff_id);
        if target.is_dir() {
            return Ok(());
        }
        let compression = Compression::of_layer(&blob.media_type).ok_or_else(|| {
            StoreError::UnsupportedLayer {
                digest: blob.digest.clone(),
                media_type: blob.media_type.clone(),
            }
        })?;
        let blob_path = self.content.blob_path(&blob.digest);
        let (digest, diff_id, tmp_root) = (blob.digest.clone(), diff_id.clone(), self.tmp.clone());
        let panicked_at = target.clone();
        tokio::task::spawn_blocking(move || {
            // Removed on drop unless renamed into place.
            let tmp = temp_dir(&tmp_root, "layer").map_err(|source| StoreError::Io {
                path: tmp_root,
                source,
            })?;
            unpack_layer(&blob_path, compression, &diff_id, tmp.path())
                .map_err(|source| StoreError::Unpack { digest, source })?;
            fs::rename(tmp.path(), &target).map_err(|source| StoreError::Io {
                path: target,
                source,
            })
        })
        .await
        .map_err(|err| StoreError::Io {
            path: panicked_at,
            source: std::io::Error::other(err),
        })?
    }
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
