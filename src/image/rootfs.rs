//! A container's root filesystem: an overlay of the image's layers (read-only,
//! shared by every container of the image) under a per-container upper and work dir.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

/// The directories of one container's root filesystem, under its container directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsPaths {
    /// Where the merged view is mounted.
    pub rootfs: PathBuf,
    /// Where the container's writes land.
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl RootfsPaths {
    pub fn under(container_dir: &Path) -> Self {
        RootfsPaths {
            rootfs: container_dir.join("rootfs"),
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
        }
    }
}

/// Mounts `layers` (bottom layer first) as an overlay at `<container_dir>/rootfs`.
pub fn mount_rootfs(layers: &[PathBuf], container_dir: &Path) -> io::Result<RootfsPaths> {
    let paths = RootfsPaths::under(container_dir);
    for dir in [&paths.rootfs, &paths.upper, &paths.work] {
        fs::create_dir_all(dir)?;
    }
    // overlayfs gives the merged root the upper dir's owner and mode: the container's
    // `/` must be enterable by every user in it, whatever wharf's umask made it.
    fs::set_permissions(&paths.upper, fs::Permissions::from_mode(0o755))?;
    if layers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an image needs at least one layer",
        ));
    }
    // overlayfs lists the topmost lower layer first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|layer| escape_option(&layer.to_string_lossy()))
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape_option(&paths.upper.to_string_lossy()),
        escape_option(&paths.work.to_string_lossy())
    );
    let options = std::ffi::CString::new(options).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a layer path contains a NUL byte",
        )
    })?;
    // nosuid,nodev on the host path; inside the container nothing changes: it runs
    // with no_new_privs (setuid bits grant nothing) and gets /dev from a tmpfs.
    mount(
        "overlay",
        &paths.rootfs,
        "overlay",
        MountFlags::NOSUID | MountFlags::NODEV,
        options.as_c_str(),
    )?;
    Ok(paths)
}

/// Unmounts the overlay (if mounted) and removes the rootfs, upper and work dirs.
pub fn unmount_rootfs(container_dir: &Path) -> io::Result<()> {
    let paths = RootfsPaths::under(container_dir);
    detach(&paths.rootfs)?;
    for dir in [&paths.rootfs, &paths.upper, &paths.work] {
        match fs::remove_dir_all(dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

/// Detaches the mount at `path` from this mount namespace, if there is one.
pub fn detach(path: &Path) -> io::Result<()> {
    match unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// overlayfs separates options with `,` and lower dirs with `:`.
fn escape_option(path: &str) -> String {
    path.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}
