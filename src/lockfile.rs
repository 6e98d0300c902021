//! Exclusive locks on files under the root, between processes and between threads.
//!
//! They are POSIX record locks (`fcntl(F_SETLK)`), not `flock`: a container's init
//! process, forked by libcontainer, keeps every descriptor of wharf until it execs
//! the container's command, and an inherited `flock` would stay held for as long as
//! that process waits to be started — forever when wharf is killed in between.
//! Record locks are not inherited. They do not exclude threads of one process, so a
//! process-wide set of held paths does that.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static RELEASED: Condvar = Condvar::new();

/// Held until dropped.
pub struct FileLock {
    path: PathBuf,
    // Closing it releases the record lock; only this value opens the file.
    _file: File,
}

impl FileLock {
    /// Waits for the lock on `path` (created if missing).
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        Self::take(path, true)?.ok_or_else(|| io::Error::other("the lock was not taken"))
    }

    /// Takes the lock on `path` if it is free now.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        Self::take(path, false)
    }

    fn take(path: &Path, wait: bool) -> io::Result<Option<FileLock>> {
        {
            let mut held = lock_held();
            while held.get_or_insert_with(HashSet::new).contains(path) {
                if !wait {
                    return Ok(None);
                }
                held = RELEASED
                    .wait(held)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            held.get_or_insert_with(HashSet::new)
                .insert(path.to_owned());
        }
        let lock = Self::lock_file(path, wait);
        if !matches!(lock, Ok(Some(_))) {
            release(path);
        }
        lock
    }

    fn lock_file(path: &Path, wait: bool) -> io::Result<Option<FileLock>> {
        let file = File::create(path)?;
        Ok(record_lock(&file, false, wait)?.then(|| FileLock {
            path: path.to_owned(),
            _file: file,
        }))
    }
}

/// Takes a POSIX record lock on the whole of `file`, shared (a read lock) or
/// exclusive; false when `wait` is false and another process holds a conflicting one.
pub fn record_lock(file: &File, shared: bool, wait: bool) -> io::Result<bool> {
    let kind = if shared { libc::F_RDLCK } else { libc::F_WRLCK };
    let request = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        let arg = match wait {
            true => FcntlArg::F_SETLKW(&request),
            false => FcntlArg::F_SETLK(&request),
        };
        match fcntl(file.as_raw_fd(), arg) {
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) if !wait => {
                return Ok(false)
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Whether some process holds a lock on `file` that an exclusive one would conflict
/// with. Nothing is taken (F_GETLK), so the file may be open read-only, and closing it
/// drops no lock of this process.
pub fn locked_by_another(file: &File) -> io::Result<bool> {
    let mut request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_GETLK(&mut request))?;
    Ok(request.l_type != libc::F_UNLCK as libc::c_short)
}

impl Drop for FileLock {
    fn drop(&mut self) {
        release(&self.path);
    }
}

fn lock_held() -> std::sync::MutexGuard<'static, Option<HashSet<PathBuf>>> {
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn release(path: &Path) {
    if let Some(held) = lock_held().as_mut() {
        held.remove(path);
    }
    RELEASED.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_within_a_process() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lock");
        let first = FileLock::acquire(&path).expect("lock");
        assert!(FileLock::try_acquire(&path).expect("try").is_none());
        drop(first);
        assert!(FileLock::try_acquire(&path).expect("try").is_some());
    }

    #[test]
    fn a_forked_child_that_never_execs_does_not_keep_the_lock() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lock");
        let lock = FileLock::acquire(&path).expect("lock");
        // SAFETY: the child only sleeps until it is killed, as a container's init
        // waits to be started.
        let sleeper = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => loop {
                nix::unistd::sleep(60);
            },
            ForkResult::Parent { child } => child,
        };
        drop(lock);
        // SAFETY: the child tries the lock and exits with the answer.
        let checker = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let free = matches!(FileLock::try_acquire(&path), Ok(Some(_)));
                // SAFETY: ends the forked child without running the parent's exit handlers.
                unsafe { nix::libc::_exit(if free { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => child,
        };
        let checked = waitpid(checker, None).expect("wait");
        let _ = nix::sys::signal::kill(sleeper, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(sleeper, None);
        assert_eq!(
            checked,
            WaitStatus::Exited(checker, 0),
            "another process can lock"
        );
    }
}
