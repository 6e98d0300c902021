//! `wharf stop`, `wharf rm` and `wharf kill`: act on containers by name.

use clap::Parser;
use nix::sys::signal::Signal;

use super::output::Failure;
use super::target::matching;
use super::Session;
use crate::reconcile::each_bounded;
use crate::runtime::{stop_settings, Runtime};

/// Stop containers: their stop signal, then SIGKILL after their stop timeout.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf stop web/0\n  wharf stop worker")]
pub struct StopArgs {
    /// SERVICE, SERVICE/N or a container id.
    pub target: String,
}

/// Remove containers (killing them first if they run); named volumes stay.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf rm web/0\n  wharf rm worker")]
pub struct RmArgs {
    pub target: String,
}

/// Send a signal to containers.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf kill web/0\n  wharf kill worker --signal HUP\n  wharf kill web --signal 10"
)]
pub struct KillArgs {
    pub target: String,
    /// A signal name (TERM, SIGTERM) or number.
    #[arg(long, short, default_value = "SIGKILL", value_parser = parse_signal)]
    pub signal: Signal,
}

pub fn parse_signal(text: &str) -> Result<Signal, String> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("{number} is not a signal number"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse()
        .map_err(|_| format!("unknown signal \"{text}\" (e.g. TERM, HUP, KILL or a number)"))
}

#[derive(Clone, Copy)]
enum Action {
    Stop,
    Remove,
    Kill(Signal),
}

/// Acts on every container `target` names, as many at once as `--parallel` allows
/// (stopping a service's hundred replicas costs one stop timeout); prints each id
/// done. One that fails does not stop the others; the failures are the error.
fn act(session: &Session, target: &str, action: Action) -> u8 {
    let result = session.block_on(async {
        let containers = session.runtime.list().await?;
        let chosen = matching(&containers, target)?;
        let total = chosen.len();
        let outcomes = each_bounded(chosen, session.parallel.stops, |container| async move {
            let done = match action {
                Action::Stop => {
                    let (signal, timeout) = stop_settings(container.spec.as_deref());
                    session
                        .runtime
                        .stop(&container.id, signal, timeout)
                        .await
                        .map(drop)
                }
                Action::Remove => session.runtime.remove(&container.id).await,
                Action::Kill(signal) => session.runtime.kill(&container.id, signal).await,
            };
            if done.is_ok() {
                println!("{}", container.id);
            }
            done.map_err(|err| format!("{}: {}", container.id, crate::error_chain(&err)))
        })
        .await;
        let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
        if failures.is_empty() {
            Ok(())
        } else {
            let failed = failures.len();
            Err(Failure::from(format!(
                "{failed} of {total} containers: {}",
                failures.join("; ")
            )))
        }
    });
    session.exit_code(result)
}

pub fn stop(session: &Session, args: &StopArgs) -> u8 {
    act(session, &args.target, Action::Stop)
}

pub fn rm(session: &Session, args: &RmArgs) -> u8 {
    act(session, &args.target, Action::Remove)
}

pub fn kill(session: &Session, args: &KillArgs) -> u8 {
    act(session, &args.target, Action::Kill(args.signal))
}
