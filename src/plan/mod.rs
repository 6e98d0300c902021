//! Stage 3 of the data flow: a pure function from what the manifests want and what
//! runs on the host to an ordered list of steps, each with its reason. `wharf plan`
//! shows it; `wharf apply` executes it.

mod render;
mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use render::{render_human, render_json, SavedPlan, SavedPlanError, PLAN_FORMAT_VERSION};
pub use schedule::{is_due, next_run};

use crate::manifest::{start_order, Condition, PullPolicy, RestartPolicy, Service, ServiceSpec};
use crate::runtime::{ContainerStatus, ObservedContainer};

/// What a step does to one replica slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Create and start a container for an empty slot.
    Create,
    /// Stop and remove a container.
    Remove,
    /// Put a new container in place of an outdated one, in the service's update order.
    Replace,
    /// Recreate an exited container with the same spec, as its restart policy says.
    Restart,
    /// Put a running replica on the bridge in its service's rotation once it is
    /// ready: one that passed its check after an apply gave up on it, or whose apply
    /// was killed before it joined.
    Join,
    /// Run a job to completion (retried as its `retries` say): it is new, or its
    /// spec changed since its last run.
    Run,
}

impl Action {
    /// "create", "remove", "replace", "restart", "join".
    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Remove => "remove",
            Action::Replace => "replace",
            Action::Restart => "restart",
            Action::Join => "join",
            Action::Run => "run",
        }
    }

    /// Whether the step makes a container (from the service's image).
    pub fn needs_image(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Replace | Action::Restart | Action::Run
        )
    }

    /// "created", "removed", "replaced", "restarted", "joined".
    pub fn done(self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::Remove => "removed",
            Action::Replace => "replaced",
            Action::Restart => "restarted",
            Action::Join => "joined",
            Action::Run => "ran",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub service: String,
    pub slot: u32,
    pub action: Action,
    pub reason: String,
    /// The container the step removes or replaces.
    pub container: Option<String>,
    /// Spec hash before (of the existing container) and after (of the new one).
    pub before: Option<String>,
    pub after: Option<String>,
}

/// How one service changes, for the plan's header lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceChange {
    pub service: String,
    pub kind: ChangeKind,
    /// The spec the running containers were made from (for the diff), if any.
    pub before: Option<ServiceSpec>,
    pub after: Option<ServiceSpec>,
    /// Replicas running or created before, and wanted after.
    pub replicas: (u32, u32),
    /// Top-level fields whose change forces replacement, and changed files
    /// (`config app.conf`, `secret dbpass`).
    pub forced_by: Vec<String>,
    /// Configs whose content changed, for the diff (never secrets).
    #[serde(skip)]
    pub config_diffs: Vec<ConfigDiff>,
    /// What its steps wait for: `db healthy` (its `depends_on`).
    pub waits_for: Vec<String>,
}

/// A config's content before (when it is still stored) and after.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDiff {
    pub source: String,
    pub before: Option<Arc<Vec<u8>>>,
    pub after: Arc<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// New service: `+`.
    Create,
    /// Service gone from the manifests: `-`.
    Remove,
    /// Scaled or restarted, nothing replaced: `~`.
    Update,
    /// Containers replaced: `-/+`.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub changes: Vec<ServiceChange>,
    pub steps: Vec<Step>,
    /// Services found running from this directory but no longer defined, kept
    /// because `--prune` was not given.
    pub not_pruned: Vec<String>,
    /// Steps the caller's policies hold back (see [`HoldBack`]): not to run now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Step>,
    /// Scheduled jobs (name and schedule), which only the agent runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scheduled: Vec<(String, String)>,
}

/// What the agent's policies hold back, as planner input: the planner leaves those
/// steps out of `steps` and lists them in `held`, so it alone decides what runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldBack {
    /// Services whose replacements wait: a rollout towards their current target
    /// already failed (a new edit, or a moved tag, is a new target).
    pub rollouts: BTreeSet<String>,
    /// Services whose creations, restarts and replacements wait: the registry of
    /// their `pull: always` image is failing. Removals still run.
    pub pulls: BTreeSet<String>,
    /// Replica slots (`service/slot`) whose restart is not due yet (backoff); for a
    /// job, the slot of a try after which the next must wait.
    pub restarts: BTreeSet<String>,
    /// Services whose dependencies are not in their condition yet (see
    /// [`dependencies_not_ready`]): their creations, replacements and runs wait.
    pub dependants: BTreeSet<String>,
}

impl HoldBack {
    fn holds(&self, step: &Step) -> bool {
        match step.action {
            Action::Remove => false,
            Action::Replace if self.rollouts.contains(&step.service) => true,
            Action::Restart
                if self
                    .restarts
                    .contains(&format!("{}/{}", step.service, step.slot)) =>
            {
                true
            }
            Action::Join => self.pulls.contains(&step.service),
            // A crashed replica of an unchanged spec comes back whatever its
            // dependencies do: holding it would take it down with them.
            Action::Restart => self.pulls.contains(&step.service),
            // The next try of a job waits for the pause after the failed one.
            Action::Run
                if step.slot > 0
                    && self
                        .restarts
                        .contains(&format!("{}/{}", step.service, step.slot - 1)) =>
            {
                true
            }
            _ => self.pulls.contains(&step.service) || self.dependants.contains(&step.service),
        }
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps grouped by service, the services in the order the steps first name
    /// them (dependencies first), in one pass: plans may hold thousands of services.
    pub fn steps_by_service(&self) -> Vec<(&str, Vec<&Step>)> {
        let mut groups: Vec<(&str, Vec<&Step>)> = Vec::new();
        let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
        for step in &self.steps {
            let index = *index_of.entry(&step.service).or_insert_with(|| {
                groups.push((&step.service, Vec::new()));
                groups.len() - 1
            });
            groups[index].1.push(step);
        }
        groups
    }

    pub fn count(&self, action: Action) -> usize {
        self.steps.iter().filter(|s| s.action == action).count()
    }
}

/// Everything the planner looks at, gathered by the caller.
pub struct Inputs<'a> {
    pub desired: &'a [Service],
    pub observed: &'a [ObservedContainer],
    /// The digest each image reference resolves to now, for `pull: always` services
    /// (absent: unknown, no replacement on that ground).
    pub current_digests: &'a BTreeMap<String, String>,
    /// Running containers whose health check fails, with why, by container id.
    pub unhealthy: &'a BTreeMap<String, String>,
    /// The manifest directory being applied; only containers created from it are
    /// pruned.
    pub manifest_dir: &'a Path,
    pub prune: bool,
    pub hold_back: &'a HoldBack,
    /// Plan `Join` steps for running replicas out of rotation (an agent keeps the
    /// rotation itself, from its health checks).
    pub join_rotation: bool,
    /// The stored contents of the running containers' configs, by digest, for the
    /// diffs (missing ones are shown as unknown).
    pub stored_contents: &'a BTreeMap<String, Arc<Vec<u8>>>,
    /// Scheduled jobs whose time has come (the agent's; apply runs no schedule).
    pub due_jobs: &'a BTreeSet<String>,
}

/// Computes the plan. Pure: no I/O, no clock; steps in (service, slot) order.
pub fn plan(inputs: &Inputs) -> Plan {
    let mut changes = Vec::new();
    let mut steps = Vec::new();
    let desired_names: BTreeSet<&str> = inputs.desired.iter().map(Service::name).collect();

    let mut by_service: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for container in inputs.observed {
        by_service
            .entry(&container.service)
            .or_default()
            .push(container);
    }
    // Dependencies first (apply runs the steps in this order), by name otherwise.
    for service in start_order(inputs.desired) {
        let containers = by_service
            .get(service.name())
            .map_or(&[][..], Vec::as_slice);
        let (service_steps, change) = plan_service(service, containers, inputs);
        steps.extend(service_steps);
        changes.extend(change);
    }

    let mut not_pruned = BTreeSet::new();
    let mut gone: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for container in inputs.observed {
        if desired_names.contains(container.service.as_str()) {
            continue;
        }
        let from_here = container.manifest_dir.as_deref() == Some(inputs.manifest_dir);
        if inputs.prune && from_here {
            gone.entry(&container.service).or_default().push(container);
        } else if from_here {
            not_pruned.insert(container.service.clone());
        }
    }
    for (service, mut containers) in gone {
        containers.sort_by(|a, b| b.slot.cmp(&a.slot).then(a.id.cmp(&b.id)));
        changes.push(ServiceChange {
            service: service.to_owned(),
            kind: ChangeKind::Remove,
            before: containers.iter().find_map(|c| c.spec.as_deref().cloned()),
            after: None,
            replicas: (containers.len() as u32, 0),
            forced_by: Vec::new(),
            config_diffs: Vec::new(),
            waits_for: Vec::new(),
        });
        steps.extend(containers.into_iter().map(|c| Step {
            service: service.to_owned(),
            slot: c.slot,
            action: Action::Remove,
            reason: "service removed from the manifests".into(),
            container: Some(c.id.clone()),
            before: Some(c.spec_hash.clone()),
            after: None,
        }));
    }
    let (held, steps) = steps
        .into_iter()
        .partition(|step| inputs.hold_back.holds(step));
    let scheduled = inputs
        .desired
        .iter()
        .filter_map(|s| Some((s.name().to_owned(), s.spec.schedule.clone()?)))
        .collect();
    Plan {
        changes,
        steps,
        not_pruned: not_pruned.into_iter().collect(),
        held,
        scheduled,
    }
}

fn plan_service(
    service: &Service,
    containers: &[&ObservedContainer],
    inputs: &Inputs,
) -> (Vec<Step>, Option<ServiceChange>) {
    if service.spec.is_job() {
        return plan_job(
            service,
            containers,
            inputs.due_jobs.contains(service.name()),
        );
    }
    let spec = &service.spec;
    let hash = service.hash.as_str();
    let mut steps = Vec::new();
    let mut forced_by = BTreeSet::new();
    let mut fields_by_hash: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut config_diffs: BTreeMap<String, ConfigDiff> = BTreeMap::new();
    let step = |slot, action, reason: String, container: Option<&ObservedContainer>| Step {
        service: spec.name.clone(),
        slot,
        action,
        reason,
        container: container.map(|c| c.id.clone()),
        before: container.map(|c| c.spec_hash.clone()),
        after: (action != Action::Remove).then(|| hash.to_owned()),
    };

    for slot in 0..spec.replicas {
        let mut in_slot: Vec<&ObservedContainer> = containers
            .iter()
            .copied()
            .filter(|c| c.slot == slot)
            .collect();
        // An interrupted replacement can leave two containers in a slot: keep the
        // best one (matching spec, then running, then newest) and remove the others.
        in_slot.sort_by_key(|c| {
            (
                c.spec_hash != hash,
                c.status != ContainerStatus::Running,
                std::cmp::Reverse(c.started_at),
            )
        });
        let Some((keep, extra)) = in_slot.split_first() else {
            steps.push(step(
                slot,
                Action::Create,
                format!("replica {slot} missing"),
                None,
            ));
            continue;
        };
        for container in extra {
            steps.push(step(
                slot,
                Action::Remove,
                format!("a second container for replica {slot}"),
                Some(container),
            ));
        }
        if keep.spec_hash != hash {
            // Replicas of one old spec share the diff: compute it once per old hash.
            let fields = fields_by_hash
                .entry(keep.spec_hash.as_str())
                .or_insert_with(|| {
                    let mut fields = changed_fields(keep.spec.as_deref(), spec);
                    let (files, diffs) = changed_files(keep, service, inputs.stored_contents);
                    fields.extend(files);
                    config_diffs.extend(diffs.into_iter().map(|d| (d.source.clone(), d)));
                    fields
                })
                .clone();
            let reason = if fields.is_empty() {
                "spec changed".to_owned()
            } else {
                format!("{} changed", fields.join(", "))
            };
            forced_by.extend(fields);
            steps.push(step(slot, Action::Replace, reason, Some(keep)));
            continue;
        }
        if spec.pull == PullPolicy::Always {
            if let Some(current) = inputs.current_digests.get(&spec.image) {
                if *current != keep.image_digest {
                    forced_by.insert("image digest".to_owned());
                    steps.push(step(
                        slot,
                        Action::Replace,
                        format!("{} now resolves to {}", spec.image, short(current)),
                        Some(keep),
                    ));
                    continue;
                }
            }
        }
        if let Some(reason) = restart_reason(keep, spec.restart, inputs.unhealthy.get(&keep.id)) {
            steps.push(step(slot, Action::Restart, reason, Some(keep)));
        } else if inputs.join_rotation
            && keep.status == ContainerStatus::Running
            && keep.address.is_some()
            && !keep.in_rotation
        {
            let reason = "running out of rotation".to_owned();
            steps.push(step(slot, Action::Join, reason, Some(keep)));
        }
    }

    let mut surplus: Vec<&ObservedContainer> = containers
        .iter()
        .copied()
        .filter(|c| c.slot >= spec.replicas)
        .collect();
    surplus.sort_by(|a, b| b.slot.cmp(&a.slot).then(a.id.cmp(&b.id)));
    for container in surplus {
        steps.push(step(
            container.slot,
            Action::Remove,
            format!(
                "replica {} is above the {} wanted",
                container.slot, spec.replicas
            ),
            Some(container),
        ));
    }

    // Apply order within a service: replacements honour the update order, so a
    // start-first service lists them as they will run; removals of extra replicas
    // (highest slot first) come last, creations in slot order first.
    let order = |s: &Step| match s.action {
        Action::Create => 0,
        Action::Restart | Action::Replace | Action::Join | Action::Run => 1,
        Action::Remove => 2,
    };
    steps.sort_by_key(|s| order(s));
    if steps.is_empty() {
        return (steps, None);
    }
    let existing: BTreeSet<u32> = containers.iter().map(|c| c.slot).collect();
    let kind = if containers.is_empty() {
        ChangeKind::Create
    } else if steps.iter().any(|s| s.action == Action::Replace) {
        ChangeKind::Replace
    } else {
        ChangeKind::Update
    };
    let change = ServiceChange {
        service: spec.name.clone(),
        kind,
        before: containers.iter().find_map(|c| c.spec.as_deref().cloned()),
        after: Some(spec.clone()),
        replicas: (existing.len() as u32, spec.replicas),
        forced_by: forced_by.into_iter().collect(),
        config_diffs: config_diffs.into_values().collect(),
        waits_for: spec.waits_for(),
    };
    (steps, Some(change))
}

/// A job runs once per spec: when none of its containers (one per try, the try in
/// the slot) has its spec, it runs; one running is a run under way; one that exited
/// is the run's outcome, kept for its logs and exit code until the next run, after
/// which earlier runs' containers go. A container created but never started (an
/// apply killed meanwhile) is replaced by a new run.
///
/// A scheduled job runs only when `due` (the agent says its time came and it is not
/// running): then its earlier runs' containers go and it runs again; otherwise its
/// last run's container stays.
fn plan_job(
    service: &Service,
    containers: &[&ObservedContainer],
    due: bool,
) -> (Vec<Step>, Option<ServiceChange>) {
    let spec = &service.spec;
    let hash = service.hash.as_str();
    let scheduled = spec.schedule.is_some();
    if scheduled && !due {
        return (Vec::new(), None);
    }
    let (current, earlier): (Vec<&ObservedContainer>, Vec<&ObservedContainer>) =
        containers.iter().partition(|c| c.spec_hash == hash && !due);
    let finished_or_running = current.iter().any(|c| {
        matches!(
            c.status,
            ContainerStatus::Running | ContainerStatus::Exited { .. }
        )
    });
    let mut steps = Vec::new();
    let step = |action, reason: String, container: Option<&ObservedContainer>| Step {
        service: spec.name.clone(),
        slot: container.map_or(0, |c| c.slot),
        action,
        reason,
        container: container.map(|c| c.id.clone()),
        before: container.map(|c| c.spec_hash.clone()),
        after: (action == Action::Run).then(|| hash.to_owned()),
    };
    // Earlier runs go first: two runs of one job never overlap.
    steps.extend(
        earlier
            .iter()
            .map(|c| step(Action::Remove, "an earlier run of the job".into(), Some(c))),
    );
    let mut forced_by = Vec::new();
    if !finished_or_running {
        let previous = earlier.iter().max_by_key(|c| c.started_at);
        let reason = match previous {
            _ if due => format!(
                "scheduled ({})",
                spec.schedule.as_deref().unwrap_or_default()
            ),
            None => "new job".to_owned(),
            Some(previous) => {
                forced_by = changed_fields(previous.spec.as_deref(), spec);
                let fields = if forced_by.is_empty() {
                    "spec".to_owned()
                } else {
                    forced_by.join(", ")
                };
                format!("{fields} changed")
            }
        };
        let mut run = step(Action::Run, reason, None);
        run.before = previous.map(|c| c.spec_hash.clone());
        steps.push(run);
        // A container of this spec that never started makes way for the run.
        steps.extend(
            current
                .iter()
                .map(|c| step(Action::Remove, "an interrupted run".into(), Some(c))),
        );
    } else if let Some(failed) = next_try(&current, spec) {
        // A try failed while no one waited for it (the agent): the next one.
        let code = failed
            .status
            .exit_code()
            .map_or_else(|| "unknown".to_owned(), |code| code.to_string());
        let reason = format!("try {} failed", failed.slot + 1);
        steps.push(step(Action::Remove, reason, Some(failed)));
        let tries = spec.retries.unwrap_or(0).saturating_add(1);
        let reason = format!(
            "try {} of {tries} (the last exited with code {code})",
            failed.slot + 2
        );
        let mut run = step(Action::Run, reason, None);
        run.slot = failed.slot + 1;
        steps.push(run);
    }
    if steps.is_empty() {
        return (steps, None);
    }
    let change = ServiceChange {
        service: spec.name.clone(),
        kind: if containers.is_empty() {
            ChangeKind::Create
        } else if steps.iter().any(|s| s.action == Action::Run) {
            ChangeKind::Replace
        } else {
            ChangeKind::Update
        },
        before: containers.iter().find_map(|c| c.spec.as_deref().cloned()),
        after: Some(spec.clone()),
        replicas: (0, 0),
        forced_by,
        config_diffs: Vec::new(),
        waits_for: spec.waits_for(),
    };
    (steps, Some(change))
}

fn restart_reason(
    container: &ObservedContainer,
    policy: RestartPolicy,
    unhealthy: Option<&String>,
) -> Option<String> {
    match container.status {
        ContainerStatus::Running if policy == RestartPolicy::Never => None,
        ContainerStatus::Running => {
            unhealthy.map(|why| format!("unhealthy ({why}); restart: {}", policy.name()))
        }
        ContainerStatus::Created => Some("created but never started".into()),
        ContainerStatus::Unknown => Some("its state cannot be read".into()),
        ContainerStatus::Exited { code, .. } if !policy.restarts_after(code) => None,
        ContainerStatus::Exited {
            code, oom_killed, ..
        } => {
            let how = match code {
                _ if oom_killed => {
                    let limit = container
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.resources.memory)
                        .map_or(String::new(), |limit| format!(" (memory limit {limit})"));
                    format!("OOM killed{limit}")
                }
                Some(code) => format!("exited with code {code}"),
                None => "exited".to_owned(),
            };
            Some(format!("{how}; restart: {}", policy.name()))
        }
    }
}

/// The top-level fields that differ between two specs (by their JSON form).
pub fn changed_fields(before: Option<&ServiceSpec>, after: &ServiceSpec) -> Vec<String> {
    let Some(before) = before else {
        return Vec::new();
    };
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|key| key.as_str() != "replicas" && a.get(*key) != b.get(*key))
        .map(|key| key.to_string())
        .collect()
}

/// The services of `desired` with a dependency not in its condition: `started`,
/// fewer of its replicas running than it wants; `healthy`, one of its running
/// replicas not among `healthy` (container ids whose health check passes).
pub fn dependencies_not_ready(
    desired: &[Service],
    observed: &[ObservedContainer],
    healthy: &BTreeSet<String>,
) -> BTreeSet<String> {
    let by_name: BTreeMap<&str, &Service> = desired.iter().map(|s| (s.name(), s)).collect();
    let ready = |name: &str, condition: Condition| {
        let Some(dependency) = by_name.get(name) else {
            return false;
        };
        if condition == Condition::Completed {
            return job_completed(dependency, observed);
        }
        let running: Vec<&ObservedContainer> = observed
            .iter()
            .filter(|c| c.service == name && c.status == ContainerStatus::Running)
            .collect();
        running.len() as u32 >= dependency.spec.replicas
            && (condition != Condition::Healthy || running.iter().all(|c| healthy.contains(&c.id)))
    };
    desired
        .iter()
        .filter(|service| {
            service
                .spec
                .depends_on
                .iter()
                .any(|(name, condition)| !ready(name, *condition))
        })
        .map(|service| service.name().to_owned())
        .collect()
}

/// The job's last try of its current spec (`current`), if it failed and `retries`
/// allow another, with nothing of it running.
fn next_try<'c>(
    current: &[&'c ObservedContainer],
    spec: &ServiceSpec,
) -> Option<&'c ObservedContainer> {
    if current.iter().any(|c| c.status == ContainerStatus::Running) {
        return None;
    }
    let last = current.iter().copied().max_by_key(|c| c.slot)?;
    let failed = matches!(last.status, ContainerStatus::Exited { code, .. } if code != Some(0));
    (failed && last.slot < spec.retries.unwrap_or(0)).then_some(last)
}

/// Whether `job`'s run for its current spec succeeded (its last try exited 0).
pub fn job_completed(job: &Service, observed: &[ObservedContainer]) -> bool {
    observed
        .iter()
        .filter(|c| c.service == job.name() && c.spec_hash == job.hash.as_str())
        .max_by_key(|c| c.slot)
        .is_some_and(|c| c.status.exit_code() == Some(0))
}

/// The files whose content changed between a container and its service's spec
/// (`config app.conf`, `secret dbpass`), with the diffs of the configs. A config is
/// matched by its source; one new or gone is a change of `configs` itself.
fn changed_files(
    container: &ObservedContainer,
    service: &Service,
    stored: &BTreeMap<String, Arc<Vec<u8>>>,
) -> (Vec<String>, Vec<ConfigDiff>) {
    let mut fields = Vec::new();
    let mut diffs = Vec::new();
    let before_configs = container
        .spec
        .as_deref()
        .map_or(&[][..], |s| &s.configs[..]);
    for (index, config) in service.spec.configs.iter().enumerate() {
        let old_digest = before_configs
            .iter()
            .position(|old| old.source == config.source)
            .and_then(|old_index| container.files.configs.get(old_index));
        let (Some(old_digest), Some(new_digest), Some(after)) = (
            old_digest,
            service.files.configs.get(index),
            service.config_contents.get(index),
        ) else {
            continue;
        };
        if old_digest != new_digest {
            fields.push(format!("config {}", config.source.as_str()));
            diffs.push(ConfigDiff {
                source: config.source.as_str().to_owned(),
                before: stored.get(old_digest).cloned(),
                after: Arc::clone(after),
            });
        }
    }
    for (name, version) in &service.files.secrets {
        if matches!(container.files.secrets.get(name), Some(old) if old != version) {
            fields.push(format!("secret {name}"));
        }
    }
    (fields, diffs)
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;
    use std::path::PathBuf;

    const DIR: &str = "/etc/wharf/services";

    fn service(name: &str, extra: &str) -> Service {
        let text = format!(
            "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: reg.lan/{name}:1\n{extra}"
        );
        parse_manifest(Path::new("s.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0)
    }

    fn running(service: &Service, slot: u32) -> ObservedContainer {
        ObservedContainer {
            id: format!("{}-{slot}-abcdef", service.name()),
            service: service.name().to_owned(),
            slot,
            status: ContainerStatus::Running,
            pid: Some(100 + slot as i32),
            started_at: None,
            spec_hash: service.hash.to_string(),
            image: service.spec.image.clone(),
            image_digest: "sha256:old".into(),
            manifest: Some(PathBuf::from(DIR).join("s.yaml")),
            manifest_dir: Some(PathBuf::from(DIR)),
            spec: Some(Box::new(service.spec.clone())),
            unmonitored: false,
            address: None,
            in_rotation: false,
            files: Default::default(),
        }
    }

    fn plan_of(desired: &[Service], observed: &[ObservedContainer], prune: bool) -> Plan {
        plan(&Inputs {
            desired,
            observed,
            current_digests: &BTreeMap::new(),
            unhealthy: &BTreeMap::new(),
            manifest_dir: Path::new(DIR),
            prune,
            hold_back: &Default::default(),
            join_rotation: true,
            stored_contents: &BTreeMap::new(),
            due_jobs: &BTreeSet::new(),
        })
    }

    #[test]
    fn a_running_replica_out_of_rotation_joins_it_unless_an_agent_keeps_the_rotation() {
        let web = service("web", "replicas: 2\n");
        let mut out = running(&web, 0);
        out.address = Some(std::net::Ipv4Addr::new(10, 77, 0, 2));
        let mut serving = running(&web, 1);
        serving.address = Some(std::net::Ipv4Addr::new(10, 77, 0, 3));
        serving.in_rotation = true;
        let observed = [out, serving];
        let plan_with = |join_rotation| {
            plan(&Inputs {
                desired: std::slice::from_ref(&web),
                observed: &observed,
                current_digests: &BTreeMap::new(),
                unhealthy: &BTreeMap::new(),
                manifest_dir: Path::new(DIR),
                prune: false,
                hold_back: &HoldBack::default(),
                join_rotation,
                stored_contents: &BTreeMap::new(),
                due_jobs: &BTreeSet::new(),
            })
        };
        let plan = plan_with(true);
        assert_eq!(actions(&plan), [("web".into(), 0, Action::Join)]);
        assert_eq!(plan.steps[0].reason, "running out of rotation");
        assert!(plan_with(false).is_empty());
    }

    fn actions(plan: &Plan) -> Vec<(String, u32, Action)> {
        plan.steps
            .iter()
            .map(|s| (s.service.clone(), s.slot, s.action))
            .collect()
    }

    #[test]
    fn held_back_steps_are_listed_apart_and_removals_are_never_held() {
        let old = service("web", "replicas: 3\nenv: {V: \"1\"}\n");
        let new = service("web", "replicas: 2\nenv: {V: \"2\"}\n");
        let mut crashed = running(&old, 1);
        crashed.status = ContainerStatus::Exited {
            code: Some(1),
            at: None,
            oom_killed: false,
        };
        let observed = [running(&old, 0), crashed, running(&old, 2)];
        let plan_holding = |hold_back: &HoldBack| {
            plan(&Inputs {
                desired: std::slice::from_ref(&new),
                observed: &observed,
                current_digests: &BTreeMap::new(),
                unhealthy: &BTreeMap::new(),
                manifest_dir: Path::new(DIR),
                prune: false,
                hold_back,
                join_rotation: true,
                stored_contents: &BTreeMap::new(),
                due_jobs: &BTreeSet::new(),
            })
        };
        let everything = plan_holding(&HoldBack::default());
        assert!(everything.held.is_empty());

        // The rollout of V=2 failed before: replacements wait; the scale-down runs.
        let rollout_failed = plan_holding(&HoldBack {
            rollouts: ["web".to_owned()].into(),
            ..HoldBack::default()
        });
        assert_eq!(
            actions(&rollout_failed),
            [("web".into(), 2, Action::Remove)],
            "{rollout_failed:?}"
        );
        assert!(rollout_failed
            .held
            .iter()
            .all(|step| step.action != Action::Remove));

        // The registry is failing: nothing that pulls runs, removals do.
        let registry_down = plan_holding(&HoldBack {
            pulls: ["web".to_owned()].into(),
            ..HoldBack::default()
        });
        assert_eq!(actions(&registry_down), [("web".into(), 2, Action::Remove)]);
        assert_eq!(registry_down.held.len(), everything.steps.len() - 1);
    }

    #[test]
    fn a_restart_in_backoff_waits_and_others_do_not() {
        let web = service("web", "replicas: 2\nrestart: always\n");
        let exited = |slot| {
            let mut container = running(&web, slot);
            container.status = ContainerStatus::Exited {
                code: Some(1),
                at: None,
                oom_killed: false,
            };
            container
        };
        let observed = [exited(0), exited(1)];
        let plan = plan(&Inputs {
            desired: std::slice::from_ref(&web),
            observed: &observed,
            current_digests: &BTreeMap::new(),
            unhealthy: &BTreeMap::new(),
            manifest_dir: Path::new(DIR),
            prune: false,
            hold_back: &HoldBack {
                restarts: ["web/1".to_owned()].into(),
                ..HoldBack::default()
            },
            join_rotation: true,
            stored_contents: &BTreeMap::new(),
            due_jobs: &BTreeSet::new(),
        });
        assert_eq!(actions(&plan), [("web".into(), 0, Action::Restart)]);
        assert_eq!(plan.held.len(), 1);
        assert_eq!(
            (plan.held[0].slot, plan.held[0].action),
            (1, Action::Restart)
        );
    }

    #[test]
    fn missing_replicas_are_created_in_slot_order() {
        let web = service("web", "replicas: 3\n");
        let plan = plan_of(std::slice::from_ref(&web), &[running(&web, 1)], false);
        assert_eq!(
            actions(&plan),
            [
                ("web".into(), 0, Action::Create),
                ("web".into(), 2, Action::Create)
            ]
        );
        assert_eq!(plan.steps[0].reason, "replica 0 missing");
        assert_eq!(plan.changes[0].kind, ChangeKind::Update);
        assert_eq!(plan.changes[0].replicas, (1, 3));
    }

    #[test]
    fn matching_containers_mean_no_changes() {
        let web = service("web", "replicas: 2\n");
        let plan = plan_of(
            std::slice::from_ref(&web),
            &[running(&web, 0), running(&web, 1)],
            false,
        );
        assert!(plan.is_empty() && plan.changes.is_empty());
    }

    #[test]
    fn scaling_down_removes_the_highest_slots_first_and_touches_nothing_else() {
        let web = service("web", "replicas: 1\n");
        let observed: Vec<_> = (0..4).map(|slot| running(&web, slot)).collect();
        let plan = plan_of(std::slice::from_ref(&web), &observed, false);
        assert_eq!(
            actions(&plan),
            [
                ("web".into(), 3, Action::Remove),
                ("web".into(), 2, Action::Remove),
                ("web".into(), 1, Action::Remove)
            ]
        );
    }

    #[test]
    fn a_changed_spec_replaces_naming_the_fields() {
        let old = service("web", "env: {LOG_LEVEL: info}\n");
        let new = service("web", "env: {LOG_LEVEL: debug}\nreplicas: 1\n");
        let plan = plan_of(&[new], &[running(&old, 0)], false);
        assert_eq!(actions(&plan), [("web".into(), 0, Action::Replace)]);
        assert_eq!(plan.steps[0].reason, "env changed");
        assert_eq!(plan.changes[0].kind, ChangeKind::Replace);
        assert_eq!(plan.changes[0].forced_by, ["env"]);
        assert_ne!(plan.steps[0].before, plan.steps[0].after);
    }

    /// Service web with one config (`app.conf`, content `config`) and the secret
    /// dbpass at `version`, as loading and resolving would make it.
    fn with_files(config: &str, version: &str) -> Service {
        let mut web = service("web", "secrets: [{name: dbpass}]\n");
        web.spec.configs = vec![crate::manifest::ConfigFile {
            source: crate::manifest::RelativePath("app.conf".into()),
            target: "/etc/app.conf".into(),
            mode: None,
            uid: None,
            gid: None,
        }];
        web.config_contents = vec![Arc::new(config.as_bytes().to_vec())];
        web.files.configs = vec![format!("digest of {config}")];
        web.files.secrets = BTreeMap::from([("dbpass".to_owned(), version.to_owned())]);
        web.rehash();
        web
    }

    #[test]
    fn a_changed_config_or_secret_replaces_naming_it_and_configs_come_with_their_diff() {
        let old = with_files("listen 80\n", "v1");
        let mut running_old = running(&old, 0);
        running_old.files = old.files.clone();
        let stored = BTreeMap::from([(
            "digest of listen 80\n".to_owned(),
            Arc::new(b"listen 80\n".to_vec()),
        )]);
        let plan_with = |desired: &Service| {
            plan(&Inputs {
                desired: std::slice::from_ref(desired),
                observed: std::slice::from_ref(&running_old),
                current_digests: &BTreeMap::new(),
                unhealthy: &BTreeMap::new(),
                manifest_dir: Path::new(DIR),
                prune: false,
                hold_back: &HoldBack::default(),
                join_rotation: true,
                stored_contents: &stored,
                due_jobs: &BTreeSet::new(),
            })
        };
        assert!(plan_with(&old).is_empty());

        let edited = plan_with(&with_files("listen 8080\n", "v1"));
        assert_eq!(edited.steps[0].reason, "config app.conf changed");
        let diff = &edited.changes[0].config_diffs[0];
        assert_eq!(
            diff.before.as_deref().map(Vec::as_slice),
            Some(&b"listen 80\n"[..])
        );
        assert_eq!(diff.after.as_slice(), b"listen 8080\n");

        // A secret is named, never diffed.
        let rotated = plan_with(&with_files("listen 80\n", "v2"));
        assert_eq!(rotated.steps[0].reason, "secret dbpass changed");
        assert_eq!(rotated.changes[0].forced_by, ["secret dbpass"]);
        assert!(rotated.changes[0].config_diffs.is_empty());
    }

    #[test]
    fn a_dependant_waits_until_its_dependencies_run_and_are_healthy() {
        let db = service("db", "replicas: 2\nhealth: {exec: [check]}\n");
        let app = service("app", "depends_on: {db: healthy}\n");
        let desired = [app.clone(), db.clone()];
        let none = BTreeSet::new();
        // Nothing runs yet: app waits.
        assert_eq!(
            dependencies_not_ready(&desired, &[], &none),
            BTreeSet::from(["app".to_owned()])
        );
        // One of the two replicas runs: still waiting.
        let (db0, db1) = (running(&db, 0), running(&db, 1));
        let one = [db0.clone()];
        assert!(dependencies_not_ready(&desired, &one, &none).contains("app"));
        // Both run; only one has passed its check.
        let both = [db0.clone(), db1.clone()];
        let healthy = BTreeSet::from([db0.id.clone()]);
        assert!(dependencies_not_ready(&desired, &both, &healthy).contains("app"));
        let healthy = BTreeSet::from([db0.id.clone(), db1.id.clone()]);
        assert!(dependencies_not_ready(&desired, &both, &healthy).is_empty());

        // Held: app's creation waits, db's does not; a removal never waits.
        let hold_back = HoldBack {
            dependants: BTreeSet::from(["app".to_owned()]),
            ..HoldBack::default()
        };
        let plan = plan(&Inputs {
            desired: &desired,
            observed: &[],
            current_digests: &BTreeMap::new(),
            unhealthy: &BTreeMap::new(),
            manifest_dir: Path::new(DIR),
            prune: false,
            hold_back: &hold_back,
            join_rotation: true,
            stored_contents: &BTreeMap::new(),
            due_jobs: &BTreeSet::new(),
        });
        assert!(plan.steps.iter().all(|s| s.service == "db"));
        assert_eq!(plan.held.len(), 1);
        // Listed in start order: db before app.
        let planned = plan_of(&desired, &[], false);
        let order: Vec<&str> = planned.changes.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(order, ["db", "app"]);
    }

    #[test]
    fn a_job_runs_once_per_spec_and_again_when_its_spec_changes() {
        let job_of = |command: &str| {
            let text = format!("apiVersion: wharf/v1\nkind: Job\nname: migrate\nimage: reg.lan/m:1\ncommand: {command}\n");
            parse_manifest(Path::new("m.yaml"), text.as_bytes())
                .expect("valid")
                .remove(0)
        };
        let job = job_of("[migrate]");
        let first = plan_of(std::slice::from_ref(&job), &[], false);
        assert_eq!(actions(&first), [("migrate".into(), 0, Action::Run)]);
        assert_eq!(first.steps[0].reason, "new job");

        // Running, or finished (whatever its exit code): nothing to do.
        let mut run = running(&job, 0);
        assert!(plan_of(std::slice::from_ref(&job), &[run.clone()], false).is_empty());
        run.status = ContainerStatus::Exited {
            code: Some(4),
            at: None,
            oom_killed: false,
        };
        assert!(plan_of(std::slice::from_ref(&job), &[run.clone()], false).is_empty());

        // A changed spec: the earlier run's container goes, then the job runs again.
        let changed = job_of("[migrate, --all]");
        let again = plan_of(std::slice::from_ref(&changed), &[run], false);
        assert_eq!(
            actions(&again),
            [
                ("migrate".into(), 0, Action::Remove),
                ("migrate".into(), 0, Action::Run)
            ]
        );
        assert_eq!(again.steps[1].reason, "command changed");
        assert!(again.steps[1].before.is_some(), "shown as run again");
    }

    #[test]
    fn a_failed_try_that_no_one_waited_for_is_followed_by_the_next_after_its_pause() {
        let text = "apiVersion: wharf/v1\nkind: Job\nname: migrate\nimage: reg.lan/m:1\ncommand: [migrate]\nretries: 1\n";
        let job = parse_manifest(Path::new("m.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0);
        let mut first = running(&job, 0);
        first.status = ContainerStatus::Exited {
            code: Some(4),
            at: None,
            oom_killed: false,
        };
        let plan = plan_of(std::slice::from_ref(&job), &[first.clone()], false);
        assert_eq!(
            actions(&plan),
            [
                ("migrate".into(), 0, Action::Remove),
                ("migrate".into(), 1, Action::Run)
            ]
        );
        assert_eq!(
            plan.steps[1].reason,
            "try 2 of 2 (the last exited with code 4)"
        );
        // Held while the pause after try 1 (slot 0) runs.
        let hold_back = HoldBack {
            restarts: BTreeSet::from(["migrate/0".to_owned()]),
            ..HoldBack::default()
        };
        assert!(hold_back.holds(&plan.steps[1]));
        // The last try failed: the job has failed, nothing more.
        let mut second = running(&job, 1);
        second.status = ContainerStatus::Exited {
            code: Some(4),
            at: None,
            oom_killed: false,
        };
        assert!(plan_of(std::slice::from_ref(&job), &[second], false).is_empty());
    }

    #[test]
    fn a_scheduled_job_runs_only_when_its_time_has_come() {
        let text = "apiVersion: wharf/v1\nkind: Job\nname: nightly\nimage: reg.lan/n:1\ncommand: [clean]\nschedule: '0 3 * * *'\n";
        let job = parse_manifest(Path::new("n.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0);
        let plan_with = |due: &BTreeSet<String>, observed: &[ObservedContainer]| {
            plan(&Inputs {
                desired: std::slice::from_ref(&job),
                observed,
                current_digests: &BTreeMap::new(),
                unhealthy: &BTreeMap::new(),
                manifest_dir: Path::new(DIR),
                prune: false,
                hold_back: &HoldBack::default(),
                join_rotation: true,
                stored_contents: &BTreeMap::new(),
                due_jobs: due,
            })
        };
        // apply: nothing runs, and the plan says who runs it.
        let applied = plan_with(&BTreeSet::new(), &[]);
        assert!(applied.is_empty());
        assert_eq!(
            applied.scheduled,
            [("nightly".to_owned(), "0 3 * * *".to_owned())]
        );
        // Its time came: the last run's container goes, and it runs again.
        let mut last = running(&job, 0);
        last.status = ContainerStatus::Exited {
            code: Some(0),
            at: None,
            oom_killed: false,
        };
        let due = BTreeSet::from(["nightly".to_owned()]);
        let plan = plan_with(&due, &[last]);
        assert_eq!(
            actions(&plan),
            [
                ("nightly".into(), 0, Action::Remove),
                ("nightly".into(), 0, Action::Run)
            ]
        );
        assert_eq!(plan.steps[1].reason, "scheduled (0 3 * * *)");
    }

    #[test]
    fn policies_alone_do_not_replace() {
        let old = service("web", "");
        let new = service("web", "restart: on-failure\nstop: {timeout: 30s}\n");
        assert!(plan_of(&[new], &[running(&old, 0)], false).is_empty());
    }

    #[test]
    fn a_moved_tag_replaces_under_pull_always_only() {
        let always = service("web", "pull: always\n");
        let digests = BTreeMap::from([(always.spec.image.clone(), "sha256:new".to_owned())]);
        let observed = [running(&always, 0)];
        let healthy = BTreeMap::new();
        let nothing_held = HoldBack::default();
        let no_contents = BTreeMap::new();
        let no_jobs = BTreeSet::new();
        let inputs = |desired| Inputs {
            desired,
            observed: &observed,
            current_digests: &digests,
            unhealthy: &healthy,
            manifest_dir: Path::new(DIR),
            prune: false,
            hold_back: &nothing_held,
            join_rotation: true,
            stored_contents: &no_contents,
            due_jobs: &no_jobs,
        };
        let plan = plan(&inputs(std::slice::from_ref(&always)));
        assert_eq!(actions(&plan), [("web".into(), 0, Action::Replace)]);
        assert!(plan.steps[0].reason.contains("now resolves to sha256:new"));

        let if_not_present = service("web", "");
        let observed_same = [running(&if_not_present, 0)];
        let plan = super::plan(&Inputs {
            desired: std::slice::from_ref(&if_not_present),
            observed: &observed_same,
            current_digests: &digests,
            unhealthy: &BTreeMap::new(),
            manifest_dir: Path::new(DIR),
            prune: false,
            hold_back: &Default::default(),
            join_rotation: true,
            stored_contents: &BTreeMap::new(),
            due_jobs: &BTreeSet::new(),
        });
        assert!(plan.is_empty());
    }

    #[test]
    fn exited_containers_restart_as_their_policy_says() {
        let exited = |service: &Service, code| ObservedContainer {
            status: ContainerStatus::Exited {
                code,
                at: None,
                oom_killed: false,
            },
            ..running(service, 0)
        };
        let always = service("a", "restart: always\n");
        let on_failure = service("b", "restart: on-failure\n");
        let never = service("c", "restart: never\n");
        let desired = [always.clone(), on_failure.clone(), never.clone()];
        let plan = plan_of(
            &desired,
            &[
                exited(&always, Some(0)),
                exited(&on_failure, Some(0)),
                exited(&never, Some(1)),
            ],
            false,
        );
        assert_eq!(actions(&plan), [("a".into(), 0, Action::Restart)]);
        assert_eq!(plan.steps[0].reason, "exited with code 0; restart: always");
        let plan = plan_of(&desired[1..2], &[exited(&on_failure, Some(2))], false);
        assert_eq!(actions(&plan), [("b".into(), 0, Action::Restart)]);
    }

    #[test]
    fn unhealthy_containers_restart_unless_the_policy_is_never() {
        let always = service("a", "restart: always\n");
        let never = service("c", "restart: never\n");
        let observed = [running(&always, 0), running(&never, 0)];
        let unhealthy = BTreeMap::from([
            (
                observed[0].id.clone(),
                "3 checks failed: refused".to_owned(),
            ),
            (
                observed[1].id.clone(),
                "3 checks failed: refused".to_owned(),
            ),
        ]);
        let plan = plan(&Inputs {
            desired: &[always, never],
            observed: &observed,
            current_digests: &BTreeMap::new(),
            unhealthy: &unhealthy,
            manifest_dir: Path::new(DIR),
            prune: false,
            hold_back: &Default::default(),
            join_rotation: true,
            stored_contents: &BTreeMap::new(),
            due_jobs: &BTreeSet::new(),
        });
        assert_eq!(actions(&plan), [("a".into(), 0, Action::Restart)]);
        assert_eq!(
            plan.steps[0].reason,
            "unhealthy (3 checks failed: refused); restart: always"
        );
    }

    #[test]
    fn an_oom_killed_replica_is_restarted_and_the_reason_names_its_memory_limit() {
        let web = service("web", "resources: {memory: 64Mi}\n");
        let killed = ObservedContainer {
            status: ContainerStatus::Exited {
                code: Some(137),
                at: None,
                oom_killed: true,
            },
            ..running(&web, 0)
        };
        let plan = plan_of(&[web], &[killed], false);
        assert_eq!(actions(&plan), [("web".into(), 0, Action::Restart)]);
        assert_eq!(
            plan.steps[0].reason,
            "OOM killed (memory limit 64Mi); restart: always"
        );
    }

    #[test]
    fn removed_services_are_pruned_only_with_prune_and_only_from_the_same_directory() {
        let gone = service("gone", "replicas: 2\n");
        let elsewhere = ObservedContainer {
            manifest_dir: Some(PathBuf::from("/srv/other")),
            ..running(&service("other", ""), 0)
        };
        let observed = [running(&gone, 0), running(&gone, 1), elsewhere];
        let plan = plan_of(&[], &observed, false);
        assert!(plan.is_empty());
        assert_eq!(plan.not_pruned, ["gone"]);
        let plan = plan_of(&[], &observed, true);
        assert_eq!(
            actions(&plan),
            [
                ("gone".into(), 1, Action::Remove),
                ("gone".into(), 0, Action::Remove)
            ]
        );
        assert_eq!(plan.changes[0].kind, ChangeKind::Remove);
    }

    #[test]
    fn a_second_container_in_a_slot_is_removed_keeping_the_matching_one() {
        let old = service("web", "env: {V: '1'}\n");
        let new = service("web", "env: {V: '2'}\n");
        let stale = ObservedContainer {
            id: "web-0-old".into(),
            ..running(&old, 0)
        };
        let fresh = ObservedContainer {
            id: "web-0-new".into(),
            ..running(&new, 0)
        };
        let plan = plan_of(&[new], &[stale, fresh], false);
        assert_eq!(actions(&plan), [("web".into(), 0, Action::Remove)]);
        assert_eq!(plan.steps[0].container.as_deref(), Some("web-0-old"));
    }

    #[test]
    fn services_are_planned_in_name_order() {
        let (b, a) = (service("b", ""), service("a", ""));
        let plan = plan_of(&[b, a], &[], false);
        assert_eq!(
            actions(&plan),
            [
                ("a".into(), 0, Action::Create),
                ("b".into(), 0, Action::Create)
            ]
        );
        assert_eq!(render::summary(&plan), "Plan: 2 to create.");
    }
}
