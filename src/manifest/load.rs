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

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::bounded_read::{read_regular, ReadError};

use super::de::from_node;
use super::diagnostic::Diagnostic;
use super::hash::SpecHash;
use super::spec::ServiceSpec;
use super::validate::validate;
use super::yaml::{display_path, parse_documents, Mark, Node, PathSegment};

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
}

impl Service {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// `file:line:col`, for messages that point at the definition.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.mark)
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
            match load_file(&file) {
                Ok(services) => loaded.services.extend(services),
                Err(errors) => loaded.errors.extend(errors),
            }
        }
    }
    loaded.errors.extend(duplicate_names(&loaded.services));
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

/// Parses the bytes of a manifest file named `path` (used only in messages).
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Vec<Service>, Vec<Diagnostic>> {
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
        match service_from_document(path, document) {
            Ok(service) => services.push(service),
            Err(found) => errors.extend(found),
        }
    }
    errors.extend(duplicate_names(&services));
    if errors.is_empty() {
        Ok(services)
    } else {
        Err(errors)
    }
}

fn service_from_document(path: &Path, document: &Node) -> Result<Service, Vec<Diagnostic>> {
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
    let spec = match validated {
        Some(Ok(spec)) if errors.is_empty() => spec,
        _ => {
            errors.sort_by_key(|d| d.mark);
            return Err(errors);
        }
    };
    Ok(Service {
        hash: SpecHash::of(&spec),
        mark: document.locate(&[PathSegment::Key("name".into())]),
        file: path.to_owned(),
        spec,
    })
}

/// One error for every service whose name was already used, naming both places.
pub fn duplicate_names(services: &[Service]) -> Vec<Diagnostic> {
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
