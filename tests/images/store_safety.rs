//! The image store against hostile images and a disk that fills: limits are named
//! in the errors, a cached layer serves only blobs that unpack to it, a registry
//! cannot send more than declared. Whatever fails, nothing is half-recorded.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use wharf::image::{
    Digest, ImageError, ImageStore, LayerLimits, NoProgress, Platform, Registries,
    MAX_LAYER_SIZE_ENV,
};
use wharf::manifest::{ImageRef, PullPolicy};

use crate::layers::{tar, Entry};
use crate::support::TestRegistry;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer as an image lists it: media type, blob, and the diff_id its config claims.
struct Layer {
    media_type: &'static str,
    blob: Vec<u8>,
    diff_id: Digest,
}

impl Layer {
    fn gzip(tar_bytes: &[u8]) -> Self {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(tar_bytes).expect("gzip");
        Layer {
            media_type: LAYER_GZIP,
            blob: encoder.finish().expect("gzip"),
            diff_id: Digest::of(tar_bytes),
        }
    }

    fn plain(tar_bytes: &[u8]) -> Self {
        Layer {
            media_type: LAYER_TAR,
            blob: tar_bytes.to_vec(),
            diff_id: Digest::of(tar_bytes),
        }
    }

    fn digest(&self) -> Digest {
        Digest::of(&self.blob)
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).as_str(),
        "size": bytes.len(),
    })
}

/// The config and manifest of an image made of `layers`.
fn config_and_manifest(layers: &[Layer]) -> (Vec<u8>, Vec<u8>) {
    let diff_ids: Vec<&str> = layers.iter().map(|layer| layer.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": Platform::host().architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("JSON");
    let layer_descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|layer| descriptor(layer.media_type, &layer.blob))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, &config),
        "layers": layer_descriptors,
    }))
    .expect("JSON");
    (config, manifest)
}

/// An OCI layout directory holding one image made of `layers`.
fn layout(layers: &[Layer]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs = dir.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir");
    let (config, manifest) = config_and_manifest(layers);
    let all = layers
        .iter()
        .map(|layer| &layer.blob[..])
        .chain([&config[..], &manifest[..]]);
    for bytes in all {
        fs::write(blobs.join(Digest::of(bytes).hex()), bytes).expect("write blob");
    }
    fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let index = json!({"schemaVersion": 2, "manifests": [descriptor(MANIFEST, &manifest)]});
    fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&index).expect("JSON"),
    )
    .expect("write index.json");
    dir
}

async fn import(store: &ImageStore, layout: &Path, name: &str) -> Result<(), ImageError> {
    let name: ImageRef = name.parse().expect("reference");
    store.import(layout, Some(&name)).await.map(drop)
}

/// Fails unless `dir` is empty: a failed pull or import leaves nothing behind.
fn assert_empty(dir: &Path) {
    let leftovers: Vec<PathBuf> = fs::read_dir(dir)
        .expect("readable")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A tmpfs of a few MiB, unmounted on drop: a disk that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new() -> Self {
        Self::of(c"size=4m")
    }

    fn of(size: &std::ffi::CStr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            size,
        )
        .expect("mount a tmpfs (run the tests as root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// A file of `len` bytes that compress well but are not zeros.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_is_not_started_without_room_for_it() {
    let disk = SmallDisk::new();
    let name = "registry.test/hostile/roomy:1";

    // By default a layer must leave the host a reserve of free space.
    let store = ImageStore::open(disk.path()).expect("store opens");
    let tiny = Layer::gzip(&tar(&[Entry::File("etc/motd", b"hi")]));
    let err = import(&store, layout(&[tiny]).path(), name)
        .await
        .expect_err("no reserve left");
    let chain = wharf::error_chain(&err);
    assert!(chain.contains("not enough free space in"), "{chain}");

    // Without a reserve, it still needs room for what it unpacks to: here 2.5 MiB,
    // with about 1.5 MiB left once its blob is stored.
    let store = store.with_layer_limits(LayerLimits {
        min_free: 0,
        ..LayerLimits::default()
    });
    let big = Layer::plain(&tar(&[Entry::File("data", &pattern(5 << 19))]));
    let digest = big.digest();
    let err = import(&store, layout(&[big]).path(), name)
        .await
        .expect_err("not enough room");
    let chain = wharf::error_chain(&err);
    assert!(
        chain.contains("not enough free space in") && chain.contains(digest.as_str()),
        "{chain}"
    );
    assert!(store.get(name).expect("readable").is_none());
    assert_empty(&disk.path().join("layers/sha256"));
    assert_empty(&disk.path().join("tmp"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_while_unpacking_fails_cleanly() {
    let disk = SmallDisk::new();
    let name = "registry.test/hostile/filler:1";
    // The free-space estimate passes (the blob is small); the disk fills anyway.
    let store = ImageStore::open(disk.path())
        .expect("store opens")
        .with_layer_limits(LayerLimits {
            min_free: 0,
            ..LayerLimits::default()
        });
    let filler = Layer::gzip(&tar(&[Entry::File("data", &pattern(8 << 20))]));
    let err = import(&store, layout(&[filler]).path(), name)
        .await
        .expect_err("the disk is full");

    let chain = wharf::error_chain(&err);
    let unpacking_in = format!(
        "the disk holding {}/layer-",
        disk.path().join("tmp").display()
    );
    assert!(
        chain.contains(&unpacking_in) && chain.contains("is full; free space there"),
        "{chain}"
    );
    // Nothing half-done stays: no partial layer, no name.
    assert_empty(&disk.path().join("tmp"));
    assert_empty(&disk.path().join("layers/sha256"));
    assert!(store.get(name).expect("readable").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_that_unpacks_to_more_than_its_estimate_stops_at_the_reserve() {
    // 80 MiB that gzip makes small: the estimate before unpacking passes, the disk
    // (96 MiB) would hold it, but it would eat into the reserve the host keeps.
    let disk = SmallDisk::of(c"size=96m");
    let name = "registry.test/hostile/bomb:1";
    let store = ImageStore::open(disk.path())
        .expect("store opens")
        .with_layer_limits(LayerLimits {
            min_free: 40 << 20,
            ..LayerLimits::default()
        });
    let bomb = Layer::gzip(&tar(&[Entry::File("data", &pattern(80 << 20))]));
    let err = import(&store, layout(&[bomb]).path(), name)
        .await
        .expect_err("stopped at the reserve");
    let chain = wharf::error_chain(&err);
    assert!(
        chain.contains("would leave less than 40Mi free on its disk"),
        "{chain}"
    );
    assert_empty(&disk.path().join("tmp"));
    assert_empty(&disk.path().join("layers/sha256"));
    assert!(store.get(name).expect("readable").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_layer_serves_only_blobs_that_unpack_to_it() {
    let root = tempfile::tempdir().expect("root");
    let store = ImageStore::open(root.path()).expect("store opens");
    let genuine = tar(&[Entry::File("etc/motd", b"genuine")]);
    let forged = tar(&[Entry::File("etc/motd", b"forged")]);
    let diff_id = Digest::of(&genuine);
    import(
        &store,
        layout(&[Layer::gzip(&genuine)]).path(),
        "registry.test/hostile/genuine:1",
    )
    .await
    .expect("imports");

    // Another image pairs a different blob with the cached layer's diff_id.
    let claimed = Layer {
        media_type: LAYER_TAR,
        blob: forged.clone(),
        diff_id: diff_id.clone(),
    };
    let forged_name = "registry.test/hostile/forged:1";
    let err = import(&store, layout(&[claimed]).path(), forged_name)
        .await
        .expect_err("the blob does not unpack to the cached layer");
    let chain = wharf::error_chain(&err);
    assert!(
        chain.contains(&format!("layer {} cannot be unpacked", Digest::of(&forged)))
            && chain.contains("but the image config says"),
        "{chain}"
    );
    assert!(store.get(forged_name).expect("readable").is_none());
    assert_eq!(
        fs::read_to_string(store.layer_dir(&diff_id).join("etc/motd")).expect("cached"),
        "genuine"
    );

    // The same tar in another compression is the same layer: served from the cache.
    import(
        &store,
        layout(&[Layer::plain(&genuine)]).path(),
        "registry.test/hostile/plain:1",
    )
    .await
    .expect("same diff_id, another blob");
}

/// Runs curl; returns its output (headers included with `-D -`).
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Uploads `bytes` as a blob of `repository`, as a registry client does.
fn push_blob(registry: &TestRegistry, repository: &str, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(file.path(), bytes).expect("write");
    let headers = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        &format!("http://{}/v2/{repository}/blobs/uploads/", registry.addr),
    ]);
    let location = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .expect("the registry says where to upload");
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{}{location}", registry.addr)
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{url}{separator}digest={}", Digest::of(bytes)),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_longer_than_its_descriptor_says_is_not_stored() {
    let registry = TestRegistry::start();
    let layer = Layer::gzip(&tar(&[Entry::File("data", &pattern(64 << 10))]));
    let (config, manifest) = config_and_manifest(std::slice::from_ref(&layer));
    // The registry checks that blobs exist, not that their sizes match.
    let declared = layer.blob.len() as u64 - 1;
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("JSON");
    manifest["layers"][0]["size"] = json!(declared);
    let manifest = serde_json::to_vec(&manifest).expect("JSON");
    for blob in [&layer.blob[..], &config[..]] {
        push_blob(&registry, "test/oversized", blob);
    }
    let manifest_file = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(manifest_file.path(), &manifest).expect("write");
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {MANIFEST}"),
        "--data-binary",
        &format!("@{}", manifest_file.path().display()),
        &format!("http://{}/v2/test/oversized/manifests/1", registry.addr),
    ]);

    let root = tempfile::tempdir().expect("root");
    let store = ImageStore::open(root.path()).expect("store opens");
    let name = registry.image("oversized:1");
    let err = store
        .pull(
            &Registries::new(Vec::new()),
            &name.parse::<ImageRef>().expect("reference"),
            PullPolicy::Always,
            &NoProgress,
        )
        .await
        .expect_err("more bytes than declared");
    let chain = wharf::error_chain(&err);
    assert!(
        chain.contains(&format!(
            "the registry sent more of blob {} than the {declared} bytes its descriptor declares",
            layer.digest()
        )),
        "{chain}"
    );
    assert!(!store.content().has_blob(&layer.digest()));
    assert!(store.get(&name).expect("readable").is_none());
    assert_empty(&root.path().join("tmp"));
    assert_empty(&root.path().join("layers/sha256"));
    registry.stop();
}

fn run_wharf(root: &Path, max_layer_size: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env(MAX_LAYER_SIZE_ENV, max_layer_size)
        .env("NO_COLOR", "1")
        .output()
        .expect("wharf runs")
}

#[test]
fn the_layer_size_limit_is_set_by_the_environment_and_named_when_exceeded() {
    let root = tempfile::tempdir().expect("root");
    let layer = Layer::gzip(&tar(&[Entry::File("data", &pattern(4 << 10))]));
    let digest = layer.digest();
    let source = layout(&[layer]);
    let source = source.path().to_str().expect("UTF-8 temp path");

    let output = run_wharf(
        root.path(),
        "1Ki",
        &[
            "image",
            "import",
            source,
            "--name",
            "registry.test/hostile/big:1",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("layer {digest} cannot be unpacked"))
            && stderr.contains("it unpacks to more than 1Ki, the limit for one layer"),
        "{stderr}"
    );

    let output = run_wharf(root.path(), "lots", &["images"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("WHARF_MAX_LAYER_SIZE: invalid quantity \"lots\""),
        "{stderr}"
    );
}
