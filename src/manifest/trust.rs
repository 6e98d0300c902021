//! Whoever can write a manifest the agent follows can run containers as root, so
//! the agent only follows directories and files that only root can change.
//!
//! That takes more than the file and its directory: whoever can rename an entry of
//! any directory on the way from `/` can put a tree of their own in its place. So
//! every directory a lookup of the path goes through is checked, including those
//! each symlink on the way leads through (a ConfigMap mount is made of symlinks),
//! and then what the path finally names.
//!
//! Sticky directories: a root-owned directory with the sticky bit, such as `/tmp`
//! (mode 1777), lets every user create entries but only root rename or remove
//! root's own. A root-owned entry there is as safe as in a directory only root can
//! write, so it is accepted (Docker and systemd do the same); an entry another user
//! owns there is refused.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;
/// Symlinks followed in one path at most, as the kernel's own lookup (ELOOP).
const MAX_SYMLINKS: usize = 40;

/// Ok when only root can change what `path` names (following symlinks) or any
/// directory on the way to it: see the module docs. The error names the path at
/// fault, why, and what to do.
pub fn only_root_can_write(path: &Path) -> Result<(), String> {
    let absolute = std::path::absolute(path).map_err(|err| cannot_check(path, &err))?;
    // Names still to look up, the next one last, so that a symlink's target can be
    // put in front of what remains.
    let mut names = names_reversed(&absolute);
    // Always a path without symlinks: where the lookup has got to.
    let mut dir = PathBuf::from("/");
    let mut symlinks = 0;
    while let Some(name) = names.pop() {
        if name.as_os_str() == ".." {
            dir.pop();
            continue;
        }
        let entry = dir.join(&name);
        let entry_meta = fs::symlink_metadata(&entry).map_err(|err| cannot_check(&entry, &err))?;
        let dir_meta = fs::metadata(&dir).map_err(|err| cannot_check(&dir, &err))?;
        if let Some(writer) = Writer::of(&dir, &dir_meta) {
            // In a root-owned sticky directory only the entry's owner (or root) can
            // rename or remove it.
            let sticky = dir_meta.uid() == 0 && dir_meta.mode() & STICKY != 0;
            if !sticky {
                return Err(refusal(&absolute, &dir, true, &writer));
            }
            if entry_meta.uid() != 0 {
                let owner = Writer::Owner(entry_meta.uid());
                return Err(refusal(&absolute, &entry, true, &owner));
            }
        }
        if entry_meta.file_type().is_symlink() {
            symlinks += 1;
            if symlinks > MAX_SYMLINKS {
                return Err(format!(
                    "cannot check {}: more than {MAX_SYMLINKS} symbolic links on the way",
                    path.display()
                ));
            }
            let target = fs::read_link(&entry).map_err(|err| cannot_check(&entry, &err))?;
            if target.is_absolute() {
                dir = PathBuf::from("/");
            }
            names.extend(names_reversed(&target));
        } else {
            dir = entry;
        }
    }
    // Every name is looked up: `dir` is what the path names.
    let meta = fs::metadata(&dir).map_err(|err| cannot_check(&dir, &err))?;
    match Writer::of(&dir, &meta) {
        Some(writer) => Err(refusal(&absolute, &dir, false, &writer)),
        None => Ok(()),
    }
}

/// The names of `path` (`..` included, `.` left out), the last one first.
fn names_reversed(path: &Path) -> Vec<OsString> {
    path.components()
        .rev()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Who besides root can change a file or directory.
enum Writer {
    Owner(u32),
    Everyone {
        mode: u32,
    },
    Group {
        gid: u32,
        mode: u32,
    },
    /// A POSIX ACL entry that lets a user (or group) other than root write.
    Acl {
        id: u32,
        group: bool,
    },
}

/// `system.posix_acl_access` in the kernel's format: a 4-byte version, then 8-byte
/// entries (tag: u16, permissions: u16, id: u32), little-endian.
const ACL_XATTR: &str = "system.posix_acl_access";
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
const ACL_WRITE: u16 = 0x02;

/// The first named user or group other than root that an ACL lets write. (The
/// group bits of the mode then show the ACL's mask, which the mode check sees too.)
fn acl_writer(path: &Path) -> Option<Writer> {
    let mut buffer = [0u8; 4096];
    let len = rustix::fs::getxattr(path, ACL_XATTR, &mut buffer[..]).ok()?;
    buffer.get(4..len)?.chunks_exact(8).find_map(|entry| {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let perm = u16::from_le_bytes([entry[2], entry[3]]);
        let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let named = tag == ACL_USER || tag == ACL_GROUP;
        (named && perm & ACL_WRITE != 0 && id != 0).then_some(Writer::Acl {
            id,
            group: tag == ACL_GROUP,
        })
    })
}

impl Writer {
    fn of(path: &Path, meta: &Metadata) -> Option<Writer> {
        let mode = meta.mode() & 0o7777;
        if let Some(acl) = acl_writer(path) {
            Some(acl)
        } else if meta.uid() != 0 {
            Some(Writer::Owner(meta.uid()))
        } else if mode & OTHER_WRITE != 0 {
            Some(Writer::Everyone { mode })
        } else if mode & GROUP_WRITE != 0 && meta.gid() != 0 {
            Some(Writer::Group {
                gid: meta.gid(),
                mode,
            })
        } else {
            None
        }
    }

    fn why(&self) -> String {
        match self {
            Writer::Owner(uid) => format!("is owned by uid {uid}, not root"),
            Writer::Everyone { mode } => format!("is writable by every user (mode {mode:o})"),
            Writer::Group { gid, mode } => format!("is writable by group {gid} (mode {mode:o})"),
            Writer::Acl { id, group } => format!(
                "is writable by {} {id} through an access control list",
                if *group { "group" } else { "uid" }
            ),
        }
    }

    fn fix(&self, at: &Path) -> String {
        match self {
            Writer::Owner(_) => format!("chown -h root:root {}", at.display()),
            Writer::Everyone { .. } | Writer::Group { .. } => {
                format!("chmod go-w {}", at.display())
            }
            Writer::Acl { .. } => format!("setfacl -b {}", at.display()),
        }
    }
}

/// Why `path` is refused: `at` (`path` itself, a directory or symlink on the way
/// to what it names, or what it leads to) can be changed by `writer`.
fn refusal(path: &Path, at: &Path, on_the_way: bool, writer: &Writer) -> String {
    let role = if at == path {
        String::new()
    } else if on_the_way {
        format!(", on the way to {},", path.display())
    } else {
        format!(" (where {} leads)", path.display())
    };
    format!(
        "{}{role} {}: whoever can change it can run containers as root; \
         fix it ({}) or pass --allow-insecure-manifests",
        at.display(),
        writer.why(),
        writer.fix(at)
    )
}

fn cannot_check(path: &Path, err: &io::Error) -> String {
    format!("cannot check {}: {err}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink, PermissionsExt};

    /// The tests run as root (they create containers); their temporary directories
    /// are root's, inside the root-owned sticky /tmp.
    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn writable_by_others_or_owned_by_a_user_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("web.yaml");
        fs::write(&file, "").expect("write");
        chmod(&file, 0o644);
        assert_eq!(only_root_can_write(&file), Ok(()));
        chmod(&file, 0o666);
        let refused = only_root_can_write(&file).expect_err("world-writable");
        assert!(
            refused.contains("is writable by every user (mode 666)"),
            "{refused}"
        );
        chmod(&file, 0o644);
        chown(&file, Some(1000), None).expect("chown");
        let refused = only_root_can_write(&file).expect_err("owned by a user");
        assert!(refused.contains("owned by uid 1000, not root"), "{refused}");
        assert!(refused.contains("--allow-insecure-manifests"), "{refused}");
    }

    #[test]
    fn an_access_control_list_that_lets_a_user_write_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("web.yaml");
        fs::write(&file, "").expect("write");
        chmod(&file, 0o644);
        // What `setfacl -m u:nobody:rw web.yaml` writes: owner rw, user 65534 rw,
        // group r, mask rw, other r. The mode then shows 664 with group root.
        let entry = |tag: u16, perm: u16, id: u32| {
            [
                &tag.to_le_bytes()[..],
                &perm.to_le_bytes(),
                &id.to_le_bytes(),
            ]
            .concat()
        };
        let acl = [
            &2u32.to_le_bytes()[..],
            &entry(0x01, 6, u32::MAX),
            &entry(0x02, 6, 65534),
            &entry(0x04, 4, u32::MAX),
            &entry(0x10, 6, u32::MAX),
            &entry(0x20, 4, u32::MAX),
        ]
        .concat();
        rustix::fs::setxattr(&file, ACL_XATTR, &acl, rustix::fs::XattrFlags::empty())
            .expect("set an ACL (the file system supports them)");
        let refused = only_root_can_write(&file).expect_err("nobody may write");
        assert!(
            refused.contains("writable by uid 65534 through an access control list"),
            "{refused}"
        );
        assert!(refused.contains("setfacl -b"), "{refused}");
    }

    #[test]
    fn every_directory_on_the_way_must_be_roots_alone() {
        let base = tempfile::tempdir().expect("temp dir");
        let open = base.path().join("open");
        let manifests = open.join("manifests");
        fs::create_dir_all(&manifests).expect("mkdir");
        let file = manifests.join("web.yaml");
        fs::write(&file, "").expect("write");
        assert_eq!(only_root_can_write(&file), Ok(()));

        // Root's directory and file, inside a directory every user can write: anyone
        // can rename `manifests` away and put their own in its place.
        chmod(&open, 0o777);
        for path in [&manifests, &file] {
            let refused = only_root_can_write(path).expect_err("parent others can write");
            assert_eq!(
                refused,
                format!(
                    "{}, on the way to {}, is writable by every user (mode 777): whoever can \
                     change it can run containers as root; fix it (chmod go-w {}) or pass \
                     --allow-insecure-manifests",
                    open.display(),
                    path.display(),
                    open.display()
                )
            );
        }

        chmod(&open, 0o755);
        chown(&open, Some(65534), None).expect("chown");
        let refused = only_root_can_write(&file).expect_err("parent another user owns");
        assert!(
            refused.starts_with(&format!(
                "{}, on the way to {}, is owned by uid 65534, not root",
                open.display(),
                file.display()
            )),
            "{refused}"
        );
        assert!(
            refused.contains(&format!("chown -h root:root {}", open.display())),
            "{refused}"
        );
    }

    #[test]
    fn roots_entries_of_a_sticky_directory_like_tmp_are_accepted() {
        let base = tempfile::tempdir().expect("temp dir");
        let shared = base.path().join("shared");
        let manifests = shared.join("manifests");
        fs::create_dir_all(&manifests).expect("mkdir");
        // Like /tmp: every user can create entries, but not rename root's.
        chmod(&shared, 0o1777);
        assert_eq!(only_root_can_write(&manifests), Ok(()));

        // Another user's entry there is theirs to replace.
        chown(&manifests, Some(65534), None).expect("chown");
        let refused = only_root_can_write(&manifests).expect_err("a user's entry");
        assert!(
            refused.starts_with(&format!(
                "{} is owned by uid 65534, not root",
                manifests.display()
            )),
            "{refused}"
        );

        // The sticky directory itself must not be the manifests directory.
        let refused = only_root_can_write(&shared).expect_err("world-writable itself");
        assert!(
            refused.contains("is writable by every user (mode 1777)"),
            "{refused}"
        );
    }

    #[test]
    fn symlinks_are_checked_where_they_lead() {
        let base = tempfile::tempdir().expect("temp dir");
        let safe = base.path().join("safe");
        let open = base.path().join("open");
        fs::create_dir(&safe).expect("mkdir");
        fs::create_dir(&open).expect("mkdir");
        chmod(&open, 0o777);
        fs::write(open.join("web.yaml"), "").expect("write");
        fs::write(safe.join("api.yaml"), "").expect("write");

        // A root-owned file, reached through a directory every user can write.
        let link = safe.join("web.yaml");
        symlink("../open/web.yaml", &link).expect("symlink");
        let refused = only_root_can_write(&link).expect_err("leads through open");
        assert!(
            refused.starts_with(&format!(
                "{}, on the way to {}, is writable by every user (mode 777)",
                open.display(),
                link.display()
            )),
            "{refused}"
        );

        // A ConfigMap mount: `..data` leads to the current version's directory.
        fs::create_dir(safe.join("..v1")).expect("mkdir");
        fs::write(safe.join("..v1/db.yaml"), "").expect("write");
        symlink("..v1", safe.join("..data")).expect("symlink");
        symlink("..data/db.yaml", safe.join("db.yaml")).expect("symlink");
        assert_eq!(only_root_can_write(&safe.join("db.yaml")), Ok(()));

        // What a link leads to is named when it is the culprit.
        chmod(&safe.join("..v1/db.yaml"), 0o666);
        let refused = only_root_can_write(&safe.join("db.yaml")).expect_err("target writable");
        assert!(
            refused.starts_with(&format!(
                "{} (where {} leads) is writable by every user (mode 666)",
                safe.join("..v1/db.yaml").display(),
                safe.join("db.yaml").display()
            )),
            "{refused}"
        );

        // A loop of links is refused, not followed forever.
        symlink("loop-b.yaml", safe.join("loop-a.yaml")).expect("symlink");
        symlink("loop-a.yaml", safe.join("loop-b.yaml")).expect("symlink");
        let refused = only_root_can_write(&safe.join("loop-a.yaml")).expect_err("a loop");
        assert!(refused.contains("symbolic links"), "{refused}");
    }
}
