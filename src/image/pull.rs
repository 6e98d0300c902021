//! Pulling an image into the store, honouring the pull policy.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{Stream, StreamExt, TryStreamExt};

use super::digest::Digest;
use super::error::{ImageError, StoreError, UnpackError};
use super::oci::{
    Compression, Descriptor, ImageConfig, Platform, ANNOTATION_PULLED, ANNOTATION_RESOLVED,
};
use super::registry::Registries;
use super::store::temp_dir;
use super::unpack::{
    record_blob, unpack_layer_from, unpack_layer_limited, unpacked_from, verify_layer, LayerLimits,
};
use super::{check_diff_ids, ImageStore, LocalImage};
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
        // Until the name is recorded: prune must not remove what this pull writes, or
        // finds stored and counts on, in the meantime.
        let _writing = self.lock_for_writing().await.map_err(store_error)?;

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
        check_diff_ids(&name, manifest, &config)?;
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
        self.download(registries, image, blob, progress, None).await
    }

    /// Streams `blob` from the registry into the content store, handing each chunk
    /// to `tee` too when given (an unpacker reading while it downloads; when it has
    /// stopped, its own error is reported by the caller). The download stops as soon
    /// as more bytes arrive than the descriptor declares.
    async fn download(
        &self,
        registries: &Registries,
        image: &ImageRef,
        blob: &Descriptor,
        progress: &dyn PullProgress,
        tee: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    ) -> Result<(), ImageError> {
        let store_error = |source| ImageError::Store {
            image: image.to_string(),
            source,
        };
        let overflowed = AtomicBool::new(false);
        let stream = bounded(registries.blob(image, blob).await?, blob.size, &overflowed).then(
            move |chunk| {
                let tee = tee.clone();
                async move {
                    if let (Some(tee), Ok(bytes)) = (&tee, &chunk) {
                        // A closed channel means the unpacker failed; see above.
                        let _ = tee.send(bytes.clone()).await;
                    }
                    chunk
                }
            },
        );
        progress.started(&blob.digest, blob.size);
        let written = self
            .content
            .write_blob_stream(&blob.digest, blob.size, Box::pin(stream), &|bytes| {
                progress.advanced(&blob.digest, bytes)
            })
            .await;
        if overflowed.load(Ordering::Relaxed) {
            return Err(store_error(StoreError::BlobTooLarge {
                digest: blob.digest.clone(),
                size: blob.size,
            }));
        }
        written.map_err(store_error)?;
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
        let compression = compression_of(blob).map_err(store_error)?;
        // The blob is written beside the layer, on the same filesystem.
        self.check_free_space(blob, compression, blob.size)
            .map_err(store_error)?;

        let (sender, receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let unpacking = {
            let (tmp_root, digest, diff_id, limits) = (
                self.tmp.clone(),
                blob.digest.clone(),
                diff_id.clone(),
                self.limits,
            );
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
                    &limits,
                )
                .and_then(|()| record_blob(tmp.path(), &digest))
                .map_err(|source| StoreError::Unpack { digest, source })?;
                Ok::<_, StoreError>(tmp)
            })
        };
        let downloaded = self
            .download(registries, image, blob, progress, Some(sender))
            .await;
        let unpacked = unpacking
            .await
            .map_err(|err| StoreError::Io {
                path: self.layer_dir(diff_id),
                source: io::Error::other(err),
            })
            .and_then(|result| result);
        let tmp = match (downloaded, unpacked) {
            (Ok(()), Ok(tmp)) => tmp,
            // A full disk is the cause, whichever side noticed it first.
            (
                _,
                Err(
                    err @ StoreError::Unpack {
                        source: UnpackError::DiskFull { .. },
                        ..
                    },
                ),
            ) => return Err(store_error(err)),
            (Err(err), _) => return Err(err),
            (Ok(()), Err(err)) => return Err(store_error(err)),
        };
        let target = self.layer_dir(diff_id);
        fs::rename(tmp.path(), &target).map_err(|source| {
            store_error(StoreError::Io {
                path: target,
                source,
            })
        })
    }

    /// Makes the layer directory for `blob` present, unpacking the stored blob in a
    /// temporary directory that is renamed into place when complete and verified.
    /// A directory unpacked from another blob (same diff_id, e.g. other compression)
    /// stands for this one only once this blob is verified to unpack to it: a
    /// manifest cannot borrow a cached layer with a blob that holds something else.
    pub(super) async fn ensure_layer(
        &self,
        blob: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), StoreError> {
        let _guard = self.in_flight.lock(format!("layer {diff_id}")).await;
        let target = self.layer_dir(diff_id);
        let compression = compression_of(blob)?;
        let blob_path = self.content.blob_path(&blob.digest);
        let (digest, diff_id) = (blob.digest.clone(), diff_id.clone());
        if target.is_dir() {
            if unpacked_from(&target, &digest) {
                return Ok(());
            }
            return blocking(target.clone(), move || {
                verify_layer(&blob_path, compression, &diff_id)
                    .and_then(|()| record_blob(&target, &digest))
                    .map_err(|source| StoreError::Unpack { digest, source })
            })
            .await;
        }
        self.check_free_space(blob, compression, 0)?;
        let (tmp_root, limits) = (self.tmp.clone(), self.limits);
        blocking(target.clone(), move || {
            // Removed on drop unless renamed into place.
            let tmp = temp_dir(&tmp_root, "layer").map_err(|source| StoreError::Io {
                path: tmp_root,
                source,
            })?;
            unpack_layer_limited(&blob_path, compression, &diff_id, tmp.path(), &limits)
                .and_then(|()| record_blob(tmp.path(), &digest))
                .map_err(|source| StoreError::Unpack { digest, source })?;
            fs::rename(tmp.path(), &target).map_err(|source| StoreError::Io {
                path: target,
                source,
            })
        })
        .await
    }

    /// Refuses to start unpacking `blob` when the store's filesystem clearly lacks
    /// room for it: `extra` bytes (the blob itself, when it is still to be written),
    /// an estimate of the unpacked layer, and the reserve [`LayerLimits::min_free`].
    /// A disk that fills anyway fails the unpack cleanly; this spares starting what
    /// cannot finish, and leaves the host its reserve.
    fn check_free_space(
        &self,
        blob: &Descriptor,
        compression: Compression,
        extra: u64,
    ) -> Result<(), StoreError> {
        let stat = rustix::fs::statvfs(self.tmp.as_path()).map_err(|errno| StoreError::Io {
            path: self.tmp.clone(),
            source: errno.into(),
        })?;
        let available = stat.f_bavail.saturating_mul(stat.f_frsize);
        // Compressed layers commonly unpack to two to four times their size: twice
        // is what a layer surely needs, not a forecast.
        let factor = match compression {
            Compression::None => 1,
            Compression::Gzip | Compression::Zstd => 2,
        };
        let needed = blob
            .size
            .saturating_mul(factor)
            .saturating_add(extra)
            .saturating_add(self.limits.min_free);
        if available >= needed {
            return Ok(());
        }
        Err(StoreError::NoSpace {
            path: self.tmp.clone(),
            digest: blob.digest.clone(),
            size: blob.size,
            available_mib: available >> 20,
            needed_mib: needed.div_ceil(1 << 20),
        })
    }

    /// Sets the bounds on the layers this store unpacks (by default
    /// [`LayerLimits::from_env`]).
    pub fn with_layer_limits(mut self, limits: LayerLimits) -> Self {
        self.limits = limits;
        self
    }
}

fn compression_of(blob: &Descriptor) -> Result<Compression, StoreError> {
    Compression::of_layer(&blob.media_type).ok_or_else(|| StoreError::UnsupportedLayer {
        digest: blob.digest.clone(),
        media_type: blob.media_type.clone(),
    })
}

/// Runs filesystem work off the async threads; a panic in it becomes an error
/// about `path`.
async fn blocking<T, F>(path: PathBuf, work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Io {
            path,
            source: io::Error::other(err),
        })?
}

/// Passes a blob download through, failing it (and setting `overflowed`) once more
/// bytes have arrived than `size`, the descriptor's: a registry cannot fill the
/// disk with a blob its manifest declares small.
fn bounded<'a, S>(
    stream: S,
    size: u64,
    overflowed: &'a AtomicBool,
) -> impl Stream<Item = io::Result<bytes::Bytes>> + 'a
where
    S: Stream<Item = io::Result<bytes::Bytes>> + 'a,
{
    let mut received = 0u64;
    stream.map(move |chunk| {
        let chunk = chunk?;
        received = received.saturating_add(chunk.len() as u64);
        if received > size {
            overflowed.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "more than the {size} bytes the descriptor declares"
            )));
        }
        Ok(chunk)
    })
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
