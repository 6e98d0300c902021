//! Fixtures shared by the test crates: a real registry (Debian's docker-registry on
//! a loopback port, with the test images that `tests/support/test-registry` builds
//! offline and pushes), and services from YAML.

#![allow(dead_code)] // Each test crate uses a different part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wharf::manifest::{parse_manifest, Service};

pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: PathBuf,
    /// `USER:PASSWORD` when the registry requires a login.
    pub login: Option<String>,
    _keep: tempfile::TempDir,
}

impl TestRegistry {
    /// One registry with the test images for the whole test process; it stops by
    /// itself when the process exits.
    pub fn shared() -> &'static TestRegistry {
        static SHARED: OnceLock<TestRegistry> = OnceLock::new();
        SHARED.get_or_init(|| {
            let registry = TestRegistry::start();
            script(&[
                "push-images",
                &registry.dir.display().to_string(),
                &registry.addr,
            ]);
            registry
        })
    }

    /// An empty registry of its own, for tests that damage what it stores.
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// An empty registry that requires the login `user:password`.
    pub fn start_with_login(login: &str) -> TestRegistry {
        Self::start_with(Some(login))
    }

    fn start_with(login: Option<&str>) -> TestRegistry {
        let keep = tempfile::tempdir().expect("temp dir for the registry");
        let dir = keep.path().to_owned();
        let owner = std::process::id().to_string();
        let mut args = vec!["start", dir.to_str().expect("UTF-8 temp path"), &owner];
        args.extend(login);
        let addr = script(&args);
        TestRegistry {
            addr,
            dir,
            login: login.map(str::to_owned),
            _keep: keep,
        }
    }

    /// `ADDR/test/NAME`, e.g. `image("busybox:1")`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/test/{name}", self.addr)
    }

    /// Copies an image from another registry into this one.
    pub fn copy_from(&self, other: &TestRegistry, name: &str) {
        let mut copy = Command::new("skopeo");
        copy.args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]);
        if let Some(login) = &self.login {
            copy.args(["--dest-creds", login]);
        }
        copy.arg(format!("docker://{}", other.image(name)))
            .arg(format!("docker://{}", self.image(name)));
        run(&mut copy);
    }

    /// The file in the registry's storage that holds blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn stop(&self) {
        script(&["stop", &self.dir.display().to_string()]);
    }
}

fn script(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/test-registry");
    run(Command::new("bash").arg(script).args(args))
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("helper runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `skopeo inspect` of an image in an OCI layout, as JSON.
pub fn skopeo_inspect_layout(layout: &Path, name: &str) -> serde_json::Value {
    let out =
        run(Command::new("skopeo").args(["inspect", &format!("oci:{}:{name}", layout.display())]));
    serde_json::from_str(&out).expect("skopeo prints JSON")
}

/// Runs skopeo with `args` (e.g. to write a layout or archive for import tests).
pub fn skopeo(args: &[&str]) {
    run(Command::new("skopeo").args(args));
}

/// The test busybox image in the shared registry: `ADDR/test/busybox:1`.
pub fn busybox() -> String {
    TestRegistry::shared().image("busybox:1")
}

/// The manifest of service `name` running `image`, with the YAML lines `extra` after.
pub fn service_yaml(name: &str, image: &str, extra: &str) -> String {
    format!("apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: {image}\n{extra}")
}

/// [`service_yaml`] of the test busybox image.
pub fn busybox_yaml(name: &str, extra: &str) -> String {
    service_yaml(name, &busybox(), extra)
}

/// The one service the manifest `text` defines, as if read from the file `path`.
pub fn parse_service(path: &str, text: &str) -> Service {
    let mut services = parse_manifest(Path::new(path), text.as_bytes())
        .unwrap_or_else(|errors| panic!("invalid test manifest {path}: {errors:?}"));
    assert_eq!(services.len(), 1, "one service in {path}");
    services.remove(0)
}

/// Service `name` running `image`, with the YAML lines `extra` ([`service_yaml`]),
/// read from `test.yaml`.
pub fn service_from_yaml(name: &str, image: &str, extra: &str) -> Service {
    parse_service("test.yaml", &service_yaml(name, image, extra))
}
