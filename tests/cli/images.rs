//! `wharf pull`, `wharf images` and `wharf image ...` against a real registry.

use std::os::unix::fs::PermissionsExt;

use crate::common::{wharf_at, wharf_with_env, Run};
use crate::support::{skopeo, TestRegistry};

fn ok(run: &Run) -> &str {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    &run.stdout
}

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
