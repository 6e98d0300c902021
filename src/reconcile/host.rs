//! What every reconcile needs of the host, opened once per process: the state
//! directory, the container runtime, the image store and the registry clients.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    current_digests, prepare, Executor, Facts, Options, Parallelism, Planned, PrepareError,
};
use crate::files::{ContentStore, SecretStore};
use crate::hostroot::{RootError, Tightened};
use crate::image::{ImageStore, Registries, StoreError};
use crate::manifest::{load_paths, Diagnostic, Service};
use crate::runtime::{LibcontainerRuntime, ObservedContainer, Runtime, RuntimeError};

pub struct Host {
    pub root: PathBuf,
    pub runtime: LibcontainerRuntime,
    pub images: ImageStore,
    pub registries: Registries,
    /// How many containers are stopped, removed and built at once.
    pub parallel: Parallelism,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Images(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Why no plan could be made for a manifest directory; nothing was touched.
#[derive(Debug, thiserror::Error)]
pub enum PlanDirError {
    /// Every error of every manifest, as `validate` reports them.
    #[error("{} invalid: nothing was changed", dir.display())]
    Invalid {
        dir: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot list containers")]
    List(#[source] RuntimeError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

impl Host {
    /// Opens (creating, root-only) the state directory `root` and the stores in it.
    /// `wharf` is this program, run for credential lookups; `wharf-monitor`, installed
    /// beside it, runs beside each container. `parallel` containers are stopped at
    /// once (None: as suits the machine). Returns what was tightened, for the caller
    /// to say.
    pub fn open(
        root: &Path,
        insecure_registries: Vec<String>,
        wharf: &Path,
        parallel: Option<usize>,
    ) -> Result<(Host, Option<Tightened>), HostError> {
        let tightened = crate::hostroot::prepare(root)?;
        let host = Host {
            root: root.to_owned(),
            images: ImageStore::open(root)?,
            runtime: LibcontainerRuntime::open(root, &wharf.with_file_name("wharf-monitor"))?,
            registries: Registries::new(insecure_registries).with_login_process(wharf),
            parallel: Parallelism::new(parallel),
        };
        Ok((host, tightened))
    }

    /// Loads the manifest directory `dir`, observes the host, resolves `pull: always`
    /// tags and prepares the plan: the path of plan, apply and sync. A tag that cannot
    /// be checked is returned as a warning (no replacement on that ground).
    pub async fn plan_dir(
        &self,
        dir: &Path,
        options: Options,
    ) -> Result<(Planned, Vec<String>), PlanDirError> {
        let mut loaded = load_paths(&[dir.to_owned()]);
        if loaded.errors.is_empty() {
            loaded.errors = self.resolve_secrets(&mut loaded.services);
        }
        if !loaded.errors.is_empty() {
            return Err(PlanDirError::Invalid {
                dir: dir.to_owned(),
                diagnostics: loaded.errors,
            });
        }
        if !dir.is_dir() {
            return Err(PlanDirError::NotADirectory(dir.to_owned()));
        }
        let manifest_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        let observed = self.runtime.list().await.map_err(PlanDirError::List)?;
        let warnings = std::cell::RefCell::new(Vec::new());
        let facts = Facts {
            current_digests: current_digests(&self.registries, &loaded.services, |warning| {
                warnings.borrow_mut().push(warning)
            })
            .await,
            stored_contents: stored_contents(&self.root, &observed),
            ..Facts::default()
        };
        let planned = prepare(loaded.services, observed, &facts, &manifest_dir, options)?;
        Ok((planned, warnings.into_inner()))
    }

    /// Fills in the versions of the secrets `services` use (see
    /// `SecretStore::resolve`); one error per secret that is not set.
    pub fn resolve_secrets(&self, services: &mut [Service]) -> Vec<Diagnostic> {
        match SecretStore::open(&self.root) {
            Ok(store) => store.resolve(services),
            Err(err) => vec![Diagnostic {
                file: self.root.clone(),
                mark: None,
                field: String::new(),
                message: format!("cannot open the secrets: {}", crate::error_chain(&err)),
            }],
        }
    }

    /// Runs plans on this host: the one way to build an executor.
    pub fn executor(&self) -> Executor<'_, LibcontainerRuntime> {
        Executor {
            runtime: &self.runtime,
            wait_for_jobs: true,
            root: &self.root,
            images: &self.images,
            registries: &self.registries,
            parallel: self.parallel,
        }
    }
}

/// The stored contents of the configs of `observed`, by digest (for plan diffs).
fn stored_contents(root: &Path, observed: &[ObservedContainer]) -> BTreeMap<String, Arc<Vec<u8>>> {
    let Ok(store) = ContentStore::open(root) else {
        return BTreeMap::new();
    };
    let digests: BTreeSet<&String> = observed.iter().flat_map(|c| &c.files.configs).collect();
    digests
        .into_iter()
        .filter_map(|digest| Some((digest.clone(), Arc::new(store.get(digest).ok()?))))
        .collect()
}
