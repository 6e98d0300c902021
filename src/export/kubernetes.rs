//! A Deployment per service; a Service for its published ports (or, with `network:
//! host`, for the port its health check names, which it binds on the host); a
//! PersistentVolumeClaim per named volume; and a ConfigMap per service with configs,
//! each config mounted at its target.
//!
//! Secrets are referred to by name, never by value (their values stay on the host):
//! a Kubernetes Secret with one key, `value`, per wharf secret, which the user
//! creates (a warning says how). Env values from a secret become `secretKeyRef`s;
//! mounted secrets, `secret` volumes.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::Warning;
use crate::manifest::{
    ConfigFile, EnvValue, Health, LogPolicy, Network, Protocol, PullPolicy, RestartPolicy, Service,
    ServiceSpec, UpdateOrder, Volume, VolumeKind,
};

/// Size given to the claim of each named volume (wharf volumes have none).
const CLAIM_SIZE: &str = "1Gi";

/// The key of the one value of each exported secret's Kubernetes Secret.
const SECRET_KEY: &str = "value";

/// The pod volume of a service's ConfigMap.
const CONFIG_VOLUME: &str = "configs";

/// What Kubernetes allows a ConfigMap to hold (keys and values together).
const MAX_CONFIG_MAP_BYTES: usize = 1 << 20;

/// Modes wharf gives configs and secrets when the manifest gives none.
const DEFAULT_CONFIG_MODE: u32 = 0o444;
const DEFAULT_SECRET_MODE: u32 = 0o400;

/// Said of a secret used in env.
const ENV_NEWLINE: &str =
    " (the file without a trailing newline: Kubernetes keeps one in env values, wharf does not)";

/// Pod template annotation with a digest of the service's ConfigMap: an edit of a
/// config changes the template, so the Deployment replaces its pods, as wharf
/// replaces its containers (a ConfigMap mounted with subPath is never updated in
/// running pods).
const CONFIG_DIGEST_ANNOTATION: &str = "checksum/config";

/// The Kubernetes objects for `services`, in order, and what could not be carried over.
pub fn to_kubernetes(services: &[Service]) -> (Vec<Value>, Vec<Warning>) {
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    let mut claims: BTreeSet<&str> = BTreeSet::new();
    let secret_names = kube_secret_names(services);
    let env_secrets: BTreeSet<&str> = services
        .iter()
        .flat_map(|service| service.spec.env.values().filter_map(EnvValue::secret))
        .collect();
    let mut announced: BTreeSet<&str> = BTreeSet::new();
    for service in services {
        let mut warn = |field: &str, message: String| {
            warnings.push(Warning {
                location: service.location(),
                service: service.name().to_owned(),
                field: field.to_owned(),
                message,
            })
        };
        let spec = &service.spec;
        let config_keys = config_keys(&spec.configs);
        if !spec.configs.is_empty() {
            objects.push(config_map(service, &config_keys, &mut warn));
        }
        objects.push(workload(service, &config_keys, &secret_names, &mut warn));
        if !spec.ports.is_empty() {
            objects.push(published_ports_service(spec, &mut warn));
        } else if spec.network == Network::Host {
            // Without ports, only a host-network service is reachable from elsewhere.
            if let Some(port) = spec.health.as_ref().and_then(health_port) {
                let port =
                    json!({ "name": format!("port-{port}"), "port": port, "targetPort": port });
                objects.push(kube_service(spec, vec![port]));
            }
        }
        for name in spec.volumes.iter().filter_map(|v| v.name.as_ref()) {
            if claims.insert(name) {
                warn(
                    "volumes",
                    format!("named volume {name} becomes a PersistentVolumeClaim of {CLAIM_SIZE} (ReadWriteOnce); set the size and access mode your cluster needs"),
                );
                objects.push(claim(name));
            }
        }
        // Each secret once, where it is first used.
        for name in spec.secret_names() {
            if !announced.insert(name) {
                continue;
            }
            let field = service
                .secret_uses
                .get(name)
                .map_or("secrets", |(field, _)| field.as_str());
            let kube = kube_secret(&secret_names, name);
            if kube != name {
                warn(
                    field,
                    format!("secret name {name} is not a Kubernetes name (lowercase letters, digits, '-' and '.'); the pods refer to the Secret {kube}"),
                );
            }
            let newline = if env_secrets.contains(name) {
                ENV_NEWLINE
            } else {
                ""
            };
            warn(
                field,
                format!("secret {name} is referred to by name and its value is not exported: create the Secret in the cluster before applying, with the value in key \"{SECRET_KEY}\": kubectl create secret generic {kube} --from-file={SECRET_KEY}=./{name}.txt{newline}"),
            );
        }
    }
    (objects, warnings)
}

/// The Kubernetes name of each secret the services use: lowercase, `_` as `-`, each
/// dot-separated part trimmed of `-` (a DNS subdomain, as Kubernetes names are).
/// Names that are already valid keep them; two secrets whose names map to the same
/// one get `-2`, `-3`... in name order.
fn kube_secret_names(services: &[Service]) -> BTreeMap<&str, String> {
    let used: BTreeSet<&str> = services
        .iter()
        .flat_map(|service| service.spec.secret_names())
        .collect();
    let mut ordered: Vec<&str> = used.into_iter().collect();
    // Stable: names in order, those that need no change first.
    ordered.sort_by_key(|name| kube_name(name) != *name);
    let mut taken = BTreeSet::new();
    ordered
        .into_iter()
        .map(|name| {
            let base = kube_name(name);
            let mut kube = base.clone();
            let mut suffix = 2;
            while !taken.insert(kube.clone()) {
                kube = format!("{base}-{suffix}");
                suffix += 1;
            }
            (name, kube)
        })
        .collect()
}

fn kube_secret(names: &BTreeMap<&str, String>, name: &str) -> String {
    names.get(name).cloned().unwrap_or_else(|| kube_name(name))
}

/// `name` as a DNS subdomain: lowercase letters, digits, `-` and `.`, each
/// dot-separated part starting and ending with a letter or digit.
fn kube_name(name: &str) -> String {
    let lower: String = name
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
            '.' => '.',
            _ => '-',
        })
        .collect();
    let parts: Vec<&str> = lower
        .split('.')
        .map(|part| part.trim_matches('-'))
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        "secret".to_owned()
    } else {
        parts.join(".")
    }
}

/// The ConfigMap key of each config, in the order of `configs`: its source's file
/// name with characters a key cannot have (`[-._a-zA-Z0-9]`) as `-`, made unique
/// with `-2`, `-3`...
fn config_keys(configs: &[ConfigFile]) -> Vec<String> {
    let mut taken = BTreeSet::new();
    configs
        .iter()
        .map(|config| {
            let source = config.source.as_str();
            let file = source.rsplit_once('/').map_or(source, |(_, file)| file);
            let mut base: String = file
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '-'
                    }
                })
                .take(200)
                .collect();
            // Kubernetes refuses the keys ".", ".." and those starting with "..".
            if base.is_empty() || base == "." || base.starts_with("..") {
                base = format!("config-{base}");
            }
            let mut key = base.clone();
            let mut suffix = 2;
            while !taken.insert(key.clone()) {
                key = format!("{base}-{suffix}");
                suffix += 1;
            }
            key
        })
        .collect()
}

fn config_map_name(spec: &ServiceSpec) -> String {
    format!("{}-config", spec.name)
}

/// The service's configs, by key: UTF-8 content as `data`, anything else base64 in
/// `binaryData`.
fn config_map(service: &Service, keys: &[String], warn: &mut impl FnMut(&str, String)) -> Value {
    let spec = &service.spec;
    let mut data = Map::new();
    let mut binary = Map::new();
    let mut size = 0;
    for (key, content) in keys.iter().zip(&service.config_contents) {
        size += key.len() + content.len();
        if let Ok(text) = std::str::from_utf8(content) {
            data.insert(key.clone(), text.into());
        } else {
            binary.insert(
                key.clone(),
                BASE64_STANDARD.encode(content.as_slice()).into(),
            );
        }
    }
    let name = config_map_name(spec);
    if size > MAX_CONFIG_MAP_BYTES {
        warn(
            "configs",
            format!("the ConfigMap {name} holds {size} bytes, more than the 1 MiB Kubernetes allows; mount the largest files from a volume instead"),
        );
    }
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "labels": labels(spec) },
    });
    if !data.is_empty() {
        object["data"] = data.into();
    }
    if !binary.is_empty() {
        object["binaryData"] = binary.into();
    }
    object
}

/// Hex SHA-256 of the keys and contents of the service's ConfigMap.
fn config_digest(service: &Service, keys: &[String]) -> String {
    let mut hasher = Sha256::new();
    for (key, content) in keys.iter().zip(&service.config_contents) {
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content.as_slice());
    }
    format!("{:x}", hasher.finalize())
}

/// Whether the service's processes run as root, as far as the manifest says.
fn runs_as_root(spec: &ServiceSpec) -> bool {
    spec.user
        .as_deref()
        .and_then(|user| user.split(':').next())
        .is_some_and(|user| user == "0" || user == "root")
}

/// The volumeMounts and volumes that put the configs and secrets at their targets:
/// one file each (subPath), read-only, with the manifest's mode. Kubernetes cannot
/// set a mounted file's owner: what that changes is warned about.
fn file_mounts(
    spec: &ServiceSpec,
    config_keys: &[String],
    secret_names: &BTreeMap<&str, String>,
    warn: &mut impl FnMut(&str, String),
) -> (Vec<Value>, Vec<Value>) {
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let unreadable = |mode: u32| {
        if mode & 0o004 == 0 {
            format!(", so with mode {mode:04o} a process that does not run as root cannot read it unless the pod's securityContext.fsGroup is set and the mode lets the group read (such as 0440); or give a mode others can read (such as 0444)")
        } else {
            String::new()
        }
    };
    let id = |what: &str, value: Option<u32>| value.map(|value| format!("{what} {value}"));
    let mut items = Vec::new();
    for (index, (config, key)) in spec.configs.iter().zip(config_keys).enumerate() {
        let mode = config.mode.map_or(DEFAULT_CONFIG_MODE, |mode| mode.0);
        items.push(json!({ "key": key, "path": key, "mode": mode }));
        mounts.push(json!({
            "name": CONFIG_VOLUME,
            "mountPath": config.target,
            "subPath": key,
            "readOnly": true,
        }));
        // wharf's default owner, root, is Kubernetes' too.
        if config.uid.unwrap_or(0) != 0 || config.gid.unwrap_or(0) != 0 {
            let owner: Vec<String> = [id("uid", config.uid), id("gid", config.gid)]
                .into_iter()
                .flatten()
                .collect();
            warn(
                &format!("configs[{index}]"),
                format!(
                    "the owner ({}) is not carried over: Kubernetes cannot set a mounted file's owner, {} is owned by root (its group is the pod's securityContext.fsGroup when set){}",
                    owner.join(", "),
                    config.target,
                    unreadable(mode)
                ),
            );
        }
    }
    if !items.is_empty() {
        volumes.push(json!({
            "name": CONFIG_VOLUME,
            "configMap": { "name": config_map_name(spec), "items": items },
        }));
    }
    for (index, secret) in spec.secrets.iter().enumerate() {
        let volume = format!("secret-{index}");
        let mode = secret.mode.map_or(DEFAULT_SECRET_MODE, |mode| mode.0);
        let target = secret.target();
        volumes.push(json!({
            "name": volume,
            "secret": {
                "secretName": kube_secret(secret_names, &secret.name),
                "items": [{ "key": SECRET_KEY, "path": SECRET_KEY, "mode": mode }],
            },
        }));
        mounts.push(json!({
            "name": volume,
            "mountPath": target,
            "subPath": SECRET_KEY,
            "readOnly": true,
        }));
        // wharf's default owner is the container's user; Kubernetes' is root.
        let owner: Vec<String> = [id("uid", secret.uid), id("gid", secret.gid)]
            .into_iter()
            .flatten()
            .collect();
        let owner = if owner.is_empty() {
            "the container's user".to_owned()
        } else {
            owner.join(", ")
        };
        let root_owned = match (secret.uid, secret.gid) {
            (None, None) => runs_as_root(spec),
            (uid, gid) => uid.unwrap_or(0) == 0 && gid.unwrap_or(0) == 0,
        };
        if !root_owned {
            warn(
                &format!("secrets[{index}]"),
                format!(
                    "the owner ({owner}) is not carried over: Kubernetes cannot set a mounted file's owner, {target} is owned by root (its group is the pod's securityContext.fsGroup when set){}",
                    unreadable(mode)
                ),
            );
        }
    }
    (mounts, volumes)
}

fn labels(spec: &ServiceSpec) -> Map<String, Value> {
    let mut labels: Map<String, Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    labels.insert("app.kubernetes.io/name".into(), spec.name.clone().into());
    labels.insert("app.kubernetes.io/managed-by".into(), "wharf-export".into());
    labels
}

fn selector(spec: &ServiceSpec) -> Value {
    json!({ "app.kubernetes.io/name": spec.name })
}

/// The Deployment of a service, or the Job (CronJob with a schedule) of a job.
fn workload(
    service: &Service,
    config_keys: &[String],
    secret_names: &BTreeMap<&str, String>,
    warn: &mut impl FnMut(&str, String),
) -> Value {
    let spec = &service.spec;
    let mut container = Map::new();
    container.insert("name".into(), spec.name.clone().into());
    container.insert("image".into(), spec.image.clone().into());
    container.insert(
        "imagePullPolicy".into(),
        match spec.pull {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
        .into(),
    );
    if let Some(command) = &spec.command {
        container.insert("command".into(), json!(command));
    }
    if let Some(args) = &spec.args {
        container.insert("args".into(), json!(args));
    }
    if !spec.env.is_empty() {
        let env: Vec<Value> = spec
            .env
            .iter()
            .map(|(name, value)| match value {
                EnvValue::Text(text) => json!({ "name": name, "value": text }),
                EnvValue::Secret { secret } => json!({
                    "name": name,
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": kube_secret(secret_names, secret),
                            "key": SECRET_KEY,
                        },
                    },
                }),
            })
            .collect();
        container.insert("env".into(), env.into());
    }
    if let Some(workdir) = &spec.workdir {
        container.insert("workingDir".into(), workdir.clone().into());
    }
    if let Some(user) = &spec.user {
        match security_context(user) {
            Some(context) => {
                container.insert("securityContext".into(), context);
            }
            None => warn(
                "user",
                format!("\"{user}\" is a name; Kubernetes needs numeric ids (runAsUser), so the image's user is used: set a uid"),
            ),
        }
    }
    if let Some(resources) = resources(spec, warn) {
        container.insert("resources".into(), resources);
    }
    let ports = container_ports(spec);
    if !ports.is_empty() {
        container.insert("ports".into(), ports.into());
    }
    if let Some(health) = &spec.health {
        probes(health, &mut container, warn);
    }
    // wharf drains only replicas that receive published ports; the Service's
    // endpoints are what a preStop sleep gives time to forget the pod.
    let drain = spec.stop.drain.as_std();
    let drains = !spec.ports.is_empty() && !drain.is_zero();
    if drains {
        container.insert(
            "lifecycle".into(),
            json!({ "preStop": { "sleep": { "seconds": whole_seconds(drain) } } }),
        );
    }
    let (mut mounts, mut volumes) = volumes(&spec.volumes);
    let (file_mounts, file_volumes) = file_mounts(spec, config_keys, secret_names, warn);
    mounts.extend(file_mounts);
    volumes.extend(file_volumes);
    if !mounts.is_empty() {
        container.insert("volumeMounts".into(), mounts.into());
    }

    for (dependency, condition) in &spec.depends_on {
        warn(
            &format!("depends_on.{dependency}"),
            format!("{} has no Kubernetes equivalent: Kubernetes starts pods in any order (a Job's pod too); make the container retry until {dependency} is ready, or add an init container that waits for it", condition.name()),
        );
    }
    if spec.network == Network::None {
        warn(
            "network",
            "none has no Kubernetes equivalent (every pod has a network); the pod gets the cluster's network".into(),
        );
    }
    match spec.restart {
        _ if spec.is_job() => {}
        RestartPolicy::Always => {}
        other => warn(
            "restart",
            format!("{} has no Deployment equivalent: a Deployment always restarts its containers (use a Job for run-to-completion work)", other.name()),
        ),
    }
    if spec.logs != LogPolicy::default() {
        warn(
            "logs",
            "is per node in Kubernetes (the kubelet's containerLogMaxSize and containerLogMaxFiles), not per workload; the pod gets the node's".into(),
        );
    }
    if !matches!(spec.stop.signal.as_str(), "SIGTERM") {
        warn(
            "stop.signal",
            format!("Kubernetes stops containers with SIGTERM (or the image's STOPSIGNAL), not {}; set STOPSIGNAL in the image", spec.stop.signal),
        );
    }

    let mut pod = Map::new();
    pod.insert("containers".into(), json!([Value::Object(container)]));
    // The grace period counts from the start of the preStop hook, as wharf's drain
    // comes before the stop timeout.
    let mut grace = spec.stop.timeout.as_std();
    if drains {
        grace += drain;
    }
    pod.insert(
        "terminationGracePeriodSeconds".into(),
        whole_seconds(grace).into(),
    );
    if !volumes.is_empty() {
        pod.insert("volumes".into(), volumes.into());
    }
    if spec.is_job() {
        // A Job: one pod run to completion, tried again `retries` times.
        pod.insert("restartPolicy".into(), "Never".into());
        let mut job_spec = json!({
            "backoffLimit": spec.retries.unwrap_or(0),
            "template": {
                "metadata": { "labels": labels(spec) },
                "spec": pod,
            },
        });
        if let Some(timeout) = spec.timeout {
            job_spec["activeDeadlineSeconds"] = whole_seconds(timeout.as_std()).into();
            if spec.retries.unwrap_or(0) > 0 {
                warn(
                    "timeout",
                    "is per try in wharf; activeDeadlineSeconds bounds the whole Job, retries included: raise it to cover them".into(),
                );
            }
        }
        if let Some(schedule) = &spec.schedule {
            warn(
                "schedule",
                "wharf runs it in the host's local time zone; a CronJob without spec.timeZone runs in the kube-controller-manager's (often UTC): set timeZone".into(),
            );
            // Forbid: as under wharf, a run still going skips the next.
            return json!({
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": { "name": spec.name, "labels": labels(spec) },
                "spec": {
                    "schedule": schedule,
                    "concurrencyPolicy": "Forbid",
                    "jobTemplate": { "spec": job_spec },
                },
            });
        }
        return json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": { "name": spec.name, "labels": labels(spec) },
            "spec": job_spec,
        });
    }
    let (max_surge, max_unavailable) = match spec.update_order() {
        UpdateOrder::StopFirst => (0, spec.update.max_unavailable),
        UpdateOrder::StartFirst => (spec.update.max_unavailable.max(1), 0),
    };
    let mut deployment_spec = json!({
        "replicas": spec.replicas,
        "selector": { "matchLabels": selector(spec) },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": max_surge, "maxUnavailable": max_unavailable },
        },
        "template": {
            "metadata": { "labels": labels(spec) },
            "spec": pod,
        },
    });
    if let Some(deadline) = spec.update.deadline {
        deployment_spec["progressDeadlineSeconds"] = whole_seconds(deadline.as_std()).into();
    }
    if !spec.configs.is_empty() {
        deployment_spec["template"]["metadata"]["annotations"] =
            json!({ CONFIG_DIGEST_ANNOTATION: config_digest(service, config_keys) });
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": spec.name, "labels": labels(spec) },
        "spec": deployment_spec,
    })
}

/// `uid[:gid]` as runAsUser/runAsGroup; None for names.
fn security_context(user: &str) -> Option<Value> {
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let uid: u64 = uid.parse().ok()?;
    let mut context = json!({ "runAsUser": uid });
    if let Some(gid) = gid {
        context["runAsGroup"] = gid.parse::<u64>().ok()?.into();
    }
    Some(context)
}

fn resources(spec: &ServiceSpec, warn: &mut impl FnMut(&str, String)) -> Option<Value> {
    let mut limits = Map::new();
    if let Some(cpus) = spec.resources.cpus {
        limits.insert(
            "cpu".into(),
            format!("{}m", (cpus * 1000.0).round() as u64).into(),
        );
    }
    if let Some(memory) = spec.resources.memory {
        limits.insert("memory".into(), memory.to_string().into());
    }
    if let Some(pids) = spec.resources.pids {
        warn(
            "resources.pids",
            format!("{pids} has no per-container Kubernetes equivalent (the kubelet's podPidsLimit applies to every pod of a node)"),
        );
    }
    // Requests equal to the limits: what wharf reserves is what it limits.
    (!limits.is_empty()).then(|| json!({ "requests": limits, "limits": limits }))
}

fn health_port(health: &Health) -> Option<u16> {
    health
        .tcp
        .as_ref()
        .map(|tcp| tcp.port)
        .or(health.http.as_ref().map(|http| http.port))
}

fn probes(
    health: &Health,
    container: &mut Map<String, Value>,
    warn: &mut impl FnMut(&str, String),
) {
    let mut check = Map::new();
    if let Some(command) = &health.exec {
        check.insert("exec".into(), json!({ "command": command }));
    } else if let Some(tcp) = &health.tcp {
        check.insert("tcpSocket".into(), json!({ "port": tcp.port }));
    } else if let Some(http) = &health.http {
        check.insert(
            "httpGet".into(),
            json!({ "path": http.path, "port": http.port }),
        );
    }
    let mut seconds = |field: &str, duration: std::time::Duration| {
        let whole = whole_seconds(duration);
        if duration.subsec_millis() != 0 || duration.is_zero() {
            warn(
                &format!("health.{field}"),
                format!(
                    "Kubernetes counts whole seconds: {} becomes {whole}s",
                    humantime::format_duration(duration)
                ),
            );
        }
        whole
    };
    let period = seconds("interval", health.interval.as_std());
    let timeout = seconds("timeout", health.timeout.as_std());
    let mut probe = check.clone();
    probe.insert("periodSeconds".into(), period.into());
    probe.insert("timeoutSeconds".into(), timeout.into());
    probe.insert("failureThreshold".into(), health.retries.into());
    container.insert("livenessProbe".into(), probe.clone().into());
    container.insert("readinessProbe".into(), probe.into());
    if !health.start_period.is_zero() {
        // Docker's start period: checks every start_interval, failures not counted.
        let every = seconds("start_interval", health.start_interval.as_std());
        let period = health.start_period.as_std().as_secs_f64();
        let mut startup = check;
        startup.insert("periodSeconds".into(), every.into());
        startup.insert("timeoutSeconds".into(), timeout.into());
        startup.insert(
            "failureThreshold".into(),
            ((period / every as f64).ceil() as u64).max(1).into(),
        );
        container.insert("startupProbe".into(), startup.into());
    }
}

/// (volumeMounts, volumes) for the pod.
fn volumes(volumes: &[Volume]) -> (Vec<Value>, Vec<Value>) {
    let mut mounts = Vec::new();
    let mut pod_volumes = Vec::new();
    for (index, volume) in volumes.iter().enumerate() {
        let name = format!("volume-{index}");
        let mut mount = json!({ "name": name, "mountPath": volume.target });
        if volume.readonly {
            mount["readOnly"] = true.into();
        }
        mounts.push(mount);
        let source = match (volume.kind, &volume.name, &volume.source) {
            (VolumeKind::Volume, Some(claim), _) => {
                json!({ "persistentVolumeClaim": { "claimName": claim } })
            }
            (VolumeKind::Volume, None, _) => json!({ "emptyDir": {} }),
            // Validation requires a source for binds.
            (VolumeKind::Bind, _, path) => {
                json!({ "hostPath": { "path": path.as_deref().unwrap_or_default() } })
            }
            (VolumeKind::Tmpfs, _, _) => match volume.size {
                Some(size) => {
                    json!({ "emptyDir": { "medium": "Memory", "sizeLimit": size.to_string() } })
                }
                None => json!({ "emptyDir": { "medium": "Memory" } }),
            },
        };
        let mut pod_volume = json!({ "name": name });
        if let (Value::Object(target), Value::Object(fields)) = (&mut pod_volume, source) {
            target.extend(fields);
        }
        pod_volumes.push(pod_volume);
    }
    (mounts, pod_volumes)
}

fn kube_protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// The container's ports: those published, then the health check's (TCP), each once.
fn container_ports(spec: &ServiceSpec) -> Vec<Value> {
    let published = spec
        .ports
        .iter()
        .map(|port| (port.container, port.protocol));
    let checked = spec
        .health
        .as_ref()
        .and_then(health_port)
        .map(|port| (port, Protocol::Tcp));
    let mut listed = BTreeSet::new();
    published
        .chain(checked)
        .filter(|port| listed.insert(*port))
        .map(|(port, protocol)| {
            json!({ "containerPort": port, "protocol": kube_protocol(protocol) })
        })
        .collect()
}

/// A ClusterIP Service with a port per published host port (port: the host port,
/// targetPort: the container's).
fn published_ports_service(spec: &ServiceSpec, warn: &mut impl FnMut(&str, String)) -> Value {
    let mut listed = BTreeSet::new();
    let mut ports = Vec::new();
    for (index, port) in spec.ports.iter().enumerate() {
        let protocol = port.protocol.name();
        if let Some(address) = port.host_ip {
            warn(
                &format!("ports[{index}].host_ip"),
                format!("{address} has no Service equivalent: a Service listens on its cluster address (and, as a NodePort, on every node's)"),
            );
        }
        if !listed.insert((port.host, port.protocol)) {
            warn(
                &format!("ports[{index}]"),
                format!("{}/{protocol} is published again on another host_ip; a Service has one port {}/{protocol}, so this one is left out", port.host, port.host),
            );
            continue;
        }
        ports.push(json!({
            "name": format!("{protocol}-{}", port.host),
            "port": port.host,
            "targetPort": port.container,
            "protocol": kube_protocol(port.protocol),
        }));
    }
    let published: Vec<String> = spec
        .ports
        .iter()
        .map(|port| format!("{}/{}", port.host, port.protocol.name()))
        .collect();
    warn(
        "ports",
        format!(
            "host ports become ports of a ClusterIP Service, reachable only inside the cluster ({} on Service \"{}\"): to expose them, make it a NodePort or LoadBalancer Service, or add an Ingress",
            published.join(", "),
            spec.name
        ),
    );
    kube_service(spec, ports)
}

/// A ClusterIP Service named after the service, selecting its pods, with `ports`.
fn kube_service(spec: &ServiceSpec, ports: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": spec.name, "labels": labels(spec) },
        "spec": {
            "selector": selector(spec),
            "ports": ports,
        },
    })
}

fn claim(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": { "requests": { "storage": CLAIM_SIZE } },
        },
    })
}

/// Kubernetes counts whole seconds, at least 1.
fn whole_seconds(duration: std::time::Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_become_dns_subdomains() {
        assert_eq!(kube_name("dbpass"), "dbpass");
        assert_eq!(kube_name("tls.key"), "tls.key");
        assert_eq!(kube_name("DB_Pass"), "db-pass");
        assert_eq!(kube_name("db_"), "db");
        assert_eq!(kube_name("a._b"), "a.b");
        assert_eq!(kube_name("a..b"), "a.b");
    }

    #[test]
    fn config_keys_are_valid_and_unique() {
        let config = |source: &str| -> ConfigFile {
            serde_json::from_value(json!({ "source": source, "target": "/etc/x" }))
                .expect("a config")
        };
        let configs = [
            config("app.conf"),
            config("other/app.conf"),
            config("app.conf-2"),
            config("my config.ini"),
            config("..hidden"),
            config("étoile.txt"),
        ];
        assert_eq!(
            config_keys(&configs),
            [
                "app.conf",
                "app.conf-2",
                "app.conf-2-2",
                "my-config.ini",
                "config-..hidden",
                "-toile.txt",
            ]
        );
    }
}
