//! A Deployment per service; a Service for its published ports (or, with `network:
//! host`, for the port its health check names, which it binds on the host); and a
//! PersistentVolumeClaim per named volume.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::Warning;
use crate::manifest::{
    Health, LogPolicy, Network, Protocol, PullPolicy, RestartPolicy, Service, ServiceSpec,
    UpdateOrder, Volume, VolumeKind,
};

/// Size given to the claim of each named volume (wharf volumes have none).
const CLAIM_SIZE: &str = "1Gi";

/// The Kubernetes objects for `services`, in order, and what could not be carried over.
pub fn to_kubernetes(services: &[Service]) -> (Vec<Value>, Vec<Warning>) {
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    let mut claims: BTreeSet<&str> = BTreeSet::new();
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
        objects.push(deployment(spec, &mut warn));
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
    }
    (objects, warnings)
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

fn deployment(spec: &ServiceSpec, warn: &mut impl FnMut(&str, String)) -> Value {
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
            .map(|(name, value)| json!({ "name": name, "value": value }))
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
    let (mounts, volumes) = volumes(&spec.volumes);
    if !mounts.is_empty() {
        container.insert("volumeMounts".into(), mounts.into());
    }

    if spec.network == Network::None {
        warn(
            "network",
            "none has no Kubernetes equivalent (every pod has a network); the pod gets the cluster's network".into(),
        );
    }
    match spec.restart {
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
