//! `apply --wait`: waiting until every replica of the applied services runs its
//! current spec and, when the service has a health check, has passed it, as
//! `docker compose up --wait` does. A CLI process has no agent checking health, so
//! the checks run here, on the agent's schedule (start period, start interval,
//! interval, retries). A replica that exits or turns unhealthy ends the wait at
//! once: waiting longer would not make it ready.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{probe, HealthState, Tracker, Verdict};
use crate::manifest::{Health, Service};
use crate::runtime::{ContainerStatus, ObservedContainer, Runtime, RuntimeError};

/// How often the containers' states are read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Every replica is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Replicas running their current spec.
    pub replicas: u32,
    /// Those of them that passed their service's health check.
    pub healthy: u32,
}

impl std::fmt::Display for Ready {
    /// "3 replicas running, 2 of them checked healthy"
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.replicas == 1 { "" } else { "s" };
        write!(f, "{} replica{plural} running", self.replicas)?;
        if self.healthy > 0 {
            write!(f, ", {} of them checked healthy", self.healthy)?;
        }
        Ok(())
    }
}

/// Why the replicas did not all become ready.
#[derive(Debug)]
pub enum NotReady {
    /// A replica's process ended (with `code` when it is known).
    Exited {
        service: String,
        slot: u32,
        code: Option<i32>,
    },
    /// A replica failed its health check `retries` times in a row.
    Unhealthy {
        service: String,
        slot: u32,
        verdict: Verdict,
    },
    /// The time ran out first: what each replica not ready yet was still doing.
    TimedOut {
        after: Duration,
        waiting_for: Vec<String>,
    },
    /// The containers could not be listed.
    List(RuntimeError),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited {
                service,
                slot,
                code,
            } => {
                write!(f, "{service}/{slot} exited")?;
                if let Some(code) = code {
                    write!(f, " with code {code}")?;
                }
                write!(
                    f,
                    " before it was ready; `wharf logs {service} --replica {slot}` shows its output"
                )
            }
            NotReady::Unhealthy {
                service,
                slot,
                verdict,
            } => write!(f, "{service}/{slot} is unhealthy: {}", verdict.describe()),
            NotReady::TimedOut { after, waiting_for } => write!(
                f,
                "timed out after {}: {}",
                humantime::format_duration(*after),
                waiting_for.join(", ")
            ),
            NotReady::List(_) => f.write_str("cannot list the containers"),
        }
    }
}

impl std::error::Error for NotReady {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NotReady::List(err) => Some(err),
            _ => None,
        }
    }
}

/// The health checks of one container, as the agent would run them.
struct Check {
    tracker: Tracker,
    /// When the next check is due.
    due: Instant,
}

impl Check {
    /// The start period runs from the container's start (it may have started before
    /// the wait did, e.g. when the plan left it as it was).
    fn new(container: &ObservedContainer, health: &Health, now: Instant) -> Self {
        let running_for = container
            .started_at
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        let started = now.checked_sub(running_for).unwrap_or(now);
        let tracker = Tracker::new(started);
        let due = (started + tracker.next_check(health, started)).max(now);
        Check { tracker, due }
    }
}

/// Waits until every replica of `desired` runs with its service's current spec and,
/// for a service with a health check, has passed it (checks run from here, on the
/// check's schedule). Fails as soon as one of those replicas exits or turns
/// unhealthy, or when `timeout` passes first.
pub async fn wait_until_ready<R: Runtime>(
    runtime: &R,
    desired: &[Service],
    timeout: Duration,
) -> Result<Ready, NotReady> {
    let deadline = Instant::now() + timeout;
    let mut checks: BTreeMap<String, Check> = BTreeMap::new();
    loop {
        let containers = runtime.list().await.map_err(NotReady::List)?;
        checks.retain(|id, _| containers.iter().any(|c| &c.id == id));
        let now = Instant::now();
        let mut ready = Ready {
            replicas: 0,
            healthy: 0,
        };
        let mut waiting_for: Vec<String> = Vec::new();
        // Checks due now: container id, init pid, the check.
        let mut due: Vec<(String, i32, &Health)> = Vec::new();
        for service in desired {
            for slot in 0..service.spec.replicas {
                let replica = format!("{}/{slot}", service.name());
                let Some(container) = current(&containers, service, slot) else {
                    waiting_for.push(format!("{replica} has no container"));
                    continue;
                };
                match container.status {
                    ContainerStatus::Exited { code, .. } => {
                        return Err(NotReady::Exited {
                            service: service.name().to_owned(),
                            slot,
                            code,
                        })
                    }
                    ContainerStatus::Created => {
                        waiting_for.push(format!("{replica} is created but not started"))
                    }
                    ContainerStatus::Unknown => {
                        waiting_for.push(format!("{replica} is in a state that cannot be read"))
                    }
                    ContainerStatus::Running => {
                        let Some(health) = &service.spec.health else {
                            ready.replicas += 1;
                            continue;
                        };
                        let check = checks
                            .entry(container.id.clone())
                            .or_insert_with(|| Check::new(container, health, now));
                        let verdict = check.tracker.verdict();
                        match verdict.state {
                            HealthState::Healthy => {
                                ready.replicas += 1;
                                ready.healthy += 1;
                            }
                            HealthState::Unhealthy => {
                                return Err(NotReady::Unhealthy {
                                    service: service.name().to_owned(),
                                    slot,
                                    verdict: verdict.clone(),
                                })
                            }
                            HealthState::Starting => waiting_for.push(format!(
                                "{replica} is not healthy yet ({})",
                                verdict.describe()
                            )),
                        }
                        if let (true, Some(pid)) = (check.due <= now, container.pid) {
                            due.push((container.id.clone(), pid, health));
                        }
                    }
                }
            }
        }
        if waiting_for.is_empty() {
            return Ok(ready);
        }
        let timed_out = NotReady::TimedOut {
            after: timeout,
            waiting_for,
        };
        if now >= deadline {
            return Err(timed_out);
        }
        // The checks due run together; none may outlast the deadline.
        let probes = due.iter().map(|(id, pid, health)| async move {
            let outcome = probe(runtime, id, *pid, health).await;
            (outcome, Instant::now())
        });
        let probed =
            tokio::time::timeout_at(deadline, futures_util::future::join_all(probes)).await;
        let Ok(outcomes) = probed else {
            return Err(timed_out);
        };
        for ((id, _, health), (outcome, at)) in due.iter().zip(outcomes) {
            if let Some(check) = checks.get_mut(id) {
                check.tracker.record(health, at, outcome);
                check.due = at + check.tracker.next_check(health, at);
            }
        }
        if !due.is_empty() {
            // A verdict may have changed: look again now.
            continue;
        }
        // Until the next check is due, or the next look at the containers.
        let now = Instant::now();
        let wake = checks
            .values()
            .map(|check| check.due)
            .filter(|due| *due > now)
            .fold(now + POLL, Instant::min)
            .min(deadline);
        tokio::time::sleep_until(wake).await;
    }
}

/// The container of replica `slot` of `service` made from its current spec (a
/// running one first, when there are several).
fn current<'c>(
    containers: &'c [ObservedContainer],
    service: &Service,
    slot: u32,
) -> Option<&'c ObservedContainer> {
    containers
        .iter()
        .filter(|c| {
            c.service == service.name() && c.slot == slot && c.spec_hash == service.hash.as_str()
        })
        .max_by_key(|c| (c.status == ContainerStatus::Running, c.started_at))
}
