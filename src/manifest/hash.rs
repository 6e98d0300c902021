//! The spec hash: decides whether a running container still matches its manifest.
//!
//! It covers what shapes a container: image, command, args, env (with what
//! `env_file` added), workdir, user, network, published ports, resources, volumes,
//! labels, configs and secrets, and what is read besides the spec ([`FileRefs`]):
//! the content of each config and the version of each secret. It leaves out what wharf
//! applies around the container and can change without recreating it: replicas
//! (scaling never recreates), pull, restart, stop (drain included), health and
//! update. It is computed from the normalised spec, so field order, formatting,
//! comments, `busybox` vs `docker.io/library/busybox:latest`, `128Mi` vs
//! `134217728`, `host_ip: 0.0.0.0` vs none and the order of `ports` do not change
//! it. Absent optional fields and empty lists are not hashed, so adding a field to
//! the format later does not change the hash of manifests that do not use it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::spec::{
    ConfigFile, EnvValue, Network, PortSpec, Resources, SecretFile, ServiceSpec, Volume,
};

/// What a container is made from besides its spec: the content of its configs (by
/// digest) and the version of each secret it uses (a random id given at `wharf
/// secret set`, never derived from the value). Recorded with each container, so
/// that a rollback recreates the previous content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRefs {
    /// Hex SHA-256 of each config's content, in the order of `configs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<String>,
    /// The version of each secret the spec uses, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

impl FileRefs {
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty() && self.secrets.is_empty()
    }
}

/// Hex SHA-256 of the container-shaping part of a normalised spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SpecHash(String);

impl SpecHash {
    pub fn of(spec: &ServiceSpec, files: &FileRefs) -> Self {
        // Which port is listed first publishes nothing differently.
        let mut ports = spec.ports.clone();
        ports.sort();
        let shape = ContainerShape {
            image: &spec.image,
            command: spec.command.as_deref(),
            args: spec.args.as_deref(),
            env: &spec.env,
            workdir: spec.workdir.as_deref(),
            user: spec.user.as_deref(),
            network: spec.network,
            ports: &ports,
            resources: &spec.resources,
            volumes: &spec.volumes,
            labels: &spec.labels,
            configs: &spec.configs,
            secrets: &spec.secrets,
            files,
        };
        let mut hasher = Sha256::new();
        hasher.update(b"wharf/v1\0");
        // Serializing plain data with string keys cannot fail.
        hasher.update(serde_json::to_vec(&shape).unwrap_or_default());
        SpecHash(format!("{:x}", hasher.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for human output.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Serialize)]
struct ContainerShape<'a> {
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [String]>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: &'a BTreeMap<String, EnvValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workdir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    network: Network,
    #[serde(skip_serializing_if = "<[PortSpec]>::is_empty")]
    ports: &'a [PortSpec],
    resources: &'a Resources,
    #[serde(skip_serializing_if = "<[Volume]>::is_empty")]
    volumes: &'a [Volume],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[ConfigFile]>::is_empty")]
    configs: &'a [ConfigFile],
    #[serde(skip_serializing_if = "<[SecretFile]>::is_empty")]
    secrets: &'a [SecretFile],
    #[serde(skip_serializing_if = "FileRefs::is_empty")]
    files: &'a FileRefs,
}
