//! What `wharf plan` and `wharf apply` share: loading the directory, observing the
//! host, resolving moved tags, planning, and the one-reconciler-at-a-time lock.

use std::path::{Path, PathBuf};

use super::Session;
use crate::manifest::load_paths;
use crate::reconcile::{current_digests, prepare, Facts, Options, Planned};

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
    let loaded = load_paths(&[dir.to_owned()]);
    if !loaded.errors.is_empty() {
        for diagnostic in &loaded.errors {
            eprintln!("{diagnostic}");
        }
        eprintln!("{} invalid: nothing was changed", dir.display());
        return Err(super::exit::FAILURE);
    }
    if !dir.is_dir() {
        return Err(session.fail_with(format!("{} is not a directory", dir.display())));
    }
    let manifest_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let observed = session.containers()?;
    let facts = Facts {
        current_digests: session.block_on(current_digests(
            &session.registries,
            &loaded.services,
            |warning| eprintln!("warning: {warning}"),
        )),
        ..Facts::default()
    };
    let options = Options { prune, allow_empty };
    prepare(loaded.services, observed, &facts, &manifest_dir, options)
        .map_err(|err| session.fail(&err))
}
