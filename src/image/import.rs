//! Importing images from an OCI layout directory or an oci-archive tar (what
//! `skopeo copy ... oci:DIR:NAME` or `oci-archive:FILE:NAME` writes), for hosts
//! without registry access.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::error::ImageError;
use super::oci::{
    Descriptor, ImageConfig, ImageManifest, Index, ManifestKind, Platform, ANNOTATION_PULLED,
};
use super::store::{create_private_dir, create_private_file, temp_dir};
use super::{check_diff_ids, ImageStore};
use crate::bounded_read::{open_regular, read_regular};
use crate::manifest::ImageRef;

/// index.json, manifests and configs: registries refuse manifests over 4 MiB too.
const MAX_JSON_BYTES: u64 = 4 << 20;

impl ImageStore {
    /// Imports every named image of the layout or archive at `path`; `name` names
    /// the image when the source holds exactly one. Returns the names imported.
    pub async fn import(
        &self,
        path: &Path,
        name: Option<&ImageRef>,
    ) -> Result<Vec<String>, ImageError> {
        let source_error = |message: String| ImageError::Invalid {
            image: path.display().to_string(),
            message,
        };
        if path.is_dir() {
            return self.import_layout(path, name).await;
        }
        let extracted = temp_dir(&self.tmp, "import")
            .map_err(|err| source_error(format!("cannot create a temporary directory: {err}")))?;
        extract_archive(path, extracted.path()).map_err(|err| {
            source_error(format!("not an OCI layout directory or oci-archive: {err}"))
        })?;
        self.import_layout(extracted.path(), name).await
    }

    async fn import_layout(
        &self,
        layout: &Path,
        name: Option<&ImageRef>,
    ) -> Result<Vec<String>, ImageError> {
        let invalid = |message: String| ImageError::Invalid {
            image: layout.display().to_string(),
            message,
        };
        let blob = |digest: &Digest| layout.join("blobs/sha256").join(digest.hex());
        let read_json = |digest: &Digest| -> Result<Vec<u8>, ImageError> {
            read_regular(&blob(digest), MAX_JSON_BYTES)
                .map_err(|err| invalid(format!("blob {digest}: {err}")))
        };
        let index: Index = read_regular(&layout.join("index.json"), MAX_JSON_BYTES)
            .map_err(|err| invalid(format!("index.json: {err}")))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|err| invalid(format!("index.json: {err}")))
            })?;
        if name.is_some() && index.manifests.len() != 1 {
            return Err(invalid(format!(
                "holds {} images; --name needs exactly one",
                index.manifests.len()
            )));
        }
        // Until each name is recorded, so that prune leaves what this copies alone.
        let _writing = self
            .lock_for_writing()
            .await
            .map_err(|source| ImageError::Store {
                image: layout.display().to_string(),
                source,
            })?;
        let mut imported = Vec::new();
        for entry in &index.manifests {
            let image_name = match (name, entry.ref_name()) {
                (Some(name), _) => name.to_string(),
                (None, Some(ref_name)) => ref_name
                    .parse::<ImageRef>()
                    .map_err(|name| ImageError::InvalidName {
                        image: layout.display().to_string(),
                        name,
                    })?
                    .to_string(),
                (None, None) => {
                    return Err(invalid("an image has no name; give one with --name".into()))
                }
            };
            let manifest_descriptor = self.platform_manifest(entry, &read_json, &image_name)?;
            let manifest_bytes = read_json(&manifest_descriptor.digest)?;
            let manifest: ImageManifest =
                serde_json::from_slice(&manifest_bytes).map_err(|err| {
                    invalid(format!("manifest {}: {err}", manifest_descriptor.digest))
                })?;
            let config: ImageConfig = serde_json::from_slice(&read_json(&manifest.config.digest)?)
                .map_err(|err| invalid(format!("config {}: {err}", manifest.config.digest)))?;
            check_diff_ids(&image_name, &manifest, &config)?;
            let store_error = |source| ImageError::Store {
                image: image_name.clone(),
                source,
            };
            for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if !self.content.has_blob(&descriptor.digest) {
                    let (source, _) = open_regular(&blob(&descriptor.digest))
                        .map_err(|err| invalid(format!("blob {}: {err}", descriptor.digest)))?;
                    self.content
                        .write_blob_from(&descriptor.digest, source)
                        .map_err(store_error)?;
                }
            }
            for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
                self.ensure_layer(layer, diff_id)
                    .await
                    .map_err(store_error)?;
            }
            self.content
                .write_blob(&manifest_descriptor.digest, &manifest_bytes)
                .map_err(store_error)?;
            let descriptor = Descriptor {
                annotations: BTreeMap::from([(
                    ANNOTATION_PULLED.to_owned(),
                    super::pull::now_rfc3339(),
                )]),
                platform: None,
                ..manifest_descriptor
            };
            self.set_ref(&image_name, descriptor)?;
            imported.push(image_name);
        }
        Ok(imported)
    }

    /// The image manifest an index entry stands for on this host.
    fn platform_manifest(
        &self,
        entry: &Descriptor,
        read: &dyn Fn(&Digest) -> Result<Vec<u8>, ImageError>,
        image: &str,
    ) -> Result<Descriptor, ImageError> {
        let bytes = read(&entry.digest)?;
        let kind: ManifestKind =
            serde_json::from_slice(&bytes).map_err(|err| ImageError::Invalid {
                image: image.to_owned(),
                message: format!("manifest {}: {err}", entry.digest),
            })?;
        if !kind.is_index() {
            return Ok(entry.clone());
        }
        let index: Index = serde_json::from_slice(&bytes).map_err(|err| ImageError::Invalid {
            image: image.to_owned(),
            message: format!("index {}: {err}", entry.digest),
        })?;
        let host = Platform::host();
        index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.runs_on(&host)))
            .cloned()
            .ok_or_else(|| ImageError::NoPlatform {
                image: image.to_owned(),
                host: host.to_string(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(Platform::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Extracts the regular files of a tar into `dest` (a layout needs nothing else);
/// paths are cleaned so that nothing lands outside `dest`.
fn extract_archive(archive: &Path, dest: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(File::open(archive)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let relative: PathBuf = entry
            .path_bytes()
            .split(|b| *b == b'/')
            .filter(|part| !matches!(*part, b"" | b"." | b".."))
            .map(|part| OsStr::from_bytes(part).to_owned())
            .collect();
        let target = dest.join(relative);
        if let Some(parent) = target.parent() {
            create_private_dir(parent)?;
        }
        io::copy(&mut entry, &mut create_private_file(&target)?)?;
    }
    if dest.join("index.json").is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no index.json inside",
        ))
    }
}
