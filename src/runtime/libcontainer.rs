//! The runtime on youki's libcontainer: `LibcontainerRuntime` and its `Runtime`
//! implementation, which runs each operation on a blocking thread. The operations
//! live one per file, as in youki: `create` (and start), `exec`, `stop` (signal,
//! wait, remove, clean up) and `observe` (list, describe, status); `records` reads
//! and writes the small records in each container directory.
//!
//! Layout under the wharf root:
//! - `containers/<id>/`: the bundle (config.json), the overlay rootfs with its upper
//!   and work dirs, `etc/` (hosts, hostname, resolv.conf), anonymous volumes,
//!   `output.log` and its rotated files `output.log.1`... (stdout and stderr,
//!   timestamped by the monitor), and the records: `creator`, `init` and `monitor`
//!   (pid and start time of the wharf process creating it, of the container's process
//!   and of its monitor), `layers`, `started`, `exit` (code, time and OOM kill,
//!   written by the monitor);
//! - `state/<id>/`: libcontainer's state;
//! - `volumes/<name>/`: named volumes, kept when containers go.
//!
//! Container ids are `<service>-<slot>-<6 hex>`, so a replacement can exist beside
//! the container it replaces; the hostname is `<service>-<slot>`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::RuntimeError;
use super::exec::ExecOutput;
use super::logs::Logs;
use super::observe::Known;
use super::{CreateRequest, ObservedContainer, Runtime, Stopped};

#[derive(Debug, Clone)]
pub struct LibcontainerRuntime {
    pub(super) containers: PathBuf,
    pub(super) state: PathBuf,
    volumes: PathBuf,
    /// The `wharf-monitor` program, run beside each container (see `monitor`).
    pub(super) monitor: PathBuf,
    /// What does not change about each container, read once rather than at every
    /// listing: the agent lists at every reconcile.
    pub(super) known: Arc<Mutex<HashMap<String, Known>>>,
    /// Turns for the CPU-bound part of creating and removing containers, two per
    /// CPU: the rest of a stop or a health wait does not count against it.
    pub(super) work: Arc<tokio::sync::Semaphore>,
}

impl LibcontainerRuntime {
    /// Opens the runtime under `root`; `monitor` is the `wharf-monitor` program, run
    /// beside each container.
    pub fn open(root: &Path, monitor: &Path) -> Result<Self, RuntimeError> {
        fs::create_dir_all(root).map_err(RuntimeError::io(root))?;
        let root = root.canonicalize().map_err(RuntimeError::io(root))?;
        let runtime = LibcontainerRuntime {
            containers: root.join("containers"),
            state: root.join("state"),
            volumes: root.join("volumes"),
            monitor: monitor.to_owned(),
            known: Arc::default(),
            work: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(1, usize::from),
            )),
        };
        for dir in [&runtime.containers, &runtime.state, &runtime.volumes] {
            fs::create_dir_all(dir).map_err(RuntimeError::io(dir))?;
        }
        Ok(runtime)
    }

    /// The wharf root (canonical).
    pub fn root(&self) -> &Path {
        // `containers` is `<root>/containers`, made from a canonical root.
        self.containers.parent().unwrap_or(&self.containers)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers.join(id)
    }

    pub fn logs(&self, id: &str) -> Logs {
        Logs::new(self.container_dir(id))
    }

    /// The cgroup of a container (under every controller, for cgroup v1).
    pub fn cgroups_path(id: &str) -> String {
        format!("/wharf/{id}")
    }

    /// The named volume directory for `name`.
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes.join(name)
    }
}

impl Runtime for LibcontainerRuntime {
    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let _turn = self.work.acquire().await.ok();
        let (runtime, request) = (self.clone(), request.clone());
        blocking(move || runtime.create_blocking(&request)).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.start_blocking(&id)).await
    }

    async fn stop(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<Stopped, RuntimeError> {
        self.stop_waiting(id, signal, timeout).await
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.kill_on_request(&id, signal)).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove_waiting(id).await
    }

    async fn set_serving(&self, id: &str, serving: bool) -> Result<bool, RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.set_serving_blocking(&id, serving)).await
    }

    async fn restore_network(&self) -> Result<(), RuntimeError> {
        blocking(|| {
            crate::network::restore().map_err(|source| RuntimeError::Rotation {
                what: "the services on the bridge".into(),
                source,
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let runtime = self.clone();
        blocking(move || runtime.list_blocking()).await
    }

    async fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let (runtime, id, args) = (self.clone(), id.to_owned(), args.to_vec());
        blocking(move || runtime.exec_blocking(&id, &args, Some(timeout))).await
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(RuntimeError::Task)?
}

/// A lock that stays usable after a panic while it was held: the `known` cache
/// only ever holds whole entries.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
