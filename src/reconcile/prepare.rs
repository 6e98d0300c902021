//! From what was loaded and observed to a plan ready to execute: the part of the
//! pipeline that `plan`, `apply`, `sync` and the agent share. Pure: the callers load
//! the manifests, list the containers and resolve the tags (each in its own way: the
//! agent keeps last-good files and backs off failing registries), then call
//! [`prepare`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::manifest::Service;
use crate::plan::{plan, HoldBack, Inputs, Plan, SavedPlan, PLAN_FORMAT_VERSION};
use crate::runtime::ObservedContainer;

/// A plan with what it was made from.
pub struct Planned {
    /// The manifest directory the services came from (canonical).
    pub manifest_dir: PathBuf,
    pub desired: Vec<Service>,
    /// The containers the plan was made from.
    pub observed: Vec<ObservedContainer>,
    pub plan: Plan,
    /// Identifies the inputs: a saved plan is applied only if they are unchanged.
    pub fingerprint: String,
}

impl Planned {
    /// The plan as `wharf plan -o` saves it, for `wharf apply FILE`.
    pub fn saved(&self, options: Options) -> SavedPlan {
        SavedPlan {
            format_version: PLAN_FORMAT_VERSION,
            dir: self.manifest_dir.clone(),
            prune: options.prune,
            allow_empty: options.allow_empty,
            fingerprint: self.fingerprint.clone(),
            steps: self.plan.steps.clone(),
        }
    }

    /// Whether `saved` is this plan, made from the same manifests and containers.
    pub fn is(&self, saved: &SavedPlan) -> bool {
        saved.fingerprint == self.fingerprint && saved.steps == self.plan.steps
    }
}

/// What the planner is told besides the manifests and the containers.
#[derive(Default)]
pub struct Facts {
    /// What `pull: always` tags resolve to now, by image reference.
    pub current_digests: BTreeMap<String, String>,
    /// Running containers whose health check fails, with why, by container id.
    pub unhealthy: BTreeMap<String, String>,
    /// Steps the agent's policies hold back.
    pub hold_back: HoldBack,
    /// The stored contents of the running containers' configs, for the plan's diffs.
    pub stored_contents: BTreeMap<String, Arc<Vec<u8>>>,
    /// Scheduled jobs whose time has come (the agent's).
    pub due_jobs: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Remove services that are no longer defined (only containers created from
    /// the same directory).
    pub prune: bool,
    /// Let `prune` remove everything when the directory holds no services.
    pub allow_empty: bool,
    /// Put running replicas out of rotation back once ready (see `Action::Join`).
    pub join_rotation: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{} holds no services, but {containers} containers run from it; refusing to prune them all (an unmounted or mistyped path?). Pass --allow-empty if that is what you want.", dir.display())]
    EmptyDirectory { dir: PathBuf, containers: usize },
}

/// Plans `desired` (from the directory `manifest_dir`) against `observed`; refuses
/// to prune everything an empty directory ran unless `allow_empty`.
pub fn prepare(
    desired: Vec<Service>,
    observed: Vec<ObservedContainer>,
    facts: &Facts,
    manifest_dir: &Path,
    options: Options,
) -> Result<Planned, PrepareError> {
    let managed_here = observed
        .iter()
        .filter(|c| c.manifest_dir.as_deref() == Some(manifest_dir))
        .count();
    if options.prune && desired.is_empty() && managed_here > 0 && !options.allow_empty {
        return Err(PrepareError::EmptyDirectory {
            dir: manifest_dir.to_owned(),
            containers: managed_here,
        });
    }
    let plan = plan(&Inputs {
        desired: &desired,
        observed: &observed,
        current_digests: &facts.current_digests,
        unhealthy: &facts.unhealthy,
        manifest_dir,
        prune: options.prune,
        hold_back: &facts.hold_back,
        join_rotation: options.join_rotation,
        stored_contents: &facts.stored_contents,
        due_jobs: &facts.due_jobs,
    });
    let fingerprint = fingerprint(&desired, &observed, &facts.current_digests);
    Ok(Planned {
        manifest_dir: manifest_dir.to_owned(),
        desired,
        observed,
        plan,
        fingerprint,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;
    use crate::plan::Action;
    use crate::runtime::ContainerStatus;

    const DIR: &str = "/srv/manifests";

    fn web() -> Service {
        let text = "apiVersion: wharf/v1\nkind: Service\nname: web\nimage: busybox\n";
        parse_manifest(&Path::new(DIR).join("web.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0)
    }

    /// A running replica of `web` created from `dir`.
    fn running_from(dir: &str) -> ObservedContainer {
        let service = web();
        ObservedContainer {
            id: "web-0-a".into(),
            service: "web".into(),
            slot: 0,
            status: ContainerStatus::Running,
            pid: Some(100),
            started_at: None,
            spec_hash: service.hash.to_string(),
            image: service.spec.image.clone(),
            image_digest: "sha256:a".into(),
            manifest: Some(Path::new(dir).join("web.yaml")),
            manifest_dir: Some(PathBuf::from(dir)),
            spec: Some(Box::new(service.spec)),
            unmonitored: false,
            address: None,
            in_rotation: false,
            files: Default::default(),
        }
    }

    fn prepare_empty(
        observed: Vec<ObservedContainer>,
        options: Options,
    ) -> Result<Planned, PrepareError> {
        prepare(
            Vec::new(),
            observed,
            &Facts::default(),
            Path::new(DIR),
            options,
        )
    }

    #[test]
    fn an_empty_directory_does_not_prune_what_ran_from_it_unless_allowed() {
        let prune = Options {
            prune: true,
            allow_empty: false,
            join_rotation: true,
        };
        let err = prepare_empty(vec![running_from(DIR)], prune)
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .contains("holds no services, but 1 containers run from it"),
            "{err}"
        );

        let allowed = Options {
            allow_empty: true,
            ..prune
        };
        let planned = prepare_empty(vec![running_from(DIR)], allowed).expect("allowed");
        assert_eq!(planned.plan.count(Action::Remove), 1);

        // Containers from another directory are not this directory's to protect.
        let planned = prepare_empty(vec![running_from("/elsewhere")], prune).expect("nothing here");
        assert!(planned.plan.is_empty());
    }

    #[test]
    fn the_fingerprint_changes_with_what_the_plan_was_made_from() {
        let options = Options::default();
        let of = |observed| {
            prepare(
                vec![web()],
                observed,
                &Facts::default(),
                Path::new(DIR),
                options,
            )
            .expect("planned")
            .fingerprint
        };
        let mut stopped = running_from(DIR);
        stopped.status = ContainerStatus::Exited {
            code: Some(1),
            at: None,
            oom_killed: false,
        };
        assert_eq!(of(vec![running_from(DIR)]), of(vec![running_from(DIR)]));
        assert_ne!(of(vec![running_from(DIR)]), of(vec![stopped]));
        assert_ne!(of(vec![running_from(DIR)]), of(Vec::new()));
    }
}
