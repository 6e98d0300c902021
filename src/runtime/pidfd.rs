//! Waiting for a process to end without a thread: a pidfd (Linux 5.3) becomes
//! readable when its process exits, also when it is not this process's child (a
//! container created by another wharf command). Stopping a thousand containers then
//! costs a thousand file descriptors, not a thousand threads polling /proc.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::records::ProcessRecord;

/// How often a process is looked at where no pidfd can be had.
const POLL: Duration = Duration::from_millis(20);

/// A recorded process, held so that it can be signalled and waited for.
pub(super) enum ProcessHandle {
    /// Signalled through the pidfd: never another process that got the pid since.
    Pidfd(AsyncFd<OwnedFd>),
    /// No pidfd (an older kernel): /proc is polled, the record's start time guarding
    /// against a reused pid.
    Polled(ProcessRecord),
}

impl ProcessHandle {
    /// A handle on `record`'s process, or None when it has ended. Opened first and
    /// checked after: a process alive with the recorded start time at the check is
    /// the one the pidfd was opened on.
    pub(super) fn open(record: ProcessRecord) -> Option<Self> {
        let pid = rustix::process::Pid::from_raw(record.pid)?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty());
        if !record.is_alive() {
            return None;
        }
        // Registered with the tokio runtime this is called in (a blocking task's).
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        let handle = pidfd.ok().filter(|_| in_runtime).and_then(|fd| {
            // SAFETY: the AsyncFd owns the OwnedFd, whose descriptor stays open and the
            // same until the AsyncFd is dropped.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
        });
        Some(handle.map_or(ProcessHandle::Polled(record), ProcessHandle::Pidfd))
    }

    /// Sends `signal`; a process that has ended meanwhile is no error.
    pub(super) fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let result = match self {
            ProcessHandle::Pidfd(fd) => {
                let Some(signal) = rustix::process::Signal::from_named_raw(signal as i32) else {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL));
                };
                rustix::process::pidfd_send_signal(fd.get_ref().as_fd(), signal)
                    .map_err(std::io::Error::from)
            }
            ProcessHandle::Polled(record) if record.is_alive() => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(record.pid), signal)
                    .map_err(std::io::Error::from)
            }
            ProcessHandle::Polled(_) => Ok(()),
        };
        match result {
            Err(err) if err.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Waits up to `timeout` for the process to end; returns whether it has.
    pub(super) async fn ended_within(&self, timeout: Duration) -> bool {
        match self {
            ProcessHandle::Pidfd(fd) => tokio::time::timeout(timeout, fd.readable())
                .await
                .is_ok_and(|ready| ready.is_ok()),
            ProcessHandle::Polled(record) => {
                let deadline = tokio::time::Instant::now() + timeout;
                while record.is_alive() {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                    tokio::time::sleep(POLL).await;
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handle_sees_its_process_end_and_none_is_had_on_an_ended_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let record = ProcessRecord::of(child.id() as i32);
        let handle = ProcessHandle::open(record).expect("sleep runs");
        assert!(matches!(handle, ProcessHandle::Pidfd(_)));
        assert!(!handle.ended_within(Duration::from_millis(50)).await);
        handle.signal(Signal::SIGTERM).expect("signal");
        // A zombie has ended: the pidfd says so before anyone collects the status.
        assert!(handle.ended_within(Duration::from_secs(5)).await);
        let _ = child.wait();
        assert!(ProcessHandle::open(record).is_none());
        handle
            .signal(Signal::SIGKILL)
            .expect("signalling an ended process is no error");
    }
}
