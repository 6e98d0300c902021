use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::reconcile::{make_plan, Source};
use super::{exit, output, Session};
use crate::health::wait_until_ready;
use crate::manifest::Service;
use crate::plan::{render_human, SavedPlan, Step, PLAN_FORMAT_VERSION};
use crate::reconcile::{
    apply, restore_network, summary, Outcome, ReconcileLock, Report, StepError, StepObserver,
};

/// How long `--wait` waits when `--timeout` is not given.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// Make the host's containers match a manifest directory.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf apply examples/\n  wharf apply --yes --prune /etc/wharf/services\n  wharf apply --yes --json --detailed-exitcode services/   # in a CI job\n\nExit status: 0 success (with --detailed-exitcode: nothing to do), 1 error or a failed step, 2 changes applied (with --detailed-exitcode)."
)]
pub struct Args {
    #[command(flatten)]
    pub source: Source,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Give up after waiting this long for another apply, e.g. 30s.
    #[arg(long)]
    pub lock_timeout: Option<crate::manifest::Duration>,
    /// After applying, wait until every replica runs its service's spec and, when the
    /// service has a health check, passed it; fail as soon as one exits or turns
    /// unhealthy.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 2m (default 5m).
    #[arg(long, requires = "wait")]
    pub timeout: Option<crate::manifest::Duration>,
}

/// Step progress: a bar on a terminal, plain greppable lines otherwise (on stderr).
struct StepProgress {
    bar: Option<ProgressBar>,
}

impl StepProgress {
    fn new(steps: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} steps {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        });
        StepProgress { bar }
    }
}

impl StepObserver for StepProgress {
    fn finished(&self, step: &Step, outcome: Result<(), &StepError>) {
        let line = match outcome {
            Ok(()) => format!("{} {}/{}", step.action.done(), step.service, step.slot),
            Err(cause) => format!(
                "FAILED {}/{} {:?}: {}",
                step.service,
                step.slot,
                step.action,
                crate::error_chain(cause)
            ),
        };
        match &self.bar {
            Some(bar) => {
                if outcome.is_err() {
                    bar.println(&line);
                }
                bar.set_message(line);
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for StepProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[derive(Serialize)]
struct JsonResult<'a> {
    format_version: u32,
    changed: bool,
    done: &'a [Step],
    failed: Vec<JsonFailure<'a>>,
    skipped: &'a [Step],
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    step: &'a Step,
    error: String,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let timeout = args.lock_timeout.map(|d| d.as_std());
    let lock = match ReconcileLock::acquire(&session.root, timeout) {
        Ok(lock) => lock,
        Err(err) => return session.fail(&err),
    };
    // Opened first, so that a damaged database is set aside (and said) even when there
    // is nothing to apply.
    match crate::state::StateStore::open(&session.root) {
        Ok(store) => store
            .recovered()
            .into_iter()
            .for_each(|note| eprintln!("warning: {note}")),
        Err(err) => eprintln!("warning: {}", crate::error_chain(&err)),
    }
    let saved = if args.source.dir.is_file() {
        match SavedPlan::read(&args.source.dir) {
            Ok(saved) => Some(saved),
            Err(err) => return session.fail(&err),
        }
    } else {
        None
    };
    let (dir, prune, allow_empty) = match &saved {
        Some(saved) => (saved.dir.clone(), saved.prune, saved.allow_empty),
        None => (
            args.source.dir.clone(),
            args.source.prune,
            args.source.allow_empty,
        ),
    };
    let planned = match make_plan(session, &dir, prune, allow_empty) {
        Ok(planned) => planned,
        Err(code) => return code,
    };
    if let Some(saved) = &saved {
        if !planned.is(saved) {
            return session.fail_with(format!(
                "the manifests in {} or the containers changed since {} was made; nothing was changed. Run `wharf plan` again.",
                dir.display(),
                args.source.dir.display()
            ));
        }
    }
    let plan = &planned.plan;
    if !args.source.json {
        print!("{}", render_human(plan, &output::for_stdout(session.color)));
    }
    if plan.is_empty() {
        session.block_on(restore_network(&session.runtime));
        if args.source.json {
            print_json(&Report::default());
        }
        // Converged containers may still be unhealthy or exited: --wait says so,
        // without holding the lock the agent and other applies need meanwhile.
        drop(lock);
        return match wait_if_asked(session, args, &planned.desired) {
            Ok(()) => exit::OK,
            Err(code) => code,
        };
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return session.fail_with(
                "refusing to apply without confirmation: stdin is not a terminal; pass --yes",
            );
        }
        print!("Apply these changes? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Nothing was changed.");
            return exit::FAILURE;
        }
    }
    let executor = session.executor();
    let Outcome { report, recorded } = {
        let progress = StepProgress::new(plan.steps.len());
        session.block_on(apply(&executor, &session.root, &planned, &progress))
    };
    drop(lock);
    let generation = recorded.unwrap_or_else(|err| {
        eprintln!(
            "warning: the apply was not recorded: {}",
            crate::error_chain(&err)
        );
        0
    });
    if args.source.json {
        print_json(&report);
    } else if report.failed.is_empty() {
        println!(
            "Apply complete (generation {generation}): {}.",
            summary(&report)
        );
    } else {
        println!(
            "Apply failed: {} of {} steps failed, {} skipped; running containers were left as they are. Fix the cause and re-run apply to converge.",
            report.failed.len(),
            plan.steps.len(),
            report.skipped.len()
        );
    }
    if report.failed.is_empty() {
        if let Err(code) = wait_if_asked(session, args, &planned.desired) {
            return code;
        }
    }
    if !report.failed.is_empty() {
        exit::FAILURE
    } else if args.source.detailed_exitcode {
        exit::CHANGES
    } else {
        exit::OK
    }
}

fn print_json(report: &Report) {
    let result = JsonResult {
        format_version: PLAN_FORMAT_VERSION,
        changed: !report.done.is_empty(),
        done: &report.done,
        failed: report
            .failed
            .iter()
            .map(|(step, error)| JsonFailure {
                step,
                error: crate::error_chain(error),
            })
            .collect(),
        skipped: &report.skipped,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
}

/// With `--wait`: waits until every replica of `desired` runs its current spec and
/// passed its health check, running the checks from this process (no agent checks
/// them here). Err: the exit code, after saying which replica failed and why.
fn wait_if_asked(session: &Session, args: &Args, desired: &[Service]) -> Result<(), u8> {
    if !args.wait {
        return Ok(());
    }
    let timeout = args.timeout.map_or(DEFAULT_WAIT, |t| t.as_std());
    match session.block_on(wait_until_ready(&session.runtime, desired, timeout)) {
        Ok(ready) => {
            eprintln!("Ready: {ready}.");
            Ok(())
        }
        Err(err) => Err(session.fail(&err)),
    }
}
