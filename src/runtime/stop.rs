//! Stopping and removing containers: signalling the init process, waiting for it to
//! go and recording its exit, removing everything the container had on the host.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use nix::sys::signal::Signal;

use super::error::RuntimeError;
use super::libcontainer::{lock, LibcontainerRuntime};
use super::proc::is_our_exited_child;
use super::records::ExitRecord;
use crate::image::unmount_rootfs;
use crate::process::libcontainer_lock;
use crate::reaper::Reaper;

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

    pub(super) fn stop_blocking(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
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
            self.kill_blocking(id, Signal::SIGKILL)?;
            self.wait_gone(id, KILL_GRACE);
        }
        self.cleanup(id, &Self::cgroups_path(id));
        Ok(())
    }

    /// Waits until the container's process is gone; returns whether it went in time.
    fn wait_gone(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Some(init) = self.init_record(id) else {
            return true;
        };
        let since = self.created_at(id);
        while self.live_pid(id).is_some() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            // A child of ours wakes the reaper; a container created by another
            // process is polled.
            if Reaper::global()
                .wait_for(init.pid, since, left.min(Duration::from_millis(20)))
                .is_some()
            {
                break;
            }
        }
        self.record_exit(id);
        true
    }

    /// Records the exit code if this process saw the exit (it is the parent).
    pub(super) fn record_exit(&self, id: &str) {
        let dir = self.container_dir(id);
        if dir.join(ExitRecord::FILE).exists() {
            return;
        }
        if let Some(init) = self.init_record(id) {
            // A zombie of ours is being reaped right now: wait for its status.
            let since = self.created_at(id);
            let exit = if is_our_exited_child(init.pid, init.start_time) {
                Reaper::global().wait_for(init.pid, since, Duration::from_secs(1))
            } else {
                Reaper::global().exit_of(init.pid, since)
            };
            if let Some(exit) = exit {
                let record = ExitRecord {
                    code: exit.code,
                    at: exit.at,
                };
                let _ = record.write(&dir);
            }
        }
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
        let _ = unmount_rootfs(&dir);
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
