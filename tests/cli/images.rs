//! `wharf pull`, `wharf images` and `wharf image ...` against a real registry.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wharf::image::{Digest, ImageStore};

use crate::common::{ok, wharf_at, wharf_with_env};
use crate::support::{skopeo, TestRegistry};

#[test]
fn pull_shows_progress_lines_and_images_lists_the_result() {
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let image = registry.image("busybox:1");

    let run = wharf_at(root.path(), &["pull", &image]);
    assert!(
        ok(&run).starts_with(&format!("pulled {image} (sha256:")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.trim_end().ends_with("1.0 MiB)"),
        "{}",
        run.stdout
    );
    // Without a terminal, progress is plain lines on stderr.
    assert!(
        run.stderr.lines().any(|l| l.starts_with("pulling sha256:")),
        "{}",
        run.stderr
    );

    let run = wharf_at(root.path(), &["images"]);
    let lines: Vec<&str> = ok(&run).lines().collect();
    assert!(lines[0].starts_with("REFERENCE"), "{}", run.stdout);
    assert!(lines[1].starts_with(&image), "{}", run.stdout);

    let run = wharf_at(root.path(), &["images", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(ok(&run)).expect("JSON");
    assert_eq!(rows[0]["reference"], image.as_str());
    assert!(rows[0]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    assert!(rows[0]["size"]
        .as_u64()
        .is_some_and(|size| size > 1_000_000));
    assert!(rows[0]["pulled"].is_string());

    // Already present: --if-not-present does not download again.
    let run = wharf_at(root.path(), &["pull", "--if-not-present", &image]);
    ok(&run);
    assert!(!run.stderr.contains("pulling"), "{}", run.stderr);
}

#[test]
fn pull_errors_name_the_image_and_registry_and_print_the_causes() {
    let root = tempfile::tempdir().expect("root");
    let run = wharf_at(root.path(), &["pull", "127.0.0.1:9/nothing:1"]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines[0],
        "error: cannot pull 127.0.0.1:9/nothing:1 from 127.0.0.1:9"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  caused by:") && l.contains("Connection refused")),
        "{}",
        run.stderr
    );

    let run = wharf_at(root.path(), &["pull", "Not/A/Valid:Name"]);
    assert_eq!(
        run.code, 2,
        "an invalid reference is a usage error: {}",
        run.stderr
    );
}

#[test]
fn tag_and_rm_manage_names() {
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let image = registry.image("busybox:1");
    ok(&wharf_at(root.path(), &["pull", &image]));

    let run = wharf_at(root.path(), &["image", "tag", &image, "web:stable"]);
    assert_eq!(
        ok(&run),
        format!("tagged {image} as docker.io/library/web:stable\n")
    );
    let listed = wharf_at(root.path(), &["images"]).stdout;
    assert!(listed.contains("docker.io/library/web:stable"), "{listed}");

    ok(&wharf_at(root.path(), &["image", "rm", "web:stable"]));
    let run = wharf_at(root.path(), &["image", "rm", "web:stable"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("no image docker.io/library/web:stable is stored locally"),
        "{}",
        run.stderr
    );
}

#[test]
fn prune_frees_what_no_name_uses_and_keeps_the_rest() {
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let (busybox, layered) = (registry.image("busybox:1"), registry.image("layered:1"));
    ok(&wharf_at(root.path(), &["pull", &busybox]));
    ok(&wharf_at(root.path(), &["pull", &layered]));
    let layer_dirs = || {
        std::fs::read_dir(root.path().join("layers/sha256"))
            .expect("layers")
            .count()
    };
    assert_eq!(layer_dirs(), 3, "layered shares busybox's layer");

    let run = wharf_at(root.path(), &["image", "prune"]);
    assert!(
        ok(&run).starts_with("freed 0 B: 0 blobs, 0 layers"),
        "{}",
        run.stdout
    );

    ok(&wharf_at(root.path(), &["image", "rm", &layered]));
    let run = wharf_at(root.path(), &["image", "prune"]);
    // layered's manifest, config and two own layers; its first layer is busybox's.
    assert!(ok(&run).contains(": 4 blobs, 2 layers"), "{}", run.stdout);
    assert_eq!(layer_dirs(), 1);

    // Leftovers of pulls whose process died are removed too; a live one's are kept.
    let tmp = root.path().join("tmp");
    std::fs::write(tmp.join("blob-999999999-abc"), "partial").expect("write");
    std::fs::create_dir(tmp.join("layer-999999999-def")).expect("mkdir");
    let live = tmp.join(format!("blob-{}-ghi", std::process::id()));
    std::fs::write(&live, "in progress").expect("write");
    let run = wharf_at(root.path(), &["image", "prune"]);
    assert!(
        ok(&run).contains(": 0 blobs, 0 layers, 2 leftovers"),
        "{}",
        run.stdout
    );
    assert!(live.exists());

    // busybox is intact: present without downloading anything.
    let run = wharf_at(root.path(), &["pull", "--if-not-present", &busybox]);
    ok(&run);
    assert!(!run.stderr.contains("pulling"), "{}", run.stderr);
}

#[test]
fn import_reads_layouts_and_archives_written_by_skopeo() {
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let layout = work.path().join("layout");
    let archive = work.path().join("busybox.tar");
    let source = format!("docker://{}", registry.image("busybox:1"));
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &source,
        &format!("oci:{}:imported:1", layout.display()),
    ]);
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &source,
        &format!("oci-archive:{}:archived:2", archive.display()),
    ]);

    let run = wharf_at(
        root.path(),
        &["image", "import", layout.to_str().expect("UTF-8")],
    );
    assert_eq!(ok(&run), "imported docker.io/library/imported:1\n");
    let run = wharf_at(
        root.path(),
        &["image", "import", archive.to_str().expect("UTF-8")],
    );
    assert_eq!(ok(&run), "imported docker.io/library/archived:2\n");
    let run = wharf_at(
        root.path(),
        &[
            "image",
            "import",
            archive.to_str().expect("UTF-8"),
            "--name",
            "registry.lan/web:1.4",
        ],
    );
    assert_eq!(ok(&run), "imported registry.lan/web:1.4\n");

    // Imported images run offline: present for `never`-style lookups.
    let run = wharf_at(
        root.path(),
        &["pull", "--if-not-present", "registry.lan/web:1.4"],
    );
    ok(&run);
    assert_eq!(
        std::fs::read_dir(root.path().join("layers/sha256"))
            .expect("layers")
            .count(),
        1
    );

    let run = wharf_at(root.path(), &["image", "import", "/nonexistent.tar"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("not an OCI layout directory or oci-archive"),
        "{}",
        run.stderr
    );
}

#[test]
fn authenticated_pulls_use_the_docker_config_and_its_credential_helpers() {
    let shared = TestRegistry::shared();
    let registry = TestRegistry::start_with_login("wharf:s3cret");
    registry.copy_from(shared, "busybox:1");
    let image = registry.image("busybox:1");
    let home = tempfile::tempdir().expect("docker config dir");
    let config = home.path().join("config.json");
    let docker_config = home.path().to_str().expect("UTF-8");
    let pull = |root: &std::path::Path, path: &str| {
        let root = root.to_str().expect("UTF-8");
        wharf_with_env(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
            &["--root", root, "pull", &image],
            &[("DOCKER_CONFIG", docker_config), ("PATH", path)],
        )
    };
    let system_path = std::env::var("PATH").unwrap_or_default();

    // No credentials: the registry refuses, and the error says so.
    let root = tempfile::tempdir().expect("root");
    let run = pull(root.path(), &system_path);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("Not authorized"), "{}", run.stderr);

    // An `auths` entry, as `docker login` writes it (base64 of wharf:s3cret).
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "d2hhcmY6czNjcmV0"}}}}}}"#,
            registry.addr
        ),
    )
    .expect("write config");
    let root = tempfile::tempdir().expect("root");
    ok(&pull(root.path(), &system_path));

    // A credential helper: docker-credential-<name> on PATH answers `get`.
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let helper = bin.join("docker-credential-wharftest");
    std::fs::write(
        &helper,
        r#"#!/bin/sh
read server
printf '{"ServerURL":"%s","Username":"wharf","Secret":"s3cret"}' "$server"
"#,
    )
    .expect("write helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        &config,
        format!(r#"{{"credHelpers": {{"{}": "wharftest"}}}}"#, registry.addr),
    )
    .expect("write config");
    let root = tempfile::tempdir().expect("root");
    let path = format!("{}:{system_path}", bin.display());
    ok(&pull(root.path(), &path));
    registry.stop();
}

/// The file of blob `digest` in the OCI layout `layout`.
fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_slice(&bytes).expect("JSON")
}

#[test]
fn index_json_is_on_disk_before_and_after_it_replaces_the_old_one() {
    let root = tempfile::tempdir().expect("root");
    let trace = tempfile::NamedTempFile::new().expect("trace file");
    // A new store writes its (empty) index.json.
    let status = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(trace.path())
        .args(["-e", "trace=fsync,fdatasync,rename,renameat,renameat2"])
        .arg(env!("CARGO_BIN_EXE_wharf"))
        .arg("--root")
        .arg(root.path())
        .arg("images")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .status()
        .expect("strace runs (.ci/setup installs it)");
    assert!(status.success(), "{status}");
    let trace = std::fs::read_to_string(trace.path()).expect("trace");
    let lines: Vec<&str> = trace.lines().collect();
    let renamed = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("/images/index.json\""))
        .unwrap_or_else(|| panic!("index.json is not renamed into place:\n{trace}"));
    assert!(
        lines[..renamed]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains("/tmp/index-")),
        "the new index is not synced before it replaces the old one:\n{trace}"
    );
    assert!(
        lines[renamed..]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains("/images>)")),
        "the directory is not synced after the rename:\n{trace}"
    );
}

#[test]
fn prune_waits_for_an_import_in_progress_and_spares_what_it_wrote() {
    let root = tempfile::tempdir().expect("root");
    let store = ImageStore::open(root.path()).expect("store opens");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    // An import in progress: it holds the store lock and has written a config blob
    // that no name records yet.
    let importing = runtime
        .block_on(store.lock_for_writing())
        .expect("store lock");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = Digest::of(config);
    store
        .content()
        .write_blob(&digest, config)
        .expect("blob written");

    let mut prune = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--root")
        .arg(root.path())
        .args(["image", "prune"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the wharf binary runs");
    let stderr = prune.stderr.take().expect("stderr");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let waited = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("waiting for pulls and imports in progress") => break true,
            Ok(_) => continue,
            // prune ended without waiting, or the deadline passed.
            Err(_) => break false,
        }
    };
    if !waited {
        let _ = prune.kill();
    }
    assert!(waited, "prune did not wait for the import in progress");
    assert!(
        store.content().has_blob(&digest),
        "prune removed a blob of the import in progress"
    );

    // The import ends without recording a name (it failed): now its blob is garbage.
    drop(importing);
    let output = prune.wait_with_output().expect("prune ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(": 1 blobs, 0 layers"), "{stdout}");
    assert!(!store.content().has_blob(&digest));
}

#[test]
fn a_name_whose_blobs_are_missing_is_listed_as_broken_and_pull_repairs_it() {
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let (busybox, layered) = (registry.image("busybox:1"), registry.image("layered:1"));
    ok(&wharf_at(root.path(), &["pull", &busybox]));
    ok(&wharf_at(root.path(), &["pull", &layered]));

    // Lose busybox's config blob, as a prune racing an import once did.
    let layout = root.path().join("images");
    let manifest = stored_manifest(&layout, &busybox);
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    std::fs::remove_file(blob_path(&layout, &config)).expect("remove the config blob");

    // The other image is listed as before; the broken one is marked, with what to do.
    let run = wharf_at(root.path(), &["images"]);
    let listed = ok(&run);
    let line = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is not listed:\n{listed}"))
    };
    assert!(!line(&layered).contains("broken"), "{listed}");
    assert!(
        line(&busybox).ends_with(&format!(
            "broken: blob {config} is missing; pull it again or run `wharf image rm {busybox}`"
        )),
        "{listed}"
    );
    let run = wharf_at(root.path(), &["images", "--json"]);
    let rows: Value = serde_json::from_str(ok(&run)).expect("JSON");
    let row = |name: &str| {
        rows.as_array()
            .and_then(|rows| rows.iter().find(|r| r["reference"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not listed: {rows}"))
    };
    assert!(row(&busybox)["broken"].is_string(), "{rows}");
    assert!(row(&busybox)["size"].is_null(), "{rows}");
    assert!(row(&layered).get("broken").is_none(), "{rows}");

    // Using the image fetches what is missing again.
    let run = wharf_at(root.path(), &["pull", "--if-not-present", &busybox]);
    ok(&run);
    assert!(run.stderr.contains("pulling"), "{}", run.stderr);
    let run = wharf_at(root.path(), &["images"]);
    assert!(!ok(&run).contains("broken"), "{}", run.stdout);
}

/// The manifest stored under `name` in the OCI layout `layout`.
fn stored_manifest(layout: &Path, name: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"]
        .as_array()
        .and_then(|entries| {
            entries
                .iter()
                .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
        })
        .and_then(|entry| entry["digest"].as_str())
        .unwrap_or_else(|| panic!("{name} is not in the index: {index}"));
    read_json(&blob_path(layout, digest))
}

#[test]
fn import_refuses_an_image_whose_config_lists_more_diff_ids_than_layers() {
    let registry = TestRegistry::shared();
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let layout = work.path().join("layout");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}", registry.image("busybox:1")),
        &format!("oci:{}:busybox:1", layout.display()),
    ]);
    // One diff_id more than the manifest has layers; digests redone, so that only
    // this is wrong.
    let put = |value: &Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).expect("JSON");
        let digest = Digest::of(&bytes);
        std::fs::write(blob_path(&layout, digest.as_str()), &bytes).expect("write blob");
        (digest.to_string(), bytes.len())
    };
    let mut index = read_json(&layout.join("index.json"));
    let mut manifest = read_json(&blob_path(
        &layout,
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ));
    let mut config = read_json(&blob_path(
        &layout,
        manifest["config"]["digest"].as_str().expect("digest"),
    ));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(Digest::of(b"a layer no manifest lists").to_string().into());
    let (digest, size) = put(&config);
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put(&manifest);
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("JSON"),
    )
    .expect("write index.json");

    let run = wharf_at(
        root.path(),
        &["image", "import", layout.to_str().expect("UTF-8")],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "docker.io/library/busybox:1: the manifest has 1 layers but the config lists 2 diff_ids"
        ),
        "{}",
        run.stderr
    );
    let run = wharf_at(root.path(), &["images", "--json"]);
    assert_eq!(ok(&run).trim(), "[]", "nothing was recorded");
}

#[test]
fn import_refuses_a_layout_whose_files_are_not_regular_files_without_waiting() {
    let root = tempfile::tempdir().expect("root");
    let layout = tempfile::tempdir().expect("layout");
    std::fs::write(
        layout.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write");
    // A FIFO nobody writes to: reading it would wait forever.
    nix::unistd::mkfifo(
        &layout.path().join("index.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let run = crate::common::wharf_in_within(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "--root",
            root.path().to_str().expect("UTF-8"),
            "image",
            "import",
            layout.path().to_str().expect("UTF-8"),
            "--name",
            "registry.test/fifo:1",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("index.json: not a regular file (a FIFO)"),
        "{}",
        run.stderr
    );
}
