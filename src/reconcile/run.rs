//! The agent's loop: reconcile, then wait for a file event, a container exit, a
//! restart coming due or the resync period, until told to shut down (kube-runtime's
//! `Controller::run` and mini-redis's `server::run` are the models).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Level;

use super::agent::Agent;
use super::{each_bounded, AgentPresence, LockError, Parallelism, ReconcileLock};
use crate::runtime::{stop_and_remove, ObservedContainer, Runtime, RuntimeError};
use crate::state::{StateError, StateStore};
use crate::watch::Triggers;

/// Events arriving together within this window are one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Work the loop does every `period()` besides reconciling (the Git fetch). What it
/// returns, when something changed, goes to the log (at that level) and to the event
/// log.
pub trait Periodic {
    fn period(&self) -> Duration;
    fn run(&mut self) -> Option<(Level, String)>;
}

/// Runs `agent` until `shutdown` completes: reconciles at once (then tells systemd it
/// is ready), and again at every trigger, every `resync` at the latest, and when a
/// restart held back by its backoff comes due. A reconcile that fails is logged and
/// tried again at the next wake.
pub async fn run<R: Runtime + Clone + 'static>(
    agent: &mut Agent<'_, R>,
    triggers: &mut Triggers,
    resync: Duration,
    mut periodic: Option<&mut dyn Periodic>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let _presence = AgentPresence::announce(agent.root())
        .inspect_err(|err| {
            tracing::warn!("cannot announce the agent (wharf status will say none runs): {err}")
        })
        .ok();
    let mut next_restart = reconcile_logged(agent, None).await;
    triggers.follow(agent.watched_dirs());
    notify_systemd("READY=1");
    let period = periodic.as_ref().map_or(resync, |p| p.period());
    let mut tick = tokio::time::interval(period);
    tick.reset();
    loop {
        let wait = next_restart.map_or(resync, |due| {
            due.saturating_duration_since(Instant::now()).min(resync)
        });
        tokio::select! {
            () = &mut shutdown => break,
            _ = triggers.next(wait, DEBOUNCE) => {}
            _ = tick.tick(), if periodic.is_some() => {
                // New files (if any) wake the watcher; this reconcile is a resync.
                if let Some((level, note)) = periodic.as_mut().and_then(|p| p.run()) {
                    agent.note(level, note);
                }
            }
        }
        next_restart = reconcile_logged(agent, next_restart).await;
        triggers.follow(agent.watched_dirs());
    }
    notify_systemd("STOPPING=1");
}

/// Reconciles; on failure, logs why and keeps a restart that is still to come due
/// (one already due would make the loop spin on a lasting failure: the resync
/// retries then).
async fn reconcile_logged<R: Runtime + Clone + 'static>(
    agent: &mut Agent<'_, R>,
    pending: Option<Instant>,
) -> Option<Instant> {
    agent.reconcile().await.unwrap_or_else(|err| {
        tracing::error!("cannot reconcile: {}", crate::error_chain(&err));
        pending.filter(|due| *due > Instant::now())
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TakeDownError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Some containers could not be stopped or removed; the others were.
    #[error("{} of {total} containers could not be taken down: {}", failures.len(), failure_list(failures))]
    Failed {
        total: usize,
        failures: Vec<(String, RuntimeError)>,
    },
}

/// The first few failures (`wharf events` has each).
fn failure_list(failures: &[(String, RuntimeError)]) -> String {
    const SHOWN: usize = 5;
    let mut each: Vec<String> = failures
        .iter()
        .take(SHOWN)
        .map(|(id, err)| format!("{id}: {}", crate::error_chain(err)))
        .collect();
    if failures.len() > SHOWN {
        each.push(format!(
            "and {} more (see `wharf events`)",
            failures.len() - SHOWN
        ));
    }
    each.join("; ")
}

/// Stops and removes `containers` (each with its own stop signal and timeout, as
/// many at once as `parallel` says), records each removal in the state database and
/// forgets the services all of whose containers went: `wharf down` and
/// `--stop-on-exit` (`why`). A container that cannot be taken down does not stop the
/// others; it is reported at the end. The caller holds the reconcile lock. `removed`
/// is told of each one as it goes.
pub async fn take_down<R: Runtime>(
    runtime: &R,
    root: &Path,
    containers: &[&ObservedContainer],
    parallel: &Parallelism,
    why: &str,
    removed: impl Fn(&ObservedContainer),
) -> Result<(), TakeDownError> {
    let outcomes = each_bounded(containers, parallel.stops, |container| {
        let removed = &removed;
        async move {
            let outcome = stop_and_remove(runtime, container).await;
            if outcome.is_ok() {
                removed(container);
            }
            outcome
        }
    })
    .await;
    let mut events = Vec::new();
    let mut failures = Vec::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for (container, outcome) in containers.iter().zip(outcomes) {
        let what = format!("{}/{} {}", container.service, container.slot, container.id);
        match outcome {
            Ok(stopped) => events.push(format!("removed {what} ({why}): {stopped}")),
            Err(err) => {
                events.push(format!(
                    "failed to remove {what}: {}",
                    crate::error_chain(&err)
                ));
                failures.push((container.id.clone(), err));
                kept.insert(&container.service);
            }
        }
    }
    // Services all of whose containers went; one with a container left stays known.
    let gone: BTreeSet<&str> = containers
        .iter()
        .map(|c| c.service.as_str())
        .filter(|service| !kept.contains(service))
        .collect();
    let gone: Vec<String> = gone.into_iter().map(str::to_owned).collect();
    StateStore::open(root)?.forget(&gone, &events)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TakeDownError::Failed {
            total: containers.len(),
            failures,
        })
    }
}

/// Takes down the containers created from the manifest directory `dir`
/// (`wharf agent --stop-on-exit`), under the reconcile lock.
pub async fn stop_containers_of<R: Runtime>(
    runtime: &R,
    root: &Path,
    dir: &Path,
    parallel: &Parallelism,
) -> Result<(), TakeDownError> {
    let _lock = ReconcileLock::acquire(root, None)?;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let containers = runtime.list().await?;
    let chosen: Vec<&ObservedContainer> = containers
        .iter()
        .filter(|c| c.manifest_dir.as_deref() == Some(dir.as_path()))
        .collect();
    take_down(
        runtime,
        root,
        &chosen,
        parallel,
        "--stop-on-exit",
        |container| {
            tracing::info!(
                container = container.id.as_str(),
                "removed {} (--stop-on-exit)",
                container.id
            );
        },
    )
    .await
}

/// sd_notify: a datagram to $NOTIFY_SOCKET (a path, or `@name` in the abstract
/// namespace), for systemd's `Type=notify`.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = socket.to_string_lossy().into_owned();
    let address = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&socket),
    };
    let sent = UnixDatagram::unbound()
        .and_then(|sock| address.and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr)));
    if let Err(err) = sent {
        tracing::warn!("cannot notify systemd at {socket}: {err}");
    }
}
