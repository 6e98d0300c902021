use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use super::Session;
use crate::manifest::only_root_can_write;
use crate::reconcile::{log, Agent, Executor};
use crate::runtime::{stop_and_remove, Runtime};
use crate::watch::{Trigger, Triggers};

/// Keep containers converged with a manifest directory: every change to its files is
/// applied within moments (pruning services whose files go), crashed containers are
/// restarted with backoff, and a periodic resync catches anything missed.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf agent --manifests /etc/wharf/services\n  wharf agent --manifests ./services --resync 10s\n\nSIGTERM or SIGINT: finish the current step and exit, leaving containers running\n(the next agent adopts them); --stop-on-exit stops them instead. With NOTIFY_SOCKET\nset (systemd Type=notify) it reports READY=1 and STOPPING=1."
)]
pub struct Args {
    /// The manifest directory to follow.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Longest time between two full reconciles.
    #[arg(long, default_value = "30s")]
    pub resync: crate::manifest::Duration,
    /// On SIGTERM/SIGINT, stop and remove the containers of this directory.
    #[arg(long)]
    pub stop_on_exit: bool,
    /// Follow the directory and its manifests even when users other than root can
    /// write them (who can write a manifest can run containers as root).
    #[arg(long)]
    pub allow_insecure_manifests: bool,
}

/// Events arriving together within this window are one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(10);

pub fn run(session: &Session, args: &Args) -> u8 {
    if !args.allow_insecure_manifests {
        if let Err(message) = only_root_can_write(&args.manifests) {
            return super::output::exit_code(Err(format!("refusing to run: {message}")));
        }
    }
    let result = session.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let executor = Executor {
            runtime: &session.runtime,
            images: &session.images,
            registries: &session.registries,
        };
        let mut triggers = Triggers::start(&args.manifests);
        let mut agent = Agent::new(
            executor,
            &session.root,
            &args.manifests,
            triggers.notifier(Trigger::HealthChanged),
        );
        if args.allow_insecure_manifests {
            agent.allow_insecure_manifests();
        }
        agent.check_tags_every(args.resync.as_std());
        let resync = args.resync.as_std();
        log(&format!(
            "watching {} (resync every {})",
            args.manifests.display(),
            humantime::format_duration(resync)
        ));
        let mut next_restart = agent.reconcile().await;
        notify_systemd("READY=1");
        loop {
            let wait = next_restart.map_or(resync, |due| {
                due.saturating_duration_since(Instant::now()).min(resync)
            });
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                _ = triggers.next(wait, DEBOUNCE) => {}
            }
            next_restart = agent.reconcile().await;
        }
        notify_systemd("STOPPING=1");
        if args.stop_on_exit {
            stop_containers_of(session, &args.manifests).await?;
            log("agent stopped; its containers were removed");
        } else {
            log("agent stopped; containers are left running");
        }
        Ok::<_, String>(())
    });
    super::output::exit_code(result)
}

async fn stop_containers_of(session: &Session, dir: &Path) -> Result<(), String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let containers = session
        .runtime
        .list()
        .await
        .map_err(|e| crate::error_chain(&e))?;
    for container in containers
        .iter()
        .filter(|c| c.manifest_dir.as_deref() == Some(dir.as_path()))
    {
        stop_and_remove(&session.runtime, container)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        log(&format!("removed {} (--stop-on-exit)", container.id));
    }
    Ok(())
}

/// sd_notify: a datagram to $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace).
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
        log(&format!(
            "warning: cannot notify systemd at {socket}: {err}"
        ));
    }
}
