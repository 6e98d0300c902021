//! Stopping and removing containers: signalling the init process, waiting for it to
//! go (and its monitor to record how), removing everything the container had on the host.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::cgroup::remove_cgroup;
use super::error::RuntimeError;
use super::files::remove_files;
use super::libcontainer::{blocking, lock, LibcontainerRuntime};
use super::observe::MONITOR_GRACE;
use super::pidfd::ProcessHandle;
use super::records::{AddressRecord, ProcessRecord, RecordError, Role, StopRequest};
use super::Stopped;
use crate::image::unmount_rootfs;
use crate::network::{release, remove_veth, set_serving, unregister};

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
        let Some(init) = self.process_handle(id, Role::Init)? else {
            return Ok(None);
        };
        let monitor = self.process_handle(id, Role::Monitor)?;
        self.note_stop_request(id);
        init.signal(signal)
            .map_err(|err| cannot_signal(id, signal, err))?;
        Ok(Some((init, monitor)))
    }

    /// A handle on the container's process in `role`; None when it has ended or has
    /// no readable record (a damaged one identifies no process). Failing to read is an
    /// error: taken for ended, a running container would be removed from under it.
    fn process_handle(&self, id: &str, role: Role) -> Result<Option<ProcessHandle>, RuntimeError> {
        let dir = self.container_dir(id);
        let record = match ProcessRecord::read(&dir, role) {
            Ok(record) => record,
            Err(RecordError::Malformed { .. }) => None,
            Err(RecordError::Io { path, source }) => return Err(RuntimeError::Io { path, source }),
        };
        let Some(record) = record else {
            return Ok(None);
        };
        ProcessHandle::open(record).map_err(RuntimeError::io(format!("/proc/{}", record.pid)))
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
        // Removals hold a file descriptor per directory level: a few at once.
        let _turn = self.work.acquire().await.ok();
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.cleanup(&id, &Self::cgroups_path(&id))).await
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

    /// Removes everything a container had on the host, whatever state it is in:
    /// what still runs in its cgroup is killed. When the cgroup cannot be emptied and
    /// removed, the rest stays (the container is still listed) and that is the error.
    /// Not through libcontainer's `delete`: on cgroup v1 it reads the host's whole
    /// mount table several times; wharf sets no hooks and removes the cgroup and
    /// libcontainer's state itself.
    pub(super) fn cleanup(&self, id: &str, cgroups_path: &str) -> Result<(), RuntimeError> {
        lock(&self.known).remove(id);
        remove_cgroup(cgroups_path).map_err(|err| RuntimeError::Container {
            what: format!("container {id}"),
            message: format!("{err}; its directory is kept"),
        })?;
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
        let state = self.state.join(id);
        for dir in [&dir, &state] {
            match fs::remove_dir_all(dir) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RuntimeError::Io {
                        path: dir.clone(),
                        source: err,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn cannot_signal(id: &str, signal: Signal, err: std::io::Error) -> RuntimeError {
    RuntimeError::Container {
        what: format!("container {id}"),
        message: format!("cannot send {signal}: {err}"),
    }
}
