use std::path::PathBuf;

use clap::Parser;

use super::reconcile::{make_plan, Source};
use super::{exit, output, Session};
use crate::plan::{render_human, render_json};
use crate::reconcile::Options;

/// Show what `wharf apply DIR` would do, without changing anything.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf plan examples/\n  wharf plan --prune --detailed-exitcode /etc/wharf/services\n  wharf plan --json services/ | jq .summary\n\nExit status: 0 success (with --detailed-exitcode: no changes), 1 error, 2 changes (with --detailed-exitcode)."
)]
pub struct Args {
    #[command(flatten)]
    pub source: Source,
    /// Save the plan to FILE; `wharf apply FILE` then runs exactly it.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let planned = match make_plan(
        session,
        &args.source.dir,
        args.source.prune,
        args.source.allow_empty,
    ) {
        Ok(planned) => planned,
        Err(code) => return code,
    };
    if args.source.json {
        println!("{}", render_json(&planned.plan));
    } else {
        print!(
            "{}",
            render_human(&planned.plan, &output::for_stdout(session.color))
        );
    }
    if let Some(out) = &args.out {
        let saved = planned.saved(Options {
            prune: args.source.prune,
            allow_empty: args.source.allow_empty,
            join_rotation: true,
        });
        let json = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(err) = std::fs::write(out, json) {
            return session.fail_with(format!("cannot write {}: {err}", out.display()));
        }
        eprintln!(
            "Saved the plan to {0}; `wharf apply {0}` runs exactly it.",
            out.display()
        );
    }
    if args.source.detailed_exitcode && !planned.plan.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    }
}
