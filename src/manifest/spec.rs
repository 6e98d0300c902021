//! The `wharf/v1` service manifest, as users write it.
//!
//! These types are the single source of truth for the format: the loader
//! deserializes them, `wharf schema` derives the JSON Schema from them, and every
//! default lives here (in `#[serde(default)]` functions that the schema shows).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{ByteSize, Duration};

/// One service: a container image run as `replicas` identical containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a service manifest (a mapping with apiVersion, kind, name, image, ...)")]
#[schemars(
    title = "wharf service manifest (wharf/v1)",
    extend("allOf" = schema_types::service_rules())
)]
pub struct ServiceSpec {
    /// Format version; always `wharf/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// Always `Service`.
    pub kind: Kind,
    /// Service name: a DNS label (lowercase letters, digits and `-`, at most 48
    /// characters). Containers are named `<name>-<replica>`.
    #[schemars(with = "schema_types::ServiceName")]
    pub name: String,
    /// Image reference: `registry/repository:tag` or `...@sha256:<digest>`. Short names
    /// are completed as Docker does: `busybox` is `docker.io/library/busybox:latest`.
    #[schemars(with = "schema_types::ImageReference")]
    pub image: String,
    /// When to fetch the image from its registry.
    #[serde(default)]
    pub pull: PullPolicy,
    /// Number of containers to run (0 to 1000). 0 keeps the service defined with none running.
    #[serde(default = "default_replicas")]
    #[schemars(range(max = 1000))]
    pub replicas: u32,
    /// Replaces the image's Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::Command>")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<schema_types::Text>>")]
    pub args: Option<Vec<String>>,
    /// Environment variables, added to (and overriding) the image's and those of
    /// `env_file`. Numbers and booleans are taken as written; `{secret: NAME}` takes
    /// the value of a secret set with `wharf secret set`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = schema_types::env_names()))]
    pub env: BTreeMap<String, EnvValue>,
    /// Files of `KEY=VALUE` lines (relative to the manifest's directory), read in
    /// order; `env` overrides them. Their content is part of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub env_file: Vec<RelativePath>,
    /// Files from the manifest's directory, mounted read-only into each container.
    /// Their content is part of the spec: an edit replaces the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub configs: Vec<ConfigFile>,
    /// Secrets (set with `wharf secret set`) mounted read-only from memory into each
    /// container. A new value replaces the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub secrets: Vec<SecretFile>,
    /// Working directory (absolute); the image's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::AbsolutePath>")]
    pub workdir: Option<String>,
    /// `uid[:gid]` or `name[:group]` (names resolved in the image); the image's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::User>")]
    pub user: Option<String>,
    /// `bridge` (the default) gives each container its own address on wharf's bridge
    /// and publishes `ports`; `host` shares the host's network; `none` gives the
    /// container its own network namespace with only loopback.
    #[serde(default)]
    pub network: Network,
    /// Host ports that forward to the containers' ports (`network: bridge` only),
    /// spread over the replicas. A host port and protocol go to one service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Resource limits; unset means unlimited.
    #[serde(default, skip_serializing_if = "Resources::is_unlimited")]
    pub resources: Resources,
    /// What to do when a container exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How containers are stopped.
    #[serde(default)]
    pub stop: Stop,
    /// How to tell that a container works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// How running containers are replaced when the spec changes.
    #[serde(default)]
    pub update: Update,
    /// Storage mounted into each container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Free-form key/value pairs recorded with the containers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(
        with = "BTreeMap<String, schema_types::Text>",
        extend("propertyNames" = {"minLength": 1})
    )]
    pub labels: BTreeMap<String, String>,
    /// Where the containers' output goes and how much of it is kept on disk. A change
    /// applies to containers created after it (it does not recreate running ones).
    #[serde(default)]
    pub logs: LogPolicy,
    /// Services and jobs of the same directory this one is created after, each in a
    /// condition: `started` (its replicas run), `healthy` (they pass their health
    /// check) or `completed` (a job's run for its current spec succeeded). apply and
    /// the agent wait for them (with a deadline) before creating, restarting or
    /// replacing this one's containers. Not in the spec hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Condition>,
    /// Job only: failed runs tried again (with a growing pause) before the job has
    /// failed. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
    /// Job only: a run still going after this is stopped and counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Job only: when to run it, as cron's five fields (minute hour day-of-month
    /// month day-of-week) in the host's local time zone, e.g. `0 3 * * *`. Only the
    /// agent runs schedules; a scheduled job does not run at apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// What a dependency must be before its dependants are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Its replicas run.
    Started,
    /// Its replicas run and pass their health check (it must have one).
    Healthy,
    /// A job's run for its current spec succeeded.
    Completed,
}

impl Condition {
    /// The name the manifest uses.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

fn default_replicas() -> u32 {
    1
}

impl ServiceSpec {
    /// Its dependencies as `db healthy`, `migrate completed`.
    pub fn waits_for(&self) -> Vec<String> {
        self.depends_on
            .iter()
            .map(|(name, condition)| format!("{name} {}", condition.name()))
            .collect()
    }

    /// Whether it is a job (run to completion) rather than a service.
    pub fn is_job(&self) -> bool {
        self.kind == Kind::Job
    }

    /// The secrets it uses, mounted or in env.
    pub fn secret_names(&self) -> std::collections::BTreeSet<&str> {
        let mounted = self.secrets.iter().map(|s| s.name.as_str());
        mounted
            .chain(self.env.values().filter_map(EnvValue::secret))
            .collect()
    }

    /// The update order: as written, else start-first on a bridge (old and new
    /// replicas have their own addresses and share the published ports) and
    /// stop-first with `host` or `none` (with `host` both would bind the same ports).
    pub fn update_order(&self) -> UpdateOrder {
        self.update.order.unwrap_or(match self.network {
            Network::Bridge => UpdateOrder::StartFirst,
            Network::Host | Network::None => UpdateOrder::StopFirst,
        })
    }
}

/// An environment variable's value: text as written, or a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    /// The value of the secret `secret` (one trailing newline left out), read when
    /// the container is created.
    Secret {
        secret: String,
    },
}

impl EnvValue {
    /// The text, if it is text.
    pub fn text(&self) -> Option<&str> {
        match self {
            EnvValue::Text(text) => Some(text),
            EnvValue::Secret { .. } => None,
        }
    }

    /// The secret it names, if it is one.
    pub fn secret(&self) -> Option<&str> {
        match self {
            EnvValue::Text(_) => None,
            EnvValue::Secret { secret } => Some(secret),
        }
    }
}

impl From<&str> for EnvValue {
    fn from(text: &str) -> Self {
        EnvValue::Text(text.to_owned())
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvValueVisitor;
        impl<'de> serde::de::Visitor<'de> for EnvValueVisitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a number, a boolean or {secret: NAME}")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<EnvValue, D::Error> {
                deserializer.deserialize_any(self)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(text.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(value.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(value.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(value.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(value.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EnvValue, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" || secret.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "unexpected key `{key}`: a value from a secret is written {{secret: NAME}}"
                        )));
                    }
                    secret = Some(map.next_value::<String>()?);
                }
                secret
                    .map(|secret| EnvValue::Secret { secret })
                    .ok_or_else(|| serde::de::Error::custom("write {secret: NAME}"))
            }
        }
        // Scalars as written (`1.10` stays `1.10`), see `de::AS_WRITTEN`.
        deserializer.deserialize_newtype_struct(super::de::AS_WRITTEN, EnvValueVisitor)
    }
}

impl JsonSchema for EnvValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvValue".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Text (numbers and booleans as written) or the value of a secret.",
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {
                    "type": "object",
                    "properties": {"secret": generator.subschema_for::<schema_types::SecretName>()},
                    "required": ["secret"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// Secret names become file names under the root: letters, digits, `_`, `.`, `-`.
pub const SECRET_NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

/// A path relative to the manifest's directory, inside it (no `..`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RelativePath(pub String);

impl RelativePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for RelativePath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RelativePath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A path relative to the manifest's directory, inside it: not starting with `/`, without a `..` segment.",
            "anyOf": [
                {"type": "string", "pattern": schema_types::RELATIVE_PATH},
                schema_types::as_written_scalar(false)
            ]
        })
    }
}

/// A file mode written in octal: `0440`, `440` or `"0440"` (YAML reads them alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileMode(pub u32);

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl serde::de::Visitor<'_> for ModeVisitor {
            type Value = FileMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an octal file mode such as 0440")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileMode, E> {
                let digits = text.strip_prefix("0o").unwrap_or(text);
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o777 && !digits.is_empty() && digits.len() <= 4)
                    .map(FileMode)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "\"{text}\" is not a file mode: write up to 3 octal digits for owner, group and others, such as 0440"
                        ))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<FileMode, E> {
                // From JSON (a recorded spec): the digits as written.
                self.visit_str(&value.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<FileMode, E> {
                self.visit_str(&value.to_string())
            }
        }
        deserializer.deserialize_newtype_struct(super::de::AS_WRITTEN, AsWritten(ModeVisitor))
    }
}

/// Forwards a newtype to `deserialize_any` for deserializers without the
/// `AS_WRITTEN` convention (JSON), which give strings and numbers as they are.
struct AsWritten<V>(V);

impl<'de, V: serde::de::Visitor<'de>> serde::de::Visitor<'de> for AsWritten<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.expecting(f)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        deserializer.deserialize_any(self.0)
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<V::Value, E> {
        self.0.visit_str(text)
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FileMode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Octal file mode, such as 0440: up to 3 octal digits for owner, group and others.",
            "anyOf": [
                // As `FileMode::deserialize` reads text: an optional `0o`, then up to
                // 4 characters for `u32::from_str_radix` (which takes a leading `+`)
                // of at most 0o777.
                {"type": "string", "pattern": r"^(?:0o)?(?:\+[0-7]{1,3}|0?[0-7]{1,3})$"},
                // YAML reads `0440` as text but `440` as a number: its digits as written.
                {"type": "integer", "minimum": 0, "maximum": 777}
            ]
        })
    }
}

/// A file of the manifest's directory mounted read-only into each container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with source and target")]
pub struct ConfigFile {
    /// The file, relative to the manifest's directory (symlinks are followed inside
    /// it), at most 1 MiB.
    pub source: RelativePath,
    /// Absolute path inside the container.
    #[schemars(with = "schema_types::FileTarget")]
    pub target: String,
    /// Octal mode; 0444 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Owner; 0 (root) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group; 0 (root) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A secret mounted read-only, from memory, into each container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with name and target")]
pub struct SecretFile {
    /// The secret, as set with `wharf secret set NAME`.
    #[schemars(with = "schema_types::SecretName")]
    pub name: String,
    /// Absolute path inside the container; `/run/secrets/<name>` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::FileTarget>")]
    pub target: Option<String>,
    /// Octal mode; 0400 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Owner; the container's user when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group; the container's user's group when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl SecretFile {
    /// Where it is mounted: the target given, else `/run/secrets/<name>`.
    pub fn target(&self) -> String {
        self.target
            .clone()
            .unwrap_or_else(|| format!("/run/secrets/{}", self.name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "wharf/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// Replicas kept running.
    Service,
    /// One container run to completion, once per spec (retried on failure).
    Job,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Resolve the tag at the registry on every apply.
    Always,
    /// Use the local image when the reference is already present.
    #[default]
    IfNotPresent,
    /// Never contact a registry; fail when the image is not present.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// The host's network namespace: the container binds host ports itself (no `ports`).
    Host,
    /// An own network namespace with only the loopback interface.
    None,
    /// Each container gets its own address on wharf's bridge wharf0, reaches other
    /// services by name, and publishes `ports`.
    #[default]
    Bridge,
}

impl Network {
    /// The name the manifest uses.
    pub fn name(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Bridge => "bridge",
        }
    }
}

/// A host port forwarded to a port of the service's containers, spread over its
/// replicas.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with container, host, protocol and host_ip")]
pub struct PortSpec {
    /// Port the containers listen on (1 to 65535).
    #[schemars(range(min = 1))]
    pub container: u16,
    /// Port published on the host (1 to 65535).
    #[schemars(range(min = 1))]
    pub host: u16,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Host address (IPv4) to publish on; every address of the host when unset
    /// (`0.0.0.0` means the same).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "host_ip_from_text"
    )]
    #[schemars(regex(pattern = schema_types::IPV4_ADDRESS))]
    pub host_ip: Option<std::net::Ipv4Addr>,
}

/// An IPv4 address as written, with a message that says what to write instead of
/// the standard library's "invalid IPv4 address syntax".
impl PortSpec {
    /// Whether both would receive the same connections: the same protocol and host
    /// port on an overlapping address (no host_ip is every address of the host).
    pub fn overlaps(&self, other: &PortSpec) -> bool {
        self.protocol == other.protocol
            && self.host == other.host
            && match (self.host_ip, other.host_ip) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }
}

fn host_ip_from_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::Ipv4Addr>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "\"{text}\" is not an IPv4 address: give one of the host's addresses, such as 127.0.0.1, or leave host_ip out to publish on all of them"
        ))
    })
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The name the manifest uses.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whenever the container exits.
    #[default]
    Always,
    /// Restart only after a non-zero exit code or a kill.
    OnFailure,
    /// Leave exited containers stopped.
    Never,
}

impl RestartPolicy {
    /// The name the manifest uses.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }

    /// Whether a container that exited with `code` (None: unknown) is restarted.
    pub fn restarts_after(self, code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != Some(0),
            RestartPolicy::Never => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with cpus, memory and pids")]
pub struct Resources {
    /// CPU time as a number of CPUs (0.5 = half of one CPU), at least 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub cpus: Option<f64>,
    /// Memory limit, at least 6Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::MemoryLimit>")]
    pub memory: Option<ByteSize>,
    /// Maximum number of processes, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pids: Option<u32>,
}

impl Resources {
    fn is_unlimited(&self) -> bool {
        *self == Resources::default()
    }
}

/// Output is kept in files rotated at `max_size`, at most `max_files` of them per
/// container (as the kubelet and Nomad do by default), or sent to journald.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with driver, max_size and max_files")]
pub struct LogPolicy {
    /// `file` keeps output in rotated files read by `wharf logs`; `journald` sends it
    /// to the systemd journal (`journalctl CONTAINER_NAME=<container id>`).
    #[serde(default)]
    pub driver: LogDriver,
    /// Size at which a container's log file is rotated, at least 64Ki.
    #[serde(default = "default_log_max_size")]
    #[schemars(with = "schema_types::LogFileSize")]
    pub max_size: ByteSize,
    /// Log files kept per container, the one being written included (1 to 100): at
    /// most `max_size × max_files` on disk per container.
    #[serde(default = "default_log_max_files")]
    #[schemars(range(min = 1, max = 100))]
    pub max_files: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// Rotated files in the container's directory.
    #[default]
    File,
    /// The systemd journal, through its native protocol.
    Journald,
}

/// The most log files a container may keep.
pub const MAX_LOG_FILES: u32 = 100;

fn default_log_max_size() -> ByteSize {
    ByteSize::from_bytes(10 << 20)
}

fn default_log_max_files() -> u32 {
    3
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            driver: LogDriver::default(),
            max_size: default_log_max_size(),
            max_files: default_log_max_files(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with signal, timeout and drain")]
pub struct Stop {
    /// Signal sent first: SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH
    /// or SIGKILL (the `SIG` prefix may be left out).
    #[serde(default = "default_stop_signal")]
    #[schemars(with = "schema_types::StopSignal")]
    pub signal: String,
    /// Time to wait after the signal before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    #[schemars(with = "schema_types::PositiveDuration")]
    pub timeout: Duration,
    /// How long a replica is kept out of rotation (no new connections sent to it)
    /// before its stop signal, so that requests under way finish. At most 60s.
    #[serde(default = "default_stop_drain")]
    #[schemars(with = "schema_types::DrainDuration")]
    pub drain: Duration,
}

fn default_stop_signal() -> String {
    "SIGTERM".into()
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Long enough for a connection accepted just before to be answered, short enough
/// not to slow rollouts down.
fn default_stop_drain() -> Duration {
    Duration::from_millis(500)
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            signal: default_stop_signal(),
            timeout: default_stop_timeout(),
            drain: default_stop_drain(),
        }
    }
}

/// A health check: exactly one of `exec`, `tcp` or `http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with one of exec, tcp or http")]
#[schemars(extend("oneOf" = schema_types::one_health_check()))]
pub struct Health {
    /// Command run inside the container; exit code 0 is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::Command>")]
    pub exec: Option<Vec<String>>,
    /// Healthy when a TCP connection to the port succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// Healthy when `GET http://127.0.0.1:<port><path>` answers 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// Time between checks.
    #[serde(default = "default_health_interval")]
    #[schemars(with = "schema_types::PositiveDuration")]
    pub interval: Duration,
    /// Time one check may take.
    #[serde(default = "default_health_timeout")]
    #[schemars(with = "schema_types::PositiveDuration")]
    pub timeout: Duration,
    /// Consecutive failures before the container counts as unhealthy.
    #[serde(default = "default_health_retries")]
    #[schemars(range(min = 1))]
    pub retries: u32,
    /// Grace period after start during which failures do not count.
    #[serde(default)]
    pub start_period: Duration,
    /// Time between checks during `start_period`, until the first success.
    #[serde(default = "default_health_start_interval")]
    #[schemars(with = "schema_types::PositiveDuration")]
    pub start_interval: Duration,
}

impl Health {
    /// How long a new replica may take to become healthy or fail: the start period,
    /// then `retries` failed checks.
    pub fn verdict_within(&self) -> std::time::Duration {
        self.start_period.as_std()
            + (self.interval.as_std() + self.timeout.as_std()) * (self.retries + 1)
    }
}

fn default_health_start_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_health_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_health_retries() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with port")]
pub struct TcpCheck {
    #[schemars(range(min = 1))]
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with port and path")]
pub struct HttpCheck {
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Request path, starting with `/`.
    #[serde(default = "default_http_path")]
    #[schemars(regex(pattern = "^/"))]
    pub path: String,
}

fn default_http_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with order and max_unavailable")]
pub struct Update {
    /// `stop-first` stops an old container before starting its replacement (safe with
    /// `network: host`, where both would want the same port); `start-first` starts the
    /// new one first. Default: start-first on `network: bridge`, stop-first with
    /// `host` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
    /// How many replicas may be down at once during an update (0 only with start-first).
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: u32,
    /// How long each new replica may take to run and pass its health check before the
    /// rollout stops and that replica goes back to the previous spec. Default: the
    /// start period plus `retries + 1` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::PositiveDuration>")]
    pub deadline: Option<Duration>,
}

fn default_max_unavailable() -> u32 {
    1
}

impl Default for Update {
    fn default() -> Self {
        Update {
            order: None,
            max_unavailable: default_max_unavailable(),
            deadline: None,
        }
    }
}

// No Default: the default order depends on the network (ServiceSpec::update_order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop an old replica, then start its replacement.
    StopFirst,
    /// Start the replacement and wait for it to be healthy, then stop the old replica.
    StartFirst,
}

impl UpdateOrder {
    /// The name the manifest uses.
    pub fn name(self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

/// A mount. `volume`: a named volume (kept when containers go) or, without `name`, an
/// anonymous one (removed with its container). `bind`: a host directory or file
/// (`source`). `tmpfs`: memory-backed, optionally limited by `size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a mapping with type and target")]
#[schemars(extend("allOf" = schema_types::volume_fields_by_type()))]
pub struct Volume {
    #[serde(rename = "type")]
    pub kind: VolumeKind,
    /// Volume name (type volume only); volumes with the same name are shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::VolumeName>")]
    pub name: Option<String>,
    /// Absolute host path (type bind only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema_types::AbsolutePath>")]
    pub source: Option<String>,
    /// Absolute path inside the container (not `/` itself).
    #[schemars(with = "schema_types::MountTarget")]
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// Size limit (type tmpfs only); half of the host's memory when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeKind {
    Volume,
    Bind,
    Tmpfs,
}

/// Schema-only types: the rules of `validate.rs`, `units.rs` and `image_ref.rs` said
/// in JSON Schema, for `wharf schema` and the editors that check manifests with it.
/// Fields name them in `#[schemars(with = ...)]`; deserialization never sees them.
///
/// Each accepts everything wharf accepts (an editor must never flag a valid
/// manifest) and as little more as JSON Schema can manage. What it cannot say is left
/// to `wharf validate`: duplicates across entries and files (names, host ports,
/// mount targets), files on disk, secrets in the store, number overflows.
///
/// wharf reads a YAML number or boolean written where it expects text as the text
/// written (`name: 123` is the name "123"), so where such text can be valid the
/// schema accepts the number or boolean too.
mod schema_types {
    use std::borrow::Cow;

    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use serde_json::{json, Value};

    use super::super::validate::{MAX_NAME_LEN, RESERVED_ENV};
    use super::{Network, UpdateOrder, SECRET_NAME_PATTERN};

    /// A schema type, kept once in the schema's `$defs` under its name.
    macro_rules! schema_type {
        ($(#[$doc:meta])* $name:ident, $schema:expr) => {
            $(#[$doc])*
            pub(super) struct $name;

            impl JsonSchema for $name {
                fn schema_name() -> Cow<'static, str> {
                    stringify!($name).into()
                }

                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    $schema
                }
            }
        };
    }

    /// validate.rs `check_absolute`: `/`, then segments that are not `..`.
    const ABSOLUTE_PATH: &str = r"^(?:/(?!\.\.(?:/|$))[^/]*)+$";
    /// An absolute path that is not `/` itself (validate.rs `check_volumes`).
    const MOUNT_TARGET: &str = r"^(?!/*$)(?:/(?!\.\.(?:/|$))[^/]*)+$";
    /// An absolute path that does not end with `/` (validate.rs `check_files`).
    const FILE_TARGET: &str = r"^(?:/(?!\.\.(?:/|$))[^/]*)*/(?!\.\.$)[^/]+$";
    /// validate.rs `check_relative`: not empty, not starting with `/`, no `..` segment.
    pub(super) const RELATIVE_PATH: &str = r"^(?!\.\.(?:/|$))[^/]+(?:/(?!\.\.(?:/|$))[^/]*)*$";
    /// units.rs `Duration` with a digit other than 0: more than 0s.
    const POSITIVE_DURATION: &str =
        r"^(?=[^1-9]*[1-9])(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?(?:[0-9]+ms)?$";
    /// units.rs `Duration` of at most 1m (validate.rs `MAX_DRAIN`): no hours, and 1
    /// minute with nothing more or at most 60s and 60000ms (so a few sums above 1m,
    /// such as 59s2000ms, pass here).
    const DRAIN_DURATION: &str = r"^(?=[0-9])(?:0+h)?(?:0*1m(?:0+s)?(?:0+ms)?|(?:0+m)?(?:0*(?:[1-5]?[0-9]|60)s)?(?:0*(?:[1-5]?[0-9]{1,4}|60000)ms)?)$";
    /// validate.rs `check_user`: uid[:gid] or name[:group], no part starting with `-`.
    const USER: &str = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*(?::[A-Za-z0-9_.][A-Za-z0-9_.-]*)?$";
    /// `Ipv4Addr::from_str`: four decimal numbers up to 255, without leading zeros.
    pub(super) const IPV4_ADDRESS: &str = r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$";
    /// validate.rs `STOP_SIGNALS`.
    const STOP_SIGNALS: [&str; 8] = [
        "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGKILL",
    ];
    /// validate.rs `MIN_MEMORY`.
    const MIN_MEMORY_BYTES: u64 = 6 << 20;
    /// validate.rs `MIN_LOG_SIZE`.
    const MIN_LOG_SIZE_BYTES: u64 = 64 << 10;

    /// A YAML number or boolean where text is expected, which wharf takes as written
    /// (`123`, `1.5`, `true`); `unsigned`: text starting with `-` is never valid there.
    pub(super) fn as_written_scalar(unsigned: bool) -> Value {
        if unsigned {
            json!({"type": ["number", "boolean"], "minimum": 0})
        } else {
            json!({"type": ["number", "boolean"]})
        }
    }

    schema_type!(
        /// validate.rs `check_name`.
        ServiceName,
        json_schema!({
            "description": "A DNS label: lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 48 characters.",
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_NAME_LEN,
                    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
                },
                {"type": ["integer", "boolean"], "minimum": 0}
            ]
        })
    );

    schema_type!(
        /// image_ref.rs `ImageRef::from_str`, except for the 255-character limit of
        /// the name.
        ImageReference,
        json_schema!({
            "description": "[registry[:port]/]repository[:tag][@sha256:<64 hex digits>]: 127.0.0.1:5000/web:1.4, ghcr.io/owner/app:v1, busybox (docker.io/library/busybox:latest).",
            "anyOf": [
                {"type": "string", "pattern": image_reference_pattern()},
                as_written_scalar(true)
            ]
        })
    );

    /// image_ref.rs, piece by piece.
    fn image_reference_pattern() -> String {
        // `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
        let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let label = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?";
        // A first component with a `.` or `:`, or `localhost`, names a registry:
        // host[:port], or a bracketed IPv6 address (after whose `]` wharf takes
        // anything but `:` as no port).
        let registry = format!(
            r"(?:localhost(?::[0-9]+)?|{label}(?:\.{label})+(?::[0-9]+)?|{label}:[0-9]+|\[[0-9A-Fa-f:]+\](?::[0-9]+|[^:/@][^/@]*)?)"
        );
        let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = r"(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})";
        // Without a registry, the first component has no `.` (else it names one).
        format!(
            r"^(?:{registry}/|(?![^/]*\.[^/]*/)){component}(?:/{component})*(?::{tag})?(?:@{digest})?$"
        )
    }

    schema_type!(
        /// validate.rs `check_user`.
        User,
        json_schema!({
            "description": "uid[:gid] or name[:group] (letters, digits, `_`, `.` and `-`, not starting with `-`): 1000:1000, nobody.",
            "anyOf": [
                {"type": "string", "pattern": USER},
                as_written_scalar(true)
            ]
        })
    );

    schema_type!(
        /// validate.rs `check_absolute`.
        AbsolutePath,
        json_schema!({
            "description": "An absolute path (starting with `/`) without a `..` segment.",
            "type": "string",
            "pattern": ABSOLUTE_PATH
        })
    );

    schema_type!(
        /// validate.rs `check_volumes`.
        MountTarget,
        json_schema!({
            "description": "An absolute path (starting with `/`) without a `..` segment, other than `/`.",
            "type": "string",
            "pattern": MOUNT_TARGET
        })
    );

    schema_type!(
        /// validate.rs `check_files`.
        FileTarget,
        json_schema!({
            "description": "The absolute path of a file (starting with `/`, not ending with `/`) without a `..` segment.",
            "type": "string",
            "pattern": FILE_TARGET
        })
    );

    schema_type!(
        /// Durations that validate.rs refuses at 0s.
        PositiveDuration,
        json_schema!({
            "description": "A duration of more than 0s: a sum of <n>h, <n>m, <n>s and <n>ms parts, largest first (500ms, 10s, 1m30s, 1h).",
            "type": "string",
            "pattern": POSITIVE_DURATION
        })
    );

    schema_type!(
        /// validate.rs `MAX_DRAIN`.
        DrainDuration,
        json_schema!({
            "description": "A duration of at most 1m: a sum of <n>m, <n>s and <n>ms parts, largest first (500ms, 2s, 1m).",
            "type": "string",
            "pattern": DRAIN_DURATION
        })
    );

    schema_type!(
        /// validate.rs `MIN_MEMORY`.
        MemoryLimit,
        byte_size_at_least(
            MIN_MEMORY_BYTES,
            "At least 6Mi: bytes, plain or with a k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024) suffix: 64Mi, 1G."
        )
    );

    schema_type!(
        /// validate.rs `MIN_LOG_SIZE`.
        LogFileSize,
        byte_size_at_least(
            MIN_LOG_SIZE_BYTES,
            "At least 64Ki: bytes, plain or with a k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024) suffix: 10Mi."
        )
    );

    /// units.rs `ByteSize` of at least `min` bytes: an integer, or digits with an
    /// optional suffix whose product is at least `min`.
    fn byte_size_at_least(min: u64, description: &str) -> Schema {
        const SUFFIXES: [(&str, u64); 7] = [
            ("", 1),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
        ];
        let alternatives: Vec<String> = SUFFIXES
            .iter()
            .map(|(suffix, multiplier)| {
                format!("{}{suffix}", number_at_least(min.div_ceil(*multiplier)))
            })
            .collect();
        json_schema!({
            "description": description,
            "anyOf": [
                {"type": "integer", "minimum": min},
                {"type": "string", "pattern": format!("^(?:{})$", alternatives.join("|"))}
            ]
        })
    }

    /// A pattern for the decimal numbers (leading zeros allowed) of at least `min`:
    /// more digits than `min`, or as many with a greater digit after a common
    /// prefix, or `min` itself.
    fn number_at_least(min: u64) -> String {
        if min == 0 {
            return "[0-9]+".to_owned();
        }
        let digits = min.to_string();
        let len = digits.len();
        let any_digits = |count: usize| match count {
            0 => String::new(),
            1 => "[0-9]".to_owned(),
            count => format!("[0-9]{{{count}}}"),
        };
        let mut alternatives = vec![format!("[1-9][0-9]{{{len},}}")];
        for (index, digit) in digits.bytes().enumerate() {
            let greater = match digit {
                b'9' => continue,
                b'8' => "9".to_owned(),
                digit => format!("[{}-9]", char::from(digit + 1)),
            };
            alternatives.push(format!(
                "{}{greater}{}",
                &digits[..index],
                any_digits(len - index - 1)
            ));
        }
        alternatives.push(digits);
        format!("0*(?:{})", alternatives.join("|"))
    }

    schema_type!(
        /// validate.rs `normalize_signal`: any case, with or without `SIG`.
        StopSignal,
        {
            let short = STOP_SIGNALS.map(|signal| signal.strip_prefix("SIG").unwrap_or(signal));
            let names: Vec<&str> = STOP_SIGNALS.iter().chain(short.iter()).copied().collect();
            let pattern = format!(
                "^(?:{})?(?:{})$",
                any_case("SIG"),
                short.map(any_case).join("|")
            );
            json_schema!({
                "description": "SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH or SIGKILL; the `SIG` prefix may be left out, and case does not matter.",
                "type": "string",
                "anyOf": [{"enum": names}, {"pattern": pattern}]
            })
        }
    );

    /// `term` -> `[Tt][Ee][Rr][Mm]`: JSON Schema patterns have no case-insensitive flag.
    fn any_case(word: &str) -> String {
        word.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    schema_type!(
        /// validate.rs `check_secret_name`.
        SecretName,
        json_schema!({
            "description": "A secret set with `wharf secret set NAME`: up to 64 letters, digits, `_`, `.` and `-`, starting with a letter or digit.",
            "anyOf": [
                {"type": "string", "pattern": SECRET_NAME_PATTERN},
                as_written_scalar(true)
            ]
        })
    );

    schema_type!(
        /// validate.rs `check_volume_name`.
        VolumeName,
        json_schema!({
            "description": "Up to 64 letters, digits, `_`, `.` and `-`, starting with a letter or digit.",
            "anyOf": [
                {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                as_written_scalar(true)
            ]
        })
    );

    /// Text, where YAML may read a number or a boolean: wharf takes it as written.
    pub(super) struct Text;

    impl JsonSchema for Text {
        fn inline_schema() -> bool {
            true
        }

        fn schema_name() -> Cow<'static, str> {
            "Text".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({"type": ["string", "number", "boolean"]})
        }
    }

    /// A command and its arguments: validate.rs refuses an empty `command` or
    /// `health.exec`.
    pub(super) struct Command;

    impl JsonSchema for Command {
        fn inline_schema() -> bool {
            true
        }

        fn schema_name() -> Cow<'static, str> {
            "Command".into()
        }

        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "array",
                "items": generator.subschema_for::<Text>(),
                "minItems": 1
            })
        }
    }

    /// validate.rs `check_env_name`: not empty, without `=` or whitespace (ASCII
    /// whitespace here), and not a name wharf sets itself.
    pub(super) fn env_names() -> Value {
        json!({
            "pattern": r"^[^=\t-\r ]+$",
            "not": {
                "description": "set by wharf in every container",
                "enum": RESERVED_ENV
            }
        })
    }

    /// validate.rs `check_health`: exactly one of exec, tcp and http (null is unset).
    pub(super) fn one_health_check() -> Value {
        let checks = ["exec", "tcp", "http"].map(|check| {
            json!({
                "required": [check],
                "properties": {check: {"not": {"type": "null"}}}
            })
        });
        Value::Array(Vec::from(checks))
    }

    /// validate.rs `check_volumes`: the fields each type of volume takes (null is
    /// unset).
    pub(super) fn volume_fields_by_type() -> Value {
        let is_type =
            |kind: &str| json!({"required": ["type"], "properties": {"type": {"const": kind}}});
        let unset = |field: &str| json!({"properties": {field: {"type": "null"}}});
        json!([
            {
                "description": "`source` is required with type bind, and only for it",
                "if": is_type("bind"),
                "then": {"required": ["source"], "properties": {"source": {"type": "string"}}},
                "else": unset("source")
            },
            {
                "description": "`name` is for type volume only",
                "if": is_type("volume"),
                "else": unset("name")
            },
            {
                "description": "`size` is for type tmpfs only",
                "if": is_type("tmpfs"),
                "else": unset("size")
            }
        ])
    }

    /// validate.rs rules between fields of a service.
    pub(super) fn service_rules() -> Value {
        let bridge = Network::Bridge.name();
        let start_first = UpdateOrder::StartFirst.name();
        json!([
            {
                "description": "`ports` are published only on network: bridge (the default)",
                "if": {
                    "required": ["network"],
                    "properties": {"network": {"enum": [Network::Host.name(), Network::None.name()]}}
                },
                "then": {"properties": {"ports": {"maxItems": 0}}}
            },
            {
                "description": "`update.max_unavailable: 0` needs order: start-first, written or by default (the default on network: bridge)",
                "if": {
                    "required": ["update"],
                    "properties": {
                        "update": {
                            "required": ["max_unavailable"],
                            "properties": {"max_unavailable": {"const": 0}}
                        }
                    }
                },
                "then": {
                    "anyOf": [
                        {
                            "properties": {
                                "update": {
                                    "required": ["order"],
                                    "properties": {"order": {"const": start_first}}
                                }
                            }
                        },
                        {
                            "properties": {
                                "network": {"const": bridge},
                                "update": {"properties": {"order": {"type": "null"}}}
                            }
                        }
                    ]
                }
            }
        ])
    }
}
