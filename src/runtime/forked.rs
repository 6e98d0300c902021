//! libcontainer starts a container's processes with raw `clone3` system calls, which
//! skip glibc's fork handlers: a malloc lock that another thread of this process holds
//! at that instant stays locked in the new process forever. Seen in the agent: the
//! intermediate process blocked in `realloc` on `main_arena`, and the agent waiting for
//! it with the libcontainer lock held, so nothing was created or checked any more.
//!
//! So each build runs in a copy of this process made by glibc's `fork()`, which leaves
//! malloc usable in the copy; the copy has a single thread, so its clones are safe.
//! Builds use libcontainer's `as_sibling`: the processes it starts are created with
//! `CLONE_PARENT`, i.e. as children of this process (not of the short-lived copy), and
//! the reaper collects their exit statuses as before.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};

use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};

use super::reaper::Reaper;

/// Runs `build` in a forked copy of this process and returns the pid it answers.
/// The caller holds the libcontainer lock, so no other thread is spawning a process.
pub(super) fn in_forked_copy(build: impl FnOnce() -> Result<i32, String>) -> Result<i32, String> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|err| format!("cannot create a pipe: {err}"))?;
    // SAFETY: the copy only runs `build` (libcontainer, which expects a process of its
    // own), writes one line and leaves with `_exit`, skipping this process's exit
    // handlers and buffered output.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(read);
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
                .unwrap_or_else(|_| Err("the container build panicked".into()));
            let mut line = serde_json::to_vec(&answer).unwrap_or_default();
            line.push(b'\n');
            let _ = File::from(write).write_all(&line);
            // SAFETY: ends the copy without running anything of this process.
            unsafe { nix::libc::_exit(0) }
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(write);
            Reaper::global().children_spawned();
            // One line, not until end of file: the processes the copy started inherit
            // the write end until they exec (an init waits for `start` first).
            let mut line = String::new();
            BufReader::new(File::from(read))
                .read_line(&mut line)
                .map_err(|err| format!("cannot read the container build's answer: {err}"))?;
            serde_json::from_str::<Result<i32, String>>(&line)
                .map_err(|_| "the container build ended without an answer".to_owned())?
        }
        Err(err) => Err(format!("cannot fork: {err}")),
    }
}
