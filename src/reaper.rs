//! One reaper per process: a thread blocked in `waitpid(-1)` collects every child's
//! exit status as it happens (container init processes are children of the process
//! that built them, and failed builds leave zombie children behind). Exits are known
//! without polling; waiters are woken through a condition variable.
//!
//! Nothing else in the process may wait for its own children while containers run:
//! the reaper would take their status first. Helpers are started with
//! `ask_helper` and answer through a pipe, not an exit status (Docker
//! credential helpers run inside `wharf credential-lookup`, a process of its own).

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// How a child ended: its exit code, or 128 + the signal that killed it (as shells report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub at: SystemTime,
}

/// Exits are kept for those who ask later (a container's exit code is read when it is
/// next listed), but not forever: the map is pruned of exits older than `KEEP_EXITS`
/// once it holds `PRUNE_ABOVE` (every health check adds a few processes).
const KEEP_EXITS: Duration = Duration::from_secs(3600);
const PRUNE_ABOVE: usize = 4096;

pub struct Reaper {
    exits: Mutex<HashMap<i32, Exit>>,
    /// Container init processes: only their exits are counted for watchers. Build
    /// copies, execs and helpers end all the time; waking the agent for each would
    /// make it reconcile again, and a reconcile that runs a helper would loop.
    containers: Mutex<HashSet<i32>>,
    /// Counts container exits, so that a watcher can wait for the next one.
    recorded: Mutex<u64>,
    changed: Condvar,
    /// Set when a child may exist; the thread sleeps on it while there is none.
    children: Mutex<bool>,
    spawned: Condvar,
}

impl Reaper {
    fn new() -> Reaper {
        Reaper {
            exits: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashSet::new()),
            recorded: Mutex::new(0),
            changed: Condvar::new(),
            children: Mutex::new(false),
            spawned: Condvar::new(),
        }
    }

    /// The process's reaper, started on first use.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        static STARTED: OnceLock<()> = OnceLock::new();
        let reaper = REAPER.get_or_init(Reaper::new);
        STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("wharf-reaper".into())
                .spawn(move || reaper.run())
                .map(drop)
                .unwrap_or_else(|err| tracing::error!("cannot start the child reaper: {err}"));
        });
        reaper
    }

    /// Tells the reaper that children may exist now (call after creating one).
    pub fn children_spawned(&self) {
        *lock(&self.children) = true;
        self.spawned.notify_all();
    }

    fn run(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => self.record(status),
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children (ECHILD): sleep until one is spawned.
                    let mut children = lock(&self.children);
                    *children = false;
                    while !*children {
                        children = self
                            .spawned
                            .wait(children)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        }
    }

    fn record(&self, status: WaitStatus) {
        let (pid, code) = match status {
            WaitStatus::Exited(pid, code) => (pid, code),
            WaitStatus::Signaled(pid, signal, _) => (pid, 128 + signal as i32),
            _ => return,
        };
        let now = SystemTime::now();
        let mut exits = lock(&self.exits);
        if exits.len() >= PRUNE_ABOVE {
            exits.retain(|_, exit| now.duration_since(exit.at).unwrap_or_default() < KEEP_EXITS);
        }
        exits.insert(pid.as_raw(), Exit { code, at: now });
        drop(exits);
        let container = lock(&self.containers).remove(&pid.as_raw());
        if container {
            *lock(&self.recorded) += 1;
        }
        self.changed.notify_all();
    }

    /// Counts the exit of child `pid` (a container's init, begun after `since`) for
    /// [`Reaper::wait_for_exit_after`], also when it has already ended.
    pub fn watch_container(&self, pid: i32, since: SystemTime) {
        // Checked and registered under the exits lock: `record` inserts under it, so
        // the exit is either seen here or finds the pid registered.
        let exits = lock(&self.exits);
        if exits.get(&pid).is_some_and(|exit| exit.at >= since) {
            drop(exits);
            *lock(&self.recorded) += 1;
            self.changed.notify_all();
        } else {
            lock(&self.containers).insert(pid);
        }
    }

    /// The exit of child `pid`, if it has ended. `since` is a time before the process
    /// began: pids are reused, and an exit recorded earlier was another process's.
    pub fn exit_of(&self, pid: i32, since: SystemTime) -> Option<Exit> {
        lock(&self.exits)
            .get(&pid)
            .filter(|exit| exit.at >= since)
            .copied()
    }

    /// How many container exits have been recorded so far.
    pub fn exits_recorded(&self) -> u64 {
        *lock(&self.recorded)
    }

    /// Waits until more than `seen` container exits are recorded, up to `timeout`;
    /// returns the new count.
    pub fn wait_for_exit_after(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut exits = lock(&self.exits);
        loop {
            let recorded = *lock(&self.recorded);
            if recorded > seen {
                return recorded;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return recorded;
            };
            exits = self
                .changed
                .wait_timeout(exits, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Waits up to `timeout` for child `pid`, begun after `since`, to end.
    pub fn wait_for(&self, pid: i32, since: SystemTime, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        let mut exits = lock(&self.exits);
        loop {
            if let Some(exit) = exits.get(&pid).filter(|exit| exit.at >= since) {
                return Some(*exit);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            exits = self
                .changed
                .wait_timeout(exits, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_recorded_before_a_process_began_is_another_processs() {
        // No thread and no real children: exits are recorded by hand.
        let reaper = Reaper::new();
        let before = SystemTime::now();
        reaper.record(WaitStatus::Exited(Pid::from_raw(4242), 3));
        let exit = reaper
            .exit_of(4242, before)
            .expect("recorded after `before`");
        assert_eq!(exit.code, 3);

        // A new process got pid 4242 again (1 ms later, and the wait below lasts
        // 20 ms): the old exit is not its exit, its own is.
        let reused = SystemTime::now() + Duration::from_millis(1);
        assert_eq!(reaper.exit_of(4242, reused), None);
        assert_eq!(
            reaper.wait_for(4242, reused, Duration::from_millis(20)),
            None
        );
        reaper.record(WaitStatus::Signaled(
            Pid::from_raw(4242),
            nix::sys::signal::Signal::SIGKILL,
            false,
        ));
        assert_eq!(
            reaper
                .wait_for(4242, reused, Duration::from_millis(20))
                .map(|exit| exit.code),
            Some(128 + 9)
        );
    }

    #[test]
    fn only_container_exits_wake_watchers() {
        let reaper = Reaper::new();
        let before = SystemTime::now();
        // A credential helper or a health check's exec ends: nothing to reconcile.
        reaper.record(WaitStatus::Exited(Pid::from_raw(100), 0));
        assert_eq!(reaper.exits_recorded(), 0);

        // A container's init ends after it was registered...
        reaper.watch_container(200, before);
        reaper.record(WaitStatus::Exited(Pid::from_raw(200), 1));
        assert_eq!(reaper.exits_recorded(), 1);

        // ...or before: an init that crashed at once still counts, once.
        reaper.record(WaitStatus::Exited(Pid::from_raw(300), 1));
        reaper.watch_container(300, before);
        assert_eq!(reaper.exits_recorded(), 2);
        reaper.record(WaitStatus::Exited(Pid::from_raw(300), 1));
        assert_eq!(
            reaper.exits_recorded(),
            2,
            "a reused pid is not a container"
        );
    }
}
