//! Removing what no image name and no container uses.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::digest::Digest;
use super::error::{ImageError, StoreError};
use super::oci::{ImageConfig, ImageManifest};
use super::ImageStore;

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub layers: usize,
    /// Temporary files and directories left by interrupted pulls.
    pub leftovers: usize,
    pub bytes: u64,
}

/// What existing containers use, which `prune` keeps even when no image name does.
#[derive(Debug, Default, Clone)]
pub struct InUse {
    /// Digests of the image manifests containers were created from: with their config,
    /// they let a container be created again from the same image (a rollback).
    pub manifests: HashSet<Digest>,
    /// Unpacked layers (diff_ids) containers' root filesystems are made of.
    pub layers: HashSet<Digest>,
}

impl ImageStore {
    /// Removes blobs and layer directories that no stored image references and no
    /// container uses (see `InUse`; the compressed layers of an image that only
    /// containers use go, its unpacked layers stay), and what interrupted pulls left in
    /// the temporary directory.
    ///
    /// Pulls and imports in progress hold the store lock until their name is
    /// recorded; prune waits for them (calling `waiting` first), since what they
    /// wrote is not named yet.
    pub fn prune(&self, in_use: &InUse, waiting: impl FnOnce()) -> Result<PruneReport, ImageError> {
        let store_error = |source| ImageError::Store {
            image: self.content.dir().display().to_string(),
            source,
        };
        let _pruning = self.content.lock_exclusive(waiting).map_err(store_error)?;
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut layers: HashSet<Digest> = in_use.layers.clone();
        let named = self.content.index().map_err(store_error)?.manifests;
        for entry in &named {
            blobs.insert(entry.digest.clone());
            if let Some(manifest) = self.keep_manifest(&entry.digest, &mut blobs, &mut layers) {
                blobs.extend(manifest.layers.iter().map(|layer| layer.digest.clone()));
            }
        }
        for digest in &in_use.manifests {
            if self.content.has_blob(digest) {
                blobs.insert(digest.clone());
                self.keep_manifest(digest, &mut blobs, &mut layers);
            }
        }

        let mut report = PruneReport::default();
        let blob_dir = self.content.dir().join("blobs/sha256");
        for (path, digest) in digest_entries(&blob_dir).map_err(store_error)? {
            if !blobs.contains(&digest) {
                report.bytes += disk_usage(&path);
                fs::remove_file(&path)
                    .map_err(|source| store_error(StoreError::Io { path, source }))?;
                report.blobs += 1;
            }
        }
        for (path, diff_id) in digest_entries(&self.layers).map_err(store_error)? {
            if !layers.contains(&diff_id) {
                report.bytes += disk_usage(&path);
                fs::remove_dir_all(&path)
                    .map_err(|source| store_error(StoreError::Io { path, source }))?;
                report.layers += 1;
            }
        }
        for entry in fs::read_dir(&self.tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !written_by_live_process(&name) {
                let path = entry.path();
                report.bytes += disk_usage(&path);
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(|source| store_error(StoreError::Io { path, source }))?;
                report.leftovers += 1;
            }
        }
        Ok(report)
    }

    /// Marks the config of manifest `digest` kept, and its diff_ids; returns the
    /// manifest (None when it is not a readable image manifest).
    fn keep_manifest(
        &self,
        digest: &Digest,
        blobs: &mut HashSet<Digest>,
        layers: &mut HashSet<Digest>,
    ) -> Option<ImageManifest> {
        let bytes = self.content.read_blob(digest).ok()?;
        let manifest = serde_json::from_slice::<ImageManifest>(&bytes).ok()?;
        blobs.insert(manifest.config.digest.clone());
        let config = self.content.read_blob(&manifest.config.digest).ok();
        if let Some(Ok(config)) = config.map(|bytes| serde_json::from_slice::<ImageConfig>(&bytes))
        {
            layers.extend(config.rootfs.diff_ids);
        }
        Some(manifest)
    }
}

/// Entries of a directory named by the hex of a sha256 digest.
fn digest_entries(dir: &Path) -> Result<Vec<(std::path::PathBuf, Digest)>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let digest = Digest::parse(&format!("sha256:{}", name.to_string_lossy())).ok()?;
            Some((entry.path(), digest))
        })
        .collect())
}

/// Temporary names are `<kind>-<pid>-<n>`; those of running processes are in use.
fn written_by_live_process(name: &str) -> bool {
    name.split('-')
        .nth(1)
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Bytes used by the files under `path` (not following symlinks).
pub fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![path.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|entry| entry.path()));
            }
        } else {
            total += meta.len();
        }
    }
    total
}
