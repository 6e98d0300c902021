//! Stage 5 of the data flow: what wakes the agent. Filesystem events in the manifest
//! directory (notify/inotify), container exits seen by the reaper, changes of a
//! container's health verdict, and a periodic
//! resync that catches whatever events missed (queue overflow, a replaced directory,
//! containers changed by hand).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::reaper::Reaper;

/// Why the agent wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Files,
    ContainerExited,
    HealthChanged,
}

pub struct Triggers {
    receiver: UnboundedReceiver<Trigger>,
    /// Keeps the channel open (so waiting times out rather than ending) even when
    /// the directory cannot be watched; notifiers send through it.
    sender: UnboundedSender<Trigger>,
    /// Kept alive for as long as the directories are watched.
    watcher: Option<RecommendedWatcher>,
    /// The directories watched now.
    watched: BTreeSet<PathBuf>,
}

impl Triggers {
    /// Watches `dir` (not recursively: only top-level files are manifests; a
    /// ConfigMap's `..data` swap is an event in it too) and the reaper's exits.
    pub fn start(dir: &Path) -> Self {
        let (sender, receiver) = unbounded_channel();
        let files = sender.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Opening and reading files are events too, and the agent reads every
            // manifest at each reconcile: only changes count. An error (e.g. an
            // overflowed queue) is a reason to look again.
            if matches!(&event, Ok(e) if matches!(e.kind, notify::EventKind::Access(_))) {
                return;
            }
            let _ = files.send(Trigger::Files);
        })
        .and_then(|mut watcher| {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map(|()| watcher)
        });
        if let Err(err) = &watcher {
            tracing::warn!(
                "cannot watch {}: {err}; relying on the periodic resync",
                dir.display()
            );
        }
        let exits = sender.clone();
        std::thread::Builder::new()
            .name("wharf-exit-watch".into())
            .spawn(move || {
                let reaper = Reaper::global();
                let mut seen = reaper.exits_recorded();
                loop {
                    let now = reaper.wait_for_exit_after(seen, Duration::from_secs(3600));
                    if now > seen {
                        seen = now;
                        if exits.send(Trigger::ContainerExited).is_err() {
                            return;
                        }
                    }
                }
            })
            .map(drop)
            .unwrap_or_else(|err| tracing::warn!("cannot watch container exits: {err}"));
        let watched = match &watcher {
            Ok(_) => BTreeSet::from([dir.to_owned()]),
            Err(_) => BTreeSet::new(),
        };
        Triggers {
            receiver,
            sender,
            watcher: watcher.ok(),
            watched,
        }
    }

    /// Watches exactly `dirs` from now on (not recursively): the manifest directory,
    /// those of the files manifests name, the secrets'. One that cannot be watched
    /// (not there yet) is tried again at the next call.
    pub fn follow(&mut self, dirs: BTreeSet<PathBuf>) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.watched.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for dir in dirs {
            if self.watched.contains(&dir)
                || watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok()
            {
                watched.insert(dir);
            }
        }
        self.watched = watched;
    }

    /// A function that wakes the agent with `trigger`, for work done elsewhere.
    pub fn notifier(&self, trigger: Trigger) -> impl Fn() + Send + Sync + 'static {
        let sender = self.sender.clone();
        move || {
            let _ = sender.send(trigger);
        }
    }

    /// Waits for a trigger or `timeout`, then for a quiet period of `debounce` with
    /// no further event (at most 1 s in all): a `git checkout` of 50 files is one
    /// reconcile, not 50.
    pub async fn next(&mut self, timeout: Duration, debounce: Duration) -> Option<Trigger> {
        let first = tokio::time::timeout(timeout, self.receiver.recv())
            .await
            .ok()
            .flatten();
        if first.is_some() {
            let limit = tokio::time::Instant::now() + Duration::from_secs(1);
            while tokio::time::Instant::now() < limit {
                match tokio::time::timeout(debounce, self.receiver.recv()).await {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const DEBOUNCE: Duration = Duration::from_millis(10);

    /// Triggers fed by hand: no directory watch and no reaper (whose thread would
    /// collect the exit statuses other unit tests wait for).
    fn fed_by_hand() -> Triggers {
        let (sender, receiver) = unbounded_channel();
        Triggers {
            receiver,
            sender,
            watcher: None,
            watched: BTreeSet::new(),
        }
    }

    /// Sends `count` file events `every` apart, from now.
    fn burst(triggers: &Triggers, count: u32, every: Duration) {
        let wake = triggers.notifier(Trigger::Files);
        tokio::spawn(async move {
            for _ in 0..count {
                wake();
                tokio::time::sleep(every).await;
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_to_do_the_agent_sleeps_until_the_resync() {
        let mut triggers = fed_by_hand();
        let start = Instant::now();
        assert_eq!(triggers.next(Duration::from_secs(30), DEBOUNCE).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_events_is_one_wake_after_a_quiet_period() {
        let mut triggers = fed_by_hand();
        let start = Instant::now();
        // 50 files in 245 ms (a git checkout): one wake, 10 ms after the last one.
        burst(&triggers, 50, Duration::from_millis(5));
        let woke = triggers.next(Duration::from_secs(30), DEBOUNCE).await;
        assert_eq!(woke, Some(Trigger::Files));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(245 + 10) && waited < Duration::from_millis(300),
            "{waited:?}"
        );
        // The burst was taken in full: nothing left to wake for.
        assert_eq!(triggers.next(Duration::from_secs(1), DEBOUNCE).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_never_stop_still_wake_the_agent_within_a_second() {
        let mut triggers = fed_by_hand();
        let start = Instant::now();
        burst(&triggers, 10_000, Duration::from_millis(5));
        assert_eq!(
            triggers.next(Duration::from_secs(30), DEBOUNCE).await,
            Some(Trigger::Files)
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1020),
            "{waited:?}"
        );
    }
}
