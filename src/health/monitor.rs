//! The agent's continuous health checking: one task per running container that has
//! a health check, probing on the check's schedule. A change of verdict calls
//! `on_change`, which wakes the agent to publish it and restart what is unhealthy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::time::Instant;

use tokio::task::JoinHandle;

use super::{probe, HealthState, Tracker, Verdict};
use crate::runtime::{ContainerStatus, ObservedContainer, Runtime};

type Verdicts = Arc<Mutex<BTreeMap<String, Verdict>>>;

pub struct HealthMonitor<R> {
    runtime: R,
    on_change: Arc<dyn Fn() + Send + Sync>,
    checks: BTreeMap<String, JoinHandle<()>>,
    verdicts: Verdicts,
}

impl<R: Runtime + Clone + 'static> HealthMonitor<R> {
    pub fn new(runtime: R, on_change: impl Fn() + Send + Sync + 'static) -> Self {
        HealthMonitor {
            runtime,
            on_change: Arc::new(on_change),
            checks: BTreeMap::new(),
            verdicts: Verdicts::default(),
        }
    }

    /// Checks exactly the running containers among `containers` that have a health
    /// check: starts checking new ones, stops checking those gone or stopped.
    pub fn follow(&mut self, containers: &[ObservedContainer]) {
        let checked: BTreeMap<&str, &ObservedContainer> = containers
            .iter()
            .filter(|c| c.status == ContainerStatus::Running && c.pid.is_some())
            .filter(|c| c.spec.as_ref().is_some_and(|s| s.health.is_some()))
            .map(|c| (c.id.as_str(), c))
            .collect();
        self.checks.retain(|id, task| {
            let keep = checked.contains_key(id.as_str());
            if !keep {
                task.abort();
            }
            keep
        });
        lock(&self.verdicts).retain(|id, _| checked.contains_key(id.as_str()));
        for (id, container) in checked {
            if !self.checks.contains_key(id) {
                let task = self.check_continuously(container);
                self.checks.insert(id.to_owned(), task);
            }
        }
    }

    /// The verdict of every checked container, by container id.
    pub fn verdicts(&self) -> BTreeMap<String, Verdict> {
        lock(&self.verdicts).clone()
    }

    /// Unhealthy containers with why, by container id.
    pub fn unhealthy(&self) -> BTreeMap<String, String> {
        lock(&self.verdicts)
            .iter()
            .filter(|(_, v)| v.state == HealthState::Unhealthy)
            .map(|(id, v)| (id.clone(), v.describe()))
            .collect()
    }

    fn check_continuously(&self, container: &ObservedContainer) -> JoinHandle<()> {
        let (runtime, verdicts, on_change) = (
            self.runtime.clone(),
            self.verdicts.clone(),
            self.on_change.clone(),
        );
        let (id, pid) = (container.id.clone(), container.pid.unwrap_or_default());
        let health = container.spec.as_ref().and_then(|spec| spec.health.clone());
        // The start period runs from the container's start, also for containers
        // adopted by a new agent.
        let running_for = container
            .started_at
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        let started = Instant::now()
            .checked_sub(running_for)
            .unwrap_or_else(Instant::now);
        tokio::spawn(async move {
            let Some(health) = health else { return };
            let mut tracker = Tracker::new(started);
            lock(&verdicts).insert(id.clone(), tracker.verdict().clone());
            loop {
                tokio::time::sleep(tracker.next_check(&health, Instant::now())).await;
                let outcome = probe(&runtime, &id, pid, &health).await;
                let changed = tracker.record(&health, Instant::now(), outcome);
                lock(&verdicts).insert(id.clone(), tracker.verdict().clone());
                if changed.is_some() {
                    on_change();
                }
            }
        })
    }
}

impl<R> Drop for HealthMonitor<R> {
    fn drop(&mut self) {
        for task in self.checks.values() {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
