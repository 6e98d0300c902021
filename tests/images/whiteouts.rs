//! OCI whiteouts become overlayfs whiteouts: the merged view of a real overlay
//! mount shows deleted files gone and opaque directories emptied.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use wharf::image::{mount_rootfs, unmount_rootfs};

use crate::layers::{tar, unpack, Entry};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn whiteouts_and_opaque_directories_merge_as_overlayfs_expects() {
    let work = tempfile::tempdir().expect("temp dir");
    let lower = work.path().join("lower");
    let upper_layer = work.path().join("upper-layer");
    fs::create_dir(&lower).expect("mkdir");
    fs::create_dir(&upper_layer).expect("mkdir");

    unpack(
        &tar(&[
            Entry::Dir("app"),
            Entry::File("app/old-1", b"1"),
            Entry::File("app/old-2", b"2"),
            Entry::Dir("etc"),
            Entry::File("etc/keep", b"keep"),
            Entry::File("etc/remove-me", b"gone"),
        ]),
        &lower,
    )
    .expect("lower layer");
    unpack(
        &tar(&[
            // app/ is replaced as a whole; etc/remove-me is deleted.
            Entry::File("app/.wh..wh..opq", b""),
            Entry::File("app/new", b"new"),
            Entry::File("etc/.wh.remove-me", b""),
        ]),
        &upper_layer,
    )
    .expect("upper layer");

    // The layer directory holds overlayfs's own markers.
    let whiteout =
        fs::symlink_metadata(upper_layer.join("etc/remove-me")).expect("whiteout exists");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    let opaque = rustix::fs::getxattr(
        upper_layer.join("app"),
        "trusted.overlay.opaque",
        &mut [0u8; 8],
    )
    .expect("opaque xattr");
    assert_eq!(opaque, 1);

    let container = work.path().join("container");
    let paths =
        mount_rootfs(&[lower.clone(), upper_layer.clone()], &container).expect("overlay mounts");
    let merged_app = names(&paths.rootfs.join("app"));
    let merged_etc = names(&paths.rootfs.join("etc"));
    // Writes land in the container's upper dir, not in the shared layers.
    fs::write(paths.rootfs.join("etc/written"), "w").expect("rootfs is writable");
    assert!(paths.upper.join("etc/written").is_file());
    assert!(!lower.join("etc/written").exists());
    unmount_rootfs(&container).expect("unmounts");

    assert_eq!(merged_app, ["new"]);
    assert_eq!(merged_etc, ["keep"]);
    assert!(!paths.rootfs.exists() && !paths.upper.exists() && !paths.work.exists());
}
