//! `user:` resolved to ids inside the image: names are looked up in the container's
//! own /etc/passwd and /etc/group, read through pathrs so that a symlink planted in
//! the image (`/etc/passwd -> /host/etc/passwd`) cannot make wharf read host files.

use std::io::Read;
use std::path::Path;

use pathrs::flags::OpenFlags;
use pathrs::Root;

use super::config::ResolvedUser;

/// Resolves `user` (`uid[:gid]` or `name[:group]`, or None for root) in `rootfs`.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser { uid: 0, gid: 0 });
    };
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
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
        (Err(_), _) => {
            return Err(format!(
                "user \"{user_part}\" is not in the image's /etc/passwd; use a numeric uid or a user the image defines"
            ))
        }
    };
    let gid = match group_part {
        None => passwd_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(rootfs, "etc/group")
                .as_deref()
                .and_then(|text| {
                    text.lines()
                        .map(|line| line.split(':').collect::<Vec<_>>())
                        .find(|fields| fields.len() >= 3 && fields[0] == group)
                        .and_then(|fields| fields[2].parse().ok())
                })
                .ok_or_else(|| {
                    format!("group \"{group}\" is not in the image's /etc/group; use a numeric gid or a group the image defines")
                })?,
        },
    };
    Ok(ResolvedUser { uid, gid })
}

fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = Root::open(rootfs).ok()?;
    let mut file = root.resolve(path).ok()?.reopen(OpenFlags::O_RDONLY).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
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
        let resolve = |user| resolve_user(rootfs.path(), user);
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
}
