//! `user:` resolved to ids inside the image: names are looked up in the container's
//! own /etc/passwd and /etc/group, read through pathrs so that a symlink planted in
//! the image (`/etc/passwd -> /host/etc/passwd`) resolves inside the image, never to
//! host files. The image decides what those files are, so they must be regular files
//! (a FIFO would block wharf forever, a device could be read without end) and are
//! read up to a bound.

use std::io::Read;
use std::path::Path;

use pathrs::flags::OpenFlags;
use pathrs::Root;

use super::config::ResolvedUser;
use super::error::UserError;
use crate::bounded_read::require_regular;

/// Resolves `user` (`uid[:gid]` or `name[:group]`, or None for root) in `rootfs`.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, UserError> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser { uid: 0, gid: 0 });
    };
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // A numeric uid:gid needs no lookup, so it works whatever the image's files are.
    let numeric = user_part.parse::<u32>().is_ok()
        && group_part.is_some_and(|group| group.parse::<u32>().is_ok());
    let passwd = if numeric {
        None
    } else {
        read_in_root(rootfs, "etc/passwd")?
    };
    let entry = passwd.as_deref().and_then(|text| {
        text.lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| {
                fields.len() >= 4
                    && (fields[0] == user_part
                        || user_part.parse::<u32>().ok() == fields[2].parse().ok())
            })
            .map(|fields| (fields[2].parse::<u32>(), fields[3].parse::<u32>()))
    });
    let (uid, passwd_gid) = match (user_part.parse::<u32>(), entry) {
        (Ok(uid), Some((_, Ok(gid)))) => (uid, gid),
        (Ok(uid), _) => (uid, 0),
        (Err(_), Some((Ok(uid), Ok(gid)))) => (uid, gid),
        (Err(_), _) => return Err(UserError::UnknownUser(user_part.to_owned())),
    };
    let gid = match group_part {
        None => passwd_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(rootfs, "etc/group")?
                .as_deref()
                .and_then(|text| {
                    text.lines()
                        .map(|line| line.split(':').collect::<Vec<_>>())
                        .find(|fields| fields.len() >= 3 && fields[0] == group)
                        .and_then(|fields| fields[2].parse().ok())
                })
                .ok_or_else(|| UserError::UnknownGroup(group.to_owned()))?,
        },
    };
    Ok(ResolvedUser { uid, gid })
}

/// Larger than any real /etc/passwd or /etc/group.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// The image's file at `path`, or None when the image has none.
fn read_in_root(rootfs: &Path, path: &'static str) -> Result<Option<String>, UserError> {
    let Ok(root) = Root::open(rootfs) else {
        return Ok(None);
    };
    let Ok(handle) = root.resolve(path) else {
        return Ok(None);
    };
    // The O_PATH handle is checked before anything opens the file for reading.
    let checked = handle
        .try_clone()
        .map(|copy| std::fs::File::from(std::os::fd::OwnedFd::from(copy)))
        .map_err(|error| UserError::Handle { path, error })?;
    let meta = checked
        .metadata()
        .map_err(|error| UserError::Inspect { path, error })?;
    require_regular(&meta).map_err(|error| UserError::NotRegular { path, error })?;
    let file = handle
        .reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_NOFOLLOW)
        .map_err(|error| UserError::Open { path, error })?;
    let mut bytes = Vec::new();
    file.take(MAX_ACCOUNT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| UserError::Read { path, error })?;
    if bytes.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(UserError::TooLarge {
            path,
            mib: MAX_ACCOUNT_FILE >> 20,
        });
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_resolve_in_the_images_files() {
        let rootfs = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(rootfs.path().join("etc")).expect("mkdir");
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/:/bin/false\n",
        )
        .expect("write");
        std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("write");
        let resolve = |user| resolve_user(rootfs.path(), user).map_err(|err| err.to_string());
        assert_eq!(resolve(None), Ok(ResolvedUser { uid: 0, gid: 0 }));
        assert_eq!(
            resolve(Some("web")),
            Ok(ResolvedUser {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            resolve(Some("1000")),
            Ok(ResolvedUser {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            resolve(Some("4242")),
            Ok(ResolvedUser { uid: 4242, gid: 0 })
        );
        assert_eq!(
            resolve(Some("web:staff")),
            Ok(ResolvedUser { uid: 1000, gid: 50 })
        );
        assert_eq!(resolve(Some("5:6")), Ok(ResolvedUser { uid: 5, gid: 6 }));
        assert!(resolve(Some("nobody"))
            .unwrap_err()
            .contains("not in the image's /etc/passwd"));
        assert!(resolve(Some("web:wheel"))
            .unwrap_err()
            .contains("not in the image's /etc/group"));
    }

    #[test]
    fn an_image_whose_passwd_is_not_a_regular_file_is_refused_at_once() {
        let rootfs = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(rootfs.path().join("etc")).expect("mkdir");
        // A FIFO nobody writes to: reading it would block forever.
        nix::unistd::mkfifo(
            &rootfs.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let err = resolve_user(rootfs.path(), Some("web"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("/etc/passwd in the image is not a regular file"),
            "{err}"
        );
        // What the error suggests works: a numeric uid:gid reads nothing.
        assert_eq!(
            resolve_user(rootfs.path(), Some("5:6")).ok(),
            Some(ResolvedUser { uid: 5, gid: 6 })
        );
    }

    #[test]
    fn a_passwd_that_never_ends_is_refused() {
        let rootfs = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(rootfs.path().join("etc")).expect("mkdir");
        // The character device 1:5 is /dev/zero: endless. (Tests run as root.)
        nix::sys::stat::mknod(
            &rootfs.path().join("etc/passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            nix::sys::stat::makedev(1, 5),
        )
        .expect("mknod");
        let err = resolve_user(rootfs.path(), Some("web"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // A huge regular file is read up to the bound only.
        std::fs::remove_file(rootfs.path().join("etc/passwd")).expect("rm");
        let file = std::fs::File::create(rootfs.path().join("etc/passwd")).expect("create");
        file.set_len(1 << 30).expect("sparse 1 GiB");
        let err = resolve_user(rootfs.path(), Some("web"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("larger than 4 MiB"), "{err}");
    }
}
