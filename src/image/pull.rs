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
use super::unpack::{unpack_layer, unpack_layer_from};
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
            let stored = match self.get(&name)? {
                Some(local) => Some(local),
                None => self.get_pinned(image)?,
            };
            if let Some(local) = stored.filter(|local| self.is_complete(local)) {
                return Ok(local);
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
            .map(|(layer, diff_id)| self.fetch_layer(registries, image, layer, diff_id, progress))
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

    /// Makes a layer's blob and directory present. When both are missing, the blob
    /// is unpacked while it downloads, so a pull takes about as long as the slower
    /// of the two instead of their sum.
    async fn fetch_layer(
        &self,
        registries: &Registries,
        image: &ImageRef,
        blob: &Descriptor,
        diff_id: &Digest,
        progress: &dyn PullProgress,
    ) -> Result<(), ImageError> {
        let store_error = |source| ImageError::Store {
            image: image.to_string(),
            source,
        };
        // Blob before layer, as when fetch_blob and ensure_layer run one after the other.
        let blob_guard = self.in_flight.lock(format!("blob {}", blob.digest)).await;
        let layer_guard = self.in_flight.lock(format!("layer {diff_id}")).await;
        if self.content.has_blob(&blob.digest) || self.layer_dir(diff_id).is_dir() {
            drop((layer_guard, blob_guard));
            self.fetch_blob(registries, image, blob, progress).await?;
            return self.ensure_layer(blob, diff_id).await.map_err(store_error);
        }
        let compression = Compression::of_layer(&blob.media_type)
            .ok_or_else(|| StoreError::UnsupportedLayer {
                digest: blob.digest.clone(),
                media_type: blob.media_type.clone(),
            })
            .map_err(store_error)?;

        let (sender, receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let unpacking = {
            let (tmp_root, digest, diff_id) =
                (self.tmp.clone(), blob.digest.clone(), diff_id.clone());
            tokio::task::spawn_blocking(move || {
                let tmp = temp_dir(&tmp_root, "layer").map_err(|source| StoreError::Io {
                    path: tmp_root,
                    source,
                })?;
                unpack_layer_from(
                    ChannelReader::new(receiver),
                    compression,
                    &diff_id,
                    tmp.path(),
                )
                .map_err(|source| StoreError::Unpack { digest, source })?;
                Ok::<_, StoreError>(tmp)
            })
        };
        let stream = registries.blob(image, blob).await?.then(move |chunk| {
            let sender = sender.clone();
            async move {
                if let Ok(bytes) = &chunk {
                    // A closed channel means the unpacker failed; its error is reported below.
                    let _ = sender.send(bytes.clone()).await;
                }
                chunk
            }
        });
        progress.started(&blob.digest, blob.size);
        let downloaded = self
            .content
            .write_blob_stream(&blob.digest, blob.size, Box::pin(stream), &|bytes| {
                progress.advanced(&blob.digest, bytes)
            })
            .await;
        let unpacked = unpacking.await.map_err(|err| StoreError::Io {
            path: self.layer_dir(diff_id),
            source: std::io::Error::other(err),
        });
        downloaded.map_err(store_error)?;
        progress.finished(&blob.digest);
        let tmp = unpacked.and_then(|result| result).map_err(store_error)?;
        let target = self.layer_dir(diff_id);
        fs::rename(tmp.path(), &target).map_err(|source| {
            store_error(StoreError::Io {
                path: target,
                source,
            })
        })
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

/// Reads the chunks a download sends, as the unpacker's input.
struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(receiver: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            receiver,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
