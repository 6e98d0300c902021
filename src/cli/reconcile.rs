//! What `wharf plan` and `wharf apply` share: their options, and printing what the
//! library's `Host::plan_dir` found.

use std::path::{Path, PathBuf};

use super::Session;
use crate::reconcile::{Options, PlanDirError, Planned};

/// What to reconcile: the options `plan` and `apply` share.
#[derive(Debug, clap::Args)]
pub struct Source {
    /// Manifest directory (apply also takes a plan file saved by `wharf plan -o`).
    pub dir: PathBuf,
    /// Also remove services that are no longer in the directory (only containers
    /// wharf created from this same directory).
    #[arg(long)]
    pub prune: bool,
    /// Allow --prune to remove everything when the directory holds no services.
    #[arg(long)]
    pub allow_empty: bool,
    /// Exit 0 when there are no changes, 2 when there are (plan) or were (apply), 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Loads `dir`, observes the host and plans; nothing is touched. Err: the exit
/// code, after printing the manifests' errors (as `validate` does) or why no plan
/// could be made.
pub fn make_plan(
    session: &Session,
    dir: &Path,
    prune: bool,
    allow_empty: bool,
) -> Result<Planned, u8> {
    let options = Options {
        prune,
        allow_empty,
        join_rotation: true,
    };
    match session.block_on(session.plan_dir(dir, options)) {
        Ok((planned, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            Ok(planned)
        }
        Err(PlanDirError::Invalid { diagnostics, .. }) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            eprintln!("{} invalid: nothing was changed", dir.display());
            Err(super::exit::FAILURE)
        }
        Err(err) => Err(session.fail(&err)),
    }
}
