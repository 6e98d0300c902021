//! Crafted layers try to write outside their directory, or to take more of the host
//! than a layer should; none may succeed.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use wharf::image::{unpack_layer_limited, Compression, Digest, LayerLimits, UnpackError};

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
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.mode() & 0o7777, 0o4755, "set-user-ID survives chown");
    assert_eq!(meta.mtime(), 1_600_000_000);
}

/// A tar of hand-made headers (each checksummed here) and their data.
fn raw_tar(entries: Vec<(tar::Header, Vec<u8>)>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (mut header, data) in entries {
        header.set_cksum();
        builder.append(&header, &data[..]).expect("in-memory tar");
    }
    builder.into_inner().expect("in-memory tar")
}

/// A header with the fields every entry needs; `path` must be relative.
fn header(mut header: tar::Header, path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    header.set_path(path).expect("path");
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header
}

/// A PAX extended header giving `records` to the entry that follows it.
fn pax(records: &[(&str, &[u8])]) -> (tar::Header, Vec<u8>) {
    let mut data = Vec::new();
    for (key, value) in records {
        // "<length> <key>=<value>\n", where the length counts its own digits.
        let rest = key.len() + value.len() + 3;
        let mut length = rest;
        while length != rest + length.to_string().len() {
            length = rest + length.to_string().len();
        }
        data.extend_from_slice(format!("{length} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let size = data.len() as u64;
    (
        header(
            tar::Header::new_ustar(),
            "PaxHeaders/entry",
            tar::EntryType::XHeader,
            size,
        ),
        data,
    )
}

fn file(path: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
    let size = data.len() as u64;
    (
        header(
            tar::Header::new_ustar(),
            path,
            tar::EntryType::Regular,
            size,
        ),
        data.to_vec(),
    )
}

/// A GNU sparse file of `apparent` bytes holding only `head` at its start and
/// `tail` at its end (512 bytes each, as GNU tar aligns them); the rest is a hole.
fn sparse_file(path: &str, apparent: u64) -> (tar::Header, Vec<u8>) {
    let mut sparse = header(
        tar::Header::new_gnu(),
        path,
        tar::EntryType::GNUSparse,
        1024,
    );
    let gnu = sparse.as_gnu_mut().expect("a GNU header");
    gnu.set_real_size(apparent);
    gnu.sparse[0].set_offset(0);
    gnu.sparse[0].set_length(512);
    gnu.sparse[1].set_offset(apparent - 512);
    gnu.sparse[1].set_length(512);
    let mut data = vec![b'h'; 512];
    data.extend_from_slice(&[b't'; 512]);
    (sparse, data)
}

fn unpack_limited(tar_bytes: &[u8], dest: &Path, limits: &LayerLimits) -> Result<(), UnpackError> {
    let blob = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(blob.path(), tar_bytes).expect("write blob");
    unpack_layer_limited(
        blob.path(),
        Compression::None,
        &Digest::of(tar_bytes),
        dest,
        limits,
    )
}

#[test]
fn the_holes_of_a_sparse_file_stay_holes() {
    const GIB: u64 = 1 << 30;
    let sandbox = Sandbox::new();
    let layer = raw_tar(vec![sparse_file("var/log/lastlog", GIB)]);
    assert!(layer.len() < 4096, "a layer of a few blocks");
    unpack(&layer, &sandbox.layer).expect("unpacks");

    let path = sandbox.layer.join("var/log/lastlog");
    let meta = fs::metadata(&path).expect("unpacked");
    assert_eq!(meta.len(), GIB, "the apparent size is kept");
    let on_disk = meta.blocks() * 512;
    assert!(
        on_disk < 1 << 20,
        "{on_disk} bytes on disk for a 1 GiB hole"
    );
    let mut file = fs::File::open(&path).expect("readable");
    let mut block = [0u8; 512];
    file.read_exact(&mut block).expect("head");
    assert_eq!(block, [b'h'; 512]);
    file.seek(SeekFrom::Start(GIB / 2)).expect("seek");
    file.read_exact(&mut block).expect("middle");
    assert_eq!(block, [0; 512], "a hole reads as zeros");
    file.seek(SeekFrom::Start(GIB - 512)).expect("seek");
    file.read_exact(&mut block).expect("tail");
    assert_eq!(block, [b't'; 512]);
}

#[test]
fn fifos_without_device_numbers_as_python_writes_them_unpack() {
    let sandbox = Sandbox::new();
    // Python's tarfile leaves a FIFO's devmajor and devminor NUL-filled, not "0".
    let mut fifo = header(
        tar::Header::new_ustar(),
        "run/initctl",
        tar::EntryType::Fifo,
        0,
    );
    let ustar = fifo.as_ustar_mut().expect("a ustar header");
    ustar.dev_major = [0; 8];
    ustar.dev_minor = [0; 8];
    let layer = raw_tar(vec![(fifo, Vec::new())]);
    unpack(&layer, &sandbox.layer).expect("a FIFO needs no device numbers");
    let meta = fs::symlink_metadata(sandbox.layer.join("run/initctl")).expect("created");
    assert!(meta.file_type().is_fifo());
}

#[test]
fn device_nodes_in_a_layer_are_not_created() {
    let sandbox = Sandbox::new();
    let device = |path: &str, kind, major, minor| {
        let mut node = header(tar::Header::new_ustar(), path, kind, 0);
        node.set_device_major(major)
            .expect("ustar has device numbers");
        node.set_device_minor(minor)
            .expect("ustar has device numbers");
        (node, Vec::new())
    };
    let layer = raw_tar(vec![
        device("dev/mem", tar::EntryType::Char, 1, 1),
        device("dev/sda", tar::EntryType::Block, 8, 0),
        file("etc/hostname", b"box"),
    ]);
    unpack(&layer, &sandbox.layer).expect("unpacks without them");
    // Containers get /dev from a tmpfs; on the host these would open real devices.
    assert!(fs::symlink_metadata(sandbox.layer.join("dev/mem")).is_err());
    assert!(fs::symlink_metadata(sandbox.layer.join("dev/sda")).is_err());
    assert_eq!(read(&sandbox.layer.join("etc/hostname")), "box");
}

#[test]
fn extended_attributes_that_act_on_the_host_refuse_the_layer() {
    for name in [
        "security.selinux",
        "security.ima",
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "trusted.wharf.blobs",
    ] {
        let sandbox = Sandbox::new();
        let layer = raw_tar(vec![
            pax(&[(format!("SCHILY.xattr.{name}").as_str(), b"x".as_slice())]),
            file("etc/shadow", b"root:*:1::::::\n"),
        ]);
        let err = unpack(&layer, &sandbox.layer).expect_err(name);
        let message = err.to_string();
        assert!(
            message.contains("etc/shadow") && message.contains(name),
            "{message}"
        );
    }
}

#[test]
fn file_capabilities_are_dropped_and_user_attributes_kept() {
    let sandbox = Sandbox::new();
    // cap_net_raw+ep, as `setcap` writes it (vfs_cap_data revision 2).
    let mut net_raw = vec![0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00];
    net_raw.extend_from_slice(&[0; 12]);
    let layer = raw_tar(vec![
        pax(&[
            ("SCHILY.xattr.security.capability", net_raw.as_slice()),
            ("SCHILY.xattr.user.origin", b"build-7".as_slice()),
        ]),
        file("bin/ping", b"\x7fELF"),
    ]);
    unpack(&layer, &sandbox.layer).expect("unpacks");
    let ping = sandbox.layer.join("bin/ping");
    let mut value = [0u8; 64];
    // Containers run with no_new_privs: a file capability would grant nothing there.
    assert!(rustix::fs::getxattr(&ping, "security.capability", &mut value).is_err());
    let len = rustix::fs::getxattr(&ping, "user.origin", &mut value).expect("kept");
    assert_eq!(&value[..len], b"build-7");
}

#[test]
fn a_layer_beyond_the_size_limit_is_refused_before_it_is_written() {
    let limits = LayerLimits {
        max_size: 1 << 20,
        ..LayerLimits::default()
    };
    let half = vec![7u8; 512 << 10];

    let sandbox = Sandbox::new();
    let at_limit = raw_tar(vec![file("a", &half), file("b", &half)]);
    unpack_limited(&at_limit, &sandbox.layer, &limits).expect("exactly the limit is fine");

    let sandbox = Sandbox::new();
    let beyond = raw_tar(vec![file("a", &half), file("b", &half), file("c", b"!")]);
    let err = unpack_limited(&beyond, &sandbox.layer, &limits).expect_err("one byte too many");
    assert_eq!(
        err.to_string(),
        "it unpacks to more than 1Mi, the limit for one layer; if the image is trusted, raise it with WHARF_MAX_LAYER_SIZE"
    );
    assert!(!sandbox.layer.join("c").exists());

    // A sparse file counts with its apparent size: its holes are read, as zeros.
    let sandbox = Sandbox::new();
    let sparse = raw_tar(vec![sparse_file("holes", 2 << 20)]);
    assert!(matches!(
        unpack_limited(&sparse, &sandbox.layer, &limits),
        Err(UnpackError::TooLarge { .. })
    ));
}

#[test]
fn a_layer_of_too_many_entries_is_refused() {
    let limits = LayerLimits {
        max_entries: 100,
        ..LayerLimits::default()
    };
    let names: Vec<String> = (0..101).map(|n| format!("empty-{n}")).collect();
    let entries: Vec<Entry> = names.iter().map(|name| Entry::File(name, b"")).collect();

    let sandbox = Sandbox::new();
    unpack_limited(&tar(&entries[..100]), &sandbox.layer, &limits).expect("100 entries");

    let sandbox = Sandbox::new();
    let err = unpack_limited(&tar(&entries), &sandbox.layer, &limits).expect_err("101 entries");
    assert!(
        err.to_string()
            .starts_with("it holds more than 100 entries, the limit for one layer"),
        "{err}"
    );
}

#[test]
fn directories_a_layer_does_not_list_are_made_enterable_whatever_the_umask() {
    // wharf runs with umask 077; a layer that adds /usr/local/bin/app without entries
    // for its parents must not hide the lower layers' 0755 directories behind 0700
    // ones, or no non-root process in the container could reach anything below /usr.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let sandbox = Sandbox::new();
    let layer = raw_tar(vec![file("usr/local/bin/app", b"#!/bin/sh\n")]);
    unpack_limited(&layer, &sandbox.layer, &LayerLimits::default()).expect("unpacks");
    for dir in ["usr", "usr/local", "usr/local/bin"] {
        let mode = fs::metadata(sandbox.layer.join(dir)).expect("made").mode() & 0o7777;
        assert_eq!(mode, 0o755, "{dir}");
    }
}

#[test]
fn a_long_name_of_megabytes_is_refused_before_it_is_read_into_memory() {
    // The tar crate reads long names whole into memory: 512 MiB of 'a' compresses to
    // about 500 KB. Refused from its header, whatever the layer limits.
    let sandbox = Sandbox::new();
    let name = vec![b'a'; 2 << 20];
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(name.len() as u64);
    header.set_path("././@LongLink").expect("path");
    header.set_cksum();
    let layer = raw_tar(vec![(header, name), file("short", b"x")]);
    let err = unpack_limited(&layer, &sandbox.layer, &LayerLimits::default()).expect_err("refused");
    let message = wharf::error_chain(&err);
    assert!(
        message.contains("GNU long name entry of 2097152 bytes"),
        "{message}"
    );
    assert!(message.len() < 1000, "the message does not repeat the name");
    sandbox.assert_outside_untouched();
}
