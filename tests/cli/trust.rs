//! `wharf agent` follows only manifests that only root can change: its directory,
//! the files in it, and every directory on the way to them from `/`, wherever
//! symlinks lead. Anyone who can rename a directory on the way can put their own
//! manifests in its place and run containers as root.
//!
//! The tests run as root; their temporary directories are root's, inside the
//! root-owned sticky /tmp, which is safe (others cannot rename root's entries).

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::common::{wharf_in_within, Run};

/// Runs an agent on `manifests` that is expected to refuse to start: one that
/// starts would run until the test fails it.
fn agent(root: &Path, manifests: &Path) -> Run {
    let root = root.to_str().expect("UTF-8 temp path");
    let manifests = manifests.to_str().expect("UTF-8 temp path");
    wharf_in_within(
        Path::new("/"),
        &["--root", root, "agent", "--manifests", manifests],
        Duration::from_secs(60),
    )
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The agent exited 1 saying that `at`, on the way to `manifests`, is not root's
/// alone, why, and both ways out.
fn assert_refused(run: &Run, at: &Path, manifests: &Path, why: &str, fix: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    let at = at.display();
    let expected = format!(
        "error: refusing to run: {at}, on the way to {}, {why}: whoever can change it can \
         run containers as root; fix it ({fix} {at}) or pass --allow-insecure-manifests",
        manifests.display()
    );
    assert!(
        run.stderr.lines().any(|line| line == expected),
        "expected the line\n  {expected}\ngot\n{}",
        run.stderr
    );
}

#[test]
fn a_root_owned_directory_inside_one_every_user_can_write_is_refused() {
    let root = tempfile::tempdir().expect("root");
    let base = tempfile::tempdir().expect("base");
    let open = base.path().join("open");
    let manifests = open.join("services");
    fs::create_dir_all(&manifests).expect("mkdir");
    chmod(&open, 0o777);

    let run = agent(root.path(), &manifests);
    assert_refused(
        &run,
        &open,
        &manifests,
        "is writable by every user (mode 777)",
        "chmod go-w",
    );
}

#[test]
fn a_directory_on_the_way_owned_by_another_user_is_refused() {
    let root = tempfile::tempdir().expect("root");
    let base = tempfile::tempdir().expect("base");
    let theirs = base.path().join("theirs");
    let manifests = theirs.join("etc/wharf");
    fs::create_dir_all(&manifests).expect("mkdir");
    // Not writable by anyone but its owner, who is not root.
    chown(&theirs, Some(65534), Some(65534)).expect("chown");

    let run = agent(root.path(), &manifests);
    assert_refused(
        &run,
        &theirs,
        &manifests,
        "is owned by uid 65534, not root",
        "chown -h root:root",
    );
}

#[test]
fn a_symlinked_manifest_directory_is_checked_where_it_leads() {
    let root = tempfile::tempdir().expect("root");
    let base = tempfile::tempdir().expect("base");
    let open = base.path().join("open");
    fs::create_dir_all(open.join("services")).expect("mkdir");
    chmod(&open, 0o777);
    // The link and the directory it names are root's; the way there is not.
    let link = base.path().join("services");
    symlink("open/services", &link).expect("symlink");

    let run = agent(root.path(), &link);
    assert_refused(
        &run,
        &open,
        &link,
        "is writable by every user (mode 777)",
        "chmod go-w",
    );
}
