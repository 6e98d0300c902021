//! wharf's state directory (`--root`) and the process-wide rules for what wharf
//! writes there: root only.
//!
//! Everything under the root is 0700 (directories) and 0600 (files), as podman's
//! storage is: container configs hold environment values, logs hold whatever a
//! service prints, and unpacked layers hold the images' setuid files and world-
//! writable directories. No container needs to traverse a host path below the root
//! once it runs: its init mounts the root filesystem and volumes while it still has
//! root's capabilities, then pivots into the rootfs, so 0711 is nowhere needed.
//! The few files that containers read through a bind mount (/etc/hosts and
//! friends) and the directories that become a container's `/` or a volume's root
//! are given their modes explicitly where they are made.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the root directory and of every directory wharf makes below it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("run wharf as root: it runs containers and keeps its state in {0}")]
    NotRoot(PathBuf),
    #[error("cannot prepare the state directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the state directory {path} is owned by uid {uid}, who could change wharf's state; `chown root {path}` or choose another --root")]
    NotOwnedByRoot { path: PathBuf, uid: u32 },
    #[error("the state directory {0} is not a directory")]
    NotADirectory(PathBuf),
}

/// What [`prepare`] had to change: an existing root that other users could read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    pub old_mode: u32,
}

impl std::fmt::Display for Tightened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was {:04o}, open to other users; tightened to {:04o}",
            self.path.display(),
            self.old_mode,
            PRIVATE_DIR_MODE
        )
    }
}

/// Makes files and directories the process creates root-only unless a mode is given
/// explicitly (and checked) where they are made. Called once at start.
pub fn set_private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Whether the process runs as root.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Creates the state directory 0700, or tightens an existing one that other users
/// can read or enter. Refuses a root owned by another user: they could swap what is
/// inside it.
pub fn prepare(root: &Path) -> Result<Option<Tightened>, RootError> {
    if !running_as_root() {
        return Err(RootError::NotRoot(root.to_owned()));
    }
    let io_error = |source| RootError::Io {
        path: root.to_owned(),
        source,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(root)
    {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io_error(err)),
    }
    let meta = fs::metadata(root).map_err(io_error)?;
    if !meta.is_dir() {
        return Err(RootError::NotADirectory(root.to_owned()));
    }
    if meta.uid() != 0 {
        return Err(RootError::NotOwnedByRoot {
            path: root.to_owned(),
            uid: meta.uid(),
        });
    }
    let old_mode = meta.mode() & 0o7777;
    if old_mode == PRIVATE_DIR_MODE {
        return Ok(None);
    }
    fs::set_permissions(root, fs::Permissions::from_mode(PRIVATE_DIR_MODE)).map_err(io_error)?;
    // A directory that was just created has the umask's mode already: only an
    // existing, looser root is worth a line.
    Ok((old_mode & 0o077 != 0).then(|| Tightened {
        path: root.to_owned(),
        old_mode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_root_is_private_and_silent() {
        let parent = tempfile::tempdir().expect("temp dir");
        let root = parent.path().join("wharf");
        assert_eq!(prepare(&root).expect("prepare"), None);
        let mode = fs::metadata(&root).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn an_open_root_is_tightened_and_reported() {
        let root = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let tightened = prepare(root.path()).expect("prepare").expect("a change");
        assert_eq!(tightened.old_mode, 0o755);
        assert!(tightened.to_string().contains("was 0755"), "{tightened}");
        let mode = fs::metadata(root.path()).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert_eq!(prepare(root.path()).expect("again"), None, "said once");
    }

    #[test]
    fn a_root_owned_by_another_user_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::chown(root.path(), Some(65534), Some(65534)).expect("chown");
        let err = prepare(root.path()).expect_err("refused");
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }
}
