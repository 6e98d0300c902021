//! A `Runtime` test double: containers kept in memory, whose behaviour a test
//! scripts from their spec (this version never becomes healthy, that one exits at
//! once). The planner, executor and agent logic are tested on it with paused tokio
//! time; the real runtime is tested with real containers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;

use crate::manifest::{Network, ServiceSpec};
use crate::runtime::{
    ContainerStatus, CreateRequest, ExecOutput, ObservedContainer, Runtime, RuntimeError, Stopped,
};

type Rule = Box<dyn Fn(&ServiceSpec) -> bool + Send + Sync>;

/// In-memory containers. What each does is decided by the rules given when it was
/// made: `unhealthy_if` (its exec health check fails), `exits_if` (it exits with a
/// code as soon as it starts), `create_fails_if`. Clones share the containers (the
/// agent hands its runtime to health-check tasks).
#[derive(Clone, Default)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    rules: Mutex<Rules>,
}

#[derive(Default)]
struct Rules {
    unhealthy: Vec<Rule>,
    exits: Vec<(Rule, i32)>,
    create_fails: Vec<Rule>,
    ignores_stop_signal: Vec<Rule>,
    stop_fails: Vec<Rule>,
}

#[derive(Default)]
struct State {
    created: u32,
    containers: BTreeMap<String, ObservedContainer>,
    /// What was done, in order: `create web/0 web-0-1`, `start web-0-1`, `stop ...`,
    /// `kill ...` (a stop's SIGKILL at the end of the timeout), `remove ...`.
    journal: Vec<String>,
    stops: usize,
    most_stops: usize,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Containers made from a spec that matches fail their exec health check.
    pub fn unhealthy_if(self, rule: impl Fn(&ServiceSpec) -> bool + Send + Sync + 'static) -> Self {
        self.rules().unhealthy.push(Box::new(rule));
        self
    }

    /// Containers made from a spec that matches exit with `code` when started.
    pub fn exits_if(
        self,
        code: i32,
        rule: impl Fn(&ServiceSpec) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rules().exits.push((Box::new(rule), code));
        self
    }

    /// Creating a container from a spec that matches fails.
    pub fn create_fails_if(
        self,
        rule: impl Fn(&ServiceSpec) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rules().create_fails.push(Box::new(rule));
        self
    }

    /// Containers made from a spec that matches ignore their stop signal: a stop
    /// waits out their stop timeout (tokio time), then kills them.
    pub fn ignores_stop_signal_if(
        self,
        rule: impl Fn(&ServiceSpec) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rules().ignores_stop_signal.push(Box::new(rule));
        self
    }

    /// Stopping a container made from a spec that matches fails (it will not die).
    pub fn stop_fails_if(
        self,
        rule: impl Fn(&ServiceSpec) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rules().stop_fails.push(Box::new(rule));
        self
    }

    /// The most stops that were under way at once.
    pub fn most_stops_at_once(&self) -> usize {
        self.lock().most_stops
    }

    /// Makes the container `id` exit with `code` now, as a crash would.
    pub fn crash(&self, id: &str, code: i32) {
        if let Some(container) = self.lock().containers.get_mut(id) {
            container.status = ContainerStatus::Exited {
                code: Some(code),
                at: Some(SystemTime::now()),
                oom_killed: false,
            };
            container.pid = None;
        }
    }

    /// The containers, as `list` gives them.
    pub fn containers(&self) -> Vec<ObservedContainer> {
        self.lock().containers.values().cloned().collect()
    }

    /// Everything done so far, one line an operation.
    pub fn journal(&self) -> Vec<String> {
        self.lock().journal.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn spec_of(&self, id: &str) -> Result<ServiceSpec, RuntimeError> {
        self.lock()
            .containers
            .get(id)
            .and_then(|c| c.spec.as_deref().cloned())
            .ok_or_else(|| not_found(id))
    }
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::Container {
        what: format!("container {id}"),
        message: "no such container".into(),
    }
}

impl Runtime for FakeRuntime {
    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let what = format!("{}/{}", request.service.name, request.slot);
        if self
            .rules()
            .create_fails
            .iter()
            .any(|rule| rule(&request.service))
        {
            return Err(RuntimeError::Container {
                what,
                message: "scripted creation failure".into(),
            });
        }
        let mut state = self.lock();
        state.created += 1;
        let id = format!(
            "{}-{}-{}",
            request.service.name, request.slot, state.created
        );
        state.journal.push(format!("create {what} {id}"));
        state.containers.insert(
            id.clone(),
            ObservedContainer {
                id: id.clone(),
                service: request.service.name.clone(),
                slot: request.slot,
                status: ContainerStatus::Created,
                pid: None,
                started_at: None,
                spec_hash: request.spec_hash.to_string(),
                image: request.service.image.clone(),
                image_digest: request.image.digest().to_string(),
                manifest: request.manifest.clone(),
                manifest_dir: request
                    .manifest
                    .as_deref()
                    .and_then(|m| m.parent())
                    .map(Into::into),
                spec: Some(Box::new(request.service.clone())),
                unmonitored: false,
                address: None,
                in_rotation: false,
                files: request.files.clone(),
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let spec = self.spec_of(id)?;
        let exit = self
            .rules()
            .exits
            .iter()
            .find(|(rule, _)| rule(&spec))
            .map(|(_, code)| *code);
        let mut state = self.lock();
        state.journal.push(format!("start {id}"));
        // Above the kernel's PID_MAX_LIMIT (4,194,304): no real process has it, so a
        // probe that enters its namespaces fails instead of reaching a host process.
        let pid = 5_000_000 + i32::try_from(state.created).unwrap_or(0);
        let container = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        container.started_at = Some(SystemTime::now());
        (container.status, container.pid) = match exit {
            Some(code) => (
                ContainerStatus::Exited {
                    code: Some(code),
                    at: Some(SystemTime::now()),
                    oom_killed: false,
                },
                None,
            ),
            None => (ContainerStatus::Running, Some(pid)),
        };
        Ok(())
    }

    async fn stop(&self, id: &str, _: Signal, timeout: Duration) -> Result<Stopped, RuntimeError> {
        let spec = {
            let mut state = self.lock();
            state.journal.push(format!("stop {id}"));
            let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
            if container.status != ContainerStatus::Running {
                return Ok(Stopped::NotRunning);
            }
            let spec = container.spec.as_deref().cloned();
            state.stops += 1;
            state.most_stops = state.most_stops.max(state.stops);
            spec
        };
        let (ignores, fails) = {
            let rules = self.rules();
            let matches = |rules: &[Rule]| {
                let matching = |spec: &ServiceSpec| rules.iter().any(|rule| rule(spec));
                spec.as_ref().is_some_and(matching)
            };
            (
                matches(&rules.ignores_stop_signal),
                matches(&rules.stop_fails),
            )
        };
        if ignores || fails {
            tokio::time::sleep(timeout).await;
        }
        let mut state = self.lock();
        state.stops -= 1;
        if fails {
            return Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: "still running 10s after SIGKILL".into(),
            });
        }
        if ignores {
            state.journal.push(format!("kill {id}"));
        }
        let container = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        container.status = ContainerStatus::Exited {
            code: Some(if ignores { 137 } else { 0 }),
            at: Some(SystemTime::now()),
            oom_killed: false,
        };
        container.pid = None;
        Ok(if ignores {
            Stopped::Killed
        } else {
            Stopped::BySignal
        })
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.stop(id, signal, Duration::ZERO).await.map(drop)
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.journal.push(format!("remove {id}"));
        state
            .containers
            .remove(id)
            .map(drop)
            .ok_or_else(|| not_found(id))
    }

    /// As the real runtime: only containers on the bridge have a rotation.
    async fn set_serving(&self, id: &str, serving: bool) -> Result<bool, RuntimeError> {
        let mut state = self.lock();
        let container = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        let on_bridge = container
            .spec
            .as_ref()
            .is_some_and(|spec| spec.network == Network::Bridge);
        if !on_bridge {
            return Ok(false);
        }
        let was = std::mem::replace(&mut container.in_rotation, serving);
        if was != serving {
            let change = if serving { "serve" } else { "drain" };
            state.journal.push(format!("{change} {id}"));
        }
        Ok(was)
    }

    async fn restore_network(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        Ok(self.containers())
    }

    async fn exec(&self, id: &str, _: &[String], _: Duration) -> Result<ExecOutput, RuntimeError> {
        let running = self
            .lock()
            .containers
            .get(id)
            .is_some_and(|c| c.status == ContainerStatus::Running);
        if !running {
            // As the real runtime: nothing runs in a container that is not running.
            return Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: "is not running".into(),
            });
        }
        let spec = self.spec_of(id)?;
        let unhealthy = self.rules().unhealthy.iter().any(|rule| rule(&spec));
        Ok(ExecOutput {
            code: i32::from(unhealthy),
            stdout: Vec::new(),
            stderr: if unhealthy {
                b"scripted failure".to_vec()
            } else {
                Vec::new()
            },
        })
    }
}
