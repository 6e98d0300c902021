use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing::Level;

use super::output::Failure;
use super::sync::GitArgs;
use super::Session;
use crate::manifest::only_root_can_write;
use crate::process::ask_helper;
use crate::reconcile::{run_agent, stop_containers_of, Agent, Periodic};
use crate::sync::{GitSource, Synced};
use crate::watch::{Trigger, Triggers};

/// Keep containers converged with a manifest directory: every change to its files is
/// applied within moments (pruning services whose files go), crashed containers are
/// restarted with backoff, and a periodic resync catches anything missed.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf agent --manifests /etc/wharf/services\n  wharf agent --manifests ./services --resync 10s\n  wharf agent --git https://git.example.com/ops/services.git --ref main --path hosts/web1\n\nSIGTERM or SIGINT: finish the current step and exit, leaving containers running\n(the next agent adopts them); --stop-on-exit stops them instead. With NOTIFY_SOCKET\nset (systemd Type=notify) it reports READY=1 and STOPPING=1."
)]
pub struct Args {
    /// The manifest directory to follow.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    pub manifests: Option<PathBuf>,
    /// Or follow a ref of a Git repository (fetched into the root).
    #[command(flatten)]
    pub git: GitArgs,
    /// How often to fetch the Git ref.
    #[arg(long, default_value = "1m", requires = "url")]
    pub interval: crate::manifest::Duration,
    /// Longest time between two full reconciles; also how often `pull: always` tags
    /// are checked, and the first delay before asking a failing registry again
    /// (doubling up to 5 minutes).
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

pub fn run(session: &Session, args: &Args) -> u8 {
    let git = args.git.source();
    let manifests = match (&git, &args.manifests) {
        (Some(source), _) => source.manifest_dir(&session.root),
        (None, Some(dir)) => dir.clone(),
        (None, None) => return session.fail_with("give --manifests DIR or --git URL"),
    };
    if let Some(source) = &git {
        // The first fetch, before anything is watched: a failure is retried later.
        if let Err(message) = sync_in_child(session, source) {
            tracing::warn!("cannot sync {}: {message}", source.describe());
        }
        if let Err(err) = std::fs::create_dir_all(&manifests) {
            return session.fail_with(format!("{}: {err}", manifests.display()));
        }
    }
    if !args.allow_insecure_manifests {
        if let Err(message) = only_root_can_write(&manifests) {
            return session.fail_with(format!("refusing to run: {message}"));
        }
    }
    let result = session.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let shutdown = async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        let mut triggers = Triggers::start(&manifests);
        let mut agent = Agent::new(
            session.executor(),
            &session.root,
            &manifests,
            triggers.notifier(Trigger::HealthChanged),
        );
        if args.allow_insecure_manifests {
            agent.allow_insecure_manifests();
        }
        agent.check_tags_every(args.resync.as_std());
        let resync = args.resync.as_std();
        tracing::info!(
            "watching {} (resync every {})",
            manifests.display(),
            humantime::format_duration(resync)
        );
        let mut sync = git.as_ref().map(|source| GitSync {
            session,
            source,
            period: args.interval.as_std(),
            last: None,
        });
        let periodic = sync.as_mut().map(|sync| sync as &mut dyn Periodic);
        run_agent(&mut agent, &mut triggers, resync, periodic, shutdown).await;
        if args.stop_on_exit {
            stop_containers_of(
                &session.runtime,
                &session.root,
                &manifests,
                &session.parallel,
            )
            .await?;
            tracing::info!("agent stopped; its containers were removed");
        } else {
            tracing::info!("agent stopped; containers are left running");
        }
        Ok::<_, Failure>(())
    });
    session.exit_code(result)
}

/// The Git fetch the agent runs every `--interval`: what changed goes to the event log.
struct GitSync<'a> {
    session: &'a Session,
    source: &'a GitSource,
    period: Duration,
    last: Option<Result<String, String>>,
}

impl Periodic for GitSync<'_> {
    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self) -> Option<(Level, String)> {
        let outcome = sync_in_child(self.session, self.source).map(|s| s.commit);
        if self.last.as_ref() == Some(&outcome) {
            return None;
        }
        let note = match &outcome {
            Ok(commit) => (
                Level::INFO,
                format!(
                    "synced {} at commit {}",
                    self.source.describe(),
                    short(commit)
                ),
            ),
            Err(message) => (
                Level::WARN,
                format!(
                    "kept the last good commit of {}: {message}",
                    self.source.describe()
                ),
            ),
        };
        self.last = Some(outcome);
        Some(note)
    }
}

/// Syncs `source` in a `wharf sync --checkout-only` child: this process runs
/// containers, so it cannot wait for git itself (its reaper takes children's statuses).
fn sync_in_child(session: &Session, source: &GitSource) -> Result<Synced, String> {
    let wharf = std::env::current_exe().map_err(|err| err.to_string())?;
    ask_helper(
        std::process::Command::new(wharf)
            .arg("--root")
            .arg(&session.root)
            .args(["sync", "--git", &source.url, "--ref", &source.reference])
            .args(["--path", &source.path, "--checkout-only"]),
    )
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
