//! Running a command inside a running container (health checks, `wharf exec`).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, SystemTime};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

use super::error::{ForkedError, RuntimeError};
use super::forked::in_forked_copy;
use super::libcontainer::LibcontainerRuntime;
use crate::reaper::Reaper;

/// How long an exec's output may still arrive after its process ended.
const EXEC_OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What `exec` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl LibcontainerRuntime {
    /// Runs `args` inside a running container and returns its exit code and output.
    /// After `timeout` the process is killed and the exec fails.
    pub fn exec_blocking(
        &self,
        id: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        self.ensure_ours(id)?;
        let what = format!("container {id}");
        if self.live_pid(id).is_none() {
            return Err(RuntimeError::Container {
                what,
                message: "is not running".into(),
            });
        }
        // Close-on-exec, or a container forked meanwhile (by another thread) would
        // keep the write ends open for its whole life and the readers would never end.
        let pipe =
            || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::io("pipe")(e.into()));
        let ((out_read, out_write), (err_read, err_write)) = (pipe()?, pipe()?);
        let since = SystemTime::now();
        let pid = self
            .exec_in_forked_copy(id, args, out_write, err_write)
            .map_err(|error| RuntimeError::Exec {
                what: what.clone(),
                error,
            })?;
        let (stdout, stderr) = (read_in_background(out_read), read_in_background(err_read));
        let limit = timeout.unwrap_or(Duration::from_secs(24 * 3600));
        let exit = Reaper::global().wait_for(pid, since, limit);
        if exit.is_none() {
            // The readers are left to finish on their own: a child of the killed
            // process may still hold the pipes.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            Reaper::global().wait_for(pid, since, Duration::from_secs(5));
            return Err(RuntimeError::Container {
                what,
                message: format!(
                    "`{}` timed out after {}",
                    args.join(" "),
                    humantime::format_duration(limit)
                ),
            });
        }
        Ok(ExecOutput {
            code: exit.map_or(-1, |e| e.code),
            stdout: output_of(stdout),
            stderr: output_of(stderr),
        })
    }

    /// Starts `args` in the container from a forked copy of this process (see
    /// `forked`), its output going to `stdout` and `stderr`; returns its pid.
    fn exec_in_forked_copy(
        &self,
        id: &str,
        args: &[String],
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<i32, ForkedError> {
        let state = &self.state;
        let keep = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        in_forked_copy(&keep, move || {
            ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
                .with_stdout(stdout)
                .with_stderr(stderr)
                .with_root_path(state)
                .and_then(|builder| {
                    builder
                        .as_tenant()
                        .as_sibling(true)
                        .with_container_args(args.to_vec())
                        .with_detach(true)
                        .build()
                })
                .map(|pid| pid.as_raw())
                .map_err(|err| crate::error_chain(&err))
        })
    }
}

/// Reads all of `fd` on a thread of its own; the bytes arrive on the receiver.
fn read_in_background(fd: OwnedFd) -> Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = File::from(fd).read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    receiver
}

/// A process the command left behind may hold the pipes: its output is not waited for.
fn output_of(receiver: Receiver<Vec<u8>>) -> Vec<u8> {
    receiver.recv_timeout(EXEC_OUTPUT_GRACE).unwrap_or_default()
}
