//! A host for runtime tests: a private wharf root with the test busybox image pulled.

use std::path::PathBuf;
use std::time::Duration;

use wharf::image::{ImageStore, Registries};
use wharf::manifest::{PullPolicy, Service};
use wharf::runtime::{
    ContainerStatus, CreateRequest, LibcontainerRuntime, ObservedContainer, Runtime, RuntimeError,
};

use crate::support::{service_from_yaml, TestRegistry};

pub struct Host {
    pub root: tempfile::TempDir,
    pub images: ImageStore,
    pub runtime: LibcontainerRuntime,
    pub image: String,
}

impl Host {
    pub async fn new() -> Host {
        // As the CLI runs: everything wharf creates is private unless made otherwise.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        // The registry is prepared before any container exists: the runtime's reaper
        // would otherwise collect the exit status of the helper processes.
        let registry = TestRegistry::shared();
        let root = tempfile::tempdir().expect("temp root");
        let images = ImageStore::open(root.path()).expect("image store");
        let image = registry.image("busybox:1");
        images
            .pull(
                &Registries::new(Vec::new()),
                &image.parse().expect("ref"),
                PullPolicy::IfNotPresent,
                &wharf::image::NoProgress,
            )
            .await
            .expect("pull busybox");
        let runtime = LibcontainerRuntime::open(
            root.path(),
            std::path::Path::new(env!("CARGO_BIN_EXE_wharf-monitor")),
        )
        .expect("runtime");
        Host {
            root,
            images,
            runtime,
            image,
        }
    }

    /// A service named `name` from YAML lines added to a minimal manifest.
    pub fn service(&self, name: &str, extra: &str) -> Service {
        service_from_yaml(name, &self.image, extra)
    }

    pub fn request(&self, service: &Service, slot: u32) -> CreateRequest {
        let image = self
            .images
            .get(&service.spec.image)
            .expect("store readable")
            .expect("image pulled");
        CreateRequest {
            service: service.spec.clone(),
            slot,
            spec_hash: service.hash.clone(),
            layers: self.images.layer_dirs(&image),
            image,
            manifest: Some(PathBuf::from("/etc/wharf/services/test.yaml")),
            files: service.files.clone(),
        }
    }

    pub async fn create(&self, service: &Service, slot: u32) -> Result<String, RuntimeError> {
        self.runtime.create(&self.request(service, slot)).await
    }

    /// Creates and starts replica 0.
    pub async fn run(&self, service: &Service) -> String {
        let id = self.create(service, 0).await.expect("create");
        self.runtime.start(&id).await.expect("start");
        id
    }

    pub async fn observe(&self, id: &str) -> ObservedContainer {
        self.runtime
            .list()
            .await
            .expect("list")
            .into_iter()
            .find(|c| c.id == id)
            .expect("container listed")
    }

    /// Waits for the container to exit and returns its exit code.
    pub async fn exit_code(&self, id: &str) -> Option<i32> {
        for _ in 0..500 {
            if let ContainerStatus::Exited { code, .. } = self.observe(id).await.status {
                if self.runtime.output_complete(id) {
                    return code;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("container {id} did not exit in 10 s")
    }

    /// Runs the service to completion; returns exit code and output.
    pub async fn run_to_exit(&self, service: &Service) -> (Option<i32>, String) {
        let id = self.run(service).await;
        let code = self.exit_code(&id).await;
        let output = self.runtime.logs(&id).text().expect("logs");
        self.runtime.remove(&id).await.expect("remove");
        (code, output)
    }

    /// What a container could leave behind under this root and in the kernel.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for dir in ["containers", "state"] {
            for entry in std::fs::read_dir(self.root.path().join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                found.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
        let root = self.root.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        found.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&root))
                .map(|l| format!("mount {l}")),
        );
        found
    }
}

/// A shell command as `command:` YAML.
pub fn sh(script: &str) -> String {
    format!(
        "command: [/bin/sh, -c, {}]\n",
        serde_json::to_string(script).expect("JSON string")
    )
}

/// cgroup directories left for containers whose id starts with `prefix`.
pub fn cgroup_leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/wharf")];
    for controller in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        parents.push(controller.path().join("wharf"));
    }
    for parent in parents {
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}
