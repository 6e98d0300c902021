//! Container churn: create + start + wait + remove of `/bin/true`, through wharf's
//! runtime (libcontainer in this process) against `runc run` of an equivalent bundle
//! (same rootfs, same command), alternating, in one run. Prints ms per container and
//! the ratio. Run as root: `cargo bench --bench runtime` (needs runc, umoci, skopeo).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wharf::image::ImageStore;
use wharf::manifest::parse_manifest;
use wharf::runtime::{ContainerStatus, CreateRequest, LibcontainerRuntime, Runtime};

const ROUNDS: usize = 30;

fn main() {
    if Command::new("runc").arg("--version").output().is_err() {
        eprintln!("runc is not installed: apt-get install runc");
        std::process::exit(1);
    }
    let executor = tokio::runtime::Runtime::new().expect("tokio");
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().join("root");

    // The image, built offline and imported (no registry needed).
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/test-registry");
    run(Command::new("bash")
        .arg(&helper)
        .arg("build-images")
        .arg(work.path()));
    let single = work.path().join("busybox-layout");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:busybox", work.path().join("build/oci").display()),
        &format!("oci:{}:busybox", single.display()),
    ]));
    let images = ImageStore::open(&root).expect("store");
    executor
        .block_on(images.import(&single, None))
        .expect("import");
    let image = images
        .get("docker.io/library/busybox:latest")
        .expect("store")
        .expect("imported");
    let layers = images.layer_dirs(&image);

    // runc's bundle: the same layer as a read-only root, `runc spec` adjusted.
    let bundle = work.path().join("runc-bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    run(Command::new("runc").arg("spec").current_dir(&bundle));
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config")).expect("JSON");
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["root"]["path"] = layers[0].display().to_string().into();
    std::fs::write(&config_path, config.to_string()).expect("write config");

    let text = format!(
        "apiVersion: wharf/v1\nkind: Service\nname: churn\nimage: {}\ncommand: [/bin/true]\nnetwork: none\n",
        image.name
    );
    let service = parse_manifest(Path::new("bench.yaml"), text.as_bytes())
        .expect("valid")
        .remove(0);
    let runtime = LibcontainerRuntime::open(&root, Path::new(env!("CARGO_BIN_EXE_wharf-monitor")))
        .expect("runtime");
    let request = CreateRequest {
        service: service.spec.clone(),
        slot: 0,
        spec_hash: service.hash.clone(),
        image,
        layers,
        manifest: None,
        files: Default::default(),
    };

    let mut wharf_ms = Vec::new();
    let mut runc_ms = Vec::new();
    for round in 0..ROUNDS {
        let runc_round = || {
            let started = Instant::now();
            run(Command::new("runc")
                .args([
                    "--root",
                    &work.path().join("runc-state").display().to_string(),
                ])
                .args([
                    "run",
                    "--bundle",
                    &bundle.display().to_string(),
                    &format!("bench-{round}"),
                ]));
            started.elapsed()
        };
        let wharf_round = || {
            let started = Instant::now();
            executor.block_on(async {
                let id = runtime.create(&request).await.expect("create");
                runtime.start(&id).await.expect("start");
                loop {
                    let status = runtime
                        .list()
                        .await
                        .expect("list")
                        .into_iter()
                        .find(|c| c.id == id)
                        .map(|c| c.status);
                    if matches!(status, Some(ContainerStatus::Exited { .. })) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                runtime.remove(&id).await.expect("remove");
            });
            started.elapsed()
        };
        // Alternate so that neither always runs on a warmer machine.
        if round % 2 == 0 {
            wharf_ms.push(ms(wharf_round()));
            runc_ms.push(ms(runc_round()));
        } else {
            runc_ms.push(ms(runc_round()));
            wharf_ms.push(ms(wharf_round()));
        }
    }
    let (wharf, runc) = (median(&mut wharf_ms), median(&mut runc_ms));
    println!("create + start + wait + remove of /bin/true, median of {ROUNDS}:");
    println!("  wharf runtime (libcontainer, overlay rootfs, network: none)  {wharf:6.1} ms");
    println!("  runc run (same layer as read-only root, runc's default spec)  {runc:6.1} ms");
    println!("  ratio wharf / runc  {:.2}  (goal: < 1.00)", wharf / runc);
    println!(
        "  ratio wharf / 7 ms libcontainer floor (HOST-NOTES)  {:.2}  (goal: <= 1.50)",
        wharf / 7.0
    );
}

fn run(command: &mut Command) {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
