use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lockfile::FileLock;

/// Why the reconcile lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The root or the lock file could not be created or locked.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another reconciler held the lock for longer than the timeout.
    #[error(
        "another wharf apply or agent holds {} and did not finish within the lock timeout",
        path.display()
    )]
    TimedOut { path: PathBuf, waited: Duration },
}

/// An exclusive lock under the root: one reconciler at a time.
pub struct ReconcileLock {
    _lock: FileLock,
}

impl ReconcileLock {
    /// Takes the lock, saying so while it waits; gives up after `timeout`.
    pub fn acquire(root: &Path, timeout: Option<Duration>) -> Result<Self, LockError> {
        let path: PathBuf = root.join("lock");
        std::fs::create_dir_all(root).map_err(|source| LockError::Io {
            path: root.to_owned(),
            source,
        })?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match FileLock::try_acquire(&path) {
                Ok(Some(lock)) => return Ok(ReconcileLock { _lock: lock }),
                Err(source) => return Err(LockError::Io { path, source }),
                Ok(None) if timeout.is_some_and(|t| started.elapsed() >= t) => {
                    return Err(LockError::TimedOut {
                        path,
                        waited: started.elapsed(),
                    })
                }
                Ok(None) => {
                    if !told {
                        tracing::info!(
                            "waiting for another wharf apply or agent to finish (lock {})...",
                            path.display()
                        );
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
