//! Stopping and removing containers: signalling the init process, waiting for it to
//! go (and its monitor to record how), removing everything the container had on the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::error::RuntimeError;
use super::files::remove_files;
use super::libcontainer::{blocking, lock, LibcontainerRuntime};
use super::observe::MONITOR_GRACE;
use super::pidfd::ProcessHandle;
use super::records::{AddressRecord, StopRequest};
use super::Stopped;
use crate::image::unmount_rootfs;
use crate::network::{release, remove_veth, set_serving, unregister};

/// How long a killed container may take to disappear.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long a cgroup may stay busy after its last process ended.
const CGROUP_GRACE: Duration = Duration::from_secs(1);

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
            Err(errno) => Err(cannot_signal(id, signal, errno.into())),
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

    /// Signals the container's init with `signal`, waits up to `timeout` for it to
    /// end, then kills it; and waits for its monitor to record how it ended. The
    /// waits hold a pidfd each, no thread: many containers stop at once.
    pub(super) async fn stop_waiting(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<Stopped, RuntimeError> {
        let runtime = self.clone();
        let owned = id.to_owned();
        let Some((init, monitor)) =
            blocking(move || runtime.signal_for_stop(&owned, signal)).await?
        else {
            return Ok(Stopped::NotRunning);
        };
        let mut stopped = Stopped::BySignal;
        if !init.ended_within(timeout).await {
            stopped = Stopped::Killed;
            init.signal(Signal::SIGKILL)
                .map_err(|err| cannot_signal(id, Signal::SIGKILL, err))?;
            if !init.ended_within(KILL_GRACE).await {
                return Err(RuntimeError::Container {
                    what: format!("container {id}"),
                    message: format!("still running {}s after SIGKILL", KILL_GRACE.as_secs()),
                });
            }
        }
        if let Some(monitor) = monitor {
            monitor.ended_within(MONITOR_GRACE).await;
        }
        Ok(stopped)
    }

    /// Takes hold of the container's init (and monitor) and sends `signal`; None
    /// when the init has ended already.
    fn signal_for_stop(
        &self,
        id: &str,
        signal: Signal,
    ) -> Result<Option<(ProcessHandle, Option<ProcessHandle>)>, RuntimeError> {
        self.ensure_ours(id)?;
        let Some(init) = self.init_record(id).and_then(ProcessHandle::open) else {
            return Ok(None);
        };
        let monitor = self.monitor_record(id).and_then(ProcessHandle::open);
        self.note_stop_request(id);
        init.signal(signal)
            .map_err(|err| cannot_signal(id, signal, err))?;
        Ok(Some((init, monitor)))
    }

    /// Kills what still runs of the container (a created or running one), then
    /// removes everything it had on the host.
    pub(super) async fn remove_waiting(&self, id: &str) -> Result<(), RuntimeError> {
        match self.stop_waiting(id, Signal::SIGKILL, KILL_GRACE).await {
            Err(err @ RuntimeError::NotFound(_)) => return Err(err),
            // One that will not die is still removed as far as it can be.
            Err(err) => tracing::warn!(container = id, "{err}"),
            Ok(_) => {}
        }
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || {
            runtime.cleanup(&id, &Self::cgroups_path(&id));
            Ok(())
        })
        .await
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

    /// Removes everything a container had on the host, whatever state it is in (its
    /// processes ended). Not through libcontainer's `delete`: on cgroup v1 it reads
    /// the host's whole mount table several times, a cost that grows with the number
    /// of containers (each has its root filesystem mounted); wharf sets no hooks and
    /// removes the cgroup and libcontainer's state itself.
    pub(super) fn cleanup(&self, id: &str, cgroups_path: &str) {
        lock(&self.described).remove(id);
        remove_cgroup_leaf(cgroups_path);
        let dir = self.container_dir(id);
        if let Ok(Some(record)) = AddressRecord::read(&dir) {
            if let Some(key) = &record.service_key {
                if let Err(err) = unregister(key, id) {
                    tracing::warn!(container = id, "{err}");
                }
            }
            if let Err(err) = remove_veth(id) {
                tracing::warn!(container = id, "cannot delete its network link: {err}");
            }
            release(record.address, &dir);
        }
        let _ = unmount_rootfs(&dir);
        remove_files(&dir);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(self.state.join(id));
    }
}

/// Removes the container's cgroup: `<cgroup root>/<controller>/<path>` (v1) and
/// `<cgroup root>/<path>` (v2).
fn remove_cgroup_leaf(cgroups_path: &str) {
    let relative = cgroups_path.trim_start_matches('/');
    let mut candidates = vec![Path::new("/sys/fs/cgroup").join(relative)];
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        candidates.extend(controllers.flatten().map(|c| c.path().join(relative)));
    }
    let dirs: Vec<&PathBuf> = candidates.iter().filter(|dir| dir.is_dir()).collect();
    // Whatever is left (a build that failed half-way) is killed: the container's
    // processes are the only ones in its cgroup.
    for dir in &dirs {
        kill_members(dir);
    }
    for dir in dirs {
        // A killed process leaves its cgroup a moment after it is reaped (EBUSY).
        let deadline = Instant::now() + CGROUP_GRACE;
        while let Err(err) = fs::remove_dir(dir) {
            if err.raw_os_error() != Some(nix::libc::EBUSY) || Instant::now() >= deadline {
                tracing::warn!("cannot remove the cgroup {}: {err}", dir.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// SIGKILLs the processes in the cgroup `dir` (`cgroup.kill` where the kernel has it).
fn kill_members(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let Ok(members) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in members.lines().filter_map(|line| line.trim().parse().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn cannot_signal(id: &str, signal: Signal, err: std::io::Error) -> RuntimeError {
    RuntimeError::Container {
        what: format!("container {id}"),
        message: format!("cannot send {signal}: {err}"),
    }
}
