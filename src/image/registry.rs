//! Talking to OCI registries (oci-client): credentials, plain HTTP where allowed,
//! resolving a reference to a manifest for this host's platform, streaming blobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::digest::Digest;
use super::error::ImageError;
use super::oci::{
    Descriptor, ImageManifest, Index, ManifestKind, Platform, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::manifest::ImageRef;

const ACCEPTED_MANIFESTS: [&str; 4] = [
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// Environment variable listing extra plain-HTTP registries (comma-separated HOST:PORT).
pub const INSECURE_REGISTRIES_ENV: &str = "WHARF_INSECURE_REGISTRIES";

/// A manifest for this host, as the registry served it.
#[derive(Debug)]
pub struct ResolvedManifest {
    /// The manifest exactly as received (stored byte for byte under its digest).
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    pub manifest: ImageManifest,
    /// What the reference itself resolved to: the index digest for multi-platform images.
    pub resolved: Digest,
}

/// Clients for the registries an operation talks to, with their credentials.
pub struct Registries {
    insecure: Vec<String>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// The wharf executable that looks credentials up in a process of its own
    /// (None: in this process).
    login_process: Option<PathBuf>,
}

impl Registries {
    /// `insecure` lists `HOST:PORT`s reached over plain HTTP; loopback registries
    /// always are.
    pub fn new(insecure: Vec<String>) -> Self {
        install_crypto_provider();
        Registries {
            insecure,
            clients: Mutex::new(HashMap::new()),
            login_process: None,
        }
    }

    /// Looks credentials up by running `wharf credential-lookup` (needed in a
    /// process that runs containers; see `login_from_process`).
    pub fn with_login_process(mut self, wharf: &Path) -> Self {
        self.login_process = Some(wharf.to_owned());
        self
    }

    async fn auth(&self, image: &ImageRef) -> Result<RegistryAuth, ImageError> {
        let registry = image.registry.clone();
        let wharf = self.login_process.clone();
        let login = tokio::task::spawn_blocking(move || match wharf {
            Some(wharf) => login_from_process(&wharf, &registry),
            None => docker_login(&registry),
        })
        .await
        .map_err(|err| Self::error(image, err.to_string()))?
        .map_err(|err| Self::error(image, err))?;
        Ok(match login {
            Login::Anonymous => RegistryAuth::Anonymous,
            Login::Basic { username, password } => RegistryAuth::Basic(username, password),
        })
    }

    fn plain_http(&self, registry: &str) -> bool {
        let host = registry
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map_or_else(
                || registry.split(':').next().unwrap_or(registry),
                |(h, _)| h,
            );
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || self.insecure.iter().any(|insecure| insecure == registry)
    }

    fn client(&self, registry: &str) -> Arc<Client> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        clients
            .entry(registry.to_owned())
            .or_insert_with(|| {
                let protocol = if self.plain_http(registry) {
                    ClientProtocol::HttpsExcept(vec![registry.to_owned()])
                } else {
                    ClientProtocol::Https
                };
                Arc::new(Client::new(ClientConfig {
                    protocol,
                    connect_timeout: Some(std::time::Duration::from_secs(10)),
                    ..ClientConfig::default()
                }))
            })
            .clone()
    }

    fn error(
        image: &ImageRef,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ImageError {
        ImageError::Registry {
            image: image.to_string(),
            registry: image.registry.clone(),
            source: source.into(),
        }
    }

    /// Fetches the manifest `image` names, choosing this host's platform from an index.
    pub async fn resolve(&self, image: &ImageRef) -> Result<ResolvedManifest, ImageError> {
        let client = self.client(&image.registry);
        let auth = self.auth(image).await?;
        let reference = to_reference(image);
        let (bytes, resolved) = fetch_manifest(&client, &reference, &auth, image).await?;
        let kind: ManifestKind = serde_json::from_slice(&bytes).map_err(|err| {
            Self::error(
                image,
                format!("the registry sent an unreadable manifest: {err}"),
            )
        })?;
        if !kind.is_index() {
            return parse_manifest(image, bytes, resolved.clone(), resolved);
        }
        let index: Index = serde_json::from_slice(&bytes).map_err(|err| {
            Self::error(
                image,
                format!("the registry sent an unreadable index: {err}"),
            )
        })?;
        let host = Platform::host();
        let entry = index
            .manifests
            .iter()
            .find(|entry| entry.platform.as_ref().is_some_and(|p| p.runs_on(&host)))
            .ok_or_else(|| ImageError::NoPlatform {
                image: image.to_string(),
                host: host.to_string(),
                available: available_platforms(&index.manifests),
            })?;
        let by_digest = reference.clone_with_digest(entry.digest.to_string());
        let (bytes, digest) = fetch_manifest(&client, &by_digest, &auth, image).await?;
        if digest != entry.digest {
            return Err(Self::error(
                image,
                format!(
                    "digest mismatch: the index names {}, the manifest has {digest}",
                    entry.digest
                ),
            ));
        }
        parse_manifest(image, bytes, digest, resolved)
    }

    /// Streams one blob of `image`. The caller verifies the digest.
    pub async fn blob(
        &self,
        image: &ImageRef,
        blob: &Descriptor,
    ) -> Result<SizedStream, ImageError> {
        let client = self.client(&image.registry);
        client
            .pull_blob_stream(&to_reference(image), blob.digest.as_str())
            .await
            .map_err(|err| Self::error(image, err))
    }
}

async fn fetch_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    image: &ImageRef,
) -> Result<(Vec<u8>, Digest), ImageError> {
    let (bytes, _) = client
        .pull_manifest_raw(reference, auth, &ACCEPTED_MANIFESTS)
        .await
        .map_err(|err| Registries::error(image, err))?;
    // The digest is computed, not taken from the registry's header.
    let digest = Digest::of(&bytes);
    if let Some(pinned) = reference.digest() {
        if pinned != digest.as_str() {
            return Err(Registries::error(
                image,
                format!("digest mismatch: asked for {pinned}, the manifest has {digest}"),
            ));
        }
    }
    Ok((bytes.to_vec(), digest))
}

fn parse_manifest(
    image: &ImageRef,
    bytes: Vec<u8>,
    digest: Digest,
    resolved: Digest,
) -> Result<ResolvedManifest, ImageError> {
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|err| ImageError::Invalid {
            image: image.to_string(),
            message: format!("unreadable image manifest {digest}: {err}"),
        })?;
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_owned());
    Ok(ResolvedManifest {
        bytes,
        digest,
        media_type,
        manifest,
        resolved,
    })
}

fn available_platforms(entries: &[Descriptor]) -> String {
    let platforms: Vec<String> = entries
        .iter()
        .filter_map(|entry| entry.platform.as_ref().map(Platform::to_string))
        .collect();
    if platforms.is_empty() {
        "no platform information".into()
    } else {
        platforms.join(", ")
    }
}

pub fn to_reference(image: &ImageRef) -> Reference {
    let (registry, repository) = (image.registry.clone(), image.repository.clone());
    match (&image.tag, &image.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.clone(), digest.clone())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.clone()),
        (tag, None) => Reference::with_tag(
            registry,
            repository,
            tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

/// A registry login found in the Docker configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Login {
    Anonymous,
    Basic { username: String, password: String },
}

/// Credentials from the Docker config file (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`): `auths` entries and credential helpers. None configured
/// means an anonymous pull. Credential helpers are programs this runs and waits for.
pub fn docker_login(registry: &str) -> Result<Login, String> {
    let names: &[&str] = if registry == "docker.io" {
        &[
            "https://index.docker.io/v1/",
            "docker.io",
            "index.docker.io",
        ]
    } else {
        &[registry]
    };
    for name in names {
        match docker_credential::get_credential(name) {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Login::Basic { username, password })
            }
            Ok(DockerCredential::IdentityToken(_)) => {
                return Err(format!(
                    "the Docker config has an identity token for {registry}, which wharf cannot use; log in with a username and password or access token"
                ))
            }
            Err(
                CredentialRetrievalError::NoCredentialConfigured
                | CredentialRetrievalError::ConfigNotFound
                | CredentialRetrievalError::ConfigReadError,
            ) => {}
            Err(err) => return Err(format!("cannot read credentials for {registry}: {err}")),
        }
    }
    Ok(Login::Anonymous)
}

/// Runs `<wharf> credential-lookup REGISTRY`, which prints the `docker_login` result
/// as JSON. A process that runs containers cannot wait for credential helpers
/// itself: its reaper collects every child's exit status, and a helper's would be
/// lost. The lookup process has no containers; its own exit needs no status.
fn login_from_process(wharf: &Path, registry: &str) -> Result<Login, String> {
    crate::process::ask_helper(
        std::process::Command::new(wharf)
            .arg("credential-lookup")
            .arg(registry),
    )
}

/// rustls needs one process-wide crypto provider; wharf uses ring (light to build).
fn install_crypto_provider() {
    // Fails only when one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let registries = Registries::new(vec!["registry.lan:5000".into()]);
        for plain in [
            "127.0.0.1:5000",
            "127.0.0.2",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "registry.lan:5000",
        ] {
            assert!(registries.plain_http(plain), "{plain}");
        }
        for tls in [
            "docker.io",
            "registry.lan",
            "registry.lan:5001",
            "ghcr.io",
            "127.example.com",
        ] {
            assert!(!registries.plain_http(tls), "{tls}");
        }
    }
}
