//! Starting helper processes from a process that runs containers. Two rules hold
//! there: nothing is spawned while libcontainer forks (a fork copies the locks that a
//! spawning thread holds, and the copy deadlocks on them), and nothing waits for its
//! own children (the runtime's reaper collects every child's exit status first), so
//! helpers answer through a pipe, not an exit status.
//!
//! A module of its own so that `image` (credential helpers) and the agent (Git sync)
//! can run helpers without importing the container runtime; only the reaper is
//! shared with it.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::reaper::Reaper;

/// libcontainer's work (builds run in a forked copy, see `runtime::forked`) must not race
/// other process spawning, whose locks a fork would copy while held: one at a time.
static LIBCONTAINER: Mutex<()> = Mutex::new(());

/// Holds off libcontainer's work and helper spawning elsewhere in the process until
/// dropped.
pub(crate) fn libcontainer_lock() -> MutexGuard<'static, ()> {
    // The lock guards no data: a panic while it was held leaves nothing to repair.
    LIBCONTAINER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns a helper process in a process that runs containers: never during one of
/// libcontainer's forks, and known to the reaper, which collects its exit status
/// (callers must not wait for it).
pub fn spawn_beside_containers(command: &mut Command) -> std::io::Result<Child> {
    let _one_at_a_time = libcontainer_lock();
    let child = command.spawn();
    Reaper::global().children_spawned();
    child
}

/// Runs a wharf helper subcommand beside containers (`spawn_beside_containers`) and
/// returns its answer: a JSON `Result<T, String>` on its stdout, since its exit status
/// cannot be waited for here.
pub fn ask_helper<T: serde::de::DeserializeOwned>(command: &mut Command) -> Result<T, String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = spawn_beside_containers(command)
        .map_err(|err| format!("cannot run {:?}: {err}", command.get_program()))?;
    let mut answer = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut answer).map_err(|err| {
            format!(
                "cannot read the answer of {:?}: {err}",
                command.get_program()
            )
        })?;
    }
    serde_json::from_str::<Result<T, String>>(&answer)
        .map_err(|err| format!("{:?} answered {answer:?}: {err}", command.get_program()))?
}
