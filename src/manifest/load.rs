//! Reading manifest files and directories into validated services.
//!
//! Which files of a directory are manifests: the top-level regular files (symlinks
//! followed, as in a Kubernetes ConfigMap mount) whose names end in `.yaml` or
//! `.yml` and do not start with a dot. Hidden files and directories, editor and tool
//! leftovers (`web.yaml~`, `.web.yaml.swp`, `web.yaml.bak`, `web.yaml.tmp`,
//! `web.yaml.orig`, `#web.yaml#`) and subdirectories are ignored. A file named
//! explicitly on the command line is always read.
//!
//! Reading is bounded: a manifest must be a regular file of at most
//! [`MAX_MANIFEST_BYTES`]. A FIFO, socket or device with a manifest's name is
//! reported as what it is, and nothing waits on a FIFO.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bounded_read::{read_regular, ReadError};

use super::de::from_node;
use super::diagnostic::Diagnostic;
use super::files::{read_files, SourceCache};
use super::hash::{FileRefs, SpecHash};
use super::spec::{Condition, EnvValue, PortSpec, Protocol, ServiceSpec};
use super::validate::validate;
use super::yaml::{display_path, parse_documents, Mark, Node, PathSegment, Value};

/// Manifest files larger than this are refused without being read: one service
/// takes a few kilobytes, and the agent reads every file again at each resync.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A validated, normalised service and where it was defined.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub spec: ServiceSpec,
    pub hash: SpecHash,
    pub file: PathBuf,
    /// Position of the service's `name` value.
    pub mark: Mark,
    /// Position of each `ports[i].host` value, in the order of `spec.ports`, so that
    /// a port clash can point at both ports.
    pub host_port_marks: Vec<Mark>,
    /// The content of each config, in the order of `spec.configs`.
    pub config_contents: Vec<Arc<Vec<u8>>>,
    /// Config digests and secret versions; the secrets' are filled in by
    /// resolving them (`secrets::SecretStore::resolve`), which rehashes.
    pub files: FileRefs,
    /// The files read besides the manifest (configs, env files), as named from the
    /// manifest's directory: the agent checks who can write them and watches them.
    pub sources: Vec<PathBuf>,
    /// Each secret the spec uses, with where it is first named (`field`, mark).
    pub secret_uses: BTreeMap<String, (String, Mark)>,
    /// Position of each `depends_on` entry, by dependency.
    pub depends_on_marks: BTreeMap<String, Mark>,
}

impl Service {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// `file:line:col`, for messages that point at the definition.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.mark)
    }

    /// Computes the spec hash again, after `files` changed.
    pub fn rehash(&mut self) {
        self.hash = SpecHash::of(&self.spec, &self.files);
    }

    /// `file:line:col` of `ports[index].host` (of the name when unknown).
    pub fn host_port_location(&self, index: usize) -> String {
        let mark = self.host_port_marks.get(index).unwrap_or(&self.mark);
        format!("{}:{mark}", self.file.display())
    }
}

/// What loading a set of paths found: every valid service and every error.
#[derive(Debug, Default)]
pub struct Loaded {
    pub services: Vec<Service>,
    pub files: usize,
    pub errors: Vec<Diagnostic>,
}

/// Whether a directory entry with this name is read as a manifest.
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The manifest files of a directory, sorted by name.
pub fn manifest_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_manifest_name(&name) {
            continue;
        }
        let path = entry.path();
        // fs::metadata follows symlinks. Subdirectories are not manifests; anything
        // else that is not a regular file (a FIFO, a socket, a device) is kept, as is
        // a dangling link, so that reading it reports what is wrong instead of the
        // file being silently ignored.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            _ => files.push(path),
        }
    }
    files.sort();
    Ok(files)
}

/// Loads files and directories (see the module docs for which files of a directory
/// count), checking that service names are unique across all of them.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut cache = SourceCache::default();
    for path in paths {
        let files = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => match manifest_files(path) {
                Ok(files) => files,
                Err(err) => {
                    loaded
                        .errors
                        .push(file_error(path, "cannot read directory", &err));
                    continue;
                }
            },
            Ok(_) => vec![path.clone()],
            Err(err) => {
                loaded.errors.push(file_error(path, "cannot read", &err));
                continue;
            }
        };
        for file in files {
            loaded.files += 1;
            let services = read_manifest(&file)
                .map_err(|error| vec![error])
                .and_then(|bytes| parse_manifest_with(&file, &bytes, &mut cache));
            match services {
                Ok(services) => loaded.services.extend(services),
                Err(errors) => loaded.errors.extend(errors),
            }
        }
    }
    loaded.errors.extend(clashes(&loaded.services));
    loaded
}

/// Reads and parses one manifest file. All or nothing: one invalid document makes
/// the whole file invalid, so a file's services are always defined together.
pub fn load_file(path: &Path) -> Result<Vec<Service>, Vec<Diagnostic>> {
    let bytes = read_manifest(path).map_err(|error| vec![error])?;
    parse_manifest(path, &bytes)
}

/// The bytes of a manifest file: a regular file (symlinks followed, as ConfigMap
/// mounts need) of at most [`MAX_MANIFEST_BYTES`], never read past that.
fn read_manifest(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    let whole_file = |message: String| Diagnostic {
        file: path.to_owned(),
        mark: None,
        field: String::new(),
        message,
    };
    read_regular(path, MAX_MANIFEST_BYTES).map_err(|err| match err {
        ReadError::NotRegular(what) => whole_file(format!(
            "not a regular file ({what}); a manifest must be a regular file or a symlink to one"
        )),
        ReadError::TooLarge { size, .. } => whole_file(format!(
            "the file is {size} bytes, more than the {} MiB limit for a manifest file; \
             split its services into several files",
            MAX_MANIFEST_BYTES >> 20
        )),
        ReadError::Io(err) => file_error(path, "cannot read", &err),
    })
}

/// Parses the bytes of a manifest file named `path`, reading the files its services
/// name relative to it.
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Vec<Service>, Vec<Diagnostic>> {
    parse_manifest_with(path, bytes, &mut SourceCache::default())
}

/// `parse_manifest`, sharing what was read (and the budget) with the rest of a load.
fn parse_manifest_with(
    path: &Path,
    bytes: &[u8],
    cache: &mut SourceCache,
) -> Result<Vec<Service>, Vec<Diagnostic>> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let mark = mark_of_byte(bytes, err.valid_up_to());
        vec![Diagnostic {
            file: path.to_owned(),
            mark: Some(mark),
            field: String::new(),
            message: "file is not valid UTF-8; save it as UTF-8".into(),
        }]
    })?;
    let documents = parse_documents(text).map_err(|err| {
        vec![Diagnostic {
            file: path.to_owned(),
            mark: Some(err.mark),
            field: String::new(),
            message: err.message,
        }]
    })?;
    let mut services = Vec::new();
    let mut errors = Vec::new();
    for document in &documents {
        match service_from_document(path, document, cache) {
            Ok(service) => services.push(service),
            Err(found) => errors.extend(found),
        }
    }
    // Dependencies may be in other files: the whole set is checked by `clashes`.
    errors.extend(duplicate_names(&services));
    errors.extend(clashing_ports(&services));
    if errors.is_empty() {
        Ok(services)
    } else {
        Err(errors)
    }
}

fn service_from_document(
    path: &Path,
    document: &Node,
    cache: &mut SourceCache,
) -> Result<Service, Vec<Diagnostic>> {
    let diagnostic = |field: &[PathSegment], mark: Mark, message: String| Diagnostic {
        file: path.to_owned(),
        mark: Some(mark),
        field: display_path(field),
        message,
    };
    let (spec, problems) = from_node::<ServiceSpec>(document);
    // Range and consistency checks run even after type errors, so one run shows all,
    // except on fields whose value was already reported (and stood in for).
    let validated = spec.map(validate);
    let mut errors: Vec<Diagnostic> = Vec::new();
    if let Some(Err(invalid)) = &validated {
        errors.extend(
            invalid
                .iter()
                .filter(|i| !problems.iter().any(|p| i.path.starts_with(&p.path)))
                .map(|i| diagnostic(&i.path, document.locate(&i.path), i.message.clone())),
        );
    }
    errors.extend(
        problems
            .into_iter()
            .map(|p| diagnostic(&p.path, p.mark, p.message)),
    );
    let mut spec = match validated {
        Some(Ok(spec)) if errors.is_empty() => spec,
        _ => {
            errors.sort_by_key(|d| d.mark);
            return Err(errors);
        }
    };
    let misplaced = fields_not_for_jobs(path, document, &spec);
    if !misplaced.is_empty() {
        return Err(misplaced);
    }
    let read = read_files(path, document, &spec, cache)?;
    // `env` overrides the env files.
    for (name, value) in read.env {
        spec.env.entry(name).or_insert(EnvValue::Text(value));
    }
    let secret_uses = secret_uses(&spec, document);
    let host_port_marks = (0..spec.ports.len())
        .map(|index| {
            document.locate(&[
                PathSegment::Key("ports".into()),
                PathSegment::Index(index),
                PathSegment::Key("host".into()),
            ])
        })
        .collect();
    let depends_on_marks = spec
        .depends_on
        .keys()
        .map(|name| {
            let at = [
                PathSegment::Key("depends_on".into()),
                PathSegment::Key(name.clone()),
            ];
            (name.clone(), document.locate(&at))
        })
        .collect();
    let (config_contents, digests) = read.configs.into_iter().unzip();
    let files = FileRefs {
        configs: digests,
        secrets: BTreeMap::new(),
    };
    Ok(Service {
        hash: SpecHash::of(&spec, &files),
        mark: document.locate(&[PathSegment::Key("name".into())]),
        host_port_marks,
        file: path.to_owned(),
        spec,
        config_contents,
        files,
        sources: read.sources,
        secret_uses,
        depends_on_marks,
    })
}

/// A job's fields that only services have, each with why (serde fills in their
/// defaults, so whether they were written is read from the document).
fn fields_not_for_jobs(path: &Path, document: &Node, spec: &ServiceSpec) -> Vec<Diagnostic> {
    if !spec.is_job() {
        return Vec::new();
    }
    let Value::Mapping(entries) = &document.value else {
        return Vec::new();
    };
    let why = |field: &str| match field {
        "replicas" => "a job runs one container at a time, to completion",
        "ports" => "a job serves no connections; publish ports from a service",
        "update" => "a job is not rolled out: a changed job runs again",
        "restart" => "a job is retried as `retries` says, not restarted",
        _ => "",
    };
    entries
        .iter()
        .filter_map(|(key, _)| {
            key.as_str()
                .filter(|k| !why(k).is_empty())
                .map(|k| (k, key.mark))
        })
        .map(|(field, mark)| Diagnostic {
            file: path.to_owned(),
            mark: Some(mark),
            field: field.to_owned(),
            message: format!("`{field}` is not for a job ({}); remove it", why(field)),
        })
        .collect()
}

/// Each secret `spec` uses (mounted or in env), with the field and position that
/// first names it.
fn secret_uses(spec: &ServiceSpec, document: &Node) -> BTreeMap<String, (String, Mark)> {
    let key = |k: &str| PathSegment::Key(k.to_owned());
    let mut uses = BTreeMap::new();
    let mounted = spec.secrets.iter().enumerate().map(|(index, secret)| {
        let path = vec![key("secrets"), PathSegment::Index(index), key("name")];
        (secret.name.as_str(), path)
    });
    let in_env = spec.env.iter().filter_map(|(name, value)| {
        let path = vec![key("env"), key(name), key("secret")];
        value.secret().map(|secret| (secret, path))
    });
    for (name, path) in mounted.chain(in_env) {
        uses.entry(name.to_owned())
            .or_insert_with(|| (display_path(&path), document.locate(&path)));
    }
    uses
}

/// What makes a set of services unusable together, whatever each is alone: a name
/// given twice, a host port published twice, a dependency that is not there, cannot
/// be healthy or goes round in a cycle.
pub fn clashes(services: &[Service]) -> Vec<Diagnostic> {
    let mut clashes = duplicate_names(services);
    clashes.extend(clashing_ports(services));
    clashes.extend(dependency_problems(services));
    clashes
}

/// The services in the order they are started: each after its dependencies, by
/// name otherwise (a cycle, which validation refuses, is broken by name order).
pub fn start_order(services: &[Service]) -> Vec<&Service> {
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.name(), s)).collect();
    let (order, _) = walk_dependencies(&by_name);
    order.into_iter().map(|name| by_name[name]).collect()
}

/// A depth-first walk of the dependencies (from each service by name, without
/// recursion, each service once: linear in services and dependencies): the order
/// in which each comes after its dependencies, and every cycle met (`[a, b, a]`).
fn walk_dependencies<'s>(
    by_name: &BTreeMap<&'s str, &'s Service>,
) -> (Vec<&'s str>, Vec<Vec<&'s str>>) {
    let dependencies = |name: &str| -> Vec<&'s str> {
        by_name.get(name).map_or_else(Vec::new, |service| {
            service
                .spec
                .depends_on
                .keys()
                .filter_map(|dependency| by_name.get_key_value(dependency.as_str()))
                .map(|(name, _)| *name)
                .collect()
        })
    };
    // false: on the current path; true: done.
    let mut state: BTreeMap<&'s str, bool> = BTreeMap::new();
    let mut order = Vec::with_capacity(by_name.len());
    let mut cycles = Vec::new();
    for root in by_name.keys() {
        if state.contains_key(root) {
            continue;
        }
        state.insert(root, false);
        let mut path: Vec<(&'s str, Vec<&'s str>, usize)> = vec![(root, dependencies(root), 0)];
        while let Some((name, next, index)) = path.last_mut() {
            let Some(dependency) = next.get(*index).copied() else {
                let done = *name;
                path.pop();
                state.insert(done, true);
                order.push(done);
                continue;
            };
            *index += 1;
            match state.get(dependency) {
                Some(true) => {}
                Some(false) => {
                    let start = path
                        .iter()
                        .position(|(n, _, _)| *n == dependency)
                        .unwrap_or(0);
                    let mut cycle: Vec<&'s str> =
                        path[start..].iter().map(|(n, _, _)| *n).collect();
                    cycle.push(dependency);
                    cycles.push(cycle);
                }
                None => {
                    state.insert(dependency, false);
                    path.push((dependency, dependencies(dependency), 0));
                }
            }
        }
    }
    (order, cycles)
}

/// A dependency on a service that is not among `services`, `healthy` on one without
/// a health check, and each cycle (`web -> api -> web`), at the `depends_on` entry.
fn dependency_problems(services: &[Service]) -> Vec<Diagnostic> {
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.name(), s)).collect();
    let mut errors = Vec::new();
    let at = |service: &Service, dependency: &str, message: String| Diagnostic {
        file: service.file.clone(),
        mark: service.depends_on_marks.get(dependency).copied(),
        field: format!("depends_on.{dependency}"),
        message,
    };
    for service in by_name.values() {
        for (dependency, condition) in &service.spec.depends_on {
            match by_name.get(dependency.as_str()) {
                None => errors.push(at(service, dependency, format!(
                    "service \"{}\" depends on {dependency}, which is not defined here; a service depends only on services of its own manifests",
                    service.name()
                ))),
                Some(target) if (*condition == Condition::Completed) != target.spec.is_job() => {
                    let (what, instead) = if target.spec.is_job() {
                        ("a job", "completed")
                    } else {
                        ("a service", "started or healthy")
                    };
                    errors.push(at(service, dependency, format!(
                        "{dependency} is {what}, which is never {}; depend on it being {instead}",
                        condition.name()
                    )))
                }
                Some(target) if *condition == Condition::Healthy && target.spec.health.is_none() => {
                    errors.push(at(service, dependency, format!(
                        "{dependency} has no health check, so it is never healthy; give it one ({}) or depend on it being `started`",
                        target.location()
                    )))
                }
                Some(_) => {}
            }
        }
    }
    // A cycle is reported once, at the service where the walk met it.
    let (_, cycles) = walk_dependencies(&by_name);
    let mut reported: Vec<Vec<&str>> = Vec::new();
    for cycle in cycles {
        let mut members = cycle.clone();
        members.sort();
        members.dedup();
        if reported.contains(&members) {
            continue;
        }
        reported.push(members);
        let (Some(first), Some(next)) = (cycle.first(), cycle.get(1)) else {
            continue;
        };
        errors.push(at(
            by_name[first],
            next,
            format!(
                "dependency cycle: {}; remove one of these dependencies",
                cycle.join(" -> ")
            ),
        ));
    }
    errors
}

/// One error for every service whose name was already used, naming both places.
fn duplicate_names(services: &[Service]) -> Vec<Diagnostic> {
    let mut first_by_name: HashMap<&str, &Service> = HashMap::new();
    let mut errors = Vec::new();
    for service in services {
        match first_by_name.get(service.name()) {
            Some(first) => errors.push(Diagnostic {
                file: service.file.clone(),
                mark: Some(service.mark),
                field: "name".into(),
                message: format!(
                    "service \"{}\" is already defined at {}; service names must be unique, rename one of them",
                    service.name(),
                    first.location()
                ),
            }),
            None => {
                first_by_name.insert(service.name(), service);
            }
        }
    }
    errors
}

/// One published port of one service.
#[derive(Clone, Copy)]
struct Published<'a> {
    service: &'a Service,
    index: usize,
    port: &'a PortSpec,
}

impl Published<'_> {
    /// `18080/tcp on all addresses`, `18080/tcp on 127.0.0.1`.
    fn describe(&self) -> String {
        let on = match self.port.host_ip {
            Some(address) => address.to_string(),
            None => "all addresses".to_owned(),
        };
        format!("{}/{} on {on}", self.port.host, self.port.protocol.name())
    }
}

/// One error for every published port that an earlier one already takes (the same
/// protocol and host port on an overlapping address), in the same service or in
/// another, naming both places: the host would not know where to send a connection.
fn clashing_ports(services: &[Service]) -> Vec<Diagnostic> {
    let mut published: HashMap<(Protocol, u16), Vec<Published<'_>>> = HashMap::new();
    let mut errors = Vec::new();
    for service in services {
        for (index, port) in service.spec.ports.iter().enumerate() {
            let this = Published {
                service,
                index,
                port,
            };
            let taken = published.entry((port.protocol, port.host)).or_default();
            match taken
                .iter()
                .find(|earlier| port.overlaps(earlier.port))
                .copied()
            {
                Some(earlier) => errors.push(port_clash(&this, &earlier)),
                None => taken.push(this),
            }
        }
    }
    errors
}

fn port_clash(this: &Published<'_>, earlier: &Published<'_>) -> Diagnostic {
    let service = this.service.name();
    let message = if std::ptr::eq(this.service, earlier.service) {
        format!(
            "service \"{service}\" publishes {} twice (ports[{}] at {} already does): \
             remove one of them or change its `host`",
            this.describe(),
            earlier.index,
            earlier.service.host_port_location(earlier.index),
        )
    } else {
        format!(
            "service \"{service}\" publishes {}, but service \"{}\" already publishes {} \
             at {} (ports[{}]); a host port goes to one service: change `host` in one of \
             them, or publish them on different `host_ip` addresses (without host_ip, a \
             port takes every address)",
            this.describe(),
            earlier.service.name(),
            earlier.describe(),
            earlier.service.host_port_location(earlier.index),
            earlier.index,
        )
    };
    Diagnostic {
        file: this.service.file.clone(),
        mark: this.service.host_port_marks.get(this.index).copied(),
        field: format!("ports[{}].host", this.index),
        message,
    }
}

fn file_error(path: &Path, what: &str, err: &io::Error) -> Diagnostic {
    Diagnostic {
        file: path.to_owned(),
        mark: None,
        field: String::new(),
        message: format!("{what}: {err}"),
    }
}

fn mark_of_byte(bytes: &[u8], offset: usize) -> Mark {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |newline| newline + 1);
    Mark {
        line: 1 + before.iter().filter(|b| **b == b'\n').count(),
        // Everything before `offset` is valid UTF-8, so columns count characters.
        column: 1 + String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Service `name` publishing `ports` (a YAML flow list), on line 5.
    fn manifest(name: &str, ports: &str) -> String {
        format!(
            "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: busybox\nports: {ports}\n"
        )
    }

    fn services(file: &str, text: &str) -> Vec<Service> {
        parse_manifest(Path::new(file), text.as_bytes()).expect("valid manifests")
    }

    fn clashes(services: &[Service]) -> Vec<String> {
        clashing_ports(services)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_host_port_published_twice_by_one_service_names_both_ports() {
        let text = manifest(
            "web",
            "[{container: 8080, host: 18080}, {container: 9090, host: 18080}]",
        );
        let errors: Vec<String> = parse_manifest(Path::new("web.yaml"), text.as_bytes())
            .expect_err("a clash")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            ["web.yaml:5:65: ports[1].host: service \"web\" publishes 18080/tcp on all addresses \
              twice (ports[0] at web.yaml:5:33 already does): remove one of them or change its \
              `host`"]
        );
    }

    #[test]
    fn a_host_port_published_by_two_services_names_both_files() {
        let mut both = services(
            "api.yaml",
            &manifest("api", "[{container: 80, host: 18080, host_ip: 127.0.0.1}]"),
        );
        both.extend(services(
            "web.yaml",
            &manifest("web", "[{container: 8080, host: 18080}]"),
        ));
        assert_eq!(
            clashes(&both),
            ["web.yaml:5:33: ports[0].host: service \"web\" publishes 18080/tcp on all addresses, \
              but service \"api\" already publishes 18080/tcp on 127.0.0.1 at api.yaml:5:31 \
              (ports[0]); a host port goes to one service: change `host` in one of them, or \
              publish them on different `host_ip` addresses (without host_ip, a port takes \
              every address)"]
        );
    }

    #[test]
    fn other_protocols_and_other_addresses_do_not_clash() {
        let tcp_and_udp = services(
            "dns.yaml",
            &manifest(
                "dns",
                "[{container: 53, host: 5353, protocol: udp}, {container: 53, host: 5353}]",
            ),
        );
        assert_eq!(clashes(&tcp_and_udp), Vec::<String>::new());

        let mut two_addresses = services(
            "a.yaml",
            &manifest("a", "[{container: 80, host: 8080, host_ip: 127.0.0.1}]"),
        );
        two_addresses.extend(services(
            "b.yaml",
            &manifest("b", "[{container: 80, host: 8080, host_ip: 10.0.0.1}]"),
        ));
        assert_eq!(clashes(&two_addresses), Vec::<String>::new());

        // 0.0.0.0 is every address, as no host_ip is.
        two_addresses.extend(services(
            "c.yaml",
            &manifest("c", "[{container: 80, host: 8080, host_ip: 0.0.0.0}]"),
        ));
        assert_eq!(clashes(&two_addresses).len(), 1);
    }

    /// Service `name` with the YAML lines `extra`, read from `<name>.yaml`.
    fn service(name: &str, extra: &str) -> Service {
        let text =
            format!("apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: busybox\n{extra}");
        services(&format!("{name}.yaml"), &text).remove(0)
    }

    fn problems(services: &[Service]) -> Vec<String> {
        dependency_problems(services)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_dependency_cycle_is_spelled_out_at_its_first_service() {
        let cycle = [
            service("web", "depends_on: {api: started}\n"),
            service("api", "depends_on: {db: started}\n"),
            service("db", "depends_on: {web: started}\n"),
        ];
        assert_eq!(
            problems(&cycle),
            ["api.yaml:5:18: depends_on.db: dependency cycle: api -> db -> web -> api; remove one of these dependencies"]
        );
    }

    #[test]
    fn dependencies_are_services_of_the_same_manifests_and_healthy_needs_a_check() {
        let web = service("web", "depends_on: {db: healthy, cache: started}\n");
        let db = service("db", "");
        let found = problems(&[web, db]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("web.yaml:5:34: depends_on.cache: service \"web\" depends on cache, which is not defined here"), "{found:?}");
        assert!(found[1].contains("depends_on.db: db has no health check, so it is never healthy; give it one (db.yaml:3:7)"), "{found:?}");
    }

    #[test]
    fn services_start_after_their_dependencies_and_by_name_otherwise() {
        let all = [
            service("app", "depends_on: {queue: started, db: started}\n"),
            service("db", ""),
            service("queue", "depends_on: {db: started}\n"),
            service("cron", ""),
        ];
        let order: Vec<&str> = start_order(&all).iter().map(|s| s.name()).collect();
        assert_eq!(order, ["db", "queue", "app", "cron"]);
    }
}
