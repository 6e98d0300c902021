//! What `wharf plan` and `wharf apply` share: loading the directory, observing the
//! host, resolving moved tags, planning, and the one-reconciler-at-a-time lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Session;
use crate::manifest::{load_paths, Service};
use crate::plan::{plan, Inputs, Plan, Step};
use crate::reconcile::current_digests;
use crate::runtime::{ObservedContainer, Runtime};

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

pub struct Planned {
    pub desired: Vec<Service>,
    /// The containers the plan was made from.
    pub observed: Vec<ObservedContainer>,
    pub plan: Plan,
    /// Identifies the inputs: a saved plan is applied only if they are unchanged.
    pub fingerprint: String,
}

/// A plan saved by `wharf plan -o FILE`, applied by `wharf apply FILE`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: u32,
    pub dir: PathBuf,
    pub prune: bool,
    pub allow_empty: bool,
    pub fingerprint: String,
    pub steps: Vec<Step>,
}

/// A digest of what the plan was made from: each service's spec hash and replica
/// count, each container's id, spec hash, image digest and status.
fn fingerprint(
    desired: &[Service],
    observed: &[ObservedContainer],
    digests: &BTreeMap<String, String>,
) -> String {
    let mut hasher = Sha256::new();
    let mut services: Vec<String> = desired
        .iter()
        .map(|s| format!("{} {} {}\n", s.name(), s.hash, s.spec.replicas))
        .collect();
    services.sort();
    let mut containers: Vec<String> = observed
        .iter()
        .map(|c| format!("{} {} {} {}\n", c.id, c.spec_hash, c.image_digest, c.status))
        .collect();
    containers.sort();
    for line in services.iter().chain(&containers) {
        hasher.update(line.as_bytes());
    }
    for (image, digest) in digests {
        hasher.update(format!("{image} {digest}\n").as_bytes());
    }
    format!("{:x}", hasher.finalize())
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
    let managed_here = observed
        .iter()
        .filter(|c| c.manifest_dir.as_deref() == Some(manifest_dir.as_path()))
        .count();
    if prune && loaded.services.is_empty() && managed_here > 0 && !allow_empty {
        return Err(vec![format!(
            "{} holds no services, but {managed_here} containers run from it; refusing to prune them all (an unmounted or mistyped path?). Pass --allow-empty if that is what you want.",
            dir.display()
        )]);
    }
    let current_digests = session.block_on(current_digests(
        &session.registries,
        &loaded.services,
        |warning| eprintln!("warning: {warning}"),
    ));
    let plan = plan(&Inputs {
        desired: &loaded.services,
        observed: &observed,
        current_digests: &current_digests,
        unhealthy: &BTreeMap::new(),
        manifest_dir: &manifest_dir,
        prune,
        hold_back: &Default::default(),
    });
    let fingerprint = fingerprint(&loaded.services, &observed, &current_digests);
    Ok(Planned {
        desired: loaded.services,
        observed,
        plan,
        fingerprint,
    })
}
