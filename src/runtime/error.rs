use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::bounded_read::ReadError;

/// Errors of the container runtime. Those about one container name its service and
/// replica (`web/2`) or its id.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what}: {message}")]
    Container { what: String, message: String },
    #[error("{what}: {action} failed")]
    Libcontainer {
        what: String,
        action: &'static str,
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A runtime operation's worker task panicked or was cancelled.
    #[error("a runtime task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("invalid container configuration: {0}")]
    Config(String),
    #[error("no container {0} (see `wharf ps`)")]
    NotFound(String),
    /// Creating replica `what` failed. The cause is part of the message (one line,
    /// as `to_string` gives it), not a `source`.
    #[error("{what}: {error}")]
    Create { what: String, error: CreateError },
    /// A command could not be started in container `what`.
    #[error("{what}: cannot exec: {error}")]
    Exec { what: String, error: ForkedError },
    /// Container `what` could not be put in or out of its service's rotation.
    #[error("{what}: {source}")]
    Rotation {
        what: String,
        #[source]
        source: crate::network::NetworkError,
    },
}

impl RuntimeError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| RuntimeError::Io { path, source }
    }
}

/// Why a container could not be created (its bundle, root filesystem, monitor or
/// build). Each message carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot record the layers: {0}")]
    RecordLayers(io::Error),
    #[error("cannot mount the root filesystem: {0}")]
    MountRootfs(io::Error),
    #[error(transparent)]
    User(#[from] UserError),
    /// The manifest and the image do not make a valid container configuration.
    #[error(transparent)]
    Config(Box<RuntimeError>),
    #[error("cannot open the root filesystem: {0}")]
    OpenRootfs(pathrs::error::Error),
    #[error(
        "executable \"{0}\" not found in the image; check `command` or the image's entrypoint"
    )]
    ExecutableNotFound(String),
    #[error("bind source {path} does not exist (volumes[{index}]); create it or fix `source`")]
    BindSourceMissing { path: String, index: usize },
    #[error("volumes[{0}] has no source")]
    NoBindSource(usize),
    #[error("cannot create volume {}: {error}", path.display())]
    CreateVolume { path: PathBuf, error: io::Error },
    #[error("cannot write /etc files: {0}")]
    EtcFiles(io::Error),
    #[error("cannot put configs and secrets in place: {}", crate::error_chain(.0))]
    Files(crate::files::FilesError),
    #[error("cannot mount a memory file system for configs and secrets at {}: {error}", path.display())]
    FilesMount { path: PathBuf, error: io::Error },
    #[error("cannot write {what} into the container's files: {error}")]
    WriteFile { what: String, error: io::Error },
    #[error("env {variable}: secret {secret} {why}; only text without NUL bytes can be an environment value (mount it as a file instead)")]
    SecretNotText {
        variable: String,
        secret: String,
        why: &'static str,
    },
    #[error("cannot write {}: {error}", path.display())]
    WriteConfig { path: PathBuf, error: io::Error },
    #[error("cannot create a pipe: {0}")]
    Pipe(Errno),
    #[error(
        "{} is missing: wharf-monitor is installed beside wharf (cargo install and the \
         release build put both there); install it",
        .0.display()
    )]
    MonitorMissing(PathBuf),
    #[error("the monitor's command line: {0}")]
    MonitorArguments(std::ffi::NulError),
    #[error("cannot record the container's monitor: {0}")]
    RecordMonitor(io::Error),
    /// The build in a forked copy of this process failed.
    #[error(transparent)]
    Forked(#[from] ForkedError),
    #[error("cannot record the container's address: {0}")]
    RecordAddress(io::Error),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("cannot bring up loopback: {0}")]
    Loopback(io::Error),
    #[error("the container's process exited during creation")]
    ExitedDuringCreation,
    #[error("cannot record the init process: {0}")]
    RecordInit(io::Error),
}

/// Why a forked copy of this process (building a container, or starting a command
/// in one) gave no pid.
#[derive(Debug, thiserror::Error)]
pub enum ForkedError {
    #[error("cannot create a pipe: {0}")]
    Pipe(Errno),
    #[error("cannot fork: {0}")]
    Fork(Errno),
    #[error("cannot read the container build's answer: {0}")]
    Poll(Errno),
    #[error("cannot read the container build's answer: {0}")]
    Read(io::Error),
    /// The copy's line was not an answer.
    #[error("the container build ended without an answer")]
    NoAnswer,
    #[error("the container build ended without an answer (exit status {0})")]
    Exited(i32),
    /// The copy's own error: it crosses the pipe as text, so it stays one.
    #[error("{0}")]
    Build(String),
}

/// Why `user:` could not be resolved in the image's /etc/passwd and /etc/group.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "user \"{0}\" is not in the image's /etc/passwd; use a numeric uid or a user the image defines"
    )]
    UnknownUser(String),
    #[error(
        "group \"{0}\" is not in the image's /etc/group; use a numeric gid or a group the image defines"
    )]
    UnknownGroup(String),
    /// `path` is relative to the image's root (`etc/passwd`).
    #[error("cannot inspect /{path} in the image: {error}")]
    Handle {
        path: &'static str,
        error: pathrs::error::Error,
    },
    #[error("cannot inspect /{path} in the image: {error}")]
    Inspect {
        path: &'static str,
        error: io::Error,
    },
    #[error("/{path} in the image is {error}; fix the image or set `user` to a numeric uid:gid")]
    NotRegular {
        path: &'static str,
        error: ReadError,
    },
    #[error("cannot open /{path} in the image: {error}")]
    Open {
        path: &'static str,
        error: pathrs::error::Error,
    },
    #[error("cannot read /{path} in the image: {error}")]
    Read {
        path: &'static str,
        error: io::Error,
    },
    #[error(
        "/{path} in the image is larger than {mib} MiB; fix the image or set `user` to a numeric uid:gid"
    )]
    TooLarge { path: &'static str, mib: u64 },
}
