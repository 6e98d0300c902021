//! The files a manifest names besides itself: `configs` sources and `env_file`s.
//! They are read relative to the manifest's directory and never outside it:
//! symlinks are resolved as if that directory were the root (a Kubernetes
//! ConfigMap mount's `..data` links work; `../x` or a link to `/etc/shadow` stays
//! inside), and each must be a regular file of bounded size.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pathrs::flags::OpenFlags;
use pathrs::Root;
use sha2::{Digest as _, Sha256};

use super::diagnostic::Diagnostic;
use super::spec::ServiceSpec;
use super::validate::check_env_name;
use super::yaml::{Mark, Node, PathSegment};

/// A config file's limit, as for a Kubernetes ConfigMap: configuration, not data.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// An env file's limit.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// The files one load has read, each once (by real path), and their bytes in all:
/// many services naming one file, or one file named many times, cost it once.
#[derive(Debug, Default)]
pub struct SourceCache {
    read: HashMap<PathBuf, Content>,
    total: u64,
}

/// A file's content and its hex SHA-256.
type Content = (Arc<Vec<u8>>, String);

/// What the files one load reads (a directory, a file, a commit) may hold in all.
pub const MAX_SOURCE_BYTES_PER_LOAD: u64 = 64 << 20;

/// What a service's files hold.
#[derive(Debug, Default)]
pub struct ReadFiles {
    /// Each config's content and its hex SHA-256, in the order of `configs`.
    pub configs: Vec<(Arc<Vec<u8>>, String)>,
    /// The variables of the env files, later files overriding earlier ones.
    pub env: BTreeMap<String, String>,
    /// Every file read, as named from the manifest's directory.
    pub sources: Vec<PathBuf>,
}

/// Reads the configs and env files of `spec`, defined in `document` of the manifest
/// file `manifest`; every problem is reported at the field that names the file (or
/// at the env file's line).
pub fn read_files(
    manifest: &Path,
    document: &Node,
    spec: &ServiceSpec,
    cache: &mut SourceCache,
) -> Result<ReadFiles, Vec<Diagnostic>> {
    let mut read = ReadFiles::default();
    if spec.configs.is_empty() && spec.env_file.is_empty() {
        return Ok(read);
    }
    let dir = match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut errors = Vec::new();
    let at = |list: &str, index: usize, field: Option<&str>, message: String| {
        let mut path = vec![PathSegment::Key(list.to_owned()), PathSegment::Index(index)];
        path.extend(field.map(|f| PathSegment::Key(f.to_owned())));
        Diagnostic {
            file: manifest.to_owned(),
            mark: Some(document.locate(&path)),
            field: super::yaml::display_path(&path),
            message: format!("service \"{}\": {message}", spec.name),
        }
    };
    let root = match Root::open(dir) {
        Ok(root) => root,
        Err(err) => {
            return Err(vec![Diagnostic {
                file: manifest.to_owned(),
                mark: None,
                field: String::new(),
                message: format!(
                    "cannot open the manifest's directory {}: {err}",
                    dir.display()
                ),
            }])
        }
    };
    for (index, config) in spec.configs.iter().enumerate() {
        let source = config.source.as_str();
        match read_inside(&root, dir, source, MAX_CONFIG_BYTES, cache) {
            Ok(((bytes, digest), real)) => {
                read.configs.push((bytes, digest));
                read.sources.push(real);
            }
            Err(message) => errors.push(at("configs", index, Some("source"), message)),
        }
    }
    for (index, env_file) in spec.env_file.iter().enumerate() {
        let source = env_file.as_str();
        let named = at("env_file", index, None, String::new());
        let read_env = read_inside(&root, dir, source, MAX_ENV_FILE_BYTES, cache);
        let text = read_env.and_then(|((bytes, _), real)| {
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| format!("{source} is not UTF-8 text; save it as UTF-8"))?;
            Ok((text, real))
        });
        match text {
            Ok((text, real)) => {
                let path = dir.join(source);
                match parse_env_file(&text) {
                    Ok(variables) => read.env.extend(variables),
                    Err((line, message)) => errors.push(Diagnostic {
                        file: path.clone(),
                        mark: Some(Mark { line, column: 1 }),
                        field: String::new(),
                        message: format!(
                            "{message} (env_file[{index}] of service \"{}\" at {}:{})",
                            spec.name,
                            manifest.display(),
                            named.mark.unwrap_or_default()
                        ),
                    }),
                }
                read.sources.push(real);
            }
            Err(message) => errors.push(at("env_file", index, None, message)),
        }
    }
    if errors.is_empty() {
        Ok(read)
    } else {
        Err(errors)
    }
}

/// The content of the regular file `relative` under `root` (the directory `dir`),
/// at most `limit` bytes, and the file's real path (for the trust rule, which must
/// look at the file that was read), with the content's hex SHA-256; from `cache`
/// when this load read it already.
/// The error says what is wrong and what to do.
fn read_inside(
    root: &Root,
    dir: &Path,
    relative: &str,
    limit: u64,
    cache: &mut SourceCache,
) -> Result<(Content, PathBuf), String> {
    let handle = root.resolve(relative).map_err(|err| match err.kind() {
        pathrs::error::ErrorKind::OsError(Some(nix::libc::ENOENT)) => format!(
            "{relative} does not exist in {} (sources are resolved inside the manifest's directory: a symlink that leads out of it finds nothing)",
            dir.display()
        ),
        _ => format!("cannot open {relative} in {}: {err}", dir.display()),
    })?;
    // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting.
    let file = handle
        .reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_CLOEXEC)
        .map_err(|err| format!("cannot open {relative}: {err}"))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .unwrap_or_else(|_| dir.join(relative));
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read {relative}: {err}"))?;
    crate::bounded_read::require_regular(&meta).map_err(|err| format!("{relative} is {err}"))?;
    let too_large = |size: u64| {
        format!(
            "{relative} is {size} bytes, more than the {} KiB a file wharf puts into containers may have; mount large data with a volume",
            limit >> 10
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    if let Some((bytes, digest)) = cache.read.get(&real) {
        return Ok(((Arc::clone(bytes), digest.clone()), real));
    }
    if cache.total + meta.len() > MAX_SOURCE_BYTES_PER_LOAD {
        return Err(format!(
            "the files the manifests name come to more than {} MiB; mount large data with a volume",
            MAX_SOURCE_BYTES_PER_LOAD >> 20
        ));
    }
    let mut bytes = Vec::new();
    (&file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {relative}: {err}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    cache.total += bytes.len() as u64;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    let read = (Arc::new(bytes), digest);
    cache.read.insert(real.clone(), read.clone());
    Ok((read, real))
}

/// `KEY=VALUE` lines; blank lines and `#` comments are skipped, `export ` before a
/// key is allowed, the value is everything after `=` as written (spaces and `#`
/// included), and a value wholly in matching single or double quotes loses them
/// (nothing else is interpreted). No spaces before `=`. Err: the line number and what is wrong.
fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut variables = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, value)) = trimmed.split_once('=') else {
            return Err((number, "expected KEY=VALUE (or a # comment)".to_owned()));
        };
        check_env_name(name).map_err(|message| (number, message))?;
        if value.contains('\0') {
            return Err((number, "the value contains a NUL byte".to_owned()));
        }
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|quote| value.strip_prefix(*quote)?.strip_suffix(*quote))
            .unwrap_or(value);
        variables.push((name.to_owned(), unquoted.to_owned()));
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_key_value_lines_with_comments_and_optional_quotes() {
        let text = "# database\nDB_HOST=db\n\nexport DB_PORT=5432\nGREETING=\"hello world\"\nEMPTY=\nRAW='a=b'\n";
        let parsed = parse_env_file(text).expect("valid");
        assert_eq!(
            parsed,
            [
                ("DB_HOST", "db"),
                ("DB_PORT", "5432"),
                ("GREETING", "hello world"),
                ("EMPTY", ""),
                ("RAW", "a=b"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_line_that_is_not_key_value_is_refused_with_its_number() {
        let (line, message) = parse_env_file("A=1\njust text\n").expect_err("invalid");
        assert_eq!(line, 2);
        assert!(message.contains("KEY=VALUE"), "{message}");
        let (line, message) = parse_env_file("WHARF_SERVICE=x\n").expect_err("reserved");
        assert_eq!(line, 1);
        assert!(message.contains("set by wharf"), "{message}");
    }

    /// A manifest in a temporary directory with `files` (name, size in KiB).
    fn manifest_with(files: &[(&str, usize)], text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, kib) in files {
            std::fs::write(dir.path().join(name), vec![b'x'; kib << 10]).expect("write");
        }
        let manifest = dir.path().join("app.yaml");
        std::fs::write(&manifest, text).expect("write");
        (dir, manifest)
    }

    #[test]
    fn a_file_named_many_times_is_read_once_and_a_load_reads_at_most_64_mib() {
        let configs: Vec<String> = (0..64)
            .map(|i| format!("{{source: big, target: /c/{i}}}"))
            .collect();
        let service = |name: &str| {
            format!(
                "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: busybox\nconfigs: [{}]\n",
                configs.join(", ")
            )
        };
        let text = format!("{}---\n{}", service("a"), service("b"));
        let (_dir, manifest) = manifest_with(&[("big", 1024)], &text);
        let services = crate::manifest::load_file(&manifest).expect("valid");
        let first = &services[0].config_contents[0];
        assert!(services
            .iter()
            .flat_map(|s| &s.config_contents)
            .all(|content| Arc::ptr_eq(content, first)));

        // 65 different files of 1 MiB: more than one load may read.
        let names: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
        let files: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 1024)).collect();
        let per_service = |range: std::ops::Range<usize>, name: &str| {
            let configs: Vec<String> = range
                .map(|i| format!("{{source: f{i}, target: /c/{i}}}"))
                .collect();
            format!(
                "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: busybox\nconfigs: [{}]\n",
                configs.join(", ")
            )
        };
        let text = format!(
            "{}---\n{}",
            per_service(0..60, "a"),
            per_service(60..65, "b")
        );
        let (_dir, manifest) = manifest_with(&files, &text);
        let errors = crate::manifest::load_file(&manifest).expect_err("over the budget");
        assert!(
            errors[0].message.contains("come to more than 64 MiB"),
            "{}",
            errors[0]
        );
    }
}
