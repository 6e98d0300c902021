//! Stage 2 of the data flow, observe, and the side of stage 4 that touches the
//! kernel: the `Runtime` seam (list what runs; create, start, stop, remove, exec)
//! that the planner's inputs come from and the executor's steps go through, and its
//! real implementation on youki's libcontainer.

mod cgroup;
mod config;
mod create;
mod error;
mod exec;
mod files;
mod forked;
mod libcontainer;
mod logs;
mod monitor;
mod observe;
mod output;
mod pidfd;
mod proc;
mod records;
mod stats;
mod stop;
mod users;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use crate::reaper::{Exit, Reaper};
pub use config::{
    annotation, command_line, environment, runtime_config, working_dir, HostFacts, MountSource,
    ResolvedUser,
};
pub use error::{CreateError, ForkedError, RuntimeError, UserError};
pub use exec::ExecOutput;
pub use libcontainer::LibcontainerRuntime;
pub use logs::{LogLine, LogStream, Logs};
pub use monitor::monitor_main;
pub use output::{Output, OutputError, Stream};
pub use stats::{read_usage, Usage};

// The runtime tests spawn their helpers through this path.

use crate::image::LocalImage;
use crate::manifest::{FileRefs, ServiceSpec, SpecHash};

/// What to create: one replica slot of a service from a stored image.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub service: ServiceSpec,
    pub slot: u32,
    pub spec_hash: SpecHash,
    pub image: LocalImage,
    /// The image's layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// The manifest file that defines the service, when it came from one.
    pub manifest: Option<PathBuf>,
    /// The config contents (stored by digest) and secret versions to put in.
    pub files: FileRefs,
}

/// A wharf container as found on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    pub service: String,
    pub slot: u32,
    pub status: ContainerStatus,
    pub pid: Option<i32>,
    pub started_at: Option<SystemTime>,
    pub spec_hash: String,
    pub image: String,
    pub image_digest: String,
    pub manifest: Option<PathBuf>,
    pub manifest_dir: Option<PathBuf>,
    /// The normalised service spec the container was created from.
    pub spec: Option<Box<ServiceSpec>>,
    /// Its monitor is gone (killed) while it runs: how it ends will not be known.
    pub unmonitored: bool,
    /// Its address on wharf's bridge (`network: bridge`).
    pub address: Option<std::net::Ipv4Addr>,
    /// In rotation: its service's published ports and name send it new connections.
    pub in_rotation: bool,
    /// The config contents and secret versions it was created with.
    pub files: FileRefs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Built, its process waiting to be started.
    Created,
    Running,
    /// Its process ended; the code is known when its monitor recorded it.
    Exited {
        code: Option<i32>,
        at: Option<SystemTime>,
        /// The kernel's OOM killer ended it (the code is 137).
        oom_killed: bool,
    },
    /// Its state could not be read.
    Unknown,
}

impl ContainerStatus {
    /// The exit code, once the container has exited and its monitor recorded it.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ContainerStatus::Exited { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether the kernel's OOM killer ended the container.
    pub fn oom_killed(&self) -> bool {
        matches!(
            self,
            ContainerStatus::Exited {
                oom_killed: true,
                ..
            }
        )
    }
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerStatus::Created => f.write_str("created"),
            ContainerStatus::Running => f.write_str("running"),
            ContainerStatus::Exited {
                code: Some(code),
                oom_killed: true,
                ..
            } => write!(f, "exited ({code}, OOM killed)"),
            ContainerStatus::Exited {
                code: Some(code), ..
            } => write!(f, "exited ({code})"),
            ContainerStatus::Exited { code: None, .. } => f.write_str("exited"),
            ContainerStatus::Unknown => f.write_str("unknown"),
        }
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The container was not running.
    NotRunning,
    /// It ended after its stop signal, within its stop timeout.
    BySignal,
    /// It was still running at the end of its stop timeout: SIGKILL ended it.
    Killed,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::NotRunning => "was not running",
            Stopped::BySignal => "ended on its stop signal",
            Stopped::Killed => "killed at the end of its stop timeout",
        })
    }
}

/// The operations the planner's steps need.
pub trait Runtime: Send + Sync {
    /// Creates a container (not started); returns its id.
    fn create(
        &self,
        request: &CreateRequest,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Sends `signal`, waits up to `timeout`, then kills; says which ended it.
    fn stop(
        &self,
        id: &str,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> impl Future<Output = Result<Stopped, RuntimeError>> + Send;
    fn kill(
        &self,
        id: &str,
        signal: nix::sys::signal::Signal,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a container and everything it had on the host but named volumes.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Puts a container in rotation (its service's published ports and name send it
    /// new connections) or takes it out; returns whether it was in. A container that
    /// is not on the bridge is never in rotation.
    fn set_serving(
        &self,
        id: &str,
        serving: bool,
    ) -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// Puts the network's rules back if another program removed them (a flushed
    /// ruleset); done at most once a minute.
    fn restore_network(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Every container wharf created under this root.
    fn list(&self) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send;
    /// Runs a command inside a running container (health checks), killing it after
    /// `timeout`.
    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send;
}

/// How to stop a container made from `spec`: its stop signal and timeout (SIGTERM
/// and 10 s when the spec is unknown).
pub fn stop_settings(spec: Option<&ServiceSpec>) -> (nix::sys::signal::Signal, Duration) {
    use nix::sys::signal::Signal;
    spec.map_or((Signal::SIGTERM, Duration::from_secs(10)), |spec| {
        // Validation normalised the name (SIGTERM, SIGQUIT...).
        (
            spec.stop.signal.parse().unwrap_or(Signal::SIGTERM),
            spec.stop.timeout.as_std(),
        )
    })
}

/// Stops a container with its own stop signal and timeout (those of the spec it was
/// made from), then removes it. A container in rotation leaves it first and is given
/// its drain time (`stop.drain`) before the signal: requests under way finish, new
/// ones go to other replicas.
pub async fn stop_and_remove<R: Runtime>(
    runtime: &R,
    container: &ObservedContainer,
) -> Result<Stopped, RuntimeError> {
    if runtime.set_serving(&container.id, false).await? {
        let drain = container
            .spec
            .as_deref()
            .map_or(Duration::ZERO, |spec| spec.stop.drain.as_std());
        tokio::time::sleep(drain).await;
    }
    let (signal, timeout) = stop_settings(container.spec.as_deref());
    let stopped = runtime.stop(&container.id, signal, timeout).await?;
    runtime.remove(&container.id).await?;
    Ok(stopped)
}
