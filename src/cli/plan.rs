use std::path::PathBuf;

use clap::Parser;

use super::reconcile::make_plan;
use super::{exit, Cli, Palette, Session};
use crate::plan::{render_human, render_json};

/// Show what `wharf apply DIR` would do, without changing anything.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf plan examples/\n  wharf plan --prune --detailed-exitcode /etc/wharf/services\n  wharf plan --json services/ | jq .summary\n\nExit status: 0 success (with --detailed-exitcode: no changes), 1 error, 2 changes (with --detailed-exitcode)."
)]
pub struct Args {
    /// Manifest directory.
    pub dir: PathBuf,
    /// Also remove services that are no longer in the directory.
    #[arg(long)]
    pub prune: bool,
    /// Allow --prune to remove everything when the directory holds no services.
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when there are no changes, 2 when there are some, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn run(cli: &Cli, args: &Args) -> u8 {
    let session = match Session::open(cli) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let planned = match make_plan(&session, &args.dir, args.prune, args.allow_empty) {
        Ok(planned) => planned,
        Err(lines) => {
            lines.iter().for_each(|line| eprintln!("{line}"));
            return exit::FAILURE;
        }
    };
    if args.json {
        println!("{}", render_json(&planned.plan));
    } else {
        print!(
            "{}",
            render_human(&planned.plan, &Palette::for_stdout(cli.color))
        );
    }
    if args.detailed_exitcode && !planned.plan.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    }
}
