//! Checks that serde cannot express (ranges, formats, fields that go together) and
//! normalisation (full image reference, signal names). Pure: spec in, spec or
//! every problem out, each at a field path.

use std::collections::HashMap;

use super::image_ref::ImageRef;
use super::spec::{Health, ServiceSpec, Update, UpdateOrder, Volume, VolumeKind, MAX_LOG_FILES};
use super::units::ByteSize;
use super::yaml::PathSegment;

pub const MAX_NAME_LEN: usize = 48;
pub const MAX_REPLICAS: u32 = 1000;
const MIN_MEMORY: ByteSize = ByteSize::from_bytes(6 << 20);
/// A log file holds at least one whole line (64 KiB at most) after a rotation.
const MIN_LOG_SIZE: ByteSize = ByteSize::from_bytes(64 << 10);
/// cpus becomes a CFS quota over a 100 ms period; the kernel needs at least 1 ms.
const MIN_CPUS: f64 = 0.01;
/// Environment variables wharf sets itself in every container.
pub const RESERVED_ENV: [&str; 2] = ["WHARF_SERVICE", "WHARF_REPLICA"];
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
    check_env(&spec, &mut check);
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
    if let Some(health) = &spec.health {
        check_health(health, &mut check);
    }
    check_update(&spec.update, &mut check);
    check_volumes(&spec.volumes, &mut check);
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

fn check_env(spec: &ServiceSpec, check: &mut Checker) {
    for (name, value) in &spec.env {
        let path = [key("env"), key(name)];
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            check.fail(
                &path,
                format!("invalid variable name \"{name}\" (must be non-empty, without '=')"),
            );
        } else if RESERVED_ENV.contains(&name.as_str()) {
            check.fail(
                &path,
                format!("{name} is set by wharf in every container; choose another name"),
            );
        }
        if value.contains('\0') {
            check.fail(&path, "value contains a NUL byte".into());
        }
    }
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

fn check_update(update: &Update, check: &mut Checker) {
    if update.order == UpdateOrder::StopFirst && update.max_unavailable == 0 {
        check.fail(
            &[key("update"), key("max_unavailable")],
            "0 needs order: start-first (stop-first always takes one replica down)".into(),
        );
    }
    if update.deadline.is_some_and(|deadline| deadline.is_zero()) {
        check.fail(
            &[key("update"), key("deadline")],
            "must be more than 0s".into(),
        );
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
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid volume name \"{name}\" (use up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
