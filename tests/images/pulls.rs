//! Pulling from a real registry into the store, with each policy.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::sync::Mutex;

use wharf::error_chain;
use wharf::image::{
    Digest, ImageError, ImageStore, NoProgress, Platform, PullProgress, Registries,
};
use wharf::manifest::{ImageRef, PullPolicy};

use crate::support::{skopeo_inspect_layout, TestRegistry};

fn reference(text: &str) -> ImageRef {
    text.parse().expect("valid reference")
}

struct Fixture {
    root: tempfile::TempDir,
    store: ImageStore,
    registries: Registries,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().expect("temp root");
    let store = ImageStore::open(root.path()).expect("store opens");
    Fixture {
        root,
        store,
        registries: Registries::new(Vec::new()),
    }
}

impl Fixture {
    async fn pull(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> Result<wharf::image::LocalImage, ImageError> {
        self.store
            .pull(&self.registries, &reference(image), policy, &NoProgress)
            .await
    }
}

/// Counts downloads per digest.
#[derive(Default)]
struct Downloads(Mutex<HashMap<Digest, usize>>);

impl PullProgress for Downloads {
    fn started(&self, digest: &Digest, _: u64) {
        *self
            .0
            .lock()
            .expect("lock")
            .entry(digest.clone())
            .or_default() += 1;
    }
    fn advanced(&self, _: &Digest, _: u64) {}
    fn finished(&self, _: &Digest) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_layer_image_is_stored_as_a_standard_oci_layout() {
    let registry = TestRegistry::shared();
    let f = fixture();
    let name = registry.image("busybox:1");
    let image = f.pull(&name, PullPolicy::IfNotPresent).await.expect("pull");

    assert_eq!(image.name, name);
    assert_eq!(image.manifest.layers.len(), 1);
    let layer = &f.store.layer_dirs(&image)[0];
    assert!(layer.join("bin/busybox").is_file());
    assert!(layer.join("bin/sh").is_symlink());
    // skopeo reads what wharf stored.
    let inspected = skopeo_inspect_layout(&f.root.path().join("images"), &name);
    assert_eq!(inspected["Digest"], image.digest().as_str());
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_layer_image_keeps_its_whiteouts_for_overlayfs() {
    let registry = TestRegistry::shared();
    let f = fixture();
    let image = f
        .pull(&registry.image("layered:1"), PullPolicy::Always)
        .await
        .expect("pull");
    let layers = f.store.layer_dirs(&image);
    assert_eq!(layers.len(), 3);
    let vi = std::fs::symlink_metadata(layers[1].join("bin/vi")).expect("whiteout of bin/vi");
    assert!(vi.file_type().is_char_device());
    assert!(layers[1].join("data/first").is_file());
    assert!(layers[2].join("data/second").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_arch_index_resolves_to_this_hosts_platform() {
    let registry = TestRegistry::shared();
    let f = fixture();
    let image = f
        .pull(&registry.image("multiarch:1"), PullPolicy::Always)
        .await
        .expect("pull");
    assert_eq!(image.config.architecture, Platform::host().architecture);

    let err = f
        .pull(&registry.image("foreign:1"), PullPolicy::Always)
        .await
        .expect_err("no match");
    assert_eq!(
        err.to_string(),
        format!(
            "{} offers no image for {}; it has linux/s390x, linux/riscv64",
            registry.image("foreign:1"),
            Platform::host()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_can_be_pulled_by_digest() {
    let registry = TestRegistry::shared();
    let f = fixture();
    let by_tag = f
        .pull(&registry.image("busybox:1"), PullPolicy::Always)
        .await
        .expect("pull");
    let pinned = format!("{}/test/busybox@{}", registry.addr, by_tag.digest());
    let by_digest = f
        .pull(&pinned, PullPolicy::Always)
        .await
        .expect("pull by digest");
    assert_eq!(by_digest.digest(), by_tag.digest());
    assert_eq!(by_digest.name, pinned);

    let wrong = format!("{}/test/busybox@{}", registry.addr, Digest::of(b"not it"));
    let err = f
        .pull(&wrong, PullPolicy::Always)
        .await
        .expect_err("unknown digest");
    assert!(
        error_chain(&err).contains("manifest unknown"),
        "{}",
        error_chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_stored_under_a_tag_that_moved_is_still_found_by_digest_offline() {
    let shared = TestRegistry::shared();
    let registry = TestRegistry::start();
    registry.copy_from(shared, "busybox:1");
    let f = fixture();
    let tag = registry.image("busybox:1");
    let before = f.pull(&tag, PullPolicy::Always).await.expect("pull");
    crate::support::skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", shared.image("layered:1")),
        &format!("docker://{tag}"),
    ]);
    let after = f.pull(&tag, PullPolicy::Always).await.expect("pull");
    assert_ne!(after.digest(), before.digest());

    // The tag now names the new content; the old content is kept (until pruned) and
    // a reference pinned to its digest finds it without asking the registry.
    registry.stop();
    let pinned = format!("{tag}@{}", before.digest());
    let found = f
        .pull(&pinned, PullPolicy::IfNotPresent)
        .await
        .expect("found offline");
    assert_eq!(found.digest(), before.digest());
    assert_eq!(found.config, before.config);
    assert_eq!(
        f.pull(&tag, PullPolicy::IfNotPresent)
            .await
            .expect("by tag")
            .digest(),
        after.digest()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_policies_decide_whether_the_registry_is_asked() {
    let registry = TestRegistry::shared();
    let f = fixture();
    f.pull(&registry.image("busybox:1"), PullPolicy::Always)
        .await
        .expect("pull");
    // The same image under a name whose registry does not exist.
    let offline = "127.0.0.1:9/test/busybox:1";
    f.store
        .tag(&registry.image("busybox:1"), offline)
        .expect("tag");

    f.pull(offline, PullPolicy::IfNotPresent)
        .await
        .expect("present: registry not asked");
    f.pull(offline, PullPolicy::Never)
        .await
        .expect("present: registry not asked");
    let err = f
        .pull(offline, PullPolicy::Always)
        .await
        .expect_err("always asks the registry");
    assert!(
        error_chain(&err).contains("Connection refused"),
        "{}",
        error_chain(&err)
    );

    let err = f
        .pull("127.0.0.1:9/test/absent:1", PullPolicy::Never)
        .await
        .expect_err("absent");
    assert_eq!(
        err.to_string(),
        "127.0.0.1:9/test/absent:1 is not present locally and its pull policy is `never`; run `wharf pull 127.0.0.1:9/test/absent:1` or `wharf image import` first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_download_a_shared_layer_once() {
    let registry = TestRegistry::shared();
    let f = fixture();
    let downloads = Downloads::default();
    // busybox:1 and layered:1 share their first layer.
    let (busybox, layered) = (
        reference(&registry.image("busybox:1")),
        reference(&registry.image("layered:1")),
    );
    let (a, b) = tokio::join!(
        f.store
            .pull(&f.registries, &busybox, PullPolicy::Always, &downloads),
        f.store
            .pull(&f.registries, &layered, PullPolicy::Always, &downloads),
    );
    let (a, b) = (a.expect("busybox"), b.expect("layered"));
    let shared = &a.manifest.layers[0].digest;
    assert_eq!(&b.manifest.layers[0].digest, shared);
    let counts = downloads.0.lock().expect("lock");
    assert_eq!(counts.get(shared), Some(&1), "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let shared = TestRegistry::shared();
    let registry = TestRegistry::start();
    registry.copy_from(shared, "busybox:1");
    let f = fixture();
    // Learn the layer digest from a clean pull elsewhere, then damage it.
    let clean = fixture();
    let image = clean
        .pull(&registry.image("busybox:1"), PullPolicy::Always)
        .await
        .expect("clean pull");
    let layer = image.manifest.layers[0].digest.clone();
    let data = registry.blob_file(layer.as_str());
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).expect("corrupt");

    let err = f
        .pull(&registry.image("busybox:1"), PullPolicy::Always)
        .await
        .expect_err("corrupt");
    assert!(
        error_chain(&err).contains("digest mismatch"),
        "{}",
        error_chain(&err)
    );
    assert!(!f.store.content().has_blob(&layer));
    assert!(f
        .store
        .get(&registry.image("busybox:1"))
        .expect("readable")
        .is_none());
    let leftovers: Vec<_> = std::fs::read_dir(f.root.path().join("tmp"))
        .expect("tmp")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    registry.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_registry_and_an_unknown_tag_give_clear_errors() {
    let registry = TestRegistry::start();
    let f = fixture();
    let err = f
        .pull(&registry.image("nothing:1"), PullPolicy::Always)
        .await
        .expect_err("unknown");
    let chain = error_chain(&err);
    assert!(
        chain.starts_with(&format!(
            "cannot pull {} from {}",
            registry.image("nothing:1"),
            registry.addr
        )),
        "{chain}"
    );
    assert!(chain.contains("manifest unknown"), "{chain}");

    registry.stop();
    let err = f
        .pull(&registry.image("nothing:1"), PullPolicy::Always)
        .await
        .expect_err("down");
    assert!(
        error_chain(&err).contains("Connection refused"),
        "{}",
        error_chain(&err)
    );
}
