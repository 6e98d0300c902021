//! libcontainer starts a container's processes with raw `clone3` system calls, which
//! skip glibc's fork handlers: a malloc lock that another thread of this process holds
//! at that instant stays locked in the new process forever. Seen in the agent: the
//! intermediate process blocked in `realloc` on `main_arena`, and the agent waiting for
//! it with the libcontainer lock held, so nothing was created or checked any more.
//!
//! So each build runs in a copy of this process made by glibc's `fork()`, which leaves
//! malloc usable in the copy; the copy has a single thread, so its clones are safe.
//! A container's build leaves its init process a child of the copy, and the copy then
//! becomes the container's monitor (`in_forked_copy_becoming`, see `monitor`). An exec
//! uses libcontainer's `as_sibling`: its processes are created with `CLONE_PARENT`, as
//! children of this process, whose reaper collects their exit statuses.
//!
//! Nothing is logged in the copy: a lock that another thread held at the fork (the
//! log subscriber's, stderr's) stays locked there too. The copy's first act is
//! `logging::forbid_in_this_process`, which turns every later event and span of the
//! copy (libcontainer's own included, and those of the processes it clones from the
//! copy) into a no-op before it reaches the subscriber; see `crate::logging`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{fork, ForkResult, Pid};

use super::error::ForkedError;
use crate::process::libcontainer_lock;
use crate::reaper::Reaper;

/// Runs `build` in a forked copy of this process and returns the pid it answers.
/// `build`'s error crosses a pipe as JSON, so it is text (`ForkedError::Build`).
/// The copy keeps its standard streams and the descriptors in `keep` (those the
/// closures own) open, and no other (see `close_all_but`).
pub(super) fn in_forked_copy(
    keep: &[RawFd],
    build: impl FnOnce() -> Result<i32, String>,
) -> Result<i32, ForkedError> {
    let answered = fork_copy(keep, build, |pid, answer| write_answer(answer, &Ok(pid)))?;
    Ok(answered.pid)
}

/// Runs `build` in a forked copy of this process, which then becomes another program:
/// `exec_program` is given the pid `build` answered and the write end of the answer pipe,
/// execs, and returns only on failure (the error). The new program answers the pid
/// itself ([`answer_line`]), once it runs. The copy's processes (the container's init)
/// stay its children across the exec.
pub(super) fn in_forked_copy_becoming(
    keep: &[RawFd],
    build: impl FnOnce() -> Result<i32, String>,
    exec_program: impl FnOnce(i32, &OwnedFd) -> String,
) -> Result<Answered, ForkedError> {
    fork_copy(keep, build, |pid, answer| {
        let error = exec_program(pid, answer);
        write_answer(answer, &Err(error));
    })
}

/// The pid a forked copy answered, and the copy's own pid.
pub(super) struct Answered {
    pub pid: i32,
    pub copy: i32,
}

/// The answer a copy (or the program it became) writes: one line of JSON,
/// `Result<i32, String>`.
pub(super) fn answer_line(answer: &Result<i32, String>) -> Vec<u8> {
    let mut line = serde_json::to_vec(answer).unwrap_or_default();
    line.push(b'\n');
    line
}

fn write_answer(answer: &OwnedFd, result: &Result<i32, String>) {
    let line = answer_line(result);
    let mut rest = line.as_slice();
    while let Ok(written @ 1..) = nix::unistd::write(answer, rest) {
        rest = &rest[written..];
    }
}

/// Forks the copy: it runs `build`, then `after_build` with the pid built and the
/// answer pipe (after a failed build, the error is answered), and exits.
fn fork_copy(
    keep: &[RawFd],
    build: impl FnOnce() -> Result<i32, String>,
    after_build: impl FnOnce(i32, &OwnedFd),
) -> Result<Answered, ForkedError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ForkedError::Pipe)?;
    let since = SystemTime::now();
    // Only the fork itself is done under the lock (no other thread spawning a
    // process, see `libcontainer_lock`): copies build containers side by side.
    let forked = {
        let _one_at_a_time = libcontainer_lock();
        // SAFETY: the copy only runs `build` (libcontainer, which expects a process of
        // its own) with logging forbidden, answers on the pipe and leaves with `_exit`
        // (or an exec), skipping this process's exit handlers and buffered output.
        unsafe { fork() }
    };
    match forked {
        Ok(ForkResult::Child) => {
            // Before anything else: from here on nothing may log (see above).
            crate::logging::forbid_in_this_process();
            drop(read);
            close_all_but(&[keep, &[write.as_raw_fd()]].concat());
            reset_signals();
            // wharf's own umask (077) is for wharf's files, not the container's: youki
            // creates mount points with it and the container's processes inherit it.
            // 022, as runc and Docker give.
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
                .unwrap_or_else(|_| Err("the container build panicked".into()));
            match built {
                Ok(pid) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        after_build(pid, &write)
                    }));
                }
                Err(error) => write_answer(&write, &Err(error)),
            }
            // SAFETY: ends the copy without running anything of this process.
            unsafe { nix::libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            Reaper::global().children_spawned();
            let pid = answer_of(child, read, since)?;
            Ok(Answered {
                pid,
                copy: child.as_raw(),
            })
        }
        Err(err) => Err(ForkedError::Fork(err)),
    }
}

/// Closes every descriptor of this copy from 3 up but those in `keep`. The copy
/// inherited all of this process's (a thousand pidfds of the containers an agent
/// watches, the state database...): left open, they would fill the container's
/// process's table up to its open-file limit before it opens anything. (Those
/// still owned by values the copy drops must be in `keep`: closing a descriptor
/// twice aborts.)
fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd > 2)
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > first {
            // SAFETY: closes descriptors nothing in the copy uses any more (see
            // above); a kernel without close_range (before 5.9) leaves them open.
            unsafe { nix::libc::syscall(nix::libc::SYS_close_range, first, fd - 1, 0u32) };
        }
        first = fd.saturating_add(1);
    }
}

/// Gives the container's processes the default signal dispositions and an empty mask,
/// as runc does: an ignored signal stays ignored across `exec`, and Rust ignores
/// SIGPIPE, so `yes | head` in a container would spin on EPIPE forever.
fn reset_signals() {
    // Every signal number, real-time ones included: glibc's sigaction refuses the two
    // it reserves (32 and 33), so the system call is made directly. A zeroed kernel
    // sigaction is SIG_DFL with no flags and an empty mask.
    for signal in 1..=64 {
        if signal == nix::libc::SIGKILL || signal == nix::libc::SIGSTOP {
            continue;
        }
        let default = [0u64; 4];
        // SAFETY: installs no handler, only the default disposition, in a copy of the
        // process that has a single thread; `default` outlives the call.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}

/// Reads the copy's one-line answer. The end of the pipe cannot tell that the copy died
/// without answering (the processes it started keep the write end until they exec), so
/// its exit is watched too; an answer is written before the copy exits.
fn answer_of(copy: Pid, read: OwnedFd, since: SystemTime) -> Result<i32, ForkedError> {
    loop {
        let exited = Reaper::global().exit_of(copy.as_raw(), since);
        let wait = if exited.is_some() { 0u16 } else { 100 };
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(wait)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                let mut line = String::new();
                BufReader::new(File::from(read))
                    .read_line(&mut line)
                    .map_err(ForkedError::Read)?;
                // The copy's answer, as `answer_line` makes it.
                return serde_json::from_str::<Result<i32, String>>(&line)
                    .map_err(|_| ForkedError::NoAnswer)?
                    .map_err(ForkedError::Build);
            }
            Err(err) => return Err(ForkedError::Poll(err)),
        }
        if let Some(exit) = exited {
            return Err(ForkedError::Exited(exit.code));
        }
    }
}
