//! The spec hash: decides whether a running container still matches its manifest.
//!
//! It covers what shapes a container: image, command, args, env, workdir, user,
//! network, published ports, resources, volumes and labels. It leaves out what wharf
//! applies around the container and can change without recreating it: replicas
//! (scaling never recreates), pull, restart, stop (drain included), health and
//! update. It is computed from the normalised spec, so field order, formatting,
//! comments, `busybox` vs `docker.io/library/busybox:latest`, `128Mi` vs
//! `134217728`, `host_ip: 0.0.0.0` vs none and the order of `ports` do not change
//! it. Absent optional fields and empty lists are not hashed, so adding a field to
//! the format later does not change the hash of manifests that do not use it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::spec::{Network, PortSpec, Resources, ServiceSpec, Volume};

/// Hex SHA-256 of the container-shaping part of a normalised spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SpecHash(String);

impl SpecHash {
    pub fn of(spec: &ServiceSpec) -> Self {
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
    env: &'a BTreeMap<String, String>,
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
}
