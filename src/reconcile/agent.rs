//! The agent's reconcile: load the directory keeping each file's last good
//! definition, observe, plan (pruning what left the directory), hold back restarts
//! that are still in backoff, execute and record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{record, Backoff, Executor, ReconcileLock, StepObserver};
use crate::manifest::{duplicate_names, load_file, manifest_files, Service};
use crate::plan::{plan, Action, Inputs, Step};
use crate::runtime::Runtime;
use crate::state::StateStore;

pub struct Agent<'a, R: Runtime> {
    executor: Executor<'a, R>,
    root: PathBuf,
    dir: PathBuf,
    /// The last definition of each file that loaded without errors.
    last_good: BTreeMap<PathBuf, Vec<Service>>,
    backoff: Backoff,
    last_event: Option<String>,
    /// Slots whose pending restart time is in the state database.
    published: Vec<String>,
}

/// Logs what the agent does, one timestamped line each, on stderr.
pub fn log(message: &str) {
    eprintln!(
        "{} {message}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
}

struct Log;

impl StepObserver for Log {
    fn finished(&self, step: &Step, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => log(&format!(
                "{} {}/{}: {}",
                verb(step.action),
                step.service,
                step.slot,
                step.reason
            )),
            Err(cause) => log(&format!(
                "failed to {:?} {}/{}: {cause}",
                step.action, step.service, step.slot
            )
            .to_lowercase()),
        }
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Remove => "removed",
        Action::Replace => "replaced",
        Action::Restart => "restarted",
    }
}

impl<'a, R: Runtime> Agent<'a, R> {
    pub fn new(executor: Executor<'a, R>, root: &Path, dir: &Path) -> Self {
        Agent {
            executor,
            root: root.to_owned(),
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_owned()),
            last_good: BTreeMap::new(),
            backoff: Backoff::default(),
            last_event: None,
            published: Vec::new(),
        }
    }

    /// One reconcile. Returns when a restart held back by its backoff is due.
    pub async fn reconcile(&mut self) -> Option<Instant> {
        let lock = match ReconcileLock::acquire(&self.root, None) {
            Ok(lock) => lock,
            Err(message) => {
                log(&format!("cannot reconcile: {message}"));
                return None;
            }
        };
        let desired = self.load()?;
        let observed = match self.executor.runtime.list().await {
            Ok(observed) => observed,
            Err(err) => {
                log(&format!(
                    "cannot list containers: {}",
                    crate::error_chain(&err)
                ));
                return None;
            }
        };
        let mut planned = plan(&Inputs {
            desired: &desired,
            observed: &observed,
            current_digests: &BTreeMap::new(),
            manifest_dir: &self.dir,
            prune: true,
        });
        let now = Instant::now();
        let mut next_restart: Option<Instant> = None;
        let mut waiting: Vec<(String, Instant)> = Vec::new();
        planned.steps.retain(|step| {
            if step.action != Action::Restart {
                return true;
            }
            let slot = format!("{}/{}", step.service, step.slot);
            let due = self.backoff.next_allowed(&slot, now);
            if due <= now {
                return true;
            }
            next_restart = Some(next_restart.map_or(due, |next| next.min(due)));
            waiting.push((slot, due));
            false
        });
        // `wharf status` shows crash-looping replicas and when they restart next.
        self.publish_waiting(&waiting, now);
        if planned.is_empty() {
            return next_restart;
        }
        let report = self
            .executor
            .execute(&planned, &desired, &observed, &Log)
            .await;
        for step in report.done.iter().filter(|s| s.action == Action::Restart) {
            let slot = format!("{}/{}", step.service, step.slot);
            let delay = self.backoff.restarted(&slot, Instant::now());
            log(&format!(
                "{slot}: next restart no sooner than {}",
                humantime::format_duration(delay)
            ));
        }
        if let Err(err) = record(&self.root, &self.dir, &desired, &report) {
            log(&format!("warning: the reconcile was not recorded: {err}"));
        }
        drop(lock);
        next_restart
    }

    /// Writes the restarts held back by backoff to the state database, and clears
    /// those no longer waiting.
    fn publish_waiting(&mut self, waiting: &[(String, Instant)], now: Instant) {
        let wall_now = SystemTime::now();
        let result = StateStore::open(&self.root).and_then(|store| {
            for slot in self
                .published
                .iter()
                .filter(|s| !waiting.iter().any(|(w, _)| w == *s))
            {
                store.set_next_restart(slot, None)?;
            }
            for (slot, due) in waiting {
                store
                    .set_next_restart(slot, Some(wall_now + due.saturating_duration_since(now)))?;
            }
            Ok(())
        });
        if let Err(err) = result {
            log(&format!("warning: cannot record pending restarts: {err}"));
        }
        self.published = waiting.iter().map(|(slot, _)| slot.clone()).collect();
    }

    /// Records an event in the state database once per distinct message in a row (a
    /// broken file is seen again at every resync).
    fn log_event(&mut self, message: String) {
        if self.last_event.as_deref() == Some(message.as_str()) {
            return;
        }
        let stored = StateStore::open(&self.root)
            .and_then(|store| store.log_events(std::slice::from_ref(&message)));
        if let Err(err) = stored {
            log(&format!("warning: cannot record an event: {err}"));
        }
        self.last_event = Some(message);
    }

    /// The services defined in the directory, keeping the last good definition of
    /// files that are broken now. None (touch nothing) when the directory cannot be
    /// read or names clash.
    fn load(&mut self) -> Option<Vec<Service>> {
        let files = match manifest_files(&self.dir) {
            Ok(files) => files,
            Err(err) => {
                log(&format!(
                    "cannot read {}: {err}; containers are left as they are",
                    self.dir.display()
                ));
                return None;
            }
        };
        self.last_good.retain(|file, _| files.contains(file));
        for file in files {
            match load_file(&file) {
                Ok(services) => {
                    self.last_good.insert(file, services);
                }
                Err(errors) => {
                    for error in &errors {
                        log(&error.to_string());
                    }
                    let first = errors.first().map(ToString::to_string).unwrap_or_default();
                    let kept: Vec<String> = self
                        .last_good
                        .get(&file)
                        .into_iter()
                        .flatten()
                        .map(|s| s.name().to_owned())
                        .collect();
                    let message = if kept.is_empty() {
                        format!("ignored {} ({first})", file.display())
                    } else {
                        format!(
                            "kept {} as last defined by {} ({first})",
                            kept.join(", "),
                            file.display()
                        )
                    };
                    log(&message);
                    self.log_event(message);
                }
            }
        }
        let services: Vec<Service> = self.last_good.values().flatten().cloned().collect();
        let clashes = duplicate_names(&services);
        if !clashes.is_empty() {
            for clash in clashes {
                log(&clash.to_string());
            }
            log("containers are left as they are until the names are unique");
            return None;
        }
        Some(services)
    }
}
