//! Stopping and removing containers: signalling the init process, waiting for it to
//! go (and its monitor to record how), removing everything the container had on the host.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use nix::sys::signal::Signal;

use super::error::RuntimeError;
use super::files::remove_files;
use super::libcontainer::{lock, LibcontainerRuntime};
use super::observe::MONITOR_GRACE;
use super::records::{AddressRecord, StopRequest};
use crate::image::unmount_rootfs;
use crate::network::{release, set_serving, unregister};
use crate::process::libcontainer_lock;

/// How long a killed container may take to disappear.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl LibcontainerRuntime {
    /// Signals the container's init process. Every container has its own pid
    /// namespace, so SIGKILL to its init ends all of its processes. (Signalling from
    /// /proc-checked pids also avoids libcontainer's status bookkeeping, which marks a
    /// container stopped as soon as any signal was sent.)
    pub(super) fn kill_blocking(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.ensure_ours(id)?;
        let Some(pid) = self.live_pid(id) else {
            return Ok(());
        };
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(errno) => Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: format!("cannot send {signal}: {errno}"),
            }),
        }
    }

    /// `wharf kill`: a SIGKILL from the user is no OOM kill either.
    pub(super) fn kill_on_request(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.ensure_ours(id)?;
        if signal == Signal::SIGKILL {
            self.note_stop_request(id);
        }
        self.kill_blocking(id, signal)
    }

    pub(super) fn stop_blocking(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.ensure_ours(id)?;
        self.note_stop_request(id);
        self.kill_blocking(id, signal)?;
        if self.wait_gone(id, timeout) {
            return Ok(());
        }
        self.kill_blocking(id, Signal::SIGKILL)?;
        if self.wait_gone(id, KILL_GRACE) {
            Ok(())
        } else {
            Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: format!("still running {}s after SIGKILL", KILL_GRACE.as_secs()),
            })
        }
    }

    pub(super) fn remove_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        self.ensure_ours(id)?;
        if self.live_pid(id).is_some() {
            self.note_stop_request(id);
            self.kill_blocking(id, Signal::SIGKILL)?;
            self.wait_gone(id, KILL_GRACE);
        }
        self.cleanup(id, &Self::cgroups_path(id));
        Ok(())
    }

    pub(super) fn set_serving_blocking(
        &self,
        id: &str,
        serving: bool,
    ) -> Result<bool, RuntimeError> {
        self.ensure_ours(id)?;
        let record = AddressRecord::read(&self.container_dir(id)).ok().flatten();
        let Some(key) = record.and_then(|record| record.service_key) else {
            return Ok(false);
        };
        let rotation = |serving| {
            set_serving(&key, id, serving).map_err(|source| RuntimeError::Rotation {
                what: format!("container {id}"),
                source,
            })
        };
        let was = rotation(serving)?;
        // A container that ended before it joined: its monitor took it out of rotation
        // before it was put in. Looked at after joining, the end is seen here or the
        // monitor's removal comes after.
        if serving && self.live_pid(id).is_none() {
            rotation(false)?;
        }
        Ok(was)
    }

    /// Tells the container's monitor that an end coming now is wharf's doing, not the
    /// OOM killer's (see `StopRequest`).
    fn note_stop_request(&self, id: &str) {
        // Without it, only an earlier OOM kill in the container could be misread.
        let _ = StopRequest::write(&self.container_dir(id));
    }

    /// Waits until the container's process is gone and its monitor has recorded how
    /// it ended; returns whether the process went in time.
    fn wait_gone(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.live_pid(id).is_some() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            // The monitor ends right after the init: a monitor of this process wakes
            // the reaper; otherwise this polls. Without a monitor (killed, or a
            // container of an older wharf), the init itself is polled.
            let step = left.min(Duration::from_millis(20));
            if self.wait_for_monitor(id, step) && self.live_pid(id).is_some() {
                std::thread::sleep(step);
            }
        }
        self.wait_for_monitor(id, MONITOR_GRACE);
        true
    }

    /// Removes everything a container had on the host, whatever state it is in.
    pub(super) fn cleanup(&self, id: &str, cgroups_path: &str) {
        lock(&self.described).remove(id);
        if let Ok(mut container) = Container::load(self.state.join(id)) {
            let _one_at_a_time = libcontainer_lock();
            let _ = container.delete(true);
        }
        remove_cgroup_leaf(cgroups_path);
        let dir = self.container_dir(id);
        if let Ok(Some(record)) = AddressRecord::read(&dir) {
            if let Some(key) = &record.service_key {
                if let Err(err) = unregister(key, id) {
                    tracing::warn!(container = id, "{err}");
                }
            }
            release(record.address, &dir);
        }
        let _ = unmount_rootfs(&dir);
        remove_files(&dir);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(self.state.join(id));
    }
}

/// Removes `<cgroup root>/<controller>/<path>` (v1) and `<cgroup root>/<path>` (v2)
/// where a failed build left them.
fn remove_cgroup_leaf(cgroups_path: &str) {
    let relative = cgroups_path.trim_start_matches('/');
    let mut candidates = vec![Path::new("/sys/fs/cgroup").join(relative)];
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        candidates.extend(controllers.flatten().map(|c| c.path().join(relative)));
    }
    for dir in candidates {
        if dir.is_dir() {
            let _ = fs::remove_dir(&dir);
        }
    }
}
