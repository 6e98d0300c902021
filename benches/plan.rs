//! Planning time for 1,000 and 10,000 synthetic services, when nothing changed and
//! when every service changed, against a reference measured in the same run:
//! computing the spec hash of every service (the least work any planner must do).
//! Goal: 1,000 services planned in under 100 ms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wharf::manifest::{parse_manifest, Service, SpecHash};
use wharf::plan::{plan, Inputs};
use wharf::runtime::{ContainerStatus, ObservedContainer};

const RUNS: usize = 11;

fn services(count: usize, env: &str) -> Vec<Service> {
    (0..count)
        .map(|i| {
            let text = format!(
                "apiVersion: wharf/v1\nkind: Service\nname: svc-{i}\nimage: reg.lan/app:{}\nreplicas: 2\nenv: {{MODE: {env}}}\nresources: {{memory: 64Mi}}\n",
                i % 7
            );
            parse_manifest(Path::new("/srv/m/s.yaml"), text.as_bytes()).expect("valid").remove(0)
        })
        .collect()
}

fn observed(services: &[Service]) -> Vec<ObservedContainer> {
    services
        .iter()
        .flat_map(|service| {
            (0..service.spec.replicas).map(move |slot| ObservedContainer {
                id: format!("{}-{slot}-000000", service.name()),
                service: service.name().to_owned(),
                slot,
                status: ContainerStatus::Running,
                pid: Some(1),
                started_at: None,
                spec_hash: service.hash.to_string(),
                image: service.spec.image.clone(),
                image_digest: "sha256:x".into(),
                manifest: None,
                manifest_dir: Some(PathBuf::from("/srv/m")),
                spec: Some(Box::new(service.spec.clone())),
                unmonitored: false,
                address: None,
                in_rotation: false,
                files: Default::default(),
            })
        })
        .collect()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time(mut work: impl FnMut()) -> Duration {
    median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                work();
                started.elapsed()
            })
            .collect(),
    )
}

fn main() {
    println!("plan time, median of {RUNS} (reference: hashing every spec once)");
    for count in [1_000, 10_000] {
        let desired = services(count, "a");
        let running = observed(&desired);
        let changed = observed(&services(count, "b"));
        let digests = BTreeMap::new();
        let inputs = |observed: &[ObservedContainer]| {
            let started = Instant::now();
            let plan = plan(&Inputs {
                desired: &desired,
                observed,
                current_digests: &digests,
                unhealthy: &BTreeMap::new(),
                manifest_dir: Path::new("/srv/m"),
                prune: true,
                hold_back: &Default::default(),
                join_rotation: true,
                stored_contents: &BTreeMap::new(),
                due_jobs: &std::collections::BTreeSet::new(),
            });
            (started.elapsed(), plan.steps.len())
        };
        let reference = time(|| {
            std::hint::black_box(
                desired
                    .iter()
                    .map(|s| SpecHash::of(&s.spec, &s.files))
                    .collect::<Vec<_>>(),
            );
        });
        let (mut noop_runs, mut changed_runs) = (Vec::new(), Vec::new());
        let (mut noop_steps, mut changed_steps) = (0, 0);
        for _ in 0..RUNS {
            let (elapsed, steps) = inputs(&running);
            noop_runs.push(elapsed);
            noop_steps = steps;
            let (elapsed, steps) = inputs(&changed);
            changed_runs.push(elapsed);
            changed_steps = steps;
        }
        let (noop, all_changed) = (median(noop_runs), median(changed_runs));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  {count:>6} services: no-op {:8.2} ms ({noop_steps} steps, {:5.2}x reference), all changed {:8.2} ms ({changed_steps} steps, {:5.2}x reference); reference {:.2} ms",
            ms(noop),
            ms(noop) / ms(reference),
            ms(all_changed),
            ms(all_changed) / ms(reference),
            ms(reference)
        );
    }
}
