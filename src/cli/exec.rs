use std::io::Write;

use clap::Parser;

use super::target::matching;
use super::{exit, Session};
use crate::runtime::ContainerStatus;

/// Run a command in a running container; exits with the command's exit code.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf exec web -- cat /etc/hostname\n  wharf exec worker/2 -- sh -c 'echo $QUEUE'"
)]
pub struct Args {
    /// SERVICE, SERVICE/N or a container id (the first running replica of SERVICE).
    pub target: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let containers = match session.containers() {
        Ok(containers) => containers,
        Err(code) => return code,
    };
    let running = matching(&containers, &args.target).and_then(|found| {
        found
            .into_iter()
            .find(|c| c.status == ContainerStatus::Running)
            .ok_or_else(|| format!("no running container matches \"{}\"", args.target))
    });
    let container = match running {
        Ok(container) => container,
        Err(message) => return session.fail_with(message),
    };
    match session
        .runtime
        .exec_blocking(&container.id, &args.command, None)
    {
        Ok(output) => {
            let _ = std::io::stdout().write_all(&output.stdout);
            let _ = std::io::stderr().write_all(&output.stderr);
            u8::try_from(output.code).unwrap_or(exit::FAILURE)
        }
        Err(err) => session.fail(&err),
    }
}
