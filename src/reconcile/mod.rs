//! Stage 4 of the data flow: from loaded and observed state to a plan (`prepare`,
//! shared by plan, apply, sync and the agent), executing it through the `Runtime`
//! seam after pulling what it needs, and recording the outcome. A failed step stops
//! that service's remaining steps, leaves running containers as they are and is
//! reported; re-running apply converges. The agent (`agent`, and its loop in `run`)
//! is this same path, woken by stage 5.

mod agent;
mod backoff;
mod host;
mod lock;
mod parallel;
mod prepare;
mod run;

pub use agent::{Agent, ReconcileError};
pub use backoff::Backoff;
pub use host::{Host, HostError, PlanDirError};
pub use lock::{AgentPresence, LockError, ReconcileLock};
pub use parallel::{each_bounded, Parallelism};
pub use prepare::{prepare, Facts, Options, Planned, PrepareError};
pub use run::{run as run_agent, stop_containers_of, take_down, Periodic, TakeDownError};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::error_chain;
use crate::files::{keep_only, ContentStore, FilesError};
use crate::health::{wait_until_healthy, HealthError};
use crate::image::{ImageError, ImageStore, NoProgress, Registries};
use crate::manifest::{
    Condition, FileRefs, ImageRef, InvalidImageRef, Network, PullPolicy, Service, ServiceSpec,
    SpecHash, UpdateOrder,
};
use crate::plan::{job_completed, Action, Plan, Step};
use crate::runtime::{
    stop_and_remove, stop_settings, ContainerStatus, CreateRequest, ObservedContainer, Runtime,
    RuntimeError,
};
use crate::state::{StateError, StateStore};

/// What happened to each step.
#[derive(Debug, Default)]
pub struct Report {
    pub done: Vec<Step>,
    /// Steps that failed, with the cause.
    pub failed: Vec<(Step, StepError)>,
    /// Steps not run because an earlier step of their service failed.
    pub skipped: Vec<Step>,
}

/// Why a step failed. Print it with `crate::error_chain`: a rollout's outcome
/// ("…; rolled back to the previous spec") reads after its cause, so the wrappers
/// below carry their cause in their own message rather than as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The image could not be fetched. Pulled once per apply, so every step that
    /// needs the image shares the one error.
    #[error(transparent)]
    Pull(Arc<ImageError>),
    #[error(transparent)]
    InvalidImage(#[from] InvalidImageRef),
    /// Creating, starting, stopping or removing a container failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A new replica did not become healthy; it was removed, or removing it failed
    /// (`cleanup`).
    #[error("new replica {}{}", error_chain(.cause), if .cleanup.is_some() { "; removing it failed" } else { "" })]
    Unhealthy {
        cause: HealthError,
        #[source]
        cleanup: Option<Box<RuntimeError>>,
    },
    /// A replica on the bridge, first in its slot, did not become ready: it keeps
    /// running out of rotation, so that its output can be read.
    #[error(
        "replica {service}/{slot} {}; it keeps running out of rotation: `wharf logs {service} --replica {slot}` shows its output",
        error_chain(.cause)
    )]
    NotReady {
        service: String,
        slot: u32,
        cause: HealthError,
    },
    /// Start-first: the new replica failed before the old one was touched.
    #[error("{}; the old replica keeps running", error_chain(.cause))]
    OldKeptRunning { cause: Box<StepError> },
    /// Stop-first: the new replica failed and the old one's spec is not recorded on it.
    #[error("{}; the previous spec is unknown", error_chain(.cause))]
    PreviousSpecUnknown { cause: Box<StepError> },
    /// Stop-first: the new replica failed; the slot runs the previous spec again.
    #[error("{}; rolled back to the previous spec", error_chain(.cause))]
    RolledBack { cause: Box<StepError> },
    /// Stop-first: the new replica failed, and so did bringing back the previous spec
    /// (`again`).
    #[error("{}; rolling back failed too", error_chain(.cause))]
    RollbackFailed {
        cause: Box<StepError>,
        #[source]
        again: Box<StepError>,
    },
    #[error("service {service} is not in the manifests")]
    NotInManifests { service: String },
    #[error("cannot store the service's config contents")]
    Files(#[from] FilesError),
    /// A job's last try failed.
    #[error("job {job} failed after {tries} {}: the last {why}; `wharf logs {job}` shows its output", if *.tries == 1 { "try" } else { "tries" })]
    JobFailed {
        job: String,
        why: String,
        tries: u32,
    },
    /// A dependency was not in its condition: the service was not started.
    #[error("{service} waits for {dependency} to be {condition}, but {why}; {service} was left as it is")]
    DependencyNotReady {
        service: String,
        dependency: String,
        condition: &'static str,
        why: String,
    },
}

/// How long a dependency's replicas may take to run before its dependants give up.
const STARTED_WITHIN: Duration = Duration::from_secs(30);

/// Why an image the plan needs is not there, shared by the steps that need it.
enum PullFailure {
    Invalid(InvalidImageRef),
    Pull(Arc<ImageError>),
}

impl PullFailure {
    /// The error of a step that needed the image.
    fn for_step(&self) -> StepError {
        match self {
            PullFailure::Invalid(err) => StepError::InvalidImage(err.clone()),
            PullFailure::Pull(err) => StepError::Pull(Arc::clone(err)),
        }
    }
}

/// Told about each step as it finishes.
pub trait StepObserver: Sync {
    fn finished(&self, step: &Step, outcome: Result<(), &StepError>);
}

pub struct Executor<'a, R: Runtime> {
    pub runtime: &'a R,
    /// Whether a job's run is waited for (apply, sync) or only started (the agent,
    /// which must not stop reconciling while a job runs).
    pub wait_for_jobs: bool,
    /// The state directory: config contents are stored there by digest.
    pub root: &'a std::path::Path,
    pub images: &'a ImageStore,
    pub registries: &'a Registries,
    /// How many containers are stopped, removed and built at once.
    pub parallel: Parallelism,
}

impl<R: Runtime> Executor<'_, R> {
    /// Pulls what the plan needs (each image once, concurrently, as its pull policy
    /// says), then runs the steps service by service. `observed` are the containers
    /// the plan was made from.
    pub async fn execute(
        &self,
        plan: &Plan,
        desired: &[Service],
        observed: &[ObservedContainer],
        observer: &dyn StepObserver,
    ) -> Report {
        let by_name: BTreeMap<&str, &Service> = desired.iter().map(|s| (s.name(), s)).collect();
        let pull_failures: BTreeMap<String, PullFailure> =
            self.pull_all(plan, &by_name).await.into_iter().collect();
        let mut report = Report::default();
        let mut failed_services: BTreeSet<&str> = BTreeSet::new();
        // In the plan's order: a service's dependencies before it.
        for (name, steps) in plan.steps_by_service() {
            let service = by_name.get(name).copied();
            let mut failed = false;
            if let Some(service) = service.filter(|_| steps.iter().any(|s| s.action.needs_image()))
            {
                if let Err(cause) = self
                    .dependencies_ready(service, &by_name, &failed_services)
                    .await
                {
                    let (first, rest) = steps
                        .split_first()
                        .map_or((None, &[][..]), |(f, r)| (Some(f), r));
                    if let Some(step) = first {
                        observer.finished(step, Err(&cause));
                        report.failed.push(((*step).clone(), cause));
                    }
                    report.skipped.extend(rest.iter().map(|s| (*s).clone()));
                    failed_services.insert(name);
                    continue;
                }
            }
            for batch in batches(&steps, service.map(|s| &s.spec)) {
                if failed {
                    report.skipped.extend(batch.iter().map(|s| (*s).clone()));
                    continue;
                }
                let image_failure = service.and_then(|s| pull_failures.get(&s.spec.image));
                let outcomes = each_bounded(&batch, self.parallel.stops, |step| async move {
                    let outcome = match image_failure {
                        Some(cause) if step.action.needs_image() => Err(cause.for_step()),
                        _ => self.run_step(step, service, observed).await,
                    };
                    // Told as each ends: a batch may be hundreds of removals.
                    observer.finished(step, outcome.as_ref().map(drop));
                    outcome
                })
                .await;
                for (step, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => report.done.push(step.clone()),
                        Err(cause) => {
                            report.failed.push((step.clone(), cause));
                            failed = true;
                            failed_services.insert(name);
                        }
                    }
                }
            }
        }
        report
    }

    async fn run_step(
        &self,
        step: &Step,
        service: Option<&Service>,
        observed: &[ObservedContainer],
    ) -> Result<(), StepError> {
        let old = step.container.as_deref();
        match (step.action, service) {
            (Action::Remove, _) => self.remove(old, observed).await,
            (Action::Create, Some(service)) => self.create_ready(service, step.slot).await,
            (Action::Restart, Some(service)) => {
                self.remove(old, observed).await?;
                self.create_ready(service, step.slot).await
            }
            (Action::Replace, Some(service)) => self.replace(step, service, observed).await,
            (Action::Join, Some(service)) => self.join(step, service).await,
            (Action::Run, Some(service)) => self.run_job(service, step.slot).await,
            (_, None) => Err(StepError::NotInManifests {
                service: step.service.clone(),
            }),
        }
    }

    /// Waits until each of `service`'s dependencies is in its condition (`started`:
    /// its replicas run, within [`STARTED_WITHIN`]; `healthy`: each passes its
    /// health check, within its verdict time). One whose steps failed in this apply
    /// is not waited for.
    async fn dependencies_ready(
        &self,
        service: &Service,
        by_name: &BTreeMap<&str, &Service>,
        failed: &BTreeSet<&str>,
    ) -> Result<(), StepError> {
        for (name, condition) in &service.spec.depends_on {
            let not_ready = |why: String| StepError::DependencyNotReady {
                service: service.name().to_owned(),
                dependency: name.clone(),
                condition: condition.name(),
                why,
            };
            if failed.contains(name.as_str()) {
                return Err(not_ready("its own steps failed".into()));
            }
            let Some(dependency) = by_name.get(name.as_str()) else {
                return Err(not_ready("it is not in the manifests".into()));
            };
            if *condition == Condition::Completed {
                // A run under way (another apply's) is waited for.
                let containers = self.runtime.list().await?;
                let running = containers.iter().find(|c| {
                    c.service == *name
                        && c.spec_hash == dependency.hash.as_str()
                        && c.status == ContainerStatus::Running
                });
                let containers = match running {
                    Some(run) => {
                        self.wait_for_exit(dependency, &run.id).await?;
                        self.runtime.list().await?
                    }
                    None => containers,
                };
                if !job_completed(dependency, &containers) {
                    return Err(not_ready(
                        "its run for its current spec did not succeed".into(),
                    ));
                }
                continue;
            }
            let running = self.replicas_running(dependency).await.map_err(not_ready)?;
            if *condition == Condition::Healthy {
                let Some(health) = &dependency.spec.health else {
                    return Err(not_ready("it has no health check".into()));
                };
                for id in running {
                    wait_until_healthy(self.runtime, &id, health, health.verdict_within())
                        .await
                        .map_err(|err| not_ready(format!("replica {id} {}", error_chain(&err))))?;
                }
            }
        }
        Ok(())
    }

    /// The ids of `service`'s running replicas, once as many run as it wants (within
    /// [`STARTED_WITHIN`]); Err says how many ran.
    async fn replicas_running(&self, service: &Service) -> Result<Vec<String>, String> {
        let deadline = tokio::time::Instant::now() + STARTED_WITHIN;
        loop {
            let containers = self.runtime.list().await.map_err(|err| error_chain(&err))?;
            let running: Vec<String> = containers
                .into_iter()
                .filter(|c| c.service == service.name() && c.status == ContainerStatus::Running)
                .map(|c| c.id)
                .collect();
            if running.len() as u32 >= service.spec.replicas {
                return Ok(running);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} of its {} replicas run after {}s",
                    running.len(),
                    service.spec.replicas,
                    STARTED_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a job from try `first` (the slot of each try's container). Waiting (apply,
    /// sync): to completion, each try stopped when it runs past the job's `timeout`,
    /// a failed try removed and, while `retries` allow, tried again after a pause (1
    /// s, doubling, at most 1 min); the last try's container stays for its logs and
    /// exit code. Not waiting (the agent): the try is started, and its end, its
    /// timeout and the next try are the agent's next reconciles' business.
    async fn run_job(&self, job: &Service, first: u32) -> Result<(), StepError> {
        if !self.wait_for_jobs {
            self.create(job, first).await?;
            return Ok(());
        }
        let tries = job.spec.retries.unwrap_or(0).saturating_add(1);
        let mut pause = Duration::from_secs(1);
        for attempt in first..tries {
            let id = self.create(job, attempt).await?;
            let why = match self.wait_for_exit(job, &id).await? {
                Some(0) => return Ok(()),
                Some(code) => format!("exited with code {code}"),
                None => format!(
                    "ran past its timeout of {}",
                    job.spec.timeout.map(|t| t.to_string()).unwrap_or_default()
                ),
            };
            if attempt + 1 == tries {
                return Err(StepError::JobFailed {
                    job: job.name().to_owned(),
                    why,
                    tries,
                });
            }
            tracing::info!(
                service = job.name(),
                "try {} of {tries} {why}; trying again in {}s",
                attempt + 1,
                pause.as_secs()
            );
            self.runtime.remove(&id).await?;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(60));
        }
        Ok(())
    }

    /// Waits for the job's container `id` to end; its exit code (None: it ran past
    /// the job's timeout and was stopped).
    async fn wait_for_exit(&self, job: &Service, id: &str) -> Result<Option<i32>, StepError> {
        let deadline = job
            .spec
            .timeout
            .map(|timeout| tokio::time::Instant::now() + timeout.as_std());
        loop {
            let containers = self.runtime.list().await?;
            let status = containers.iter().find(|c| c.id == id).map(|c| c.status);
            match status {
                Some(ContainerStatus::Exited { code, .. }) => return Ok(Some(code.unwrap_or(-1))),
                None => return Ok(Some(-1)),
                _ => {}
            }
            if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                let (signal, timeout) = stop_settings(Some(&job.spec));
                self.runtime.stop(id, signal, timeout).await?;
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Puts a new replica in place of an old one, in the service's update order. The
    /// new one must run and pass its health check (within `update.deadline`); if it
    /// does not, it is removed and the slot keeps, or gets back, the old spec.
    async fn replace(
        &self,
        step: &Step,
        service: &Service,
        observed: &[ObservedContainer],
    ) -> Result<(), StepError> {
        let old = step.container.as_deref();
        match service.spec.update_order() {
            UpdateOrder::StartFirst => {
                self.create_healthy(service, step.slot)
                    .await
                    .map_err(|cause| StepError::OldKeptRunning {
                        cause: Box::new(cause),
                    })?;
                self.remove(old, observed).await
            }
            UpdateOrder::StopFirst => {
                self.remove(old, observed).await?;
                let Err(cause) = self.create_healthy(service, step.slot).await else {
                    return Ok(());
                };
                let old_container = old.and_then(|id| observed.iter().find(|c| c.id == id));
                let Some((old_container, spec)) =
                    old_container.and_then(|c| Some((c, c.spec.as_deref()?)))
                else {
                    return Err(StepError::PreviousSpecUnknown {
                        cause: Box::new(cause),
                    });
                };
                // Its config contents are stored by digest, kept while it ran.
                let previous = Service {
                    spec: spec.clone(),
                    hash: SpecHash::of(spec, &old_container.files),
                    files: old_container.files.clone(),
                    config_contents: Vec::new(),
                    ..service.clone()
                };
                // The image that ran, by digest: its tag may have moved since (a
                // `pull: always` rollout), and the new content is what failed.
                let mut image: ImageRef = spec.image.parse()?;
                if !old_container.image_digest.is_empty() {
                    image.digest = Some(old_container.image_digest.clone());
                }
                let cause = Box::new(cause);
                let rolled_back = async {
                    let id = self.create_from(&previous, step.slot, &image).await?;
                    // The previous spec served before: it does again at once.
                    self.serve(&id).await
                };
                match rolled_back.await {
                    Ok(()) => Err(StepError::RolledBack { cause }),
                    Err(again) => Err(StepError::RollbackFailed {
                        cause,
                        again: Box::new(again),
                    }),
                }
            }
        }
    }

    /// Creates and starts a replica. One on the bridge gets connections (its
    /// service's published ports and name) only once it is ready: it is put in
    /// rotation after its health check passed. One that does not pass keeps running
    /// out of rotation (there is no replica before it to fall back to, and its
    /// output says why).
    async fn create_ready(&self, service: &Service, slot: u32) -> Result<(), StepError> {
        let id = self.create(service, slot).await?;
        if service.spec.network != Network::Bridge {
            return Ok(());
        }
        self.ready_or_kept_out(service, slot, &id).await?;
        self.serve(&id).await
    }

    /// Creates and starts a replica, waits for its health check to pass (when it has
    /// one), and puts it in rotation; a replica that fails its check is removed.
    async fn create_healthy(&self, service: &Service, slot: u32) -> Result<(), StepError> {
        let id = self.create(service, slot).await?;
        if let Err(cause) = self.wait_until_ready(service, &id).await {
            let (signal, timeout) = stop_settings(Some(&service.spec));
            let removed = async {
                self.runtime.stop(&id, signal, timeout).await?;
                self.runtime.remove(&id).await
            };
            return Err(StepError::Unhealthy {
                cause,
                cleanup: removed.await.err().map(Box::new),
            });
        }
        self.serve(&id).await
    }

    /// Waits for a new replica's health check to pass (within `update.deadline`), when
    /// its service has one.
    async fn wait_until_ready(&self, service: &Service, id: &str) -> Result<(), HealthError> {
        let Some(health) = &service.spec.health else {
            return Ok(());
        };
        let deadline = service
            .spec
            .update
            .deadline
            .map_or_else(|| health.verdict_within(), |d| d.as_std());
        wait_until_healthy(self.runtime, id, health, deadline).await
    }

    /// Puts a running replica in rotation once it is ready; one that is not keeps
    /// running out of rotation.
    async fn join(&self, step: &Step, service: &Service) -> Result<(), StepError> {
        let Some(id) = step.container.as_deref() else {
            return Ok(());
        };
        self.ready_or_kept_out(service, step.slot, id).await?;
        self.runtime.set_serving(id, true).await?;
        Ok(())
    }

    /// Waits for replica `slot` (container `id`) to be ready; one that is not stays as
    /// it is, out of rotation (`NotReady`).
    async fn ready_or_kept_out(
        &self,
        service: &Service,
        slot: u32,
        id: &str,
    ) -> Result<(), StepError> {
        self.wait_until_ready(service, id)
            .await
            .map_err(|cause| StepError::NotReady {
                service: service.name().to_owned(),
                slot,
                cause,
            })
    }

    /// Puts a new replica in rotation. One that cannot get connections is no
    /// replica: it goes, as one that cannot start does.
    async fn serve(&self, id: &str) -> Result<(), StepError> {
        if let Err(err) = self.runtime.set_serving(id, true).await {
            let _ = self.runtime.remove(id).await;
            return Err(err.into());
        }
        Ok(())
    }

    /// Creates and starts replica `slot` of `service` from its stored image (fetched
    /// first when absent, unless the policy is `never`); returns the container id.
    /// A container that cannot start is removed.
    pub async fn create(&self, service: &Service, slot: u32) -> Result<String, StepError> {
        self.create_from(service, slot, &service.spec.image.parse()?)
            .await
    }

    /// Like `create`, from the image `reference` (the service's own, or it pinned to
    /// a digest).
    async fn create_from(
        &self,
        service: &Service,
        slot: u32,
        reference: &ImageRef,
    ) -> Result<String, StepError> {
        // pull_all has already fetched what the policy asks for: use what is stored.
        let policy = match service.spec.pull {
            PullPolicy::Never => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        };
        let image = self
            .images
            .pull(self.registries, reference, policy, &NoProgress)
            .await
            .map_err(|err| StepError::Pull(Arc::new(err)))?;
        store_contents(self.root, service)?;
        let request = CreateRequest {
            service: service.spec.clone(),
            slot,
            spec_hash: service.hash.clone(),
            layers: self.images.layer_dirs(&image),
            image,
            manifest: service.file.canonicalize().ok(),
            files: service.files.clone(),
        };
        let id = self.runtime.create(&request).await?;
        if let Err(err) = self.runtime.start(&id).await {
            let _ = self.runtime.remove(&id).await;
            return Err(err.into());
        }
        Ok(id)
    }

    /// Stops the container (with its own stop settings, from `observed`) and removes it.
    async fn remove(
        &self,
        id: Option<&str>,
        observed: &[ObservedContainer],
    ) -> Result<(), StepError> {
        match id.and_then(|id| observed.iter().find(|c| c.id == id)) {
            Some(container) => stop_and_remove(self.runtime, container)
                .await
                .map(drop)
                .map_err(StepError::from),
            // No container, or one that is already gone: nothing to do.
            None => Ok(()),
        }
    }

    /// Pulls every image the plan's creations need, each once, concurrently.
    async fn pull_all(
        &self,
        plan: &Plan,
        by_name: &BTreeMap<&str, &Service>,
    ) -> Vec<(String, PullFailure)> {
        let needed: BTreeMap<&str, &Service> = plan
            .steps
            .iter()
            .filter(|s| s.action.needs_image())
            .filter_map(|s| by_name.get(s.service.as_str()).copied())
            .map(|s| (s.spec.image.as_str(), s))
            .collect();
        let pulls = needed.into_iter().map(|(image, service)| async move {
            let reference = image
                .parse::<ImageRef>()
                .map_err(|err| (image.to_owned(), PullFailure::Invalid(err)))?;
            self.images
                .pull(self.registries, &reference, service.spec.pull, &NoProgress)
                .await
                .map(drop)
                .map_err(|err| (image.to_owned(), PullFailure::Pull(Arc::new(err))))
        });
        futures_util::future::join_all(pulls)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }
}

/// What the tags of `pull: always` services resolve to now, for this host's platform
/// (one manifest request per image). A registry that cannot be reached leaves the
/// tag out (no replacement on that ground) and is reported to `warn`.
pub async fn current_digests(
    registries: &Registries,
    services: &[Service],
    warn: impl Fn(String),
) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    for service in services
        .iter()
        .filter(|s| s.spec.pull == PullPolicy::Always)
    {
        if digests.contains_key(&service.spec.image) {
            continue;
        }
        let Ok(reference) = service.spec.image.parse::<ImageRef>() else {
            continue;
        };
        match registries.resolve(&reference).await {
            Ok(resolved) => {
                digests.insert(service.spec.image.clone(), resolved.digest.to_string());
            }
            Err(err) => warn(error_chain(&err)),
        }
    }
    digests
}

/// Groups a service's steps into batches run one after the other, the steps of a
/// batch side by side (as many at once as `Parallelism` allows): replacements go
/// `update.max_unavailable` at a time (one at a time when it is 0, start-first);
/// creations go together, and so do removals; restarts and runs go alone.
fn batches<'s>(steps: &[&'s Step], spec: Option<&ServiceSpec>) -> Vec<Vec<&'s Step>> {
    let size = spec.map_or(1, |spec| spec.update.max_unavailable.max(1) as usize);
    let mut batches: Vec<Vec<&Step>> = Vec::new();
    for step in steps {
        let joins = |batch: &Vec<&Step>| {
            let same = batch.iter().all(|s| s.action == step.action);
            match step.action {
                Action::Replace => same && batch.len() < size,
                Action::Create | Action::Remove => same,
                Action::Restart | Action::Join | Action::Run => false,
            }
        };
        match batches.last_mut() {
            Some(batch) if joins(batch) => batch.push(step),
            _ => batches.push(vec![step]),
        }
    }
    batches
}

/// "2 created, 1 replaced; 1 failed"
pub fn summary(report: &Report) -> String {
    let mut parts: Vec<String> = [
        Action::Create,
        Action::Replace,
        Action::Restart,
        Action::Run,
        Action::Remove,
    ]
    .iter()
    .filter_map(|action| {
        let n = report.done.iter().filter(|s| s.action == *action).count();
        (n > 0).then(|| format!("{n} {}", action.done()))
    })
    .collect();
    if parts.is_empty() {
        parts.push("nothing done".into());
    }
    let mut text = parts.join(", ");
    if !report.failed.is_empty() {
        text.push_str(&format!("; {} failed", report.failed.len()));
    }
    text
}

/// What applying a plan did: each step's outcome, and the generation recorded (or
/// why it was not: the containers are the truth, so that is only a warning).
pub struct Outcome {
    pub report: Report,
    pub recorded: Result<u64, StateError>,
}

/// Executes a prepared plan and records the outcome: the one path from a plan to
/// recorded state, for apply, sync and the agent.
pub async fn apply<R: Runtime>(
    executor: &Executor<'_, R>,
    root: &std::path::Path,
    planned: &Planned,
    observer: &dyn StepObserver,
) -> Outcome {
    restore_network(executor.runtime).await;
    let report = executor
        .execute(&planned.plan, &planned.desired, &planned.observed, observer)
        .await;
    let recorded = record(root, &planned.manifest_dir, &planned.desired, &report);
    // The containers the plan was made from that its done steps did not remove, and
    // those it made (from `desired`): what a rollback or a restart may need. (A
    // failed step may have rolled back to its old container's files: kept.)
    let removed: BTreeSet<&str> = report
        .done
        .iter()
        .filter(|step| step.action != Action::Join)
        .filter_map(|step| step.container.as_deref())
        .collect();
    let in_use: Vec<&FileRefs> = planned
        .observed
        .iter()
        .filter(|c| !removed.contains(c.id.as_str()))
        .map(|c| &c.files)
        .chain(planned.desired.iter().map(|s| &s.files))
        .collect();
    drop_unused_files(root, &in_use);
    Outcome { report, recorded }
}

/// Stores the config contents of `service` by digest, where its containers' files
/// are made from (and a rollback finds them later).
fn store_contents(root: &std::path::Path, service: &Service) -> Result<(), StepError> {
    if service.config_contents.is_empty() {
        return Ok(());
    }
    let store = ContentStore::open(root)?;
    for content in &service.config_contents {
        store.put(content)?;
    }
    Ok(())
}

/// Drops the config contents and secret versions that nothing in `in_use` (the
/// containers there are, the services being applied) names: a rotated secret's
/// earlier value goes once no container has it. A failure is logged: they are
/// dropped next time.
pub fn drop_unused_files(root: &std::path::Path, in_use: &[&FileRefs]) {
    if let Err(err) = keep_only(root, in_use) {
        tracing::warn!("{}", error_chain(&err));
    }
}

/// Puts the network's rules back if another program removed them: containers on
/// the bridge would otherwise send nothing and be reached by nothing. A failure is
/// logged; the steps still run (a create says what is wrong with the network).
pub async fn restore_network<R: Runtime>(runtime: &R) {
    if let Err(err) = runtime.restore_network().await {
        tracing::warn!("{}", error_chain(&err));
    }
}

/// Records the apply in the state database: services whose steps all succeeded are
/// now applied as their manifests say; pruned services are forgotten.
fn record(
    root: &std::path::Path,
    dir: &std::path::Path,
    desired: &[Service],
    report: &Report,
) -> Result<u64, StateError> {
    let store = StateStore::open(root)?;
    let failed: Vec<&str> = report
        .failed
        .iter()
        .map(|(s, _)| s.service.as_str())
        .collect();
    let applied: Vec<Service> = desired
        .iter()
        .filter(|s| !failed.contains(&s.name()))
        .cloned()
        .collect();
    let mut removed: Vec<String> = report
        .done
        .iter()
        .filter(|s| s.action == Action::Remove && !desired.iter().any(|d| d.name() == s.service))
        .map(|s| s.service.clone())
        .collect();
    removed.dedup();
    let restarted: Vec<String> = report
        .done
        .iter()
        .filter(|s| s.action == Action::Restart)
        .map(|s| format!("{}/{}", s.service, s.slot))
        .collect();
    let mut events: Vec<String> = report
        .done
        .iter()
        .map(|s| format!("{} {}/{}: {}", s.action.verb(), s.service, s.slot, s.reason))
        .collect();
    events.extend(report.failed.iter().map(|(s, cause)| {
        format!(
            "failed to {} {}/{}: {}",
            s.action.verb(),
            s.service,
            s.slot,
            error_chain(cause)
        )
    }));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    store.record_apply(
        &dir,
        &applied,
        &removed,
        &restarted,
        &summary(report),
        &events,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn step(slot: u32, action: Action) -> Step {
        Step {
            service: "web".into(),
            slot,
            action,
            reason: String::new(),
            container: None,
            before: None,
            after: None,
        }
    }

    #[test]
    fn creations_and_removals_go_together_replacements_max_unavailable_at_a_time() {
        let text = "apiVersion: wharf/v1\nkind: Service\nname: web\nimage: busybox\nupdate: {max_unavailable: 2}\n";
        let spec = parse_manifest(std::path::Path::new("w.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0)
            .spec;
        let steps = [
            step(3, Action::Create),
            step(5, Action::Create),
            step(0, Action::Replace),
            step(1, Action::Replace),
            step(2, Action::Replace),
            step(4, Action::Remove),
            step(6, Action::Remove),
            step(7, Action::Restart),
            step(8, Action::Restart),
        ];
        let refs: Vec<&Step> = steps.iter().collect();
        let slots: Vec<Vec<u32>> = batches(&refs, Some(&spec))
            .iter()
            .map(|batch| batch.iter().map(|s| s.slot).collect())
            .collect();
        assert_eq!(
            slots,
            [
                vec![3, 5],
                vec![0, 1],
                vec![2],
                vec![4, 6],
                vec![7],
                vec![8]
            ]
        );
    }
}
