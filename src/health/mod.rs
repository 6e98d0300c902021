//! Health checks, part of observing the host: probes (a command inside the
//! container, a TCP connect, an HTTP GET), the verdict a run of probes adds up to,
//! the wait for a new replica to become healthy (rolling updates), the wait for
//! every replica of an apply to be ready (`apply --wait`), and the agent's
//! continuous checking of running containers. The planner restarts what is
//! unhealthy; nothing here changes containers.

mod monitor;
mod probe;
mod ready;

use std::time::Duration;

// tokio's clock, so that tests can pause it.
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

pub use monitor::HealthMonitor;
pub use probe::probe;
pub use ready::{wait_until_ready, NotReady, Ready};

use crate::manifest::Health;
use crate::runtime::{ContainerStatus, Runtime, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// No verdict yet: no check has passed, and failures have not reached `retries`.
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        })
    }
}

/// What the checks of one container add up to, as Docker counts them: failures
/// during the start period do not count until the first success; after that,
/// `retries` failures in a row make it unhealthy and one success makes it healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub state: HealthState,
    /// Failed checks in a row that counted.
    pub failures: u32,
    /// Why the last check failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    started: Instant,
    verdict: Verdict,
    /// No check has run yet.
    first: bool,
}

impl Tracker {
    pub fn new(started: Instant) -> Self {
        Tracker {
            started,
            verdict: Verdict {
                state: HealthState::Starting,
                failures: 0,
                last_error: None,
            },
            first: true,
        }
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    fn in_start_period(&self, health: &Health, at: Instant) -> bool {
        self.verdict.state == HealthState::Starting
            && at < self.started + health.start_period.as_std()
    }

    /// How long after a check at `now` the next one runs. The first runs after the
    /// start interval: a replica that is ready at once is known to be (and, on the
    /// bridge, takes traffic) within a second, not an interval.
    pub fn next_check(&self, health: &Health, now: Instant) -> Duration {
        if self.first || self.in_start_period(health, now) {
            health.start_interval.as_std().min(health.interval.as_std())
        } else {
            health.interval.as_std()
        }
    }

    /// Counts one check made at `at`; returns the new state when it changed.
    pub fn record(
        &mut self,
        health: &Health,
        at: Instant,
        outcome: Result<(), String>,
    ) -> Option<HealthState> {
        let before = self.verdict.state;
        self.first = false;
        match outcome {
            Ok(()) => {
                self.verdict.state = HealthState::Healthy;
                self.verdict.failures = 0;
                self.verdict.last_error = None;
            }
            Err(error) => {
                if !self.in_start_period(health, at) {
                    self.verdict.failures += 1;
                    if self.verdict.failures >= health.retries {
                        self.verdict.state = HealthState::Unhealthy;
                    }
                }
                self.verdict.last_error = Some(error);
            }
        }
        (self.verdict.state != before).then_some(self.verdict.state)
    }
}

impl Verdict {
    /// "3 checks failed: connection refused"
    pub fn describe(&self) -> String {
        let cause = self.last_error.as_deref().unwrap_or("no check passed yet");
        match self.failures {
            0 => cause.to_owned(),
            1 => format!("1 check failed: {cause}"),
            n => format!("{n} checks failed: {cause}"),
        }
    }
}

/// Why a new replica did not become healthy (`wait_until_healthy`).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No verdict within the deadline.
    #[error("not healthy within {} ({})", humantime::format_duration(*.deadline), .verdict.describe())]
    NotHealthyWithin {
        deadline: Duration,
        verdict: Verdict,
    },
    /// Its checks failed `retries` times in a row.
    #[error("unhealthy: {}", .0.describe())]
    Unhealthy(Verdict),
    #[error("the container disappeared")]
    Disappeared,
    #[error("the container stopped: {0}")]
    Stopped(ContainerStatus),
    /// The containers could not be listed.
    #[error(transparent)]
    List(#[from] RuntimeError),
}

/// Waits until the new container `id` (started just now) passes its health check.
/// Fails when it exits, turns unhealthy, or has no verdict within `deadline`.
pub async fn wait_until_healthy<R: Runtime>(
    runtime: &R,
    id: &str,
    health: &Health,
    deadline: Duration,
) -> Result<(), HealthError> {
    let started = Instant::now();
    let give_up = started + deadline;
    let mut tracker = Tracker::new(started);
    loop {
        let delay = tracker.next_check(health, Instant::now());
        if Instant::now() + delay > give_up {
            tokio::time::sleep_until(give_up).await;
            return Err(HealthError::NotHealthyWithin {
                deadline,
                verdict: tracker.verdict().clone(),
            });
        }
        tokio::time::sleep(delay).await;
        let containers = runtime.list().await?;
        let Some(container) = containers.iter().find(|c| c.id == id) else {
            return Err(HealthError::Disappeared);
        };
        let (ContainerStatus::Running, Some(pid)) = (container.status, container.pid) else {
            return Err(HealthError::Stopped(container.status));
        };
        let outcome = probe(runtime, id, pid, health).await;
        match tracker.record(health, Instant::now(), outcome) {
            Some(HealthState::Healthy) => return Ok(()),
            Some(HealthState::Unhealthy) => {
                return Err(HealthError::Unhealthy(tracker.verdict().clone()))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn health(yaml: &str) -> Health {
        let text = format!(
            "apiVersion: wharf/v1\nkind: Service\nname: web\nimage: busybox\nhealth:\n{yaml}"
        );
        parse_manifest(std::path::Path::new("w.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0)
            .spec
            .health
            .expect("health")
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn failures_in_the_start_period_do_not_count_until_a_check_passes() {
        let health = health("  tcp: {port: 80}\n  retries: 2\n  start_period: 10s\n");
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        for second in 1..10 {
            let at = t0 + SECOND * second;
            assert_eq!(tracker.record(&health, at, Err("refused".into())), None);
            assert_eq!(tracker.next_check(&health, at), SECOND, "start_interval");
        }
        assert_eq!(tracker.verdict().failures, 0);
        assert_eq!(tracker.verdict().state, HealthState::Starting);
        let after = t0 + SECOND * 11;
        assert_eq!(tracker.record(&health, after, Err("refused".into())), None);
        assert_eq!(
            tracker.record(&health, after, Err("refused".into())),
            Some(HealthState::Unhealthy)
        );
        assert_eq!(tracker.verdict().describe(), "2 checks failed: refused");
    }

    #[test]
    fn once_healthy_the_start_period_is_over() {
        let health = health("  exec: [true]\n  retries: 1\n  interval: 5s\n  start_period: 1m\n");
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        assert_eq!(
            tracker.record(&health, t0 + SECOND, Ok(())),
            Some(HealthState::Healthy)
        );
        assert_eq!(tracker.next_check(&health, t0 + SECOND), SECOND * 5);
        assert_eq!(
            tracker.record(&health, t0 + SECOND * 6, Err("exit 1".into())),
            Some(HealthState::Unhealthy)
        );
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let health = health("  tcp: {port: 80}\n  retries: 3\n");
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        tracker.record(&health, t0, Err("refused".into()));
        tracker.record(&health, t0, Err("refused".into()));
        assert_eq!(tracker.verdict().failures, 2);
        tracker.record(&health, t0, Ok(()));
        tracker.record(&health, t0, Err("refused".into()));
        tracker.record(&health, t0, Err("refused".into()));
        assert_eq!(tracker.verdict().state, HealthState::Healthy);
        assert_eq!(
            tracker.record(&health, t0, Err("refused".into())),
            Some(HealthState::Unhealthy)
        );
        assert_eq!(
            tracker.record(&health, t0, Ok(())),
            Some(HealthState::Healthy)
        );
    }
}
