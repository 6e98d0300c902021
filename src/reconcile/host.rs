//! What every reconcile needs of the host, opened once per process: the state
//! directory, the container runtime, the image store and the registry clients.

use std::path::{Path, PathBuf};

use super::Executor;
use crate::hostroot::{RootError, Tightened};
use crate::image::{ImageStore, Registries, StoreError};
use crate::runtime::{LibcontainerRuntime, RuntimeError};

pub struct Host {
    pub root: PathBuf,
    pub runtime: LibcontainerRuntime,
    pub images: ImageStore,
    pub registries: Registries,
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

impl Host {
    /// Opens (creating, root-only) the state directory `root` and the stores in it.
    /// `wharf` is this program, run beside containers as their log shim and for
    /// credential lookups. Returns what was tightened, for the caller to say.
    pub fn open(
        root: &Path,
        insecure_registries: Vec<String>,
        wharf: &Path,
    ) -> Result<(Host, Option<Tightened>), HostError> {
        let tightened = crate::hostroot::prepare(root)?;
        let host = Host {
            root: root.to_owned(),
            images: ImageStore::open(root)?,
            runtime: LibcontainerRuntime::open(root, wharf)?,
            registries: Registries::new(insecure_registries).with_login_process(wharf),
        };
        Ok((host, tightened))
    }

    /// Runs plans on this host: the one way to build an executor.
    pub fn executor(&self) -> Executor<'_, LibcontainerRuntime> {
        Executor {
            runtime: &self.runtime,
            images: &self.images,
            registries: &self.registries,
        }
    }
}
