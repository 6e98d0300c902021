//! What `wharf plan` and `wharf apply` share: loading the directory, observing the
//! host, resolving moved tags, planning, and the one-reconciler-at-a-time lock.

use std::path::{Path, PathBuf};

use super::Session;
use crate::manifest::load_paths;
use crate::reconcile::{current_digests, prepare, Facts, Options, Planned};
use crate::runtime::Runtime;

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

/// Loads `dir`, observes the host and plans. Manifest errors are returned as the
/// lines to print; nothing is touched.
pub fn make_plan(
    session: &Session,
    dir: &Path,
    prune: bool,
    allow_empty: bool,
) -> Result<Planned, Vec<String>> {
    let loaded = load_paths(&[dir.to_owned()]);
    if !loaded.errors.is_empty() {
        let mut lines: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        lines.push(format!("{} invalid: nothing was changed", dir.display()));
        return Err(lines);
    }
    if !dir.is_dir() {
        return Err(vec![format!("{} is not a directory", dir.display())]);
    }
    let manifest_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let observed = session
        .block_on(session.runtime.list())
        .map_err(|err| vec![crate::error_chain(&err)])?;
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
        .map_err(|err| vec![err.to_string()])
}
