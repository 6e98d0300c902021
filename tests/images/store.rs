//! What the content store writes is root's alone, whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use wharf::image::{ImageStore, NoProgress, Registries};
use wharf::manifest::{ImageRef, PullPolicy};

use crate::support::TestRegistry;

/// Paths at or under `path` (below it only when `recurse`) whose mode is not 0700
/// for a directory or 0600 for a file.
fn open_to_others(path: &Path, recurse: bool, found: &mut Vec<String>) {
    let meta = std::fs::symlink_metadata(path).expect("stat");
    let mode = meta.permissions().mode() & 0o7777;
    let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
    if mode != wanted {
        found.push(format!("{} is {mode:04o}", path.display()));
    }
    if meta.is_dir() && recurse {
        for entry in std::fs::read_dir(path).expect("read dir") {
            open_to_others(&entry.expect("entry").path(), true, found);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_the_store_writes_is_root_only_whatever_the_umask() {
    // The umask most shells give. The CLI sets 077 at start, but the store makes its
    // modes explicit rather than rely on that.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let store = ImageStore::open(root.path()).expect("store opens");
    let image: ImageRef = registry.image("busybox:1").parse().expect("reference");
    store
        .pull(
            &Registries::new(Vec::new()),
            &image,
            PullPolicy::Always,
            &NoProgress,
        )
        .await
        .expect("pull");

    let mut found = Vec::new();
    // The layout: blobs, index.json, oci-layout, lock files.
    open_to_others(&root.path().join("images"), true, &mut found);
    // Not below: unpacked layers keep the modes their image gives them.
    for dir in ["layers", "layers/sha256", "tmp"] {
        open_to_others(&root.path().join(dir), false, &mut found);
    }
    assert!(found.is_empty(), "open to other users: {found:#?}");
}
