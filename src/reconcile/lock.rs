use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lockfile::{locked_by_another, record_lock, FileLock};

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

/// Held by every running agent for its lifetime (a shared lock on `agent.lock` under
/// the root): without one, nothing restarts containers whose `restart` policy says
/// they should be, and `wharf status` says so.
pub struct AgentPresence {
    _file: std::fs::File,
}

impl AgentPresence {
    /// Announces a running agent until dropped; several agents may run on one root.
    pub fn announce(root: &Path) -> std::io::Result<Self> {
        let file = open_agent_lock(root)?;
        record_lock(&file, true, true)?;
        Ok(AgentPresence { _file: file })
    }

    /// Whether an agent runs on `root` now. Only looks: creates nothing, takes nothing.
    pub fn any(root: &Path) -> bool {
        std::fs::File::open(root.join(AGENT_LOCK))
            .and_then(|file| locked_by_another(&file))
            .unwrap_or(false)
    }
}

const AGENT_LOCK: &str = "agent.lock";

/// Opened for reading (a shared lock needs it), created if missing.
fn open_agent_lock(root: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(root.join(AGENT_LOCK))
}
