use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lockfile::FileLock;

/// An exclusive lock under the root: one reconciler at a time.
pub struct ReconcileLock {
    _lock: FileLock,
}

impl ReconcileLock {
    /// Takes the lock, saying so while it waits; gives up after `timeout`.
    pub fn acquire(root: &Path, timeout: Option<Duration>) -> Result<Self, String> {
        let path: PathBuf = root.join("lock");
        std::fs::create_dir_all(root).map_err(|err| format!("{}: {err}", root.display()))?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match FileLock::try_acquire(&path) {
                Ok(Some(lock)) => return Ok(ReconcileLock { _lock: lock }),
                Err(err) => return Err(format!("{}: {err}", path.display())),
                Ok(None) if timeout.is_some_and(|t| started.elapsed() >= t) => {
                    return Err(format!(
                        "another wharf apply or agent holds {} and did not finish within the lock timeout",
                        path.display()
                    ))
                }
                Ok(None) => {
                    if !told {
                        eprintln!(
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
