use std::path::PathBuf;

use clap::Parser;

use super::reconcile::{make_plan, SavedPlan};
use super::{exit, Cli, Palette, Session};
use crate::plan::{render_human, render_json, PLAN_FORMAT_VERSION};

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
    /// Save the plan to FILE; `wharf apply FILE` then runs exactly it.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
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
    if let Some(out) = &args.out {
        let saved = SavedPlan {
            format_version: PLAN_FORMAT_VERSION,
            dir: args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone()),
            prune: args.prune,
            allow_empty: args.allow_empty,
            fingerprint: planned.fingerprint.clone(),
            steps: planned.plan.steps.clone(),
        };
        let json = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(err) = std::fs::write(out, json) {
            eprintln!("error: cannot write {}: {err}", out.display());
            return exit::FAILURE;
        }
        eprintln!(
            "Saved the plan to {0}; `wharf apply {0}` runs exactly it.",
            out.display()
        );
    }
    if args.detailed_exitcode && !planned.plan.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    }
}
