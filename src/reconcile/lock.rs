use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

/// An exclusive lock under the root: one reconciler at a time.
pub struct ReconcileLock {
    _file: File,
}

impl ReconcileLock {
    /// Takes the lock, saying so while it waits; gives up after `timeout`.
    pub fn acquire(root: &Path, timeout: Option<Duration>) -> Result<Self, String> {
        let path: PathBuf = root.join("lock");
        std::fs::create_dir_all(root).map_err(|err| format!("{}: {err}", root.display()))?;
        let file = File::create(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(ReconcileLock { _file: file }),
                Err(_) if timeout.is_some_and(|t| started.elapsed() >= t) => {
                    return Err(format!(
                        "another wharf apply or agent holds {} and did not finish within the lock timeout",
                        path.display()
                    ))
                }
                Err(_) => {
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
