//! Checks that serde cannot express (ranges, formats, fields that go together) and
//! normalisation (full image reference, signal names). Pure: spec in, spec or
//! every problem out, each at a field path.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::image_ref::ImageRef;
use super::spec::{
    EnvValue, Health, Network, PortSpec, ServiceSpec, UpdateOrder, Volume, VolumeKind,
    MAX_LOG_FILES,
};
use super::units::{ByteSize, Duration};
use super::yaml::{display_path, PathSegment};

pub const MAX_NAME_LEN: usize = 48;
pub const MAX_REPLICAS: u32 = 1000;
/// A job's retries: with the pause doubling up to a minute, about 1.5 hours of them.
pub const MAX_RETRIES: u32 = 100;
const MIN_MEMORY: ByteSize = ByteSize::from_bytes(6 << 20);
/// A log file holds at least one whole line (64 KiB at most) after a rotation.
const MIN_LOG_SIZE: ByteSize = ByteSize::from_bytes(64 << 10);
/// cpus becomes a CFS quota over a 100 ms period; the kernel needs at least 1 ms.
const MIN_CPUS: f64 = 0.01;
/// Environment variables wharf sets itself in every container.
pub const RESERVED_ENV: [&str; 2] = ["WHARF_SERVICE", "WHARF_REPLICA"];
/// A drain holds a stop (and so a rollout) back; a minute is more than a request
/// that is still worth waiting for needs.
const MAX_DRAIN: Duration = Duration::from_secs(60);
const STOP_SIGNALS: [&str; 8] = [
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGKILL",
];

/// A problem found by validation, at a field path of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub path: Vec<PathSegment>,
    pub message: String,
}

/// Validates a deserialized spec and returns it normalised, or every problem found.
pub fn validate(mut spec: ServiceSpec) -> Result<ServiceSpec, Vec<Invalid>> {
    let mut check = Checker::default();

    if let Err(message) = check_name(&spec.name) {
        check.fail(&[key("name")], message);
    }
    match normalize_image(&spec.image) {
        Ok(full) => spec.image = full,
        Err(message) => check.fail(&[key("image")], message),
    }
    if spec.replicas > MAX_REPLICAS {
        check.fail(
            &[key("replicas")],
            format!(
                "{} is more than the {MAX_REPLICAS} replicas one service may have",
                spec.replicas
            ),
        );
    }
    for (field, list) in [("command", &spec.command), ("args", &spec.args)] {
        for (index, item) in list.iter().flatten().enumerate() {
            if item.contains('\0') {
                check.fail(
                    &[key(field), PathSegment::Index(index)],
                    "contains a NUL byte".into(),
                );
            }
        }
    }
    if matches!(&spec.command, Some(command) if command.is_empty()) {
        check.fail(
            &[key("command")],
            "is empty; remove `command` to use the image's entrypoint".into(),
        );
    }
    check_env(&mut spec, &mut check);
    if let Some(workdir) = &spec.workdir {
        if let Err(message) = check_absolute(workdir) {
            check.fail(&[key("workdir")], message);
        }
    }
    if let Some(user) = &spec.user {
        if let Err(message) = check_user(user) {
            check.fail(&[key("user")], message);
        }
    }
    check_ports(&mut spec, &mut check);
    check_resources(&spec, &mut check);
    check_logs(&spec, &mut check);
    match normalize_signal(&spec.stop.signal) {
        Ok(signal) => spec.stop.signal = signal,
        Err(message) => check.fail(&[key("stop"), key("signal")], message),
    }
    if spec.stop.timeout.is_zero() {
        check.fail(
            &[key("stop"), key("timeout")],
            "must be more than 0s (the time a container gets to exit before SIGKILL)".into(),
        );
    }
    if spec.stop.drain > MAX_DRAIN {
        check.fail(
            &[key("stop"), key("drain")],
            format!(
                "{} is more than the {MAX_DRAIN} a replica may be kept out of rotation before its stop signal; give at most {MAX_DRAIN}",
                spec.stop.drain
            ),
        );
    }
    if let Some(health) = &spec.health {
        check_health(health, &mut check);
    }
    check_update(&spec, &mut check);
    check_volumes(&spec.volumes, &mut check);
    check_files(&mut spec, &mut check);
    check_depends_on(&spec, &mut check);
    if let Some(Err(message)) = spec.schedule.as_deref().map(parse_schedule) {
        check.fail(&[key("schedule")], message);
    }
    if spec.retries.is_some_and(|retries| retries > MAX_RETRIES) {
        check.fail(
            &[key("retries")],
            format!(
                "at most {MAX_RETRIES}: a job that fails that often needs fixing, not retrying"
            ),
        );
    }
    if !spec.is_job() {
        for (field, set) in [
            ("retries", spec.retries.is_some()),
            ("timeout", spec.timeout.is_some()),
            ("schedule", spec.schedule.is_some()),
        ] {
            if set {
                check.fail(
                    &[key(field)],
                    format!("`{field}` applies to jobs (kind: Job) only"),
                );
            }
        }
    } else if spec.timeout.is_some_and(|t| t.is_zero()) {
        check.fail(&[key("timeout")], "must be more than 0s".into());
    }
    if spec.is_job() && spec.health.is_some() {
        check.fail(
            &[key("health")],
            "a job runs to completion: its exit code says whether it worked; remove `health`"
                .into(),
        );
    }
    for label in spec.labels.keys() {
        if label.is_empty() {
            check.fail(&[key("labels")], "label names must not be empty".into());
        }
    }

    if check.found.is_empty() {
        Ok(spec)
    } else {
        Err(check.found)
    }
}

#[derive(Default)]
struct Checker {
    found: Vec<Invalid>,
}

impl Checker {
    fn fail(&mut self, path: &[PathSegment], message: String) {
        self.found.push(Invalid {
            path: path.to_vec(),
            message,
        });
    }
}

fn key(name: &str) -> PathSegment {
    PathSegment::Key(name.to_owned())
}

/// A DNS label of at most [`MAX_NAME_LEN`] characters, so `<name>-<replica>` stays a
/// valid hostname.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !valid_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "invalid name \"{name}\" (use 1 to {MAX_NAME_LEN} lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// Completes short names as Docker does: `busybox` -> `docker.io/library/busybox:latest`.
pub fn normalize_image(image: &str) -> Result<String, String> {
    image
        .parse::<ImageRef>()
        .map(|reference| reference.to_string())
        .map_err(|err| {
            format!(
                "invalid image reference \"{image}\": {err}; write [registry/]repository[:tag][@sha256:digest], e.g. docker.io/library/busybox:1.36"
            )
        })
}

fn check_env(spec: &mut ServiceSpec, check: &mut Checker) {
    for (name, value) in &spec.env {
        let path = [key("env"), key(name)];
        if let Err(message) = check_env_name(name) {
            check.fail(&path, message);
        }
        match value {
            EnvValue::Text(text) if text.contains('\0') => {
                check.fail(&path, "value contains a NUL byte".into())
            }
            EnvValue::Secret { secret } => {
                if let Err(message) = check_secret_name(secret) {
                    check.fail(&[key("env"), key(name), key("secret")], message);
                }
            }
            EnvValue::Text(_) => {}
        }
    }
    for (index, file) in spec.env_file.iter_mut().enumerate() {
        match check_relative(file.as_str()) {
            Ok(normalized) => file.0 = normalized,
            Err(message) => check.fail(&[key("env_file"), PathSegment::Index(index)], message),
        }
    }
}

/// An environment variable name: not empty, no `=` or NUL, not one wharf sets.
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains('=')
        || name.contains('\0')
        || name.contains(char::is_whitespace)
    {
        Err(format!(
            "invalid variable name \"{name}\" (must be non-empty, without '=' or spaces)"
        ))
    } else if RESERVED_ENV.contains(&name) {
        Err(format!(
            "{name} is set by wharf in every container; choose another name"
        ))
    } else {
        Ok(())
    }
}

/// A secret name becomes a file name under the root (see `SECRET_NAME_PATTERN`).
pub fn check_secret_name(name: &str) -> Result<(), String> {
    check_file_name("secret", name)
}

/// A path inside the manifest's directory: relative, without `..`; returned
/// normalised (`./conf//app.conf` is `conf/app.conf`).
fn check_relative(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("is empty; give a file relative to the manifest's directory".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; give a file relative to the manifest's directory (files outside it are mounted with a bind volume)"
        ));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!(
            "{path:?} leaves the manifest's directory ('..'); files must be inside it"
        ));
    }
    if path.contains(char::is_control) {
        return Err(format!("{path:?} contains control characters"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Err(format!(
            "{path:?} is the manifest's directory; give a file in it"
        ));
    }
    Ok(parts.join("/"))
}

/// At most this many configs, and as many secrets, per service: each is a mount and
/// a file in memory for every replica.
pub const MAX_FILES_PER_SERVICE: usize = 64;
/// At most this many env files per service.
pub const MAX_ENV_FILES: usize = 16;
/// Where wharf mounts files of its own, or the kernel's file systems are: no config
/// or secret goes there.
const RESERVED_TARGETS: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
const RESERVED_TARGET_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Configs and secrets: sources and names (sources normalised), and targets that are
/// absolute, normalised, mounted once (volumes' targets included), not in /proc,
/// /sys, /dev nor one of the /etc files wharf writes, not inside one another nor
/// inside a bind volume (whose host directory would get the mount point). Secrets
/// get their default target.
fn check_files(spec: &mut ServiceSpec, check: &mut Checker) {
    for (list, count, max) in [
        ("configs", spec.configs.len(), MAX_FILES_PER_SERVICE),
        ("secrets", spec.secrets.len(), MAX_FILES_PER_SERVICE),
        ("env_file", spec.env_file.len(), MAX_ENV_FILES),
    ] {
        if count > max {
            check.fail(
                &[key(list)],
                format!("{count} entries, more than the {max} a service may have"),
            );
        }
    }
    let mut targets: HashMap<String, String> = spec
        .volumes
        .iter()
        .enumerate()
        .map(|(index, v)| (normalize_absolute(&v.target), format!("volumes[{index}]")))
        .collect();
    let bind_targets: Vec<(String, String)> = spec
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Bind)
        .map(|v| {
            (
                normalize_absolute(&v.target),
                v.source.clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut file_targets: Vec<(String, String)> = Vec::new();
    let mut check_target = |target: &str, at: &[PathSegment], check: &mut Checker| {
        if let Err(message) = check_absolute(target) {
            return check.fail(at, message);
        }
        if target.ends_with('/') || target.contains(char::is_control) {
            return check.fail(
                at,
                format!("{target:?} must be the path of a file, without control characters or a trailing '/'"),
            );
        }
        let normalized = normalize_absolute(target);
        let under = |tree: &str| normalized == tree || normalized.starts_with(&format!("{tree}/"));
        let here = display_path(at);
        if RESERVED_TARGETS.contains(&normalized.as_str()) {
            check.fail(at, format!("{normalized} is written by wharf for every container (names on its network); mount the file elsewhere"));
        } else if let Some(tree) = RESERVED_TARGET_TREES.iter().find(|tree| under(tree)) {
            check.fail(at, format!("{normalized} is in {tree}, which the kernel provides; mount the file elsewhere"));
        } else if let Some((_, source)) = bind_targets.iter().find(|(dir, _)| under(dir)) {
            check.fail(at, format!("{normalized} is inside a bind volume: mounting it would create a file in the host directory {source}; mount it elsewhere"));
        } else if let Some(first) = targets.insert(normalized.clone(), here.clone()) {
            check.fail(at, format!("{normalized:?} is already the target of {first}; each target may be mounted once"));
        } else if let Some((other, field)) = file_targets.iter().find(|(other, _)| {
            normalized.starts_with(&format!("{other}/"))
                || other.starts_with(&format!("{normalized}/"))
        }) {
            check.fail(
                at,
                format!(
                    "{normalized} and {other} ({field}) are files: one cannot be inside the other"
                ),
            );
        }
        file_targets.push((normalized, here));
    };
    for (index, config) in spec.configs.iter_mut().enumerate() {
        let at = |field: &str| [key("configs"), PathSegment::Index(index), key(field)];
        match check_relative(config.source.as_str()) {
            Ok(normalized) => config.source.0 = normalized,
            Err(message) => check.fail(&at("source"), message),
        }
        check_target(&config.target, &at("target"), check);
        config.target = normalize_absolute(&config.target);
        check_owner(config.uid, config.gid, &at, check);
    }
    for (index, secret) in spec.secrets.iter_mut().enumerate() {
        let at = |field: &str| [key("secrets"), PathSegment::Index(index), key(field)];
        if let Err(message) = check_secret_name(&secret.name) {
            check.fail(&at("name"), message);
            continue;
        }
        check_target(&secret.target(), &at("target"), check);
        // Normalised: the spec says where the secret is.
        secret.target = Some(normalize_absolute(&secret.target()));
        check_owner(secret.uid, secret.gid, &at, check);
    }
}

/// Dependencies are service names other than its own.
fn check_depends_on(spec: &ServiceSpec, check: &mut Checker) {
    for name in spec.depends_on.keys() {
        let at = [key("depends_on"), key(name)];
        if let Err(message) = check_name(name) {
            check.fail(&at, message);
        } else if *name == spec.name {
            check.fail(&at, format!("{name} cannot depend on itself"));
        }
    }
}

/// Parses a job's schedule: five cron fields; Err says what is wrong.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    // croner's extensions (L, W, #, ?) are not cron's, and Kubernetes refuses them.
    let extension = text.split([' ', '\t', ',', '/', '-']).find(|token| {
        let token = token.to_uppercase();
        let numbered = |suffix: char| {
            token.len() > 1
                && token.ends_with(suffix)
                && token[..token.len() - 1].chars().all(|c| c.is_ascii_digit())
        };
        token.contains(['#', '?', '@'])
            || token == "L"
            || token == "LW"
            || numbered('L')
            || numbered('W')
    });
    if let Some(extension) = extension {
        return Err(format!(
            "\"{text}\" uses \"{extension}\", which is not in cron's syntax; write five fields of numbers, names (JAN, MON), *, lists, ranges and steps, such as \"0 3 * * *\""
        ));
    }
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|err| {
            format!("\"{text}\" is not a schedule: {err}; write five fields, minute hour day-of-month month day-of-week, such as \"0 3 * * *\" (03:00 every day)")
        })
}

/// `uid`/`gid` 4294967295 means "unchanged" to the kernel: not an owner.
fn check_owner(
    uid: Option<u32>,
    gid: Option<u32>,
    at: &dyn Fn(&str) -> [PathSegment; 3],
    check: &mut Checker,
) {
    for (field, id) in [("uid", uid), ("gid", gid)] {
        if id == Some(u32::MAX) {
            check.fail(
                &at(field),
                format!(
                    "{} is not an id (it means \"unchanged\"); give 0 to {}",
                    u32::MAX,
                    u32::MAX - 1
                ),
            );
        }
    }
}

/// `/etc//app/./x.conf/` is `/etc/app/x.conf`.
fn normalize_absolute(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn check_absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "\"{path}\" must be an absolute path (starting with /)"
        ));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("\"{path}\" must not contain '..'"));
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), String> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && !part.starts_with('-')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let mut parts = user.splitn(2, ':');
    let user_part = parts.next().unwrap_or_default();
    let group_ok = parts.next().is_none_or(valid_part);
    if valid_part(user_part) && group_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user \"{user}\" (expected uid[:gid] or name[:group], e.g. 1000:1000 or nobody)"
        ))
    }
}

fn check_logs(spec: &ServiceSpec, check: &mut Checker) {
    let logs = &spec.logs;
    if logs.max_size < MIN_LOG_SIZE {
        check.fail(
            &[key("logs"), key("max_size")],
            format!("{} is below the minimum of {MIN_LOG_SIZE}", logs.max_size),
        );
    }
    if !(1..=MAX_LOG_FILES).contains(&logs.max_files) {
        check.fail(
            &[key("logs"), key("max_files")],
            format!("{} is not between 1 and {MAX_LOG_FILES}", logs.max_files),
        );
    }
}

fn check_resources(spec: &ServiceSpec, check: &mut Checker) {
    let resources = &spec.resources;
    if let Some(cpus) = resources.cpus {
        if !cpus.is_finite() || cpus < MIN_CPUS {
            check.fail(
                &[key("resources"), key("cpus")],
                format!("{cpus} is too small: give at least {MIN_CPUS} CPUs, or remove the limit"),
            );
        }
    }
    if let Some(memory) = resources.memory {
        if memory < MIN_MEMORY {
            check.fail(
                &[key("resources"), key("memory")],
                format!("{memory} is below the minimum of {MIN_MEMORY}"),
            );
        }
    }
    if resources.pids == Some(0) {
        check.fail(
            &[key("resources"), key("pids")],
            "must be at least 1 (the container's first process)".into(),
        );
    }
}

fn normalize_signal(signal: &str) -> Result<String, String> {
    let upper = signal.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if STOP_SIGNALS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(format!(
            "unsupported stop signal \"{signal}\" (use one of {})",
            STOP_SIGNALS.join(", ")
        ))
    }
}

fn check_health(health: &Health, check: &mut Checker) {
    let at = |field: &str| [key("health"), key(field)];
    let kinds = [
        health.exec.is_some(),
        health.tcp.is_some(),
        health.http.is_some(),
    ];
    match kinds.iter().filter(|set| **set).count() {
        0 => check.fail(&[key("health")], "give one check: exec, tcp or http".into()),
        1 => {}
        _ => check.fail(
            &[key("health")],
            "exec, tcp and http are alternatives: keep exactly one".into(),
        ),
    }
    if matches!(&health.exec, Some(command) if command.is_empty()) {
        check.fail(&at("exec"), "command is empty".into());
    }
    if health.tcp.as_ref().is_some_and(|tcp| tcp.port == 0) {
        check.fail(
            &[key("health"), key("tcp"), key("port")],
            "port must be 1 to 65535".into(),
        );
    }
    if let Some(http) = &health.http {
        if http.port == 0 {
            check.fail(
                &[key("health"), key("http"), key("port")],
                "port must be 1 to 65535".into(),
            );
        }
        if !http.path.starts_with('/') {
            check.fail(
                &[key("health"), key("http"), key("path")],
                format!("\"{}\" must start with /", http.path),
            );
        }
    }
    for (field, duration) in [
        ("interval", health.interval),
        ("timeout", health.timeout),
        ("start_interval", health.start_interval),
    ] {
        if duration.is_zero() {
            check.fail(&at(field), "must be more than 0s".into());
        }
    }
    if health.retries == 0 {
        check.fail(&at("retries"), "must be at least 1".into());
    }
}

fn check_update(spec: &ServiceSpec, check: &mut Checker) {
    let update = &spec.update;
    if spec.update_order() == UpdateOrder::StopFirst && update.max_unavailable == 0 {
        let why = match update.order {
            Some(_) => "stop-first always takes one replica down".to_owned(),
            None => format!(
                "with network: {} the default order is stop-first, which always takes one replica down",
                spec.network.name()
            ),
        };
        check.fail(
            &[key("update"), key("max_unavailable")],
            format!("0 needs order: start-first ({why})"),
        );
    }
    if update.deadline.is_some_and(|deadline| deadline.is_zero()) {
        check.fail(
            &[key("update"), key("deadline")],
            "must be more than 0s".into(),
        );
    }
}

/// Port numbers, the network ports need, and `host_ip: 0.0.0.0` normalised to unset
/// (both mean every address, and must hash and clash alike). Clashes between ports
/// are found where every service's positions are known (`load::clashing_ports`).
fn check_ports(spec: &mut ServiceSpec, check: &mut Checker) {
    if !spec.ports.is_empty() && spec.network != Network::Bridge {
        let network = spec.network.name();
        let why = match spec.network {
            Network::Host => "with network: host the container binds host ports itself",
            Network::None | Network::Bridge => "with network: none the container has only loopback",
        };
        check.fail(
            &[key("ports")],
            format!(
                "ports are published only on network: bridge (the default); {why}: remove `ports` or `network: {network}`"
            ),
        );
    }
    for (index, port) in spec.ports.iter_mut().enumerate() {
        for (field, number) in [("container", port.container), ("host", port.host)] {
            if number == 0 {
                check.fail(
                    &[key("ports"), PathSegment::Index(index), key(field)],
                    "0 is not a port: give a port number from 1 to 65535".into(),
                );
            }
        }
        normalize_host_ip(port);
    }
}

/// `0.0.0.0` is what an unset host_ip means: every address of the host.
fn normalize_host_ip(port: &mut PortSpec) {
    if port.host_ip == Some(Ipv4Addr::UNSPECIFIED) {
        port.host_ip = None;
    }
}

fn check_volumes(volumes: &[Volume], check: &mut Checker) {
    let mut targets: HashMap<String, usize> = HashMap::new();
    for (index, volume) in volumes.iter().enumerate() {
        let at = |field: &str| [key("volumes"), PathSegment::Index(index), key(field)];
        let kind = match volume.kind {
            VolumeKind::Volume => "volume",
            VolumeKind::Bind => "bind",
            VolumeKind::Tmpfs => "tmpfs",
        };
        let not_for_kind = |field: &str, belongs_to: &str| {
            format!("`{field}` applies to type {belongs_to} only, not {kind}")
        };
        match check_absolute(&volume.target) {
            Err(message) => check.fail(&at("target"), message),
            Ok(()) if volume.target.trim_end_matches('/').is_empty() => {
                check.fail(&at("target"), "cannot mount over /".into());
            }
            Ok(()) => {
                let normalized = volume.target.trim_end_matches('/').to_owned();
                if let Some(first) = targets.insert(normalized, index) {
                    check.fail(
                        &at("target"),
                        format!(
                            "\"{}\" is already the target of volumes[{first}]; each target may be mounted once",
                            volume.target
                        ),
                    );
                }
            }
        }
        match (&volume.name, volume.kind) {
            (Some(name), VolumeKind::Volume) => {
                if let Err(message) = check_volume_name(name) {
                    check.fail(&at("name"), message);
                }
            }
            (Some(_), _) => check.fail(&at("name"), not_for_kind("name", "volume")),
            (None, _) => {}
        }
        match (&volume.source, volume.kind) {
            (Some(source), VolumeKind::Bind) => {
                if let Err(message) = check_absolute(source) {
                    check.fail(&at("source"), message);
                }
            }
            (None, VolumeKind::Bind) => check.fail(
                &[key("volumes"), PathSegment::Index(index)],
                "type bind needs `source`, the absolute host path to mount".into(),
            ),
            (Some(_), _) => check.fail(&at("source"), not_for_kind("source", "bind")),
            (None, _) => {}
        }
        if volume.size.is_some() && volume.kind != VolumeKind::Tmpfs {
            check.fail(&at("size"), not_for_kind("size", "tmpfs"));
        }
    }
}

/// Volume names become directory names under `<root>/volumes`.
fn check_volume_name(name: &str) -> Result<(), String> {
    check_file_name("volume", name)
}

/// A name that becomes a file name under the root: 1 to 64 letters, digits, `_`,
/// `.` and `-`, starting with a letter or digit.
fn check_file_name(what: &str, name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name \"{name}\" (use up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::de::from_node;
    use crate::manifest::yaml::{display_path, parse_documents};

    #[test]
    fn short_image_names_are_completed_as_docker_does() {
        assert_eq!(
            normalize_image("busybox").as_deref(),
            Ok("docker.io/library/busybox:latest")
        );
        assert_eq!(
            normalize_image("127.0.0.1:5000/web:1.4").as_deref(),
            Ok("127.0.0.1:5000/web:1.4")
        );
        assert!(normalize_image("Web:1").unwrap_err().contains("lowercase"));
        assert!(normalize_image("web@sha256:abc").is_err());
    }

    #[test]
    fn names_are_dns_labels_of_at_most_48_characters() {
        for good in ["web", "a", "api-2", &"a".repeat(48)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "-web", "web-", "web_1", "web.1", &"a".repeat(49)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_ids_or_names_with_optional_group() {
        for good in ["1000", "1000:1000", "nobody", "www-data:www-data"] {
            assert!(check_user(good).is_ok(), "{good}");
        }
        for bad in ["", ":", "1000:", ":1000", "a b", "1:2:3"] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stop_signals_are_normalised() {
        assert_eq!(normalize_signal("term").as_deref(), Ok("SIGTERM"));
        assert_eq!(normalize_signal("SIGQUIT").as_deref(), Ok("SIGQUIT"));
        assert!(normalize_signal("SIGSTOP").is_err());
    }

    /// Service `web` with the YAML lines `extra`, deserialized but not validated.
    fn spec(extra: &str) -> ServiceSpec {
        let text =
            format!("apiVersion: wharf/v1\nkind: Service\nname: web\nimage: busybox\n{extra}");
        let documents = parse_documents(&text).expect("valid YAML");
        let (spec, problems) = from_node::<ServiceSpec>(&documents[0]);
        assert!(problems.is_empty(), "{extra}: {problems:?}");
        spec.expect("a spec")
    }

    /// What validation finds in service `web` with `extra`, as `field: message`.
    fn problems(extra: &str) -> Vec<String> {
        match validate(spec(extra)) {
            Ok(_) => Vec::new(),
            Err(found) => found
                .iter()
                .map(|invalid| format!("{}: {}", display_path(&invalid.path), invalid.message))
                .collect(),
        }
    }

    #[test]
    fn ports_are_published_on_the_bridge_which_is_the_default() {
        let ports =
            "ports: [{container: 8080, host: 18080}, {container: 53, host: 5353, protocol: udp}]\n";
        assert_eq!(problems(ports), Vec::<String>::new());
        assert_eq!(spec(ports).network, Network::Bridge);
        assert_eq!(
            problems(&format!("{ports}network: host\n")),
            ["ports: ports are published only on network: bridge (the default); with network: host \
              the container binds host ports itself: remove `ports` or `network: host`"]
        );
        assert_eq!(
            problems(&format!("{ports}network: none\n")),
            ["ports: ports are published only on network: bridge (the default); with network: none \
              the container has only loopback: remove `ports` or `network: none`"]
        );
    }

    #[test]
    fn port_zero_is_refused_at_its_field() {
        assert_eq!(
            problems("ports: [{container: 8080, host: 18080}, {container: 0, host: 0}]\n"),
            [
                "ports[1].container: 0 is not a port: give a port number from 1 to 65535",
                "ports[1].host: 0 is not a port: give a port number from 1 to 65535",
            ]
        );
    }

    #[test]
    fn host_ip_0_0_0_0_is_the_same_as_no_host_ip() {
        let every_address = validate(spec(
            "ports: [{container: 80, host: 8080, host_ip: 0.0.0.0}]\n",
        ))
        .expect("valid");
        assert_eq!(every_address.ports[0].host_ip, None);
        let loopback = validate(spec(
            "ports: [{container: 80, host: 8080, host_ip: 127.0.0.1}]\n",
        ))
        .expect("valid");
        assert_eq!(loopback.ports[0].host_ip, Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn the_update_order_is_start_first_on_the_bridge_and_stop_first_elsewhere() {
        assert_eq!(spec("").update_order(), UpdateOrder::StartFirst);
        assert_eq!(
            spec("network: host\n").update_order(),
            UpdateOrder::StopFirst
        );
        assert_eq!(
            spec("network: none\n").update_order(),
            UpdateOrder::StopFirst
        );
        // Written, it wins.
        assert_eq!(
            spec("update: {order: stop-first}\n").update_order(),
            UpdateOrder::StopFirst
        );
        assert_eq!(
            spec("network: host\nupdate: {order: start-first}\n").update_order(),
            UpdateOrder::StartFirst
        );
    }

    #[test]
    fn max_unavailable_0_needs_start_first_written_or_by_default() {
        assert_eq!(
            problems("update: {max_unavailable: 0}\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("network: host\nupdate: {max_unavailable: 0}\n"),
            [
                "update.max_unavailable: 0 needs order: start-first (with network: host the \
                 default order is stop-first, which always takes one replica down)"
            ]
        );
        assert_eq!(
            problems("update: {order: stop-first, max_unavailable: 0}\n"),
            [
                "update.max_unavailable: 0 needs order: start-first (stop-first always takes \
                 one replica down)"
            ]
        );
    }

    #[test]
    fn a_replica_is_drained_for_500ms_by_default_and_at_most_a_minute() {
        assert_eq!(spec("").stop.drain, Duration::from_millis(500));
        assert_eq!(problems("stop: {drain: 0s}\n"), Vec::<String>::new());
        assert_eq!(problems("stop: {drain: 1m}\n"), Vec::<String>::new());
        assert_eq!(
            problems("stop: {drain: 1m1s}\n"),
            [
                "stop.drain: 1m1s is more than the 1m a replica may be kept out of rotation \
                 before its stop signal; give at most 1m"
            ]
        );
    }

    #[test]
    fn config_sources_stay_inside_the_manifest_directory() {
        let config = |source: &str| {
            problems(&format!(
                "configs: [{{source: '{source}', target: /etc/app.conf}}]\n"
            ))
        };
        assert_eq!(config("conf/app.conf"), Vec::<String>::new());
        assert_eq!(
            config("../app.conf"),
            ["configs[0].source: \"../app.conf\" leaves the manifest's directory ('..'); files must be inside it"]
        );
        assert!(
            config("/etc/passwd")[0].contains("is absolute"),
            "{:?}",
            config("/etc/passwd")
        );
        assert!(problems("env_file: [../x.env]\n")[0].starts_with("env_file[0]: "));
    }

    #[test]
    fn each_target_is_mounted_once_and_secrets_default_to_run_secrets() {
        let clash = "volumes: [{type: tmpfs, target: /run/secrets/db}]\nsecrets: [{name: db}]\n";
        assert_eq!(
            problems(clash),
            ["secrets[0].target: \"/run/secrets/db\" is already the target of volumes[0]; each target may be mounted once"]
        );
        let spec = validate(spec("secrets: [{name: db}]\n")).expect("valid");
        assert_eq!(spec.secrets[0].target.as_deref(), Some("/run/secrets/db"));
        assert!(problems("configs: [{source: a, target: etc/a}]\n")[0].contains("absolute"));
    }

    #[test]
    fn secret_names_are_file_names_and_env_values_may_name_one() {
        assert_eq!(
            problems("env: {PW: {secret: db.pass_1}}\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("secrets: [{name: ../x}]\n"),
            ["secrets[0].name: invalid secret name \"../x\" (use up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit)"]
        );
        assert!(problems("env: {PW: {secret: 'a b'}}\n")[0].starts_with("env.PW.secret: "));
    }

    #[test]
    fn targets_stay_out_of_the_kernel_s_and_wharf_s_files_and_out_of_one_another() {
        let config = |target: &str| {
            problems(&format!(
                "configs: [{{source: a.conf, target: '{target}'}}]\n"
            ))
        };
        assert!(config("/proc/sys/kernel/core_pattern")[0]
            .contains("is in /proc, which the kernel provides"));
        assert!(config("/dev/null")[0].contains("is in /dev"));
        assert!(config("/etc/resolv.conf")[0].contains("is written by wharf for every container"));
        let nested = "configs: [{source: a, target: /etc/z}, {source: b, target: /etc/z/w}]\n";
        assert!(problems(nested)[0].contains("/etc/z/w and /etc/z (configs[0].target) are files"));
        let spelled_twice =
            "configs: [{source: a, target: /etc/x}, {source: b, target: '/etc//./x'}]\n";
        assert!(problems(spelled_twice)[0].contains("already the target of configs[0].target"));
        let in_bind = "volumes: [{type: bind, source: /srv/data, target: /data}]\nconfigs: [{source: a, target: /data/a.conf}]\n";
        assert!(
            problems(in_bind)[0].contains("would create a file in the host directory /srv/data")
        );
        assert!(
            problems("configs: [{source: a, target: /etc/a, uid: 4294967295}]\n")[0]
                .starts_with("configs[0].uid: 4294967295 is not an id")
        );
        // Spellings are normalised: the spec says one path.
        let spec = validate(spec(
            "configs: [{source: './conf//a.conf', target: '/etc//a.conf'}]\n",
        ))
        .expect("valid");
        assert_eq!(
            (
                spec.configs[0].source.as_str(),
                spec.configs[0].target.as_str()
            ),
            ("conf/a.conf", "/etc/a.conf")
        );
    }

    #[test]
    fn a_service_has_at_most_64_configs_and_64_secrets() {
        let many: Vec<String> = (0..65)
            .map(|i| format!("{{source: a, target: /c/{i}}}"))
            .collect();
        assert_eq!(
            problems(&format!("configs: [{}]\n", many.join(", "))),
            ["configs: 65 entries, more than the 64 a service may have"]
        );
    }
}
