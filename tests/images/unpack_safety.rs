//! Crafted layers try to write outside their directory; none may succeed.

use std::fs;
use std::path::Path;

use crate::layers::{tar, unpack, Entry};

/// A layer directory and, beside it, an "outside" directory that must stay empty.
struct Sandbox {
    _dir: tempfile::TempDir,
    layer: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let layer = dir.path().join("layer");
        let outside = dir.path().join("outside");
        fs::create_dir(&layer).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        Sandbox {
            _dir: dir,
            layer,
            outside,
        }
    }

    fn assert_outside_untouched(&self) {
        let entries: Vec<_> = fs::read_dir(&self.outside).expect("readable").collect();
        assert!(
            entries.is_empty(),
            "something was written outside the layer: {entries:?}"
        );
        let parent: Vec<String> = fs::read_dir(self.layer.parent().expect("parent"))
            .expect("readable")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let mut parent = parent;
        parent.sort();
        assert_eq!(
            parent,
            ["layer", "outside"],
            "something was written beside the layer"
        );
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn dot_dot_components_stay_inside() {
    let sandbox = Sandbox::new();
    let layer = tar(&[
        Entry::File("../escape", b"x"),
        Entry::File("a/../../../outside/escape", b"x"),
        Entry::File("./../outside/escape2", b"x"),
    ]);
    unpack(&layer, &sandbox.layer).expect("cleaned paths unpack");
    sandbox.assert_outside_untouched();
    assert_eq!(read(&sandbox.layer.join("escape")), "x");
    assert_eq!(read(&sandbox.layer.join("outside/escape")), "x");
}

#[test]
fn absolute_paths_become_relative() {
    let sandbox = Sandbox::new();
    let target = sandbox.outside.join("abs");
    let layer_entry = target.display().to_string();
    unpack(&tar(&[Entry::File(&layer_entry, b"x")]), &sandbox.layer).expect("unpacks");
    sandbox.assert_outside_untouched();
    assert!(sandbox
        .layer
        .join(layer_entry.trim_start_matches('/'))
        .is_file());
}

#[test]
fn writing_through_a_planted_symlink_stays_inside() {
    let sandbox = Sandbox::new();
    // Symlinks are resolved as if the layer directory were `/`.
    let layer = tar(&[
        Entry::Symlink("up", "../../../../.."),
        Entry::File("up/escape", b"owned"),
        Entry::Symlink("abs", "/"),
        Entry::File("abs/escape2", b"owned"),
    ]);
    unpack(&layer, &sandbox.layer).expect("unpacks inside the root");
    sandbox.assert_outside_untouched();
    assert_eq!(read(&sandbox.layer.join("escape")), "owned");
    assert_eq!(read(&sandbox.layer.join("escape2")), "owned");
    assert_eq!(
        fs::read_link(sandbox.layer.join("abs")).expect("kept"),
        Path::new("/")
    );

    // etc -> the real outside directory: inside the layer that path does not
    // exist, so the write is refused.
    let layer = tar(&[
        Entry::Symlink("etc", &sandbox.outside.display().to_string()),
        Entry::File("etc/passwd", b"owned"),
    ]);
    let err = unpack(&layer, &sandbox.layer).expect_err("refused");
    assert!(
        err.to_string()
            .contains("cannot resolve etc inside the layer"),
        "{err}"
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn a_symlink_replaced_by_a_file_is_not_followed() {
    let sandbox = Sandbox::new();
    let victim = sandbox.outside.join("victim");
    let layer = tar(&[
        Entry::Symlink("link", &victim.display().to_string()),
        // Same name again: must replace the link, not write to its target.
        Entry::File("link", b"owned"),
    ]);
    unpack(&layer, &sandbox.layer).expect("unpacks");
    sandbox.assert_outside_untouched();
    assert_eq!(read(&sandbox.layer.join("link")), "owned");
}

#[test]
fn hardlinks_to_targets_outside_are_resolved_inside_or_refused() {
    let sandbox = Sandbox::new();
    let secret = sandbox.outside.join("secret");
    fs::write(&secret, "secret").expect("write");
    for target in [secret.display().to_string(), "../outside/secret".to_owned()] {
        let dest = sandbox.layer.join("dest");
        fs::create_dir_all(&dest).expect("mkdir");
        let result = unpack(&tar(&[Entry::Hardlink("link", &target)]), &dest);
        assert!(
            result.is_err(),
            "a hardlink to {target} must not resolve outside"
        );
        assert!(!dest.join("link").exists());
        fs::remove_dir_all(&dest).expect("cleanup");
    }
    // Through a symlink planted first: still resolved inside.
    let dest = sandbox.layer.join("dest");
    fs::create_dir_all(&dest).expect("mkdir");
    let layer = tar(&[
        Entry::Symlink("out", &sandbox.outside.display().to_string()),
        Entry::Hardlink("link", "out/secret"),
    ]);
    assert!(unpack(&layer, &dest).is_err());
    assert_eq!(read(&secret), "secret");
    assert_eq!(
        fs::metadata(&secret)
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            .ok(),
        Some(1)
    );
}

#[test]
fn whiteouts_naming_dot_dot_are_refused() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.outside.join("keep"), "keep").expect("write");
    for name in [".wh...", "a/.wh...", ".wh..", ".wh."] {
        let dest = sandbox.layer.join("dest");
        fs::create_dir_all(&dest).expect("mkdir");
        let result = unpack(&tar(&[Entry::File(name, b"")]), &dest);
        assert!(result.is_err(), "whiteout {name} must be refused");
        fs::remove_dir_all(&dest).expect("cleanup");
    }
    assert_eq!(read(&sandbox.outside.join("keep")), "keep");
    fs::remove_file(sandbox.outside.join("keep")).expect("cleanup");
    sandbox.assert_outside_untouched();
}

#[test]
fn a_symlink_to_the_host_root_cannot_be_used_to_whiteout_host_files() {
    let sandbox = Sandbox::new();
    let victim = sandbox.outside.join("victim");
    fs::write(&victim, "keep").expect("write");
    let layer = tar(&[
        Entry::Symlink("host", &sandbox.outside.display().to_string()),
        Entry::File("host/.wh.victim", b""),
    ]);
    // Resolved inside the layer, where `host` leads nowhere: refused.
    assert!(unpack(&layer, &sandbox.layer).is_err());
    assert_eq!(read(&victim), "keep");
}

#[test]
fn a_corrupt_or_truncated_layer_is_an_error() {
    let sandbox = Sandbox::new();
    let layer = tar(&[Entry::File("big", &[7u8; 10_000])]);
    let truncated = &layer[..3000];
    let err = unpack(truncated, &sandbox.layer).expect_err("truncated");
    assert!(err.to_string().contains("corrupt or truncated"), "{err}");

    let blob = tempfile::NamedTempFile::new().expect("temp");
    fs::write(blob.path(), &layer).expect("write");
    let dest = sandbox.layer.join("d");
    fs::create_dir(&dest).expect("mkdir");
    let wrong_diff_id = wharf::image::Digest::of(b"something else");
    let err = wharf::image::unpack_layer(
        blob.path(),
        wharf::image::Compression::None,
        &wrong_diff_id,
        &dest,
    )
    .expect_err("diff_id mismatch");
    assert!(err.to_string().contains("image config says"), "{err}");
}

#[test]
fn ownership_modes_and_times_follow_the_tar() {
    let sandbox = Sandbox::new();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_path("bin/tool").expect("path");
    header.set_size(2);
    header.set_mode(0o4755);
    header.set_uid(1234);
    header.set_gid(5678);
    header.set_mtime(1_600_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, &b"hi"[..]).expect("append");
    let bytes = builder.into_inner().expect("tar");
    unpack(&bytes, &sandbox.layer).expect("unpacks");
    let meta = fs::metadata(sandbox.layer.join("bin/tool")).expect("exists");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.mode() & 0o7777, 0o4755, "set-user-ID survives chown");
    assert_eq!(meta.mtime(), 1_600_000_000);
}
