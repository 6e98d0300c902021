//! The agent's reconcile: load the directory keeping each file's last good
//! definition, observe, plan (pruning what left the directory), hold back restarts
//! that are still in backoff and pulls from registries that are failing, execute
//! and record.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

// tokio's clock, so that tests can pause it.
use tokio::time::Instant;
use tracing::Level;

use super::backoff::{LogLine, RegistryHealth};
use super::{
    apply, current_digests, prepare, Backoff, Executor, Facts, Options, Outcome, PrepareError,
    ReconcileLock, StepError, StepObserver,
};
use crate::files::SecretStore;
use crate::health::{HealthMonitor, HealthState, Verdict};
use crate::manifest::{
    clashes, load_file, manifest_files, only_root_can_write, Diagnostic, ImageRef, PullPolicy,
    Service,
};
use crate::plan::{dependencies_not_ready, is_due, next_run, Action, HoldBack, Step};
use crate::runtime::{ContainerStatus, ObservedContainer, Runtime, RuntimeError};
use crate::state::{StateStore, StoppedRollout, TagCheckFailing};

/// Why a reconcile did nothing; the loop logs it and tries again at the next wake.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot take the reconcile lock")]
    Lock(#[source] super::lock::LockError),
    #[error("cannot read {}; containers are left as they are", dir.display())]
    Unreadable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}; containers are left as they are until the manifests agree")]
    Clash(String),
    #[error("cannot list containers")]
    List(#[source] RuntimeError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

pub struct Agent<'a, R: Runtime> {
    executor: Executor<'a, R>,
    root: PathBuf,
    dir: PathBuf,
    /// The last definition of each file that loaded without errors.
    last_good: BTreeMap<PathBuf, Vec<Service>>,
    backoff: Backoff,
    health: HealthMonitor<R>,
    /// Services whose rollout failed, what it was moving to and why it stopped: not
    /// retried until the manifest changes again (or a `pull: always` tag moves again).
    /// Published for `wharf status`.
    failed_rollouts: BTreeMap<String, StoppedRollout>,
    /// Whether `failed_rollouts` has been published since this agent started (what an
    /// earlier agent published is out of date: this one tries those rollouts again).
    rollouts_published: bool,
    last_event: Option<String>,
    /// Slots whose pending restart time is in the state database.
    published: Vec<String>,
    /// Health verdicts as last written to the state database.
    published_health: BTreeMap<String, Verdict>,
    /// Follow only manifests that only root can change.
    require_root_only: bool,
    /// What `pull: always` tags resolved to, and when they were last asked.
    digests: BTreeMap<String, String>,
    digests_checked: Option<Instant>,
    check_tags_every: Duration,
    /// Registries whose tag checks fail: asked again with backoff.
    registry_health: RegistryHealth,
    /// The failing tag checks as last published for `wharf status` (None: not yet
    /// by this agent; what an earlier agent published is out of date).
    published_tag_checks: Option<BTreeMap<String, TagCheckFailing>>,
    /// Services held back until their dependencies are ready, as last logged.
    waiting_on_dependencies: BTreeSet<String>,
    /// Each scheduled job's schedule and when this agent first saw it (a new job
    /// waits for its first time; a skipped run moves it too).
    schedules_seen: BTreeMap<String, (String, chrono::DateTime<chrono::Local>)>,
    /// When each scheduled job last skipped a run (it was still running).
    skipped: BTreeMap<String, chrono::DateTime<chrono::Local>>,
}

/// How often the agent looks again while a service waits for its dependencies.
const DEPENDENCY_POLL: Duration = Duration::from_secs(1);

/// Logs each step as it finishes: info when done, error when it failed.
struct Log;

impl StepObserver for Log {
    fn finished(&self, step: &Step, outcome: Result<(), &StepError>) {
        let (service, replica, verb) = (step.service.as_str(), step.slot, step.action.verb());
        let container = step.container.as_deref();
        match outcome {
            Ok(()) => tracing::info!(
                service,
                replica,
                container,
                step = verb,
                reason = step.reason.as_str(),
                "{} {service}/{replica}: {}",
                step.action.done(),
                step.reason
            ),
            Err(cause) => {
                let cause = crate::error_chain(cause);
                tracing::error!(
                    service,
                    replica,
                    container,
                    step = verb,
                    reason = cause.as_str(),
                    "failed to {verb} {service}/{replica}: {cause}"
                )
            }
        }
    }
}

/// Logs a line at `level` (info unless warn or error).
fn log_at(level: Level, message: &str) {
    if level == Level::ERROR {
        tracing::error!("{message}");
    } else if level == Level::WARN {
        tracing::warn!("{message}");
    } else {
        tracing::info!("{message}");
    }
}

impl<'a, R: Runtime + Clone + 'static> Agent<'a, R> {
    /// `on_health_change` is called (from a health-check task) whenever a
    /// container's health verdict changes; it should lead to a reconcile.
    pub fn new(
        mut executor: Executor<'a, R>,
        root: &Path,
        dir: &Path,
        on_health_change: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        // A job's run is started, not waited for: see `due_jobs` and `stop_overdue_runs`.
        executor.wait_for_jobs = false;
        Agent {
            health: HealthMonitor::new(executor.runtime.clone(), on_health_change),
            executor,
            root: root.to_owned(),
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_owned()),
            last_good: BTreeMap::new(),
            backoff: Backoff::default(),
            failed_rollouts: BTreeMap::new(),
            rollouts_published: false,
            last_event: None,
            published: Vec::new(),
            published_health: BTreeMap::new(),
            require_root_only: true,
            digests: BTreeMap::new(),
            digests_checked: None,
            check_tags_every: Duration::from_secs(30),
            registry_health: RegistryHealth::new(Duration::from_secs(30)),
            published_tag_checks: None,
            waiting_on_dependencies: BTreeSet::new(),
            schedules_seen: BTreeMap::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// How often the tags of `pull: always` services are resolved at their registry
    /// (default 30 s; the agent sets its resync period). A failing registry is asked
    /// again after this period, then twice that, up to 5 minutes.
    pub fn check_tags_every(&mut self, period: Duration) {
        self.check_tags_every = period;
        self.registry_health = RegistryHealth::new(period);
    }

    /// Follows manifests whoever can write them (--allow-insecure-manifests).
    pub fn allow_insecure_manifests(&mut self) {
        self.require_root_only = false;
    }

    /// One reconcile. Returns when a restart held back by its backoff is due (None:
    /// nothing is waiting), or why nothing could be done this time.
    pub async fn reconcile(&mut self) -> Result<Option<Instant>, ReconcileError> {
        let lock = ReconcileLock::acquire(&self.root, None).map_err(ReconcileError::Lock)?;
        super::restore_network(self.executor.runtime).await;
        let desired = self.load()?;
        let observed = self
            .executor
            .runtime
            .list()
            .await
            .map_err(ReconcileError::List)?;
        self.refresh_digests(&desired).await;
        let now = Instant::now();
        let (due_jobs, next_scheduled) = self.due_jobs(&desired, &observed);
        let next_timeout = self.stop_overdue_runs(&observed).await;
        let hold_back = HoldBack {
            rollouts: self.failed_rollouts_towards(&desired),
            pulls: self.pulls_from_failing_registries(&desired),
            restarts: observed
                .iter()
                .map(|c| format!("{}/{}", c.service, c.slot))
                .filter(|slot| self.backoff.next_allowed(slot, now) > now)
                .collect(),
            dependants: self.waiting_for_dependencies(&desired, &observed),
        };
        let facts = Facts {
            current_digests: self.digests.clone(),
            unhealthy: self.health.unhealthy(),
            hold_back,
            // The agent logs why it replaces, without diffs.
            stored_contents: BTreeMap::new(),
            due_jobs,
        };
        // The agent follows deletions: a directory emptied file by file removes what
        // ran from it (an unreadable directory changes nothing, see `load`).
        // The agent keeps rotations itself, from its health checks (`follow_health`).
        let options = Options {
            prune: true,
            allow_empty: true,
            join_rotation: false,
        };
        let mut planned = prepare(desired, observed, &facts, &self.dir, options)?;
        // The events say how long the next restart of each slot will wait.
        for step in planned.plan.steps.iter_mut() {
            if step.action == Action::Restart {
                let slot = format!("{}/{}", step.service, step.slot);
                let delay = self.backoff.delay_after_restart(&slot, now);
                let delay = humantime::format_duration(delay);
                step.reason.push_str(&format!("; backoff {delay}"));
            }
        }
        let waiting: Vec<(String, Instant)> = planned
            .plan
            .held
            .iter()
            .filter_map(|step| match step.action {
                Action::Restart => Some(format!("{}/{}", step.service, step.slot)),
                // A job's next try waits for the pause after the try before.
                Action::Run if step.slot > 0 => Some(format!("{}/{}", step.service, step.slot - 1)),
                _ => None,
            })
            .filter(|slot| facts.hold_back.restarts.contains(slot))
            .map(|slot| {
                let due = self.backoff.next_allowed(&slot, now);
                (slot, due)
            })
            .collect();
        // While a service waits for its dependencies, look again every second (a
        // dependency that only has to run wakes nothing else).
        let next_look = (!facts.hold_back.dependants.is_empty()).then(|| now + DEPENDENCY_POLL);
        let next_restart = waiting
            .iter()
            .map(|(_, due)| *due)
            .chain(next_look)
            .chain(next_scheduled)
            .chain(next_timeout)
            .min();
        // `wharf status` shows crash-looping replicas and when they restart next.
        self.publish_waiting(&waiting, now);
        if planned.plan.is_empty() {
            self.follow_health(&planned.observed).await;
            return Ok(next_restart);
        }
        let Outcome { report, recorded } = apply(&self.executor, &self.root, &planned, &Log).await;
        if let Err(err) = recorded {
            tracing::warn!(
                "the reconcile was not recorded: {}",
                crate::error_chain(&err)
            );
        }
        for step in report
            .done
            .iter()
            .filter(|s| matches!(s.action, Action::Restart | Action::Run))
        {
            let slot = format!("{}/{}", step.service, step.slot);
            let delay = self.backoff.restarted(&slot, Instant::now());
            tracing::info!(
                service = step.service.as_str(),
                replica = step.slot,
                "{slot}: next restart no sooner than {}",
                humantime::format_duration(delay)
            );
        }
        for (step, cause) in report
            .failed
            .iter()
            .filter(|(s, _)| s.action == Action::Replace)
        {
            let Some(service) = planned.desired.iter().find(|d| d.name() == step.service) else {
                continue;
            };
            let (hash, digest) = self.rollout_target(service);
            let cause = crate::error_chain(cause);
            let stopped = StoppedRollout::new(step.slot, &cause, hash, digest);
            let known = self.failed_rollouts.get(&step.service);
            if known.is_none_or(|known| !known.is_towards(hash, digest)) {
                let message = format!(
                    "stopped the rollout of {} at replica {}: {cause}; replicas not yet replaced keep the previous spec until the manifest changes{}",
                    step.service,
                    step.slot,
                    if service.spec.pull == PullPolicy::Always {
                        " or the tag moves again"
                    } else {
                        ""
                    }
                );
                self.failed_rollouts.insert(step.service.clone(), stopped);
                self.publish_stopped_rollouts();
                tracing::warn!(
                    service = step.service.as_str(),
                    replica = step.slot,
                    reason = cause.as_str(),
                    "{message}"
                );
                self.log_event(message);
            }
        }
        // The record ended the stopped rollouts of the services it applied; the ones
        // still held back are published again.
        if !self.failed_rollouts.is_empty() {
            self.publish_stopped_rollouts();
        }
        match self.executor.runtime.list().await {
            Ok(now_running) => self.follow_health(&now_running).await,
            Err(err) => tracing::error!("cannot list containers: {}", crate::error_chain(&err)),
        }
        drop(lock);
        Ok(next_restart)
    }

    /// Asks the registries what `pull: always` tags resolve to, once per period (or
    /// sooner for an image not asked about yet), not at every file event. A registry
    /// that fails is asked again only as its backoff allows, whatever wakes the agent:
    /// a failed image stays unknown, and each attempt runs a credential lookup (a
    /// child process) whose exit wakes the agent again: without the backoff, a
    /// registry outage was a tight loop. Meanwhile its images keep the digests last
    /// resolved (no replacement on that ground).
    async fn refresh_digests(&mut self, desired: &[Service]) {
        let by_registry = always_by_registry(desired);
        let followed = |image: &str| {
            by_registry
                .values()
                .flatten()
                .any(|service| service.spec.image == image)
        };
        self.digests.retain(|image, _| followed(image.as_str()));
        self.registry_health
            .retain(|registry| by_registry.contains_key(registry));
        let now = Instant::now();
        let due = self
            .digests_checked
            .is_none_or(|at| now.saturating_duration_since(at) >= self.check_tags_every);
        let mut asked = false;
        for (registry, services) in &by_registry {
            let unknown = services
                .iter()
                .any(|s| !self.digests.contains_key(&s.spec.image));
            let failing = self.registry_health.outage(registry).is_some();
            if !(due || unknown || failing) || !self.registry_health.may_ask(registry, now) {
                continue;
            }
            asked = true;
            let errors = RefCell::new(Vec::new());
            let resolved = current_digests(self.executor.registries, services, |error| {
                errors.borrow_mut().push(error)
            })
            .await;
            self.digests.extend(resolved);
            let errors = errors.into_inner();
            let line = if errors.is_empty() {
                self.registry_health.recovered(registry)
            } else {
                // The backoff runs from the attempt's end (a connect can take 10 s).
                let (at, wall) = (Instant::now(), SystemTime::now());
                self.registry_health
                    .failed(registry, &errors.join("; "), at, wall)
            };
            // A failing registry is a warning; its return is news.
            if let Some(LogLine { message, event }) = line {
                if errors.is_empty() {
                    tracing::info!(registry = registry.as_str(), "{message}");
                } else {
                    tracing::warn!(registry = registry.as_str(), "{message}");
                }
                if event {
                    self.log_event(message);
                }
            }
        }
        if asked {
            self.digests_checked = Some(now);
        }
        self.publish_tag_checks(&by_registry);
    }

    /// The services whose steps would pull a `pull: always` image from a registry
    /// whose tag checks are failing: they would fail at the pull (and a failed restart
    /// is tried again at every wake). They run once the registry answers again;
    /// running containers are left as they are.
    fn pulls_from_failing_registries(&self, desired: &[Service]) -> BTreeSet<String> {
        desired
            .iter()
            .filter(|service| {
                service.spec.pull == PullPolicy::Always
                    && registry_of(service)
                        .is_some_and(|registry| self.registry_health.outage(&registry).is_some())
            })
            .map(|service| service.name().to_owned())
            .collect()
    }

    /// Publishes the services whose tag checks are failing, for `wharf status`, when
    /// that changed (and at this agent's first reconcile).
    fn publish_tag_checks(&mut self, by_registry: &BTreeMap<String, Vec<Service>>) {
        let failing: BTreeMap<String, TagCheckFailing> = by_registry
            .iter()
            .filter_map(|(registry, services)| {
                Some((registry, services, self.registry_health.outage(registry)?))
            })
            .flat_map(|(registry, services, outage)| {
                services.iter().map(move |service| {
                    let failing = TagCheckFailing {
                        registry: registry.clone(),
                        since: humantime::format_rfc3339_seconds(outage.since).to_string(),
                        attempts: outage.attempts,
                        error: outage.error.clone(),
                    };
                    (service.name().to_owned(), failing)
                })
            })
            .collect();
        if self.published_tag_checks.as_ref() == Some(&failing) {
            return;
        }
        let stored =
            StateStore::open(&self.root).and_then(|store| store.set_tag_checks_failing(&failing));
        match stored {
            Ok(()) => self.published_tag_checks = Some(failing),
            Err(err) => tracing::warn!(
                "cannot record the failing tag checks: {}",
                crate::error_chain(&err)
            ),
        }
    }

    /// What a rollout of `service` moves to: its spec hash and, for `pull: always`, the
    /// digest its tag resolves to (the tag moving again is a new rollout, as an edit is).
    fn rollout_target<'s>(&'s self, service: &'s Service) -> (&'s str, Option<&'s str>) {
        let digest = match service.spec.pull {
            PullPolicy::Always => self.digests.get(&service.spec.image).map(String::as_str),
            _ => None,
        };
        (service.hash.as_str(), digest)
    }

    /// The services whose replacements wait because their rollout towards the same
    /// target already failed, so a broken version is not tried again and again; a
    /// new edit of the manifest (or a new digest of a `pull: always` tag) is.
    fn failed_rollouts_towards(&mut self, desired: &[Service]) -> BTreeSet<String> {
        let still_failed: Vec<String> = self
            .failed_rollouts
            .iter()
            .filter(|(service, failed)| {
                desired.iter().any(|d| {
                    let (hash, digest) = self.rollout_target(d);
                    d.name() == service.as_str() && failed.is_towards(hash, digest)
                })
            })
            .map(|(service, _)| service.clone())
            .collect();
        if still_failed.len() != self.failed_rollouts.len() || !self.rollouts_published {
            self.failed_rollouts
                .retain(|service, _| still_failed.contains(service));
            self.publish_stopped_rollouts();
        }
        self.failed_rollouts.keys().cloned().collect()
    }

    fn publish_stopped_rollouts(&mut self) {
        let stored = StateStore::open(&self.root)
            .and_then(|store| store.set_stopped_rollouts(&self.failed_rollouts));
        self.rollouts_published = stored.is_ok();
        if let Err(err) = stored {
            tracing::warn!(
                "cannot record the stopped rollouts: {}",
                crate::error_chain(&err)
            );
        }
    }

    /// Health-checks the running containers, publishes their verdicts, and keeps
    /// each service's rotation to its ready replicas.
    async fn follow_health(&mut self, containers: &[ObservedContainer]) {
        self.health.follow(containers);
        let verdicts = self.health.verdicts();
        for container in containers {
            let Some(serve) = rotation_change(container, verdicts.get(&container.id)) else {
                continue;
            };
            if let Err(err) = self
                .executor
                .runtime
                .set_serving(&container.id, serve)
                .await
            {
                tracing::warn!(
                    container = container.id.as_str(),
                    "cannot change the container's rotation: {}",
                    crate::error_chain(&err)
                );
            }
        }
        if verdicts == self.published_health {
            return;
        }
        let stored = StateStore::open(&self.root).and_then(|store| store.set_health(&verdicts));
        match stored {
            Ok(()) => self.published_health = verdicts,
            Err(err) => tracing::warn!("cannot record health: {}", crate::error_chain(&err)),
        }
    }

    /// Writes the restarts held back by backoff to the state database, and clears
    /// those no longer waiting.
    fn publish_waiting(&mut self, waiting: &[(String, Instant)], now: Instant) {
        if waiting.is_empty() && self.published.is_empty() {
            return;
        }
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
            tracing::warn!(
                "cannot record pending restarts: {}",
                crate::error_chain(&err)
            );
        }
        self.published = waiting.iter().map(|(slot, _)| slot.clone()).collect();
    }

    /// The state directory the agent works in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Logs (at `level`) and records something the agent did or saw outside a
    /// reconcile.
    pub fn note(&mut self, level: Level, message: String) {
        log_at(level, &message);
        self.log_event(message);
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
            tracing::warn!("cannot record an event: {}", crate::error_chain(&err));
        }
        self.last_event = Some(message);
    }

    /// Stops the job runs going past their `timeout` (the agent starts runs without
    /// waiting for them; a stopped run is a failed try); returns when the next running
    /// one reaches its timeout.
    async fn stop_overdue_runs(&mut self, observed: &[ObservedContainer]) -> Option<Instant> {
        let now = SystemTime::now();
        let mut next: Option<Duration> = None;
        for run in observed
            .iter()
            .filter(|c| c.status == ContainerStatus::Running)
        {
            let Some(spec) = run.spec.as_deref().filter(|spec| spec.is_job()) else {
                continue;
            };
            let (Some(timeout), Some(started)) = (spec.timeout, run.started_at) else {
                continue;
            };
            let deadline = started + timeout.as_std();
            match deadline.duration_since(now) {
                Ok(left) => next = Some(next.map_or(left, |n| n.min(left))),
                Err(_) => {
                    let message = format!(
                        "stopped {} of {}: it ran past its timeout of {timeout}",
                        run.id, run.service
                    );
                    tracing::warn!(service = run.service.as_str(), "{message}");
                    self.log_event(message);
                    let (signal, grace) = crate::runtime::stop_settings(Some(spec));
                    if let Err(err) = self.executor.runtime.stop(&run.id, signal, grace).await {
                        tracing::error!("cannot stop {}: {}", run.id, crate::error_chain(&err));
                    }
                }
            }
        }
        next.map(|left| Instant::now() + left)
    }

    /// The scheduled jobs whose time has come (see `plan::is_due`), and when the next
    /// one comes. A job still running when its time comes skips that run (an event
    /// says so).
    fn due_jobs(
        &mut self,
        desired: &[Service],
        observed: &[ObservedContainer],
    ) -> (BTreeSet<String>, Option<Instant>) {
        let now = chrono::Local::now();
        let mut due = BTreeSet::new();
        let mut next: Option<chrono::DateTime<chrono::Local>> = None;
        let scheduled: Vec<(&Service, &str)> = desired
            .iter()
            .filter_map(|s| Some((s, s.spec.schedule.as_deref()?)))
            .collect();
        self.schedules_seen
            .retain(|name, _| scheduled.iter().any(|(s, _)| s.name() == name));
        self.skipped
            .retain(|name, _| scheduled.iter().any(|(s, _)| s.name() == name));
        for (job, schedule) in scheduled {
            let name = job.name();
            let seen = match self.schedules_seen.get(name) {
                Some((text, seen)) if text == schedule => *seen,
                _ => {
                    self.schedules_seen
                        .insert(name.to_owned(), (schedule.to_owned(), now));
                    now
                }
            };
            let runs = observed.iter().filter(|c| c.service == name);
            let last_run = runs
                .clone()
                .filter_map(|c| c.started_at)
                .max()
                .map(chrono::DateTime::<chrono::Local>::from);
            // The last run, when there is one (a time missed while no agent ran is
            // made up once); else when this agent first saw the schedule. A skipped
            // run moves `seen` past its time.
            let since = last_run.map_or(seen, |last| {
                if self.skipped.get(name).is_some_and(|at| *at > last) {
                    seen
                } else {
                    last
                }
            });
            if is_due(schedule, since, now) {
                if runs.clone().any(|c| c.status == ContainerStatus::Running) {
                    let message = format!("skipped a scheduled run of {name} ({schedule}): the previous run is still going");
                    tracing::warn!(service = name, "{message}");
                    self.log_event(message);
                    self.schedules_seen
                        .insert(name.to_owned(), (schedule.to_owned(), now));
                    self.skipped.insert(name.to_owned(), now);
                } else {
                    due.insert(name.to_owned());
                }
            }
            if let Some(at) = next_run(schedule, now) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let wake = next
            .and_then(|at| (at - now).to_std().ok())
            .map(|d| Instant::now() + d);
        (due, wake)
    }

    /// The services whose dependencies are not in their condition (healthy: by this
    /// agent's own checks); a change of that set is logged.
    fn waiting_for_dependencies(
        &mut self,
        desired: &[Service],
        observed: &[ObservedContainer],
    ) -> BTreeSet<String> {
        let healthy: BTreeSet<String> = self
            .health
            .verdicts()
            .into_iter()
            .filter(|(_, verdict)| verdict.state == HealthState::Healthy)
            .map(|(id, _)| id)
            .collect();
        let waiting = dependencies_not_ready(desired, observed, &healthy);
        for name in waiting.difference(&self.waiting_on_dependencies) {
            if let Some(service) = desired.iter().find(|s| s.name() == name) {
                let conditions = service.spec.waits_for().join(", ");
                tracing::info!(service = name.as_str(), "{name} waits for {conditions}");
            }
        }
        self.waiting_on_dependencies = waiting.clone();
        waiting
    }

    /// The directories whose changes can change the services: the manifest
    /// directory, those of the files the services read, and the secrets'.
    pub fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> = self
            .last_good
            .values()
            .flatten()
            .flat_map(|service| &service.sources)
            .filter_map(|source| source.parent().map(Path::to_owned))
            .collect();
        dirs.insert(self.dir.clone());
        if let Ok(store) = SecretStore::open(&self.root) {
            dirs.insert(store.dir().to_owned());
        }
        dirs
    }

    /// The files a file's services read pass the trust rule that manifests do, and
    /// the secrets they use are set (their versions filled in).
    fn check_files(&self, mut services: Vec<Service>) -> Result<Vec<Service>, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        if self.require_root_only {
            for service in &services {
                for source in &service.sources {
                    if let Err(message) = only_root_can_write(source) {
                        errors.push(Diagnostic {
                            file: source.clone(),
                            mark: None,
                            field: String::new(),
                            message: format!("read by service \"{}\": {message}", service.name()),
                        });
                    }
                }
            }
        }
        match SecretStore::open(&self.root) {
            Ok(store) => errors.extend(store.resolve(&mut services)),
            Err(err) => errors.push(Diagnostic {
                file: self.root.clone(),
                mark: None,
                field: String::new(),
                message: format!("cannot open the secrets: {}", crate::error_chain(&err)),
            }),
        }
        if errors.is_empty() {
            Ok(services)
        } else {
            Err(errors)
        }
    }

    /// The services defined in the directory, keeping the last good definition of
    /// files that are broken now. An error (touch nothing) when the directory cannot
    /// be read or names clash.
    fn load(&mut self) -> Result<Vec<Service>, ReconcileError> {
        let files = manifest_files(&self.dir).map_err(|source| ReconcileError::Unreadable {
            dir: self.dir.clone(),
            source,
        })?;
        self.last_good.retain(|file, _| files.contains(file));
        for file in files {
            // A file emptied by a writer that has not finished (truncate, then write)
            // is not the removal of its services: deleting the file is.
            let had_services = self.last_good.get(&file).is_some_and(|s| !s.is_empty());
            let trusted = match self.require_root_only {
                true => only_root_can_write(&file),
                false => Ok(()),
            };
            let loaded = trusted
                .map_err(|message| {
                    vec![Diagnostic {
                        file: file.clone(),
                        mark: None,
                        field: String::new(),
                        message,
                    }]
                })
                .and_then(|()| load_file(&file))
                .and_then(|services| self.check_files(services))
                .and_then(|services| {
                if services.is_empty() && had_services {
                    Err(vec![Diagnostic {
                        file: file.clone(),
                        mark: None,
                        field: String::new(),
                        message: "the file has no services now (still being written?); delete it to remove its services".into(),
                    }])
                } else {
                    Ok(services)
                }
            });
            match loaded {
                Ok(services) => {
                    self.last_good.insert(file, services);
                }
                Err(errors) => {
                    for error in &errors {
                        tracing::warn!(file = %file.display(), "{error}");
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
                    tracing::warn!(file = %file.display(), "{message}");
                    self.log_event(message);
                }
            }
        }
        let services: Vec<Service> = self.last_good.values().flatten().cloned().collect();
        let clashes = clashes(&services);
        if !clashes.is_empty() {
            let clashes: Vec<String> = clashes.iter().map(ToString::to_string).collect();
            return Err(ReconcileError::Clash(clashes.join("; ")));
        }
        Ok(services)
    }
}

/// The registry `service`'s image is on (None for a reference that does not parse,
/// which validation refuses).
fn registry_of(service: &Service) -> Option<String> {
    service
        .spec
        .image
        .parse::<ImageRef>()
        .ok()
        .map(|image| image.registry)
}

/// The `pull: always` services, by the registry their image is on.
fn always_by_registry(desired: &[Service]) -> BTreeMap<String, Vec<Service>> {
    let mut by_registry: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for service in desired.iter().filter(|s| s.spec.pull == PullPolicy::Always) {
        if let Some(registry) = registry_of(service) {
            by_registry
                .entry(registry)
                .or_default()
                .push(service.clone());
        }
    }
    by_registry
}

/// Whether a container on the bridge should now join (`Some(true)`) or leave
/// (`Some(false)`) its service's rotation: it serves while it runs and, when it has a
/// health check, is not unhealthy; it joins once its check passed. A check not
/// decided yet changes nothing (an agent that just started has no verdict for
/// replicas that `apply` put in rotation).
fn rotation_change(container: &ObservedContainer, verdict: Option<&Verdict>) -> Option<bool> {
    container.address?;
    // A job's run serves nothing.
    if container.spec.as_ref().is_some_and(|spec| spec.is_job()) {
        return None;
    }
    let checked = container
        .spec
        .as_ref()
        .is_some_and(|spec| spec.health.is_some());
    let serve = match (container.status, verdict.map(|v| v.state)) {
        (ContainerStatus::Running, _) if !checked => true,
        (ContainerStatus::Running, Some(HealthState::Healthy)) => true,
        (ContainerStatus::Running, Some(HealthState::Unhealthy)) => false,
        (ContainerStatus::Running, _) => return None,
        _ => false,
    };
    (serve != container.in_rotation).then_some(serve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Health, ServiceSpec};

    fn replica(status: ContainerStatus, checked: bool, in_rotation: bool) -> ObservedContainer {
        let mut spec: ServiceSpec = serde_yaml::from_str(
            "apiVersion: wharf/v1\nkind: Service\nname: web\nimage: busybox\n",
        )
        .expect("spec");
        if checked {
            spec.health =
                Some(serde_yaml::from_str::<Health>("exec: [\"true\"]").expect("health check"));
        }
        ObservedContainer {
            id: "web-0-1".into(),
            service: "web".into(),
            slot: 0,
            status,
            pid: Some(1),
            started_at: None,
            spec_hash: String::new(),
            image: "busybox".into(),
            image_digest: String::new(),
            manifest: None,
            manifest_dir: None,
            spec: Some(Box::new(spec)),
            unmonitored: false,
            address: Some(std::net::Ipv4Addr::new(10, 89, 0, 2)),
            in_rotation,
            files: Default::default(),
        }
    }

    fn verdict(state: HealthState) -> Verdict {
        Verdict {
            state,
            failures: 0,
            last_error: None,
        }
    }

    #[test]
    fn a_running_replica_without_a_check_serves() {
        let running = replica(ContainerStatus::Running, false, false);
        assert_eq!(rotation_change(&running, None), Some(true));
        let serving = replica(ContainerStatus::Running, false, true);
        assert_eq!(rotation_change(&serving, None), None, "nothing to change");
    }

    #[test]
    fn a_checked_replica_serves_only_once_healthy_and_leaves_when_unhealthy() {
        let new = replica(ContainerStatus::Running, true, false);
        assert_eq!(rotation_change(&new, None), None);
        assert_eq!(
            rotation_change(&new, Some(&verdict(HealthState::Starting))),
            None
        );
        assert_eq!(
            rotation_change(&new, Some(&verdict(HealthState::Healthy))),
            Some(true)
        );
        let serving = replica(ContainerStatus::Running, true, true);
        assert_eq!(
            rotation_change(&serving, Some(&verdict(HealthState::Unhealthy))),
            Some(false)
        );
        // A new agent has no verdict yet: what apply put in rotation stays.
        assert_eq!(rotation_change(&serving, None), None);
    }

    #[test]
    fn an_exited_replica_leaves_and_one_off_the_bridge_has_no_rotation() {
        let exited = ContainerStatus::Exited {
            code: Some(1),
            at: None,
            oom_killed: false,
        };
        assert_eq!(
            rotation_change(&replica(exited, false, true), None),
            Some(false)
        );
        let mut on_host = replica(ContainerStatus::Running, false, false);
        on_host.address = None;
        assert_eq!(rotation_change(&on_host, None), None);
    }
}
