//! GitOps: manifests from a ref of a Git repository. A sync fetches the ref into a bare
//! repository under the root, reads the manifests of `path` at that commit, checks
//! them, and mirrors them into a directory that never moves (so `apply --prune` and the
//! agent see one manifest directory across commits). A failed fetch or a commit with
//! broken manifests leaves that directory at the last good commit. The `git` command
//! does the fetching, with the user's own configuration and credentials.
//!
//! The files manifests name besides themselves (`configs[].source`, `env_file`) come
//! from the same commit, so that a commit changing only a config file rolls its
//! service, and a commit naming a missing or oversized file is refused like any other
//! invalid manifest. A commit is hostile input, so it is read in two bounded passes
//! of `git archive`:
//!
//! 1. the manifest files at the top of `path`, each at most [`MAX_MANIFEST_BYTES`];
//! 2. the files of `path` (subdirectories included) that the manifests may name:
//!    every YAML scalar of the manifests that is a relative path inside the
//!    directory (a superset of the real references, found without expanding any
//!    alias, so it costs no more than the manifests' own text). Only regular files
//!    are taken, at most [`MAX_NAMED_FILES`] of them; symlinks in the commit are
//!    skipped (a manifest naming one is told the file does not exist). A file over
//!    the 1 MiB limit is not read: it is written as an empty sparse file of its
//!    size, so that the loader refuses it by its real size if a manifest names it.
//!
//! The loader then checks everything, reading the named files as `apply` will, and
//! only the files its services name are mirrored, next to the manifests. The
//! manifest directory is sync's own: after a sync it holds exactly the commit's
//! manifests and the files they name, and nothing else.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::manifest::{
    is_manifest_name, load_paths, MAX_CONFIG_BYTES, MAX_ENV_FILE_BYTES, MAX_MANIFEST_BYTES,
};

/// Why a sync did not move the manifest directory to the ref's commit.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Creating the bare repository failed.
    #[error(transparent)]
    Init(GitError),
    #[error("cannot fetch {reference} from {url}")]
    Fetch {
        reference: String,
        url: String,
        #[source]
        source: GitError,
    },
    /// What was fetched does not name a commit.
    #[error(transparent)]
    NotACommit(GitError),
    /// `commit` (abbreviated) has no directory `path`.
    #[error("commit {commit}: no directory {path} ({git})")]
    NoDirectory {
        commit: String,
        path: String,
        git: GitError,
    },
    #[error("commit {commit}: cannot read git archive")]
    Archive {
        commit: String,
        #[source]
        source: std::io::Error,
    },
    #[error("commit {commit}: {name} is {size} bytes, more than the {} MiB limit for a manifest file; split its services into several files", MAX_MANIFEST_BYTES >> 20)]
    ManifestTooLarge {
        commit: String,
        name: String,
        size: u64,
    },
    #[error("commit {commit}: more than {MAX_MANIFEST_FILES} manifest files in one directory")]
    TooManyManifests { commit: String },
    /// More files of `path` than [`MAX_NAMED_FILES`] are named in its manifests.
    #[error("commit {commit}: the manifests of {path} name more than {MAX_NAMED_FILES} of its files (configs, env files); share files between services or split the directory")]
    TooManyNamedFiles { commit: String, path: String },
    #[error("commit {commit}: cannot read {name} from git archive")]
    ArchiveFile {
        commit: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The commit's manifests do not load; `errors` are their diagnostics, placed at
    /// `commit:path/file`.
    #[error(
        "commit {commit} has invalid manifests, staying at {}: {}",
        staying_at.as_deref().unwrap_or("no commit yet"),
        errors.join("; ")
    )]
    InvalidManifests {
        commit: String,
        /// The last good commit, abbreviated.
        staying_at: Option<String>,
        errors: Vec<String>,
    },
    /// Writing the checked manifests or mirroring them failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The record for `wharf status` could not be written.
    #[error("cannot write {}", path.display())]
    WriteRecord {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A `git` command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0} (install git)")]
    Spawn(std::io::Error),
    /// It exited unsuccessfully; what it wrote to stderr.
    #[error("{stderr}")]
    Failed { stderr: String },
}

/// Where manifests come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    pub url: String,
    /// Branch, tag or commit.
    pub reference: String,
    /// Directory of the repository that holds the manifests ("." for the top).
    pub path: String,
}

/// What the last sync of a source did, kept beside its directory for `wharf status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub source: GitSource,
    /// The commit the manifest directory holds (the last good one).
    pub commit: Option<String>,
    /// When `commit` was synced (RFC 3339).
    pub synced_at: Option<String>,
    /// Why the last attempt did not move to a new commit, if it failed.
    pub error: Option<String>,
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub commit: String,
    /// Files written or removed: manifests and the files they name.
    pub files_changed: usize,
}

impl GitSource {
    fn key(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.url, &self.reference, &self.path] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        format!("{:x}", hasher.finalize())[..16].to_owned()
    }

    fn base(&self, root: &Path) -> PathBuf {
        root.join("git").join(self.key())
    }

    /// The manifest directory this source is mirrored into.
    pub fn manifest_dir(&self, root: &Path) -> PathBuf {
        self.base(root).join("manifests")
    }

    /// "URL@REF:PATH"
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.url, self.reference, self.path)
    }
}

/// Every source synced under `root`, with its record.
pub fn records(root: &Path) -> Vec<SyncRecord> {
    let Ok(entries) = fs::read_dir(root.join("git")) else {
        return Vec::new();
    };
    let mut records: Vec<SyncRecord> = entries
        .flatten()
        .filter_map(|entry| fs::read(entry.path().join("sync.json")).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by_key(|r| r.source.describe());
    records
}

/// Fetches the source's ref and, if its manifests are valid, mirrors them into the
/// manifest directory. On error the directory keeps the last good commit, and the
/// error is recorded for `wharf status`.
pub fn sync(root: &Path, source: &GitSource) -> Result<Synced, SyncError> {
    let base = source.base(root);
    let record_path = base.join("sync.json");
    let mut record: SyncRecord = fs::read(&record_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(SyncRecord {
            source: source.clone(),
            commit: None,
            synced_at: None,
            error: None,
        });
    let result = fetch_and_mirror(&base, source, record.commit.as_deref());
    match &result {
        Ok(synced) => {
            if record.commit.as_deref() != Some(synced.commit.as_str()) {
                record.synced_at =
                    Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
            }
            record.commit = Some(synced.commit.clone());
            record.error = None;
        }
        Err(error) => record.error = Some(crate::error_chain(error)),
    }
    let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    fs::write(&record_path, json).map_err(|source| SyncError::WriteRecord {
        path: record_path.clone(),
        source,
    })?;
    result
}

fn fetch_and_mirror(
    base: &Path,
    source: &GitSource,
    previous: Option<&str>,
) -> Result<Synced, SyncError> {
    let repo = base.join("repo.git");
    fs::create_dir_all(base).map_err(|source| SyncError::CreateDir {
        path: base.to_owned(),
        source,
    })?;
    if !repo.join("HEAD").exists() {
        run_git(
            Command::new("git")
                .args(["init", "--quiet", "--bare"])
                .arg(&repo),
        )
        .map_err(SyncError::Init)?;
    }
    git(
        &repo,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--",
            &source.url,
            &source.reference,
        ],
    )
    .map_err(|source_error| SyncError::Fetch {
        reference: source.reference.clone(),
        url: source.url.clone(),
        source: source_error,
    })?;
    let commit = String::from_utf8_lossy(
        &git(&repo, &["rev-parse", "--verify", "FETCH_HEAD^{commit}"])
            .map_err(SyncError::NotACommit)?,
    )
    .trim()
    .to_owned();
    let short = &commit[..commit.len().min(12)];
    let abbreviated = || short.to_owned();
    let files = read_archive(&repo, &commit, &source.path, |tar, prefix| {
        read_manifests(tar, prefix, &abbreviated)
    })?;

    // Check the commit's manifests, and the files they name, before anything changes.
    let incoming = base.join("incoming");
    let _ = fs::remove_dir_all(&incoming);
    fs::create_dir_all(&incoming).map_err(io(&incoming))?;
    for (name, bytes) in &files {
        let path = incoming.join(name);
        fs::write(&path, bytes).map_err(io(&path))?;
    }
    let mut named = named_paths(&files);
    for (name, _) in &files {
        // Already there, and mirrored as a manifest.
        named.remove(name);
    }
    let extracted = if named.is_empty() {
        BTreeSet::new()
    } else {
        let extracted = read_archive(&repo, &commit, &source.path, |tar, prefix| {
            extract_named(tar, prefix, &named, &incoming, &abbreviated)
        });
        match extracted {
            Ok(extracted) => extracted,
            Err(err) => {
                let _ = fs::remove_dir_all(&incoming);
                return Err(err);
            }
        }
    };
    let loaded = load_paths(std::slice::from_ref(&incoming));
    if !loaded.errors.is_empty() {
        let dir = source.path.trim_end_matches('/');
        // Files are shown under `incoming/`; the loader also names the directory
        // itself ("does not exist in DIR").
        let shown = format!("{}/", incoming.display());
        let place = format!("{short}:{dir}/");
        let shown_dir = incoming.display().to_string();
        let place_dir = format!("{short}:{dir}");
        let errors: Vec<String> = loaded
            .errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&shown, &place)
                    .replace(&shown_dir, &place_dir)
            })
            .collect();
        let _ = fs::remove_dir_all(&incoming);
        return Err(SyncError::InvalidManifests {
            commit: short.to_owned(),
            staying_at: previous.map(|p| p[..p.len().min(12)].to_owned()),
            errors,
        });
    }
    // What the services really name: the extracted files are a superset.
    let referenced: BTreeSet<String> = loaded
        .services
        .iter()
        .flat_map(|service| {
            let configs = service.spec.configs.iter().map(|c| c.source.as_str());
            configs.chain(service.spec.env_file.iter().map(|f| f.as_str()))
        })
        .filter_map(relative_inside)
        .filter(|name| extracted.contains(name))
        .collect();
    let manifests: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let result = mirror(&incoming, &base.join("manifests"), &manifests, &referenced);
    let _ = fs::remove_dir_all(&incoming);
    Ok(Synced {
        commit,
        files_changed: result?,
    })
}

/// Streams `git archive` of `path` at `commit` into `read`, with the prefix of the
/// entries of `path` (`hosts/`, or nothing for the top). When git fails, its stderr
/// is the error, unless `read` refused the archive first (git then fails on the
/// closed pipe).
fn read_archive<T>(
    repo: &Path,
    commit: &str,
    path: &str,
    read: impl FnOnce(&mut ChildStdout, &str) -> Result<T, SyncError>,
) -> Result<T, SyncError> {
    let short = || commit[..commit.len().min(12)].to_owned();
    let prefix = match path.trim_matches('/') {
        "" | "." => String::new(),
        dir => format!("{dir}/"),
    };
    let mut args = vec!["archive", "--format=tar", commit];
    if !prefix.is_empty() {
        args.extend(["--", prefix.as_str()]);
    }
    // Streamed: a commit is hostile input, and its directory may hold anything (a
    // huge file beside the manifests) that must not be held in memory.
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(&args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SyncError::NoDirectory {
            commit: short(),
            path: path.to_owned(),
            git: GitError::Spawn(source),
        })?;
    // Read beside stdout, so that a chatty git cannot block on a full stderr pipe.
    let stderr = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.by_ref().take(64 * 1024).read_to_string(&mut text);
            text
        })
    });
    let result = match child.stdout.take() {
        Some(mut stdout) => {
            let result = read(&mut stdout, prefix.as_str());
            if result.is_ok() {
                // The padding after the end of the archive, so that git never fails
                // on a pipe closed early; bounded, in case it is not just padding.
                let _ = std::io::copy(&mut stdout.by_ref().take(1 << 20), &mut std::io::sink());
            }
            result
            // stdout is closed here, before waiting: a git still writing stops.
        }
        None => Err(SyncError::Archive {
            commit: short(),
            source: std::io::Error::other("git archive gave no output"),
        }),
    };
    let status = child.wait();
    let stderr = stderr
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    let failed = |git| SyncError::NoDirectory {
        commit: short(),
        path: path.to_owned(),
        git,
    };
    match status {
        Ok(status) if status.success() => result,
        Ok(_) => match result {
            // Refused here, so reading stopped: git then fails on its closed pipe.
            Err(err) if err.stops_reading() => Err(err),
            _ => Err(failed(GitError::Failed {
                stderr: stderr.trim().to_owned(),
            })),
        },
        Err(source) => Err(failed(GitError::Spawn(source))),
    }
}

impl SyncError {
    /// Whether reading the archive stopped on purpose (a refusal, or a file that could
    /// not be written), rather than because the archive broke.
    fn stops_reading(&self) -> bool {
        matches!(
            self,
            SyncError::ManifestTooLarge { .. }
                | SyncError::TooManyManifests { .. }
                | SyncError::TooManyNamedFiles { .. }
                | SyncError::Io { .. }
        )
    }
}

/// More than any directory of one host's manifests holds.
const MAX_MANIFEST_FILES: usize = 10_000;

/// Calls `visit` with the path under `prefix` and the entry of each regular file of a
/// `git archive` tar stream (other entries, and files outside `prefix`, are skipped).
fn each_file<R: Read>(
    tar: R,
    prefix: &str,
    short: &dyn Fn() -> String,
    mut visit: impl FnMut(String, &mut tar::Entry<'_, R>) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    let mut archive = tar::Archive::new(tar);
    let archive_error = |source: std::io::Error| SyncError::Archive {
        commit: short(),
        source,
    };
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
            .and_then(|p| p.strip_prefix(prefix).map(str::to_owned));
        if let Some(name) = name {
            visit(name, &mut entry)?;
        }
    }
    Ok(())
}

/// The content of a file entry whose size was checked against `limit`.
fn read_entry(
    entry: &mut impl Read,
    limit: u64,
    name: String,
    short: &dyn Fn() -> String,
) -> Result<Vec<u8>, SyncError> {
    let mut bytes = Vec::new();
    match entry.take(limit).read_to_end(&mut bytes) {
        Ok(_) => Ok(bytes),
        Err(source) => Err(SyncError::ArchiveFile {
            commit: short(),
            name,
            source,
        }),
    }
}

/// The manifest files directly under `prefix` in a `git archive` tar stream, each
/// refused when over the manifest size limit before it is read.
fn read_manifests(
    tar: impl Read,
    prefix: &str,
    short: &dyn Fn() -> String,
) -> Result<Vec<(String, Vec<u8>)>, SyncError> {
    let mut files = Vec::new();
    each_file(tar, prefix, short, |name, entry| {
        if name.contains('/') || !is_manifest_name(&name) {
            return Ok(());
        }
        if entry.size() > MAX_MANIFEST_BYTES {
            return Err(SyncError::ManifestTooLarge {
                commit: short(),
                name: format!("{prefix}{name}"),
                size: entry.size(),
            });
        }
        if files.len() >= MAX_MANIFEST_FILES {
            return Err(SyncError::TooManyManifests { commit: short() });
        }
        let bytes = read_entry(entry, MAX_MANIFEST_BYTES, name.clone(), short)?;
        files.push((name, bytes));
        Ok(())
    })?;
    Ok(files)
}

/// How many files of the directory its manifests may name (configs, env files).
pub const MAX_NAMED_FILES: usize = 1_000;

/// The largest file a manifest may name: larger ones are not read from the archive.
const MAX_NAMED_BYTES: u64 = if MAX_CONFIG_BYTES > MAX_ENV_FILE_BYTES {
    MAX_CONFIG_BYTES
} else {
    MAX_ENV_FILE_BYTES
};

/// Every scalar of the manifests that is a relative path inside their directory,
/// normalised: the files they may name. A superset of `configs[].source` and
/// `env_file`, found from the parser's events alone: an alias repeats scalars
/// already seen, so none needs expanding, and the cost is that of the text. A file
/// that does not parse contributes what came before the error (the loader reports
/// it).
fn named_paths(files: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (_, bytes) in files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        for event in saphyr_parser::Parser::new_from_str(text) {
            let Ok((event, _)) = event else {
                break;
            };
            if let saphyr_parser::Event::Scalar(value, ..) = event {
                if let Some(path) = relative_inside(&value) {
                    named.insert(path);
                }
            }
        }
    }
    named
}

/// `text` as a path inside the manifests' directory, normalised (`./conf//a` is
/// `conf/a`); None when it is absolute, leaves the directory (`..`), is empty or
/// cannot be a path.
fn relative_inside(text: &str) -> Option<String> {
    // PATH_MAX: no file of the commit has a longer name.
    if text.is_empty() || text.len() > 4096 || text.starts_with('/') || text.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Writes the regular files of a `git archive` tar stream whose paths under `prefix`
/// are in `named` to `into` (subdirectories created), and returns their paths. Sizes
/// are checked before reading: a file over [`MAX_NAMED_BYTES`] is written as an
/// empty sparse file of its size, for the loader to refuse by its real size if a
/// manifest names it (and to ignore otherwise). Symlinks and other entries are
/// skipped. `named` holds only normalised relative paths without `..`, so every
/// file stays inside `into`.
fn extract_named(
    tar: impl Read,
    prefix: &str,
    named: &BTreeSet<String>,
    into: &Path,
    short: &dyn Fn() -> String,
) -> Result<BTreeSet<String>, SyncError> {
    let mut written = BTreeSet::new();
    each_file(tar, prefix, short, |name, entry| {
        if !named.contains(&name) || written.contains(&name) {
            return Ok(());
        }
        if written.len() >= MAX_NAMED_FILES {
            return Err(SyncError::TooManyNamedFiles {
                commit: short(),
                path: match prefix.trim_end_matches('/') {
                    "" => ".".to_owned(),
                    dir => dir.to_owned(),
                },
            });
        }
        let path = into.join(&name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let size = entry.size();
        if size > MAX_NAMED_BYTES {
            let file = fs::File::create(&path).map_err(io(&path))?;
            // A size the file system cannot hold is still over the limit.
            file.set_len(size)
                .or_else(|_| file.set_len(MAX_NAMED_BYTES + 1))
                .map_err(io(&path))?;
        } else {
            let bytes = read_entry(entry, MAX_NAMED_BYTES, format!("{prefix}{name}"), short)?;
            fs::write(&path, &bytes).map_err(io(&path))?;
        }
        written.insert(name);
        Ok(())
    })?;
    Ok(written)
}

/// Makes `target` hold the manifests of `source` (file names) and the files they name
/// (`referenced`, relative paths), and nothing else: changed files are renamed in
/// (atomically, one by one; the named files first, so that a manifest renamed in
/// finds its files), then every other file is removed, and emptied subdirectories.
/// Returns how many files were written or removed.
fn mirror(
    source: &Path,
    target: &Path,
    manifests: &[&str],
    referenced: &BTreeSet<String>,
) -> Result<usize, SyncError> {
    fs::create_dir_all(target).map_err(io(target))?;
    let mut changed = 0;
    let wanted: HashSet<&str> = referenced
        .iter()
        .map(String::as_str)
        .chain(manifests.iter().copied())
        .collect();
    for name in referenced
        .iter()
        .map(String::as_str)
        .chain(manifests.iter().copied())
    {
        let from = source.join(name);
        let into = target.join(name);
        let new = fs::read(&from).map_err(io(&from))?;
        if same_content(&into, &new) {
            continue;
        }
        changed += clear_way(target, name)?;
        fs::rename(&from, &into).map_err(io(&into))?;
        changed += 1;
    }
    changed += remove_unwanted(target, &wanted)?;
    Ok(changed)
}

/// Whether `path` is a regular file (not a symlink) holding exactly `new`; read only
/// when its size already matches.
fn same_content(path: &Path, new: &[u8]) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == new.len() as u64 => {
            fs::read(path).is_ok_and(|old| old == new)
        }
        _ => false,
    }
}

/// Makes room in `target` for the file `name` (a relative path): what an earlier
/// commit left where a directory of `name` must be (a file) or where `name` goes (a
/// directory) is removed, and the directories of `name` are created. Returns how
/// many were removed.
fn clear_way(target: &Path, name: &str) -> Result<usize, SyncError> {
    let mut removed = 0;
    let mut dir = target.to_owned();
    let parts: Vec<&str> = name.split('/').collect();
    if let Some((_, ancestors)) = parts.split_last() {
        for part in ancestors {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&dir).map_err(io(&dir))?;
                    removed += 1;
                }
                Err(_) => {}
            }
        }
    }
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let into = target.join(name);
    if fs::symlink_metadata(&into).is_ok_and(|meta| meta.is_dir()) {
        fs::remove_dir_all(&into).map_err(io(&into))?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes every file (or symlink) under `target` whose relative path is not in
/// `wanted`, then the subdirectories left empty. Returns how many files it removed.
fn remove_unwanted(target: &Path, wanted: &HashSet<&str>) -> Result<usize, SyncError> {
    let mut removed = 0;
    let mut to_visit = vec![PathBuf::new()];
    let mut dirs = Vec::new();
    while let Some(dir) = to_visit.pop() {
        let path = target.join(&dir);
        for entry in fs::read_dir(&path).map_err(io(&path))?.flatten() {
            let relative = dir.join(entry.file_name());
            // Not followed: a symlink is removed like a file.
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                to_visit.push(relative.clone());
                dirs.push(relative);
                continue;
            }
            if relative.to_str().is_some_and(|name| wanted.contains(name)) {
                continue;
            }
            let path = entry.path();
            fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
        }
    }
    // Deepest first; a directory that still holds something stays.
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    for dir in dirs {
        let _ = fs::remove_dir(target.join(dir));
    }
    Ok(removed)
}

/// An I/O error at `path`, for `map_err`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError {
    let path = path.to_owned();
    move |source| SyncError::Io { path, source }
}

/// Runs `git --git-dir REPO ARGS...`; its stdout, or its stderr as the error.
fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    run_git(Command::new("git").arg("--git-dir").arg(repo).args(args))
}

fn run_git(command: &mut Command) -> Result<Vec<u8>, GitError> {
    let output = command
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(GitError::Spawn)?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(GitError::Failed {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
