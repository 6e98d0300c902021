//! GitOps: manifests from a ref of a Git repository. A sync fetches the ref into a bare
//! repository under the root, reads the manifests of `path` at that commit, checks
//! them, and mirrors them into a directory that never moves (so `apply --prune` and the
//! agent see one manifest directory across commits). A failed fetch or a commit with
//! broken manifests leaves that directory at the last good commit. The `git` command
//! does the fetching, with the user's own configuration and credentials.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::manifest::{is_manifest_name, load_paths, MAX_MANIFEST_BYTES};

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
    /// Manifest files written or removed.
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
    let files = manifests_at(&repo, &commit, &source.path)?;

    // Check the commit's manifests before anything changes.
    let incoming = base.join("incoming");
    let _ = fs::remove_dir_all(&incoming);
    fs::create_dir_all(&incoming).map_err(io(&incoming))?;
    for (name, bytes) in &files {
        let path = incoming.join(name);
        fs::write(&path, bytes).map_err(io(&path))?;
    }
    let loaded = load_paths(std::slice::from_ref(&incoming));
    if !loaded.errors.is_empty() {
        let shown = format!("{}/", incoming.display());
        let place = format!("{short}:{}/", source.path.trim_end_matches('/'));
        let errors: Vec<String> = loaded
            .errors
            .iter()
            .map(|e| e.to_string().replace(&shown, &place))
            .collect();
        let _ = fs::remove_dir_all(&incoming);
        return Err(SyncError::InvalidManifests {
            commit: short.to_owned(),
            staying_at: previous.map(|p| p[..p.len().min(12)].to_owned()),
            errors,
        });
    }
    let files_changed = mirror(&incoming, &base.join("manifests"))?;
    let _ = fs::remove_dir_all(&incoming);
    Ok(Synced {
        commit,
        files_changed,
    })
}

/// The manifest files directly in `path` at `commit`: (file name, contents).
fn manifests_at(
    repo: &Path,
    commit: &str,
    path: &str,
) -> Result<Vec<(String, Vec<u8>)>, SyncError> {
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
    let files = child.stdout.take().map_or_else(
        || Ok(Vec::new()),
        |stdout| read_manifests(stdout, &prefix, &short),
    );
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
        Ok(status) if status.success() => files,
        Ok(_) => match files {
            // Refused here, so reading stopped: git then fails on its closed pipe.
            Err(
                err @ (SyncError::ManifestTooLarge { .. } | SyncError::TooManyManifests { .. }),
            ) => Err(err),
            _ => Err(failed(GitError::Failed {
                stderr: stderr.trim().to_owned(),
            })),
        },
        Err(source) => Err(failed(GitError::Spawn(source))),
    }
}

/// More than any directory of one host's manifests holds.
const MAX_MANIFEST_FILES: usize = 10_000;

/// The manifest files directly under `prefix` in a `git archive` tar stream, each
/// refused when over the manifest size limit before it is read.
fn read_manifests(
    tar: impl Read,
    prefix: &str,
    short: &dyn Fn() -> String,
) -> Result<Vec<(String, Vec<u8>)>, SyncError> {
    let mut archive = tar::Archive::new(tar);
    let mut files = Vec::new();
    let archive_error = |source: std::io::Error| SyncError::Archive {
        commit: short(),
        source,
    };
    let entries = archive.entries().map_err(archive_error)?;
    for entry in entries {
        let mut entry = entry.map_err(archive_error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
            .and_then(|p| p.strip_prefix(prefix).map(str::to_owned));
        let Some(name) = name.filter(|n| !n.contains('/') && is_manifest_name(n)) else {
            continue;
        };
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
        let mut bytes = Vec::new();
        if let Err(source) = entry
            .by_ref()
            .take(MAX_MANIFEST_BYTES)
            .read_to_end(&mut bytes)
        {
            return Err(SyncError::ArchiveFile {
                commit: short(),
                name,
                source,
            });
        }
        files.push((name, bytes));
    }
    Ok(files)
}

/// Makes the manifest files of `target` those of `source`: changed files are renamed
/// in (atomically, one by one), files gone are removed. Returns how many changed.
fn mirror(source: &Path, target: &Path) -> Result<usize, SyncError> {
    fs::create_dir_all(target).map_err(io(target))?;
    let mut changed = 0;
    let mut wanted = Vec::new();
    for entry in fs::read_dir(source).map_err(io(source))?.flatten() {
        let name = entry.file_name();
        let into = target.join(&name);
        let new = fs::read(entry.path()).map_err(io(&entry.path()))?;
        if fs::read(&into).ok().as_deref() != Some(new.as_slice()) {
            fs::rename(entry.path(), &into).map_err(io(&into))?;
            changed += 1;
        }
        wanted.push(name);
    }
    for entry in fs::read_dir(target).map_err(io(target))?.flatten() {
        let name = entry.file_name();
        if is_manifest_name(&name.to_string_lossy()) && !wanted.contains(&name) {
            fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            changed += 1;
        }
    }
    Ok(changed)
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
