//! Whoever can write a manifest the agent follows can run containers as root, so
//! the agent only follows directories and files that only root can change.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;

/// Ok when only root can change `path` (following symlinks): owned by root, not
/// writable by group (unless the group is root) or others. The error says why.
pub fn only_root_can_write(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|err| format!("cannot check {}: {err}", path.display()))?;
    let mode = meta.mode() & 0o7777;
    let why = if meta.uid() != 0 {
        format!("is owned by uid {}, not root", meta.uid())
    } else if mode & OTHER_WRITE != 0 {
        format!("is writable by every user (mode {mode:o})")
    } else if mode & GROUP_WRITE != 0 && meta.gid() != 0 {
        format!("is writable by group {} (mode {mode:o})", meta.gid())
    } else {
        return Ok(());
    };
    Err(format!(
        "{} {why}: anyone who can write there can run containers as root; \
         fix it (chown root:root, chmod go-w) or pass --allow-insecure-manifests",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writable_by_others_or_owned_by_a_user_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, "").expect("write");
        let chmod = |mode| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        chmod(0o644);
        // The tests run as root (they create containers).
        assert_eq!(only_root_can_write(&file), Ok(()));
        chmod(0o666);
        let refused = only_root_can_write(&file).expect_err("world-writable");
        assert!(
            refused.contains("is writable by every user (mode 666)"),
            "{refused}"
        );
        chmod(0o644);
        std::os::unix::fs::chown(&file, Some(1000), None).expect("chown");
        let refused = only_root_can_write(&file).expect_err("owned by a user");
        assert!(refused.contains("owned by uid 1000, not root"), "{refused}");
        assert!(refused.contains("--allow-insecure-manifests"), "{refused}");
    }
}
