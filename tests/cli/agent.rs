//! `wharf agent`: a real agent process following a directory with real containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{busybox_until_term, running_by_slot, wharf_at};
use crate::support::TestRegistry;

pub(crate) struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    pub(crate) fn start(root: &Path, dir: &Path, log: PathBuf) -> Self {
        Self::start_with_env(root, dir, log, &[])
    }

    fn start_with_env(root: &Path, dir: &Path, log: PathBuf, env: &[(&str, &str)]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .envs(env.iter().copied())
            .args([
                "--root",
                root.to_str().expect("UTF-8"),
                "agent",
                "--manifests",
            ])
            .arg(dir)
            .args(["--resync", "1s"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("agent starts");
        AgentProcess { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; returns the exit code.
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().ok().and_then(|status| status.code())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    eventually_or(what, timeout, check, String::new);
}

/// Like `eventually`; on timeout the message includes `context()` (e.g. a log).
fn eventually_or(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Running container ids by "service/slot".
fn running(root: &Path) -> BTreeMap<String, String> {
    let run = wharf_at(root, &["ps", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    running_by_slot(&rows)
}

/// How many wharf containers exist, in any state.
fn containers(root: &Path) -> usize {
    let listed = wharf_at(root, &["ps", "--json"]).stdout;
    serde_json::from_str::<serde_json::Value>(&listed)
        .ok()
        .and_then(|rows| rows.as_array().map(Vec::len))
        .unwrap_or(0)
}

fn manifest(name: &str, extra: &str) -> String {
    busybox_until_term(name, extra)
}

/// Writes a file the way editors do: a temporary file renamed over it.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn the_agent_follows_the_directory_keeps_broken_files_and_restarts_crashes() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    let web = dir.join("web.yaml");
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));

    // A new file: its replicas start.
    save(&web, &manifest("web", "replicas: 2\n"));
    eventually("web runs 2 replicas", Duration::from_secs(15), || {
        running(root).len() == 2
    });
    let first = running(root);

    // An edit: both replicas are replaced.
    save(&web, &manifest("web", "replicas: 2\nenv: {MODE: b}\n"));
    eventually("web is replaced", Duration::from_secs(15), || {
        let now = running(root);
        now.len() == 2 && now.iter().all(|(slot, id)| first.get(slot) != Some(id))
    });
    let edited = running(root);

    // A typo: the last good definition stays, nothing restarts, the log says why.
    std::fs::write(&web, manifest("web", "replica: 3\n")).expect("write in place");
    eventually(
        "the agent reports the broken file",
        Duration::from_secs(10),
        || agent.log().contains("kept web as last defined by"),
    );
    assert!(
        agent.log().contains("replica: unknown field"),
        "{}",
        agent.log()
    );
    assert_eq!(running(root), edited);

    // A crashing service is restarted, with growing delays.
    let image = TestRegistry::shared().image("busybox:1");
    save(
        &dir.join("crash.yaml"),
        &format!("apiVersion: wharf/v1\nkind: Service\nname: crash\nimage: {image}\ncommand: [/bin/sh, -c, 'exit 1']\n"),
    );
    eventually("crash is restarted twice", Duration::from_secs(20), || {
        agent.log().matches("restarted crash/0").count() >= 2
    });
    // Logged once the reconcile that restarted it is over.
    eventually(
        "the second restart's backoff is logged",
        Duration::from_secs(5),
        || {
            agent
                .log()
                .contains("crash/0: next restart no sooner than 2s")
        },
    );
    eventually(
        "status shows the crash loop",
        Duration::from_secs(10),
        || {
            wharf_at(root, &["status"])
                .stdout
                .contains("crash-looping, exited (1), next restart in")
        },
    );

    // What the agent did, and why, is in the event log.
    let events = wharf_at(root, &["events"]).stdout;
    assert!(events.contains("kept web as last defined by"), "{events}");
    assert!(
        events.contains("restart crash/0: exited with code 1; restart: always; backoff 1s"),
        "{events}"
    );

    // Deleting a file deletes its services.
    std::fs::remove_file(&web).expect("rm");
    std::fs::remove_file(dir.join("crash.yaml")).expect("rm");
    eventually("web is removed", Duration::from_secs(20), || {
        running(root).is_empty()
    });

    // SIGTERM: the agent exits, leaving what runs.
    save(&web, &manifest("web", ""));
    eventually("web runs again", Duration::from_secs(15), || {
        running(root).len() == 1
    });
    let kept = running(root);
    assert_eq!(agent.terminate(), Some(0));
    assert!(agent
        .log()
        .contains("agent stopped; containers are left running"));
    assert_eq!(running(root), kept);

    // A new agent adopts the running container instead of restarting it.
    let mut second = AgentProcess::start(root, dir, work.path().join("agent2.log"));
    eventually(
        "the new agent has reconciled",
        Duration::from_secs(10),
        || second.log().contains("watching"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(running(root), kept);
    assert_eq!(second.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn many_files_at_once_are_one_reconcile_and_configmap_swaps_are_followed() {
    use std::os::unix::fs::symlink;

    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    // A Kubernetes ConfigMap volume: files are symlinks into ..data, which points to a
    // timestamped directory and is swapped atomically on update.
    let first = dir.join("..2026_11_29_10_00_00.1");
    std::fs::create_dir(&first).expect("mkdir");
    std::fs::write(first.join("cm.yaml"), manifest("cm", "env: {V: '1'}\n")).expect("write");
    symlink(&first, dir.join("..data")).expect("symlink");
    symlink("..data/cm.yaml", dir.join("cm.yaml")).expect("symlink");

    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually("cm runs", Duration::from_secs(15), || {
        running(root).len() == 1
    });
    let before = running(root);

    let second = dir.join("..2026_11_29_10_05_00.2");
    std::fs::create_dir(&second).expect("mkdir");
    std::fs::write(second.join("cm.yaml"), manifest("cm", "env: {V: '2'}\n")).expect("write");
    symlink(&second, dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("atomic swap");
    eventually(
        "cm is replaced after the swap",
        Duration::from_secs(15),
        || {
            let now = running(root);
            now.len() == 1 && now != before
        },
    );

    // Ten files land at once (a `git checkout`): one reconcile creates them all.
    let history = || {
        wharf::state::StateView::open(root)
            .expect("state readable")
            .map(|v| v.history())
            .unwrap_or_default()
    };
    // The replacement is recorded just after its container runs.
    eventually("the swap is recorded", Duration::from_secs(5), || {
        history().last().map(|h| h.summary.as_str()) == Some("1 replaced")
    });
    let generations = history().len();
    let staging = work.path().join("staging");
    std::fs::create_dir(&staging).expect("mkdir");
    for i in 0..10 {
        std::fs::write(
            staging.join(format!("s{i}.yaml")),
            manifest(&format!("s{i}"), ""),
        )
        .expect("write");
    }
    for i in 0..10 {
        std::fs::rename(
            staging.join(format!("s{i}.yaml")),
            dir.join(format!("s{i}.yaml")),
        )
        .expect("move in");
    }
    eventually(
        "all ten run and are recorded",
        Duration::from_secs(30),
        || running(root).len() == 11 && history().len() > generations,
    );
    let after = history();
    assert_eq!(after.len(), generations + 1, "one reconcile: {after:?}");
    assert_eq!(after.last().map(|h| h.summary.as_str()), Some("10 created"));

    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

/// A service whose command is `script` (run by /bin/sh), with extra fields.
fn scripted(name: &str, script: &str, extra: &str) -> String {
    let image = TestRegistry::shared().image("busybox:1");
    format!(
        "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: {image}\n\
         command: [/bin/sh, -c, '{script}']\nstop: {{timeout: 2s}}\n{extra}"
    )
}

/// What a failed wait prints: the agent's log, `wharf status` and `wharf ps`.
fn diagnosis(root: &Path, agent: &AgentProcess) -> String {
    format!(
        "agent log:\n{}\nstatus:\n{}\nps:\n{}",
        agent.log(),
        wharf_at(root, &["status"]).stdout,
        wharf_at(root, &["ps"]).stdout
    )
}

/// `wharf status` lines of running containers that say `healthy`.
fn healthy_lines(root: &Path) -> usize {
    wharf_at(root, &["status"])
        .stdout
        .lines()
        .filter(|line| line.contains("running, healthy"))
        .count()
}

#[test]
fn health_checks_show_in_status_and_unhealthy_containers_are_restarted() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    // HTTP and TCP checks reach into a container's own network namespace.
    save(
        &dir.join("web.yaml"),
        &scripted(
            "web",
            "mkdir -p /www && echo ok > /www/ok && exec httpd -f -p 8080 -h /www",
            "network: none\nhealth: {http: {port: 8080, path: /ok}, interval: 300ms, retries: 2, start_period: 10s}\n",
        ),
    );
    save(
        &dir.join("db.yaml"),
        &scripted(
            "db",
            "exec httpd -f -p 5432 -h /",
            "network: none\nhealth: {tcp: {port: 5432}, interval: 300ms, start_period: 10s}\n",
        ),
    );
    save(
        &dir.join("jobs.yaml"),
        &scripted(
            "jobs",
            "touch /tmp/ready; trap \"exit 0\" TERM; while true; do sleep 0.1; done",
            "health: {exec: [/bin/sh, -c, test -f /tmp/ready], interval: 300ms, retries: 2}\n",
        ),
    );
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually("all three are healthy", Duration::from_secs(30), || {
        healthy_lines(root) == 3
    });
    let before = running(root);

    // The page goes away: two failed checks make web unhealthy, and it is restarted.
    let gone = wharf_at(root, &["exec", "web", "--", "rm", "/www/ok"]);
    assert_eq!(gone.code, 0, "{}", gone.stderr);
    eventually("web is restarted", Duration::from_secs(30), || {
        let now = running(root);
        now.contains_key("web/0") && now.get("web/0") != before.get("web/0")
    });
    let log = agent.log();
    assert!(
        log.contains("restarted web/0: unhealthy (2 checks failed: GET /ok answered 404"),
        "{log}"
    );
    // The exec check fails the same way.
    let gone = wharf_at(root, &["exec", "jobs", "--", "rm", "/tmp/ready"]);
    assert_eq!(gone.code, 0, "{}", gone.stderr);
    eventually("jobs is restarted", Duration::from_secs(30), || {
        let now = running(root);
        now.contains_key("jobs/0") && now.get("jobs/0") != before.get("jobs/0")
    });
    // Logged once the new replica is ready (on the bridge, it joins its service's
    // rotation then).
    eventually_or(
        "the restart is logged",
        Duration::from_secs(30),
        || agent.log().contains("test -f /tmp/ready` exited 1"),
        || agent.log(),
    );
    eventually(
        "all three are healthy again",
        Duration::from_secs(30),
        || healthy_lines(root) == 3,
    );
    assert_eq!(running(root).get("db/0"), before.get("db/0"));
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn a_rollout_that_fails_its_health_check_stops_and_is_not_retried_until_the_next_edit() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    let api = |version: &str, ready: &str| {
        scripted(
            "api",
            &format!("touch {ready}; trap \"exit 0\" TERM; while true; do sleep 0.1; done"),
            &format!(
                "replicas: 3\nenv: {{VERSION: \"{version}\"}}\n\
                 health: {{exec: [/bin/sh, -c, test -f /tmp/ready], interval: 200ms, retries: 2}}\n\
                 update: {{order: start-first, deadline: 10s}}\n"
            ),
        )
    };
    let file = dir.join("api.yaml");
    save(&file, &api("1", "/tmp/ready"));
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually_or(
        "api is healthy",
        Duration::from_secs(30),
        || healthy_lines(root) == 3,
        || diagnosis(root, &agent),
    );
    let v1 = running(root);

    // Version 2 never becomes ready: the first new replica fails, the rollout stops,
    // and every old replica keeps running.
    save(&file, &api("2", "/tmp/elsewhere"));
    eventually_or(
        "the rollout stops",
        Duration::from_secs(30),
        || {
            agent
                .log()
                .contains("stopped the rollout of api at replica 0")
        },
        || diagnosis(root, &agent),
    );
    let log = agent.log();
    assert!(
        log.contains("new replica unhealthy: 2 checks failed"),
        "{log}"
    );
    assert!(log.contains("the old replica keeps running"), "{log}");
    assert_eq!(running(root), v1);
    // Resyncs (every second here) do not try the broken version again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.log().matches("failed to replace").count(), 1);
    assert_eq!(running(root), v1);
    let events = wharf_at(root, &["events"]).stdout;
    assert!(events.contains("stopped the rollout of api"), "{events}");
    // `wharf status` says so under the service, with what to do.
    let status = wharf_at(root, &["status"]).stdout;
    assert!(
        status.starts_with("api  3/3 running")
            && status.contains("\n  rollout stopped at replica 0 (")
            && status.contains("the old replica keeps running; edit the manifest to retry"),
        "{status}"
    );

    // A fixed version rolls out.
    save(&file, &api("3", "/tmp/ready"));
    eventually_or(
        "version 3 runs everywhere",
        Duration::from_secs(40),
        || {
            let now = running(root);
            now.len() == 3
                && now.iter().all(|(slot, id)| v1.get(slot) != Some(id))
                && containers(root) == 3
        },
        || diagnosis(root, &agent),
    );
    let version = wharf_at(
        root,
        &["exec", "api/2", "--", "/bin/sh", "-c", "echo $VERSION"],
    );
    assert_eq!(version.stdout.trim(), "3", "{}", version.stderr);
    let status = wharf_at(root, &["status"]).stdout;
    assert!(!status.contains("rollout stopped"), "{status}");

    // Version 4 fails too; the agent stops. An apply that gets a fixed version 5 out
    // ends the record the agent left.
    save(&file, &api("4", "/tmp/elsewhere"));
    eventually_or(
        "the rollout of version 4 stops",
        Duration::from_secs(30),
        || {
            wharf_at(root, &["status"])
                .stdout
                .contains("rollout stopped")
        },
        || diagnosis(root, &agent),
    );
    assert_eq!(agent.terminate(), Some(0));
    save(&file, &api("5", "/tmp/ready"));
    let run = wharf_at(root, &["apply", "--yes", dir.to_str().expect("UTF-8")]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let status = wharf_at(root, &["status"]).stdout;
    assert!(!status.contains("rollout stopped"), "{status}");
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn every_way_of_changing_files_ends_right_and_restarts_nothing_else() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    let (a, b) = (dir.join("a.yaml"), dir.join("b.yaml"));
    std::fs::write(&a, manifest("a", "")).expect("write");
    std::fs::write(&b, manifest("b", "")).expect("write");
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually("a and b run", Duration::from_secs(15), || {
        running(root).len() == 2
    });
    let start = running(root);

    // Truncate, then write the same text: the agent sees the empty file mid-write and
    // keeps a as it was.
    std::fs::write(&a, "").expect("truncate");
    eventually(
        "the agent has seen the empty file",
        Duration::from_secs(15),
        || agent.log().contains("the file has no services now"),
    );
    std::fs::write(&a, manifest("a", "")).expect("write");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(running(root), start);

    // Write in place with a change: only a is replaced.
    std::fs::write(&a, manifest("a", "env: {A: '2'}\n")).expect("write in place");
    eventually("a is replaced", Duration::from_secs(15), || {
        running(root)
            .get("a/0")
            .is_some_and(|id| Some(id) != start.get("a/0"))
    });
    assert_eq!(running(root).get("b/0"), start.get("b/0"));
    let a_now = running(root).get("a/0").cloned();

    // Delete, then create again: b goes, then comes back.
    std::fs::remove_file(&b).expect("rm");
    eventually("b is removed", Duration::from_secs(15), || {
        !running(root).contains_key("b/0")
    });
    std::fs::write(&b, manifest("b", "")).expect("create");
    eventually("b is back", Duration::from_secs(15), || {
        running(root).contains_key("b/0")
    });

    // Copy a file in; move it out; a rename to .bak is a deletion too.
    let outside = work.path().join("c.yaml");
    std::fs::write(&outside, manifest("c", "")).expect("write");
    std::fs::copy(&outside, dir.join("c.yaml")).expect("copy in");
    eventually("c runs", Duration::from_secs(15), || {
        running(root).contains_key("c/0")
    });
    std::fs::rename(dir.join("c.yaml"), work.path().join("moved.yaml")).expect("move out");
    eventually("c is removed", Duration::from_secs(15), || {
        !running(root).contains_key("c/0")
    });
    std::fs::rename(&b, dir.join("b.yaml.bak")).expect("rename to .bak");
    eventually("b is removed again", Duration::from_secs(15), || {
        !running(root).contains_key("b/0")
    });
    assert_eq!(
        running(root).get("a/0").cloned(),
        a_now,
        "a was never touched"
    );
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn manifests_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    let code = agent.child.wait().ok().and_then(|status| status.code());
    assert_eq!(code, Some(1));
    assert!(
        agent.log().contains("refusing to run:")
            && agent.log().contains("is writable by every user (mode 777)"),
        "{}",
        agent.log()
    );

    // A file a user owns is not followed (the directory itself is fine now).
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = dir.join("web.yaml");
    std::fs::write(&file, manifest("web", "")).expect("write");
    std::os::unix::fs::chown(&file, Some(1000), Some(1000)).expect("chown");
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent2.log"));
    eventually("the file is refused", Duration::from_secs(10), || {
        agent.log().contains("is owned by uid 1000, not root")
    });
    assert!(running(root).is_empty());
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
fn an_agent_killed_mid_reconcile_is_replaced_without_duplicates_or_orphans() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually("the agent watches", Duration::from_secs(10), || {
        agent.log().contains("watching")
    });
    save(&dir.join("web.yaml"), &manifest("web", "replicas: 8\n"));
    eventually("some replicas run", Duration::from_secs(15), || {
        !running(root).is_empty()
    });
    agent.child.kill().expect("kill -9");
    let _ = agent.child.wait();
    assert!(running(root).len() < 8, "killed before it finished");

    let mut second = AgentProcess::start(root, dir, work.path().join("agent2.log"));
    eventually_or(
        "8 replicas run",
        Duration::from_secs(60),
        || running(root).len() == 8,
        || second.log(),
    );
    // One container per slot, and nothing else in the containers directory.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(containers(root), 8);
    let ids: Vec<String> = running(root).into_values().collect();
    assert_eq!(second.terminate(), Some(0));

    // Taking everything down leaves no bundle, mount or cgroup behind.
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
    let bundles = std::fs::read_dir(root.join("containers")).expect("containers dir");
    assert_eq!(bundles.count(), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root_text = root.to_str().expect("UTF-8");
    assert!(!mounts.contains(root_text), "{mounts}");
    let cgroups = [
        "/sys/fs/cgroup/memory/wharf",
        "/sys/fs/cgroup/pids/wharf",
        "/sys/fs/cgroup/wharf",
    ];
    for id in &ids {
        for parent in cgroups {
            assert!(
                !Path::new(parent).join(id).exists(),
                "{parent}/{id} left behind"
            );
        }
    }
}

#[test]
fn a_moved_tag_of_a_pull_always_service_is_rolled_out_or_rolled_back_to_the_digest_that_ran() {
    let registry = crate::support::TestRegistry::start();
    let shared = TestRegistry::shared();
    registry.copy_from(shared, "busybox:1");
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    let image = registry.image("busybox:1");
    // Healthy only where /bin/vi exists: test/layered:1 deletes it.
    std::fs::write(
        dir.join("edge.yaml"),
        format!(
            "apiVersion: wharf/v1\nkind: Service\nname: edge\nimage: {image}\npull: always\n\
             command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
             health: {{exec: [/bin/sh, -c, test -e /bin/vi], interval: 200ms, retries: 2}}\n\
             update: {{order: stop-first}}\n"
        ),
    )
    .expect("write");
    let digest = || {
        let run = wharf_at(root, &["ps", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        rows[0]["image_digest"].as_str().unwrap_or("").to_owned()
    };
    let push = |source: &str, format: &str| {
        crate::support::skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            format,
            &format!("docker://{}", shared.image(source)),
            &format!("docker://{image}"),
        ])
    };
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually_or(
        "edge is healthy",
        Duration::from_secs(30),
        || healthy_lines(root) == 1,
        || diagnosis(root, &agent),
    );
    let good = digest();

    // Someone pushes a broken image under the same tag: the replica is replaced (stop
    // first), fails its check, and gets the image that ran before back, by digest.
    push("layered:1", "oci");
    eventually_or(
        "the rollout stops",
        Duration::from_secs(30),
        || agent.log().contains("stopped the rollout of edge"),
        || diagnosis(root, &agent),
    );
    let log = agent.log();
    assert!(log.contains("rolled back to the previous spec"), "{log}");
    assert_eq!(digest(), good);
    eventually_or(
        "edge is healthy again",
        Duration::from_secs(30),
        || healthy_lines(root) == 1,
        || diagnosis(root, &agent),
    );
    // Resyncs (every second here) do not try the broken digest again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.log().matches("failed to replace").count(), 1);
    assert_eq!(digest(), good);
    let status = wharf_at(root, &["status"]).stdout;
    assert!(
        status.contains("edit the manifest or push the tag again to retry"),
        "{status}"
    );

    // The tag moves again, to a working image (busybox again, as a Docker v2s2
    // manifest: another digest): that is a new rollout.
    push("busybox:1", "v2s2");
    eventually_or(
        "edge runs the new digest",
        Duration::from_secs(30),
        || {
            let now = digest();
            !now.is_empty() && now != good && healthy_lines(root) == 1
        },
        || diagnosis(root, &agent),
    );
    let log = agent.log();
    assert!(
        log.contains("replaced edge/0: ") && log.contains("now resolves to sha256:"),
        "{log}"
    );
    assert_eq!(log.matches("failed to replace").count(), 1, "{log}");
    let status = wharf_at(root, &["status"]).stdout;
    assert!(!status.contains("rollout stopped"), "{status}");
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn credential_helpers_work_while_the_agent_runs_containers() {
    use std::os::unix::fs::PermissionsExt;

    let shared = TestRegistry::shared();
    let private = crate::support::TestRegistry::start_with_login("wharf:s3cret");
    private.copy_from(shared, "busybox:1");
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    // A credential helper (a program the agent's process must run and wait for).
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let helper = bin.join("docker-credential-wharftest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"wharf\",\"Secret\":\"s3cret\"}' \"$server\"\n",
    )
    .expect("write helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        work.path().join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "wharftest"}}}}"#, private.addr),
    )
    .expect("write config");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let docker_config = work.path().to_str().expect("UTF-8");
    let mut agent = AgentProcess::start_with_env(
        root,
        dir,
        work.path().join("agent.log"),
        &[("DOCKER_CONFIG", docker_config), ("PATH", &path)],
    );

    // Containers of this agent run (its reaper is waiting for children)...
    save(&dir.join("web.yaml"), &manifest("web", "replicas: 3\n"));
    eventually("web runs", Duration::from_secs(15), || {
        running(root).len() == 3
    });
    // ...when a service from the private registry needs its helper, five times over.
    let image = private.image("busybox:1");
    for round in 0..5 {
        let name = format!("private{round}");
        save(
            &dir.join(format!("{name}.yaml")),
            &format!(
                "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: {image}\npull: always\n\
                 command: [sleep, '1000']\nstop: {{signal: KILL}}\n"
            ),
        );
        eventually_or(
            "the private service runs",
            Duration::from_secs(20),
            || running(root).contains_key(&format!("{name}/0")),
            || agent.log(),
        );
    }
    assert!(!agent.log().contains("failed"), "{}", agent.log());
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
    private.stop();
}

#[test]
fn a_registry_outage_is_logged_once_shown_in_status_and_leaves_containers_alone() {
    /// A registry process of this test's own, stopped when dropped.
    struct Serving(Child);
    impl Drop for Serving {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let registry = crate::support::TestRegistry::start();
    registry.copy_from(TestRegistry::shared(), "busybox:1");
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let (root, dir) = (root.path(), dir.path());
    let image = registry.image("busybox:1");
    std::fs::write(
        dir.join("edge.yaml"),
        format!(
            "apiVersion: wharf/v1\nkind: Service\nname: edge\nimage: {image}\npull: always\n\
             command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n"
        ),
    )
    .expect("write");
    // Resyncs every second: without a backoff, every one of them (and every wake
    // they cause) asked the registry again.
    let mut agent = AgentProcess::start(root, dir, work.path().join("agent.log"));
    eventually_or(
        "edge runs",
        Duration::from_secs(30),
        || running(root).contains_key("edge/0"),
        || diagnosis(root, &agent),
    );
    let id = running(root).get("edge/0").cloned();

    registry.stop();
    let failing = format!("registry {} failing", registry.addr);
    eventually_or(
        "the outage is logged",
        Duration::from_secs(30),
        || agent.log().contains(&failing),
        || diagnosis(root, &agent),
    );
    eventually_or(
        "status shows the outage",
        Duration::from_secs(10),
        || {
            wharf_at(root, &["status"])
                .stdout
                .contains("tag check failing since")
        },
        || diagnosis(root, &agent),
    );
    // Several resyncs later: still one line, not one per attempt or wake.
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log();
    assert_eq!(log.matches(&failing).count(), 1, "{log}");
    assert_eq!(log.matches("cannot pull").count(), 1, "{log}");
    let status: serde_json::Value =
        serde_json::from_str(&wharf_at(root, &["status", "--json"]).stdout).expect("JSON");
    let edge = &status["services"][0];
    assert_eq!(edge["service"], "edge", "{status}");
    assert_eq!(
        edge["tag_check_failing"]["registry"],
        registry.addr.as_str(),
        "{status}"
    );
    assert!(
        edge["tag_check_failing"]["attempts"].as_u64() >= Some(1),
        "{status}"
    );
    let events = wharf_at(root, &["events"]).stdout;
    assert_eq!(events.matches(&failing).count(), 1, "{events}");
    assert_eq!(
        running(root).get("edge/0").cloned(),
        id,
        "edge was left alone"
    );

    // The registry comes back on the same address, with the same content.
    let _serving = Serving(
        Command::new("docker-registry")
            .arg("serve")
            .arg(registry.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts"),
    );
    let back = format!("registry {} is back", registry.addr);
    eventually_or(
        "the agent sees the registry back",
        Duration::from_secs(60),
        || agent.log().contains(&back),
        || diagnosis(root, &agent),
    );
    let log = agent.log();
    assert_eq!(log.matches(&back).count(), 1, "{log}");
    assert_eq!(log.matches(&failing).count(), 1, "{log}");
    let events = wharf_at(root, &["events"]).stdout;
    assert_eq!(events.matches(&back).count(), 1, "{events}");
    eventually_or(
        "status no longer shows the outage",
        Duration::from_secs(10),
        || {
            !wharf_at(root, &["status"])
                .stdout
                .contains("tag check failing")
        },
        || diagnosis(root, &agent),
    );
    assert_eq!(
        running(root).get("edge/0").cloned(),
        id,
        "edge was left alone"
    );
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}
