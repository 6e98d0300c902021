//! The executor's and the agent's rules, on the `Runtime` test double with paused
//! time: what happens to a service's replicas when a new version never becomes
//! healthy, in each update order; a failed rollout is not tried again; crashed
//! replicas restart with a growing delay. (tests/cli/agent.rs proves the same with
//! real containers.)

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use wharf::image::{ImageStore, NoProgress, Registries};
use wharf::manifest::{EnvValue, PullPolicy, Service};
use wharf::plan::{plan, Inputs};
use wharf::reconcile::{take_down, Agent, Executor, Parallelism, Report, StepError, StepObserver};
use wharf::runtime::{ContainerStatus, Runtime};
use wharf::state::StateView;
use wharf::testing::FakeRuntime;

use support::{parse_service, service_yaml, TestRegistry};

struct Quiet;
impl StepObserver for Quiet {
    fn finished(&self, _: &wharf::plan::Step, _: Result<(), &StepError>) {}
}

/// A store holding the test busybox image, which the double's containers "run".
struct Images {
    root: tempfile::TempDir,
    store: ImageStore,
    registries: Registries,
    image: String,
}

impl Images {
    async fn new() -> Images {
        let root = tempfile::tempdir().expect("temp root");
        let store = ImageStore::open(root.path()).expect("store");
        let registries = Registries::new(Vec::new());
        let image = TestRegistry::shared().image("busybox:1");
        store
            .pull(
                &registries,
                &image.parse().expect("reference"),
                PullPolicy::IfNotPresent,
                &NoProgress,
            )
            .await
            .expect("pull busybox");
        Images {
            root,
            store,
            registries,
            image,
        }
    }

    /// Service `web` at `version` (an env value: changing it is a rollout), as YAML.
    fn web_yaml(&self, version: u32, extra: &str) -> String {
        let fields = format!(
            "replicas: 2\nenv: {{VERSION: \"{version}\"}}\n\
             health: {{exec: [check], interval: 1s, retries: 2}}\n{extra}"
        );
        service_yaml("web", &self.image, &fields)
    }

    fn web(&self, version: u32, extra: &str) -> Service {
        parse_service("/srv/manifests/web.yaml", &self.web_yaml(version, extra))
    }

    fn executor<'a>(&'a self, runtime: &'a FakeRuntime) -> Executor<'a, FakeRuntime> {
        Executor {
            runtime,
            wait_for_jobs: true,
            root: self.root.path(),
            images: &self.store,
            registries: &self.registries,
            parallel: Parallelism::new(None),
        }
    }

    /// Plans `desired` against what `runtime` runs, and executes the plan.
    async fn converge(&self, runtime: &FakeRuntime, desired: &[Service]) -> Report {
        let observed = runtime.list().await.expect("list");
        let planned = plan(&Inputs {
            desired,
            observed: &observed,
            current_digests: &BTreeMap::new(),
            unhealthy: &BTreeMap::new(),
            manifest_dir: Path::new("/srv/manifests"),
            prune: true,
            hold_back: &Default::default(),
            join_rotation: true,
            stored_contents: &BTreeMap::new(),
            due_jobs: &std::collections::BTreeSet::new(),
        });
        self.executor(runtime)
            .execute(&planned, desired, &observed, &Quiet)
            .await
    }
}

fn version_two(spec: &wharf::manifest::ServiceSpec) -> bool {
    spec.env.get("VERSION").and_then(EnvValue::text) == Some("2")
}

/// `(slot, VERSION)` of each running container.
fn running(runtime: &FakeRuntime) -> Vec<(u32, String)> {
    let mut running: Vec<(u32, String)> = runtime
        .containers()
        .into_iter()
        .filter(|c| c.status == ContainerStatus::Running)
        .map(|c| {
            let version = c.spec.as_deref().and_then(|s| s.env.get("VERSION"));
            let version = version.and_then(EnvValue::text).unwrap_or_default();
            (c.slot, version.to_owned())
        })
        .collect();
    running.sort();
    running
}

#[tokio::test]
async fn start_first_a_version_that_never_gets_healthy_leaves_the_old_replicas_running() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().unhealthy_if(version_two);
    let start_first = "update: {order: start-first}\n";
    let report = images
        .converge(&runtime, &[images.web(1, start_first)])
        .await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(running(&runtime), [(0, "1".into()), (1, "1".into())]);

    let report = images
        .converge(&runtime, &[images.web(2, start_first)])
        .await;
    // The first new replica failed its check: it is gone, the old one kept running,
    // and the rest of the rollout did not start.
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let (step, cause) = &report.failed[0];
    let cause = wharf::error_chain(cause);
    assert_eq!(step.slot, 0);
    assert!(cause.contains("new replica unhealthy"), "{cause}");
    assert!(cause.ends_with("the old replica keeps running"), "{cause}");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(running(&runtime), [(0, "1".into()), (1, "1".into())]);
    assert_eq!(
        runtime.containers().len(),
        2,
        "the failed replica was removed"
    );
}

#[tokio::test]
async fn stop_first_a_version_that_never_gets_healthy_is_rolled_back_in_its_slot() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().unhealthy_if(version_two);
    // The default order: a replica's slot is freed before its new version starts.
    let stop_first = "update: {order: stop-first}\n";
    images
        .converge(&runtime, &[images.web(1, stop_first)])
        .await;
    let old_ids: Vec<String> = runtime.containers().into_iter().map(|c| c.id).collect();

    let report = images
        .converge(&runtime, &[images.web(2, stop_first)])
        .await;
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let cause = wharf::error_chain(&report.failed[0].1);
    assert!(
        cause.ends_with("rolled back to the previous spec"),
        "{cause}"
    );
    // Slot 0 runs version 1 again, in a new container; slot 1 was never touched.
    assert_eq!(running(&runtime), [(0, "1".into()), (1, "1".into())]);
    let ids: Vec<String> = runtime.containers().into_iter().map(|c| c.id).collect();
    assert!(
        !ids.contains(&old_ids[0]) && ids.contains(&old_ids[1]),
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_healthy_version_replaces_every_replica() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().unhealthy_if(version_two);
    images.converge(&runtime, &[images.web(1, "")]).await;
    let report = images.converge(&runtime, &[images.web(3, "")]).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(running(&runtime), [(0, "3".into()), (1, "3".into())]);
}

#[tokio::test]
async fn a_replica_that_cannot_be_created_is_reported_and_stops_its_service_only() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().create_fails_if(version_two);
    let report = images.converge(&runtime, &[images.web(2, "")]).await;
    // New replicas are created together: each failure is reported.
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    assert!(wharf::error_chain(&report.failed[0].1).contains("scripted creation failure"));
    assert!(running(&runtime).is_empty());
}

#[tokio::test]
async fn on_the_bridge_a_new_replica_takes_traffic_before_the_old_one_leaves_and_stops() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new();
    // `network: bridge` is the default; its default update order is start-first.
    images.converge(&runtime, &[images.web(1, "")]).await;
    let old: Vec<String> = runtime.containers().into_iter().map(|c| c.id).collect();
    assert!(runtime.containers().iter().all(|c| c.in_rotation));

    let before = runtime.journal().len();
    let report = images.converge(&runtime, &[images.web(2, "")]).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let journal = runtime.journal()[before..].to_vec();
    let new: Vec<String> = runtime.containers().into_iter().map(|c| c.id).collect();
    let position = |line: String| {
        journal
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no {line:?} in {journal:#?}"))
    };
    for (old, new) in old.iter().zip(&new) {
        // In rotation once healthy, before the old replica is taken out; the old one
        // is taken out before its stop signal.
        assert!(position(format!("serve {new}")) < position(format!("drain {old}")));
        assert!(position(format!("drain {old}")) < position(format!("stop {old}")));
    }
    assert!(runtime.containers().iter().all(|c| c.in_rotation));
}

#[tokio::test]
async fn a_replica_is_kept_out_of_rotation_for_its_drain_time_before_it_is_stopped() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new();
    images
        .converge(&runtime, &[images.web(1, "stop: {drain: 3s}\n")])
        .await;
    let replica = runtime.containers().remove(0);
    assert!(replica.in_rotation);
    let started = tokio::time::Instant::now();
    wharf::runtime::stop_and_remove(&runtime, &replica)
        .await
        .expect("stopped and removed");
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    let journal = runtime.journal();
    let drained = journal
        .iter()
        .position(|l| *l == format!("drain {}", replica.id));
    let stopped = journal
        .iter()
        .position(|l| *l == format!("stop {}", replica.id));
    assert!(drained.is_some() && drained < stopped, "{journal:#?}");
}

/// An agent following a manifest directory of its own, on the test double.
struct Following {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Following {
    fn new() -> Self {
        Following {
            dir: tempfile::tempdir().expect("manifest dir"),
            root: tempfile::tempdir().expect("state root"),
        }
    }

    fn write(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("web.yaml"), yaml).expect("write manifest");
    }

    fn agent<'a>(&'a self, images: &'a Images, runtime: &'a FakeRuntime) -> Agent<'a, FakeRuntime> {
        Agent::new(
            images.executor(runtime),
            self.root.path(),
            self.dir.path(),
            || {},
        )
    }
}

#[tokio::test]
async fn the_agent_does_not_try_a_failed_rollout_again_until_the_manifest_changes() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().unhealthy_if(version_two);
    let following = Following::new();
    let mut agent = following.agent(&images, &runtime);
    let start_first = "update: {order: start-first}\n";

    following.write(&images.web_yaml(1, start_first));
    agent.reconcile().await.expect("reconciled");
    assert_eq!(running(&runtime), [(0, "1".into()), (1, "1".into())]);

    following.write(&images.web_yaml(2, start_first));
    agent.reconcile().await.expect("reconciled");
    let after_failure = runtime.journal().len();
    assert_eq!(running(&runtime), [(0, "1".into()), (1, "1".into())]);

    // Every later wake (a resync, another file's edit) leaves the broken version alone.
    agent.reconcile().await.expect("reconciled");
    agent.reconcile().await.expect("reconciled");
    assert_eq!(
        runtime.journal().len(),
        after_failure,
        "{:?}",
        runtime.journal()
    );

    // A new edit is a new rollout.
    following.write(&images.web_yaml(3, start_first));
    agent.reconcile().await.expect("reconciled");
    assert_eq!(running(&runtime), [(0, "3".into()), (1, "3".into())]);
}

#[tokio::test]
async fn crashed_replicas_restart_no_sooner_than_their_growing_backoff_allows() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new();
    let following = Following::new();
    let mut agent = following.agent(&images, &runtime);
    following.write(&service_yaml("web", &images.image, "restart: always\n"));
    agent.reconcile().await.expect("reconciled");
    let restarts = || {
        let creations = runtime
            .journal()
            .iter()
            .filter(|line| line.starts_with("create web/0"))
            .count();
        creations - 1
    };
    let crash = || {
        let id = runtime.containers()[0].id.clone();
        runtime.crash(&id, 1);
    };

    // The first crash restarts at once; the next must wait for the backoff.
    crash();
    assert_eq!(agent.reconcile().await.expect("reconciled"), None);
    assert_eq!(restarts(), 1);
    crash();
    let due = agent
        .reconcile()
        .await
        .expect("reconciled")
        .expect("a restart is waiting");
    assert_eq!(restarts(), 1, "held back");
    let first_delay = due - tokio::time::Instant::now();

    tokio::time::advance(first_delay).await;
    assert_eq!(agent.reconcile().await.expect("reconciled"), None);
    assert_eq!(restarts(), 2, "restarted once due");

    // And the delay grows.
    crash();
    let due = agent
        .reconcile()
        .await
        .expect("reconciled")
        .expect("a restart is waiting");
    assert!(due - tokio::time::Instant::now() > first_delay);
}

/// Service `name` on the test image with the YAML lines `extra`.
fn named(images: &Images, name: &str, extra: &str) -> Service {
    let text = service_yaml(name, &images.image, &format!("network: none\n{extra}"));
    parse_service(&format!("/srv/manifests/{name}.yaml"), &text)
}

#[tokio::test]
async fn a_service_starts_after_its_dependencies_and_not_at_all_when_one_is_not_healthy() {
    let images = Images::new().await;
    tokio::time::pause();
    // `zdb` sorts after `app`: the order comes from depends_on, not from names.
    let checked = "health: {exec: [check], interval: 1s, retries: 2}\n";
    let db = named(
        &images,
        "zdb",
        &format!("env: {{VERSION: \"1\"}}\n{checked}"),
    );
    let app = named(&images, "app", "depends_on: {zdb: healthy}\n");
    let runtime = FakeRuntime::new().unhealthy_if(version_two);
    let report = images.converge(&runtime, &[app.clone(), db]).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let created: Vec<String> = runtime
        .journal()
        .into_iter()
        .filter(|line| line.starts_with("create"))
        .collect();
    assert!(
        created[0].contains("zdb") && created[1].contains("app"),
        "{created:?}"
    );

    // A dependency that never becomes healthy holds its dependants back.
    let sick_db = named(
        &images,
        "zdb",
        &format!("env: {{VERSION: \"2\"}}\n{checked}"),
    );
    let runtime = FakeRuntime::new().unhealthy_if(version_two);
    let report = images.converge(&runtime, &[app, sick_db]).await;
    let causes: Vec<String> = report
        .failed
        .iter()
        .map(|(step, cause)| format!("{}: {}", step.service, wharf::error_chain(cause)))
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| c.starts_with("app: app waits for zdb to be healthy, but ")),
        "{causes:?}"
    );
    assert!(runtime.containers().iter().all(|c| c.service != "app"));
}

/// Service `name` with `replicas` whose stop timeout is `timeout`.
fn stoppable(images: &Images, name: &str, replicas: u32, timeout: &str) -> Service {
    named(
        images,
        name,
        &format!("replicas: {replicas}\nstop: {{timeout: {timeout}}}\n"),
    )
}

/// `secs` seconds passed since `started` (tokio's timers round up to the millisecond).
fn assert_took(started: tokio::time::Instant, secs: u64) {
    let took = started.elapsed();
    let expected = Duration::from_secs(secs);
    assert!(
        took >= expected && took < expected + Duration::from_millis(100),
        "{took:?}"
    );
}

fn journal_count(runtime: &FakeRuntime, line: &str) -> usize {
    runtime.journal().iter().filter(|l| *l == line).count()
}

#[tokio::test]
async fn taking_many_containers_down_costs_one_stop_timeout_and_each_is_killed_after_its_own() {
    let images = Images::new().await;
    tokio::time::pause();
    // Every container ignores SIGTERM: each stop waits out its own timeout.
    let runtime = FakeRuntime::new().ignores_stop_signal_if(|_| true);
    let services = [
        stoppable(&images, "quick", 30, "2s"),
        stoppable(&images, "slow", 30, "5s"),
    ];
    images.converge(&runtime, &services).await;
    let containers = runtime.containers();
    assert_eq!(containers.len(), 60);

    let root = tempfile::tempdir().expect("root");
    let chosen: Vec<_> = containers.iter().collect();
    let started = tokio::time::Instant::now();
    take_down(
        &runtime,
        root.path(),
        &chosen,
        &Parallelism::new(Some(64)),
        "wharf down",
        |_| {},
    )
    .await
    .expect("all taken down");
    // Side by side: the longest timeout, not 30 × 2 s + 30 × 5 s.
    assert_took(started, 5);
    assert!(runtime.containers().is_empty());
    for container in &containers {
        let id = &container.id;
        assert_eq!(
            journal_count(&runtime, &format!("stop {id}")),
            1,
            "{id} stopped once"
        );
        assert_eq!(
            journal_count(&runtime, &format!("kill {id}")),
            1,
            "{id} killed once"
        );
        assert_eq!(
            journal_count(&runtime, &format!("remove {id}")),
            1,
            "{id} removed once"
        );
    }
    // The state database records every removal, and how the container ended.
    let events = StateView::open(root.path())
        .expect("state")
        .expect("exists")
        .events();
    for container in &containers {
        let (service, slot, id) = (&container.service, container.slot, &container.id);
        let removal = format!(
            "removed {service}/{slot} {id} (wharf down): killed at the end of its stop timeout"
        );
        assert!(events.iter().any(|e| e.message == removal), "{removal}");
    }
}

#[tokio::test]
async fn no_more_containers_stop_at_once_than_asked() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().ignores_stop_signal_if(|_| true);
    images
        .converge(&runtime, &[stoppable(&images, "web", 12, "1s")])
        .await;
    let containers = runtime.containers();
    let chosen: Vec<_> = containers.iter().collect();
    let root = tempfile::tempdir().expect("root");
    let started = tokio::time::Instant::now();
    take_down(
        &runtime,
        root.path(),
        &chosen,
        &Parallelism::new(Some(4)),
        "wharf down",
        |_| {},
    )
    .await
    .expect("all taken down");
    assert_eq!(runtime.most_stops_at_once(), 4);
    // Twelve one-second stops, four at a time.
    assert_took(started, 3);
}

#[tokio::test]
async fn a_container_that_cannot_be_stopped_does_not_abandon_the_others_and_is_reported() {
    let images = Images::new().await;
    tokio::time::pause();
    let stuck = |spec: &wharf::manifest::ServiceSpec| spec.name == "stuck";
    let runtime = FakeRuntime::new().stop_fails_if(stuck);
    let services = [
        stoppable(&images, "stuck", 1, "1s"),
        stoppable(&images, "web", 5, "1s"),
    ];
    images.converge(&runtime, &services).await;
    let containers = runtime.containers();
    let chosen: Vec<_> = containers.iter().collect();
    let root = tempfile::tempdir().expect("root");
    let removed = std::sync::Mutex::new(Vec::new());
    let err = take_down(
        &runtime,
        root.path(),
        &chosen,
        &Parallelism::new(None),
        "wharf down",
        |c| removed.lock().expect("lock").push(c.id.clone()),
    )
    .await
    .expect_err("one could not be stopped");

    let stuck_id = &containers
        .iter()
        .find(|c| c.service == "stuck")
        .expect("stuck")
        .id;
    let message = wharf::error_chain(&err);
    assert!(
        message.starts_with("1 of 6 containers could not be taken down"),
        "{message}"
    );
    assert!(message.contains(stuck_id.as_str()), "{message}");
    // The others went, each told as it went; only the stuck one is left.
    assert_eq!(removed.lock().expect("lock").len(), 5);
    let left: Vec<String> = runtime.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(left, std::slice::from_ref(stuck_id));
    let events = StateView::open(root.path())
        .expect("state")
        .expect("exists")
        .events();
    let failed = events
        .iter()
        .filter(|e| e.message.starts_with("failed to remove stuck/0"));
    assert_eq!(failed.count(), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.message.starts_with("removed web/"))
            .count(),
        5
    );
    // web is forgotten; stuck still has a container, so it is not.
    assert!(events.iter().any(|e| e.message == "took down web"));
    assert!(!events.iter().any(|e| e.message == "took down stuck"));
}

#[tokio::test]
async fn scaling_down_stops_the_extra_replicas_side_by_side() {
    let images = Images::new().await;
    tokio::time::pause();
    let runtime = FakeRuntime::new().ignores_stop_signal_if(|_| true);
    images
        .converge(&runtime, &[stoppable(&images, "web", 40, "3s")])
        .await;
    let started = tokio::time::Instant::now();
    let report = images
        .converge(&runtime, &[stoppable(&images, "web", 2, "3s")])
        .await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.done.len(), 38);
    assert_eq!(runtime.containers().len(), 2);
    assert_took(started, 3); // one timeout, not 38
    let stops = runtime
        .journal()
        .iter()
        .filter(|l| l.starts_with("stop "))
        .count();
    assert_eq!(stops, 38, "each extra replica stopped once");
}
