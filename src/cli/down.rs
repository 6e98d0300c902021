use clap::Parser;

use super::output::Failure;
use super::Session;
use crate::reconcile::{take_down, ReconcileLock};
use crate::runtime::Runtime;

/// Stop and remove the containers of services (named volumes stay).
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf down web worker\n  wharf down --all")]
pub struct Args {
    /// Services to take down.
    #[arg(required_unless_present = "all")]
    pub services: Vec<String>,
    /// Every wharf container on this host.
    #[arg(long, conflicts_with = "services")]
    pub all: bool,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    // Serialised with apply and the agent, which write the same state database.
    let _lock = match ReconcileLock::acquire(&session.root, None) {
        Ok(lock) => lock,
        Err(err) => return session.fail(&err),
    };
    let result = session.block_on(async {
        let containers = session.runtime.list().await?;
        let chosen: Vec<_> = containers
            .iter()
            .filter(|c| args.all || args.services.contains(&c.service))
            .collect();
        if let Some(missing) = args
            .services
            .iter()
            .find(|s| !containers.iter().any(|c| &c.service == *s))
        {
            return Err(Failure::from(format!(
                "no containers of service \"{missing}\" (see `wharf status`)"
            )));
        }
        let parallel = &session.parallel;
        take_down(
            &session.runtime,
            &session.root,
            &chosen,
            parallel,
            "wharf down",
            |container| {
                println!("removed {}", container.id);
            },
        )
        .await?;
        Ok::<_, Failure>(())
    });
    session.exit_code(result)
}
