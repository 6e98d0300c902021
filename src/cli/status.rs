use std::collections::BTreeMap;
use std::time::SystemTime;

use clap::Parser;
use serde::Serialize;

use super::{exit, Session};
use crate::health::{HealthState, Verdict};
use crate::network::service_view;
use crate::reconcile::AgentPresence;
use crate::runtime::{ContainerStatus, ObservedContainer};
use crate::state::{StateView, StoppedRollout, TagCheckFailing};
use crate::sync::SyncRecord;

/// Per service: replicas running against those wanted, and each container's state.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf status\n  wharf status --json")]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

/// `status --json`.
#[derive(Serialize)]
struct StatusReport<'a> {
    services: &'a [ServiceStatus<'a>],
    /// Git sources synced on this host (`wharf sync`, `wharf agent --git`).
    git: &'a [SyncRecord],
}

#[derive(Serialize)]
struct ServiceStatus<'a> {
    service: &'a str,
    /// Replicas wanted: as the last apply (or agent) that changed the service
    /// recorded them, scaling included; as the newest container's spec asks when no
    /// apply recorded the service or the container is newer (`wharf run`).
    desired: u32,
    running: usize,
    /// Its virtual address on wharf's bridge: what its name resolves to in the
    /// containers.
    address: Option<String>,
    /// The host ports it publishes ("18080/tcp", "127.0.0.1:53/udp").
    published: Vec<String>,
    /// The agent's last rollout of this service failed and is held back.
    rollout_stopped: Option<StoppedRollout>,
    /// The agent cannot check the `pull: always` tag at its registry (the containers
    /// keep running what they run).
    tag_check_failing: Option<TagCheckFailing>,
    /// A job's last run: `running 12s`, `completed (0) 3m ago`, `failed (4) after 3
    /// tries 1m ago`.
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    containers: Vec<ContainerLine<'a>>,
}

#[derive(Serialize)]
struct ContainerLine<'a> {
    id: &'a str,
    replica: u32,
    state: String,
    /// How it ended, once it has and its monitor recorded it.
    exit_code: Option<i32>,
    oom_killed: bool,
    /// Its address on wharf's bridge (`network: bridge`).
    address: Option<String>,
    /// Whether its service's published ports and name send it new connections (on
    /// the bridge only).
    in_rotation: Option<bool>,
    uptime_seconds: Option<u64>,
    /// Restarts recorded for this replica slot.
    restarts: u64,
    /// The agent's health verdict (absent without a health check or an agent).
    health: Option<Verdict>,
    /// Seconds until the agent restarts this crash-looping replica.
    next_restart_in: Option<u64>,
    image_digest: &'a str,
}

/// The replicas a service was last applied with, and when (to the second).
struct LastApplied {
    replicas: u32,
    at: Option<SystemTime>,
}

/// Replicas wanted. Scaling changes no container, so the containers' specs cannot
/// say how many are wanted after a scale: the last recorded apply (or agent
/// reconcile) of the service can. The newest container's spec says it only when
/// there is no such record, or when the container started after it (`wharf run`, an
/// apply that failed for the service and so did not record it).
fn desired(applied: Option<&LastApplied>, containers: &[&ObservedContainer]) -> u32 {
    let newest = containers
        .iter()
        .filter_map(|c| c.spec.as_ref().map(|s| (c.started_at, s.replicas)))
        .max_by_key(|(started, _)| *started);
    let Some(applied) = applied else {
        return newest.map_or(0, |(_, replicas)| replicas);
    };
    match (newest, applied.at) {
        (Some((Some(started), replicas)), Some(at)) if started > at => replicas,
        _ => applied.replicas,
    }
}

/// A job's last run, from its containers (the last try's): None for a service.
fn job_state(containers: &[&ObservedContainer], now: SystemTime) -> Option<String> {
    let last = containers
        .iter()
        .filter(|c| c.spec.as_ref().is_some_and(|spec| spec.is_job()))
        .max_by_key(|c| (c.started_at, c.slot))?;
    let since = |at: Option<SystemTime>| {
        at.and_then(|at| now.duration_since(at).ok())
            .map(|d| humantime::format_duration(std::time::Duration::from_secs(d.as_secs())))
    };
    let tries = last.slot + 1;
    let next = last
        .spec
        .as_ref()
        .and_then(|spec| spec.schedule.as_deref())
        .and_then(|schedule| crate::plan::next_run(schedule, chrono::Local::now()))
        .map_or(String::new(), |at| {
            format!(", next run {} (local time)", at.format("%Y-%m-%d %H:%M"))
        });
    let state = match last.status {
        ContainerStatus::Running => format!(
            "running {}",
            since(last.started_at).map_or(String::new(), |d| d.to_string())
        ),
        ContainerStatus::Exited {
            code: Some(0), at, ..
        } => format!(
            "completed (0){}",
            since(at).map_or(String::new(), |d| format!(" {d} ago"))
        ),
        ContainerStatus::Exited { code, at, .. } => format!(
            "failed ({}) after {tries} {}{}",
            code.map_or("?".to_owned(), |c| c.to_string()),
            if tries == 1 { "try" } else { "tries" },
            since(at).map_or(String::new(), |d| format!(", {d} ago"))
        ),
        other => other.to_string(),
    };
    Some(format!("{state}{next}"))
}

/// A container's state as `status` and `ps` show it: its status, and what will not
/// be known or done about it.
pub(super) fn state_of(container: &ObservedContainer, agent_running: bool) -> String {
    let mut state = container.status.to_string();
    if container.unmonitored {
        state.push_str(" (its monitor is gone: its exit will not be known)");
    }
    if let ContainerStatus::Exited { code, .. } = container.status {
        // A job is not restarted: it ran.
        let policy = container
            .spec
            .as_ref()
            .filter(|spec| !spec.is_job())
            .map(|spec| spec.restart);
        if let Some(policy) = policy.filter(|p| p.restarts_after(code) && !agent_running) {
            state.push_str(&format!(
                "; restart: {}, but no agent is running",
                policy.name()
            ));
        }
    }
    state
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let containers = match session.containers() {
        Ok(containers) => containers,
        Err(code) => return code,
    };
    let mut by_service: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for container in &containers {
        by_service
            .entry(&container.service)
            .or_default()
            .push(container);
    }
    let now = SystemTime::now();
    let agent_running = AgentPresence::any(&session.root);
    let state = StateView::open(&session.root).unwrap_or_else(|err| {
        // What runs is still worth showing; the history is what is missing.
        eprintln!("warning: {err}");
        None
    });
    // The replicas each service was last applied with, and when.
    let applied: BTreeMap<String, LastApplied> =
        state.as_ref().map_or_else(BTreeMap::new, |view| {
            view.applied()
                .into_iter()
                .map(|entry| {
                    let last = LastApplied {
                        replicas: entry.spec.replicas,
                        at: view.apply_time(entry.generation),
                    };
                    (entry.spec.name, last)
                })
                .collect()
        });
    let on_bridge = |service: &str| service_view(session.runtime.root(), service);
    let statuses: Vec<ServiceStatus> = by_service
        .into_iter()
        .map(|(service, containers)| ServiceStatus {
            service,
            address: on_bridge(service).map(|(address, _)| address.to_string()),
            published: on_bridge(service)
                .map(|(_, ports)| ports)
                .unwrap_or_default(),
            desired: desired(applied.get(service), &containers),
            running: containers
                .iter()
                .filter(|c| c.status == ContainerStatus::Running)
                .count(),
            // Out of date once a container runs what the rollout was moving to.
            rollout_stopped: state
                .as_ref()
                .and_then(|view| view.stopped_rollout(service))
                .filter(|stopped| {
                    !containers
                        .iter()
                        .any(|c| stopped.reached_by(&c.spec_hash, &c.image_digest))
                }),
            tag_check_failing: state
                .as_ref()
                .and_then(|view| view.tag_check_failing(service)),
            job: job_state(&containers, now),
            containers: containers
                .iter()
                .map(|c| ContainerLine {
                    id: &c.id,
                    replica: c.slot,
                    state: state_of(c, agent_running),
                    exit_code: c.status.exit_code(),
                    oom_killed: c.status.oom_killed(),
                    address: c.address.map(|address| address.to_string()),
                    in_rotation: c.address.map(|_| c.in_rotation),
                    health: state
                        .as_ref()
                        .filter(|_| c.status == ContainerStatus::Running)
                        .and_then(|view| view.health(&c.id)),
                    restarts: state.as_ref().map_or(0, |view| {
                        view.restarts(&format!("{}/{}", c.service, c.slot))
                    }),
                    next_restart_in: state
                        .as_ref()
                        .filter(|_| matches!(c.status, ContainerStatus::Exited { .. }))
                        .and_then(|view| view.next_restart(&format!("{}/{}", c.service, c.slot)))
                        .map(|at| at.duration_since(now).map_or(0, |d| d.as_secs())),
                    uptime_seconds: (c.status == ContainerStatus::Running)
                        .then(|| {
                            c.started_at
                                .and_then(|t| now.duration_since(t).ok())
                                .map(|d| d.as_secs())
                        })
                        .flatten(),
                    image_digest: &c.image_digest,
                })
                .collect(),
        })
        .collect();
    let synced = crate::sync::records(&session.root);
    if args.json {
        return session.print_json(&StatusReport {
            services: &statuses,
            git: &synced,
        });
    }
    for record in synced {
        let commit = record
            .commit
            .as_deref()
            .map_or("no commit yet", |c| &c[..c.len().min(12)]);
        let since = record
            .synced_at
            .map_or(String::new(), |at| format!(" (since {at})"));
        println!("git {}: commit {commit}{since}", record.source.describe());
        if let Some(error) = record.error {
            println!("  last sync failed: {error}");
        }
    }
    if statuses.is_empty() {
        println!("No wharf containers.");
    }
    for status in &statuses {
        let mut network = String::new();
        if let Some(address) = &status.address {
            network.push_str(&format!("  name {} → {address}", status.service));
        }
        if !status.published.is_empty() {
            network.push_str(&format!(", publishes {}", status.published.join(", ")));
        }
        match &status.job {
            Some(job) => println!("{}  job {job}{network}", status.service),
            None => println!(
                "{}  {}/{} running{network}",
                status.service, status.running, status.desired
            ),
        }
        if let Some(stopped) = &status.rollout_stopped {
            let retry = match stopped.image_digest {
                Some(_) => "edit the manifest or push the tag again to retry",
                None => "edit the manifest to retry",
            };
            println!(
                "  rollout stopped at replica {} ({}): {}; {retry}",
                stopped.replica, stopped.time, stopped.cause
            );
        }
        if let Some(failing) = &status.tag_check_failing {
            println!(
                "  tag check failing since {} ({} attempts at {}): {}; running containers are left as they are",
                failing.since, failing.attempts, failing.registry, failing.error
            );
        }
        for line in &status.containers {
            let uptime = line.uptime_seconds.map_or(String::new(), |s| {
                format!(
                    "  up {}",
                    humantime::format_duration(std::time::Duration::from_secs(s))
                )
            });
            let digest = line.image_digest.get(..19).unwrap_or(line.image_digest);
            let restarts = match line.restarts {
                0 => String::new(),
                n => format!("  restarts {n}"),
            };
            let state = match line.next_restart_in {
                Some(seconds) => {
                    format!("crash-looping, {}, next restart in {seconds}s", line.state)
                }
                None => line.state.clone(),
            };
            let state = match &line.health {
                Some(verdict) if verdict.state == HealthState::Unhealthy => {
                    format!("{state}, unhealthy ({})", verdict.describe())
                }
                Some(verdict) => format!("{state}, {}", verdict.state),
                None => state,
            };
            let address = match (&line.address, line.in_rotation) {
                (Some(address), Some(true)) => format!("  {address} in rotation"),
                (Some(address), _) => format!("  {address} out of rotation"),
                (None, _) => String::new(),
            };
            println!(
                "  {}  {state}{uptime}{restarts}{address}  {digest}",
                line.id
            );
        }
    }
    exit::OK
}
