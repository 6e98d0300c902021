//! `wharf agent`: a real agent process following a directory with real containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::wharf_at;
use crate::support::TestRegistry;

struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    fn start(root: &Path, dir: &Path, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; returns the exit code.
    fn terminate(&mut self) -> Option<i32> {
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

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Running container ids by "service/slot".
fn running(root: &Path) -> BTreeMap<String, String> {
    let run = wharf_at(root, &["ps", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    rows.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "running")
        .map(|r| {
            (
                format!("{}/{}", r["service"].as_str().unwrap_or(""), r["replica"]),
                r["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn manifest(name: &str, extra: &str) -> String {
    let image = TestRegistry::shared().image("busybox:1");
    format!(
        "apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: {image}\n\
         command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n{extra}"
    )
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
    assert!(
        agent
            .log()
            .contains("crash/0: next restart no sooner than 2s"),
        "{}",
        agent.log()
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
        events.contains("restart crash/0: exited with code 1; restart: always"),
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
            .map(|v| v.history())
            .unwrap_or_default()
    };
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
    eventually("all ten run", Duration::from_secs(30), || {
        running(root).len() == 11
    });
    let after = history();
    assert_eq!(after.len(), generations + 1, "one reconcile: {after:?}");
    assert_eq!(after.last().map(|h| h.summary.as_str()), Some("10 created"));

    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}
