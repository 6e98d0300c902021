//! Waiting for a process to end without a thread: a pidfd (Linux 5.3) becomes
//! readable when its process exits, also when it is not this process's child (a
//! container created by another wharf command). Stopping a thousand containers then
//! costs a thousand file descriptors, not a thousand threads polling /proc.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustix::process::PidfdFlags;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::proc::is_same_process_checked;
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
    /// A handle on `record`'s process, or None when it has ended (see `pidfd_of`). A
    /// failure to look (out of file descriptors) is an error: a container must never
    /// be taken for ended when it is not known.
    pub(super) fn open(record: ProcessRecord) -> std::io::Result<Option<Self>> {
        let fd = match pidfd_of(&record) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(None),
            // An older kernel: /proc is polled.
            Err(err) if err.raw_os_error() == Some(nix::libc::ENOSYS) => {
                let alive = is_same_process_checked(record.pid, record.start_time)?;
                return Ok(alive.then_some(ProcessHandle::Polled(record)));
            }
            Err(err) => return Err(err),
        };
        // Registered with the tokio runtime this is called in (a blocking task's).
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(Some(ProcessHandle::Polled(record)));
        }
        // SAFETY: the AsyncFd owns the OwnedFd, whose descriptor stays open and the
        // same until the AsyncFd is dropped.
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        registered
            .map(|fd| Some(ProcessHandle::Pidfd(fd)))
            .map_err(|err| err.into_parts().1)
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
                // One that cannot be looked at is taken as still running.
                while is_same_process_checked(record.pid, record.start_time).unwrap_or(true) {
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

/// The pidfd of `record`'s process; None once it has ended. Opened first and checked
/// after: a process alive with the recorded start time at the check is the one the
/// pidfd was opened on. A failure to open or look is an error (ENOSYS: a kernel
/// without pidfds).
fn pidfd_of(record: &ProcessRecord) -> std::io::Result<Option<OwnedFd>> {
    let Some(pid) = rustix::process::Pid::from_raw(record.pid) else {
        return Ok(None);
    };
    let fd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(errno) => return Err(errno.into()),
    };
    Ok(is_same_process_checked(record.pid, record.start_time)?.then_some(fd))
}

/// A recorded process whose end is looked for, from the second look on, through a
/// pidfd kept open: one poll at each listing instead of a read of /proc (the agent
/// lists at every reconcile, and a thousand /proc reads were most of its work). A
/// command that lists once reads /proc only.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    record: ProcessRecord,
    /// Once it was looked at twice and still runs (none where no pidfd can be had).
    fd: Option<Arc<OwnedFd>>,
    looked: bool,
    ended: bool,
}

impl Watched {
    pub(super) fn new(record: ProcessRecord) -> Self {
        Watched {
            record,
            fd: None,
            looked: false,
            ended: false,
        }
    }

    /// Looks again whether the process has ended (once ended, it stays so).
    pub(super) fn refresh(&mut self) {
        if self.ended {
            return;
        }
        self.ended = match &self.fd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                matches!(poll(&mut fds, PollTimeout::ZERO), Ok(ready) if ready > 0)
            }
            None if !self.looked => !self.record.is_alive(),
            None => match pidfd_of(&self.record) {
                Ok(Some(fd)) => {
                    self.fd = Some(Arc::new(fd));
                    false
                }
                Ok(None) => true,
                // No pidfd to be had (out of descriptors): /proc, as the first look.
                Err(_) => !self.record.is_alive(),
            },
        };
        self.looked = true;
        if self.ended {
            self.fd = None;
        }
    }

    /// The pid while the process runs (as of the last `refresh`).
    pub(super) fn pid_if_alive(&self) -> Option<i32> {
        (!self.ended).then_some(self.record.pid)
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
        let handle = ProcessHandle::open(record)
            .expect("looked")
            .expect("sleep runs");
        assert!(matches!(handle, ProcessHandle::Pidfd(_)));
        assert!(!handle.ended_within(Duration::from_millis(50)).await);
        handle.signal(Signal::SIGTERM).expect("signal");
        // A zombie has ended: the pidfd says so before anyone collects the status.
        assert!(handle.ended_within(Duration::from_secs(5)).await);
        let _ = child.wait();
        assert!(ProcessHandle::open(record).expect("looked").is_none());
        handle
            .signal(Signal::SIGKILL)
            .expect("signalling an ended process is no error");
    }

    #[test]
    fn a_watched_process_is_alive_until_it_ends_and_then_stays_ended() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let mut watched = Watched::new(ProcessRecord::of(pid));
        watched.refresh();
        assert_eq!(watched.pid_if_alive(), Some(pid));
        watched.refresh();
        assert!(
            watched.fd.is_some(),
            "watched through a pidfd from the second look"
        );
        assert_eq!(watched.pid_if_alive(), Some(pid));
        child.kill().expect("kill");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while watched.pid_if_alive().is_some() && std::time::Instant::now() < deadline {
            watched.refresh();
        }
        assert_eq!(watched.pid_if_alive(), None);
        let _ = child.wait();
        watched.refresh();
        assert_eq!(watched.pid_if_alive(), None, "once ended, always ended");
    }
}
