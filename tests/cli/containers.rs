//! Containers through the CLI: each command is a new wharf process, so these also
//! show that containers outlive the process that created them.

use crate::common::{ok, ps, service_file, wharf_at, write};
use crate::support::{busybox, busybox_yaml, service_yaml};

/// Output reaches the log through the monitor a moment after it is written: runs
/// `wharf ARGS` until it prints `expected` (up to 10 s) and returns what it printed last.
fn output_until(root: &std::path::Path, args: &[&str], expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        last = ok(&wharf_at(root, args)).to_owned();
        if last == expected {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    last
}

#[test]
fn a_container_outlives_its_creator_and_a_new_process_manages_it() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let file = service_file(
        work.path(),
        "cli",
        "command: [/bin/sh, -c, 'echo ready; trap \"echo bye; exit 0\" TERM; while true; do sleep 0.1; done']\nstop: {timeout: 5s}\n",
    );
    let run = wharf_at(root.path(), &["run", &file, "--replica", "1"]);
    let id = ok(&run).trim().to_owned();
    assert!(id.starts_with("cli-1-"), "{id}");

    // The creating process has exited; others see the container running.
    let listed = ps(root.path());
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "running");
    assert_eq!(listed[0]["replica"], 1);

    assert_eq!(
        output_until(root.path(), &["logs", "cli"], "ready\n"),
        "ready\n"
    );

    let run = wharf_at(
        root.path(),
        &[
            "exec",
            "cli/1",
            "--",
            "sh",
            "-c",
            "echo $WHARF_SERVICE-$WHARF_REPLICA; exit 4",
        ],
    );
    assert_eq!(run.code, 4);
    assert_eq!(run.stdout, "cli-1\n");

    let run = wharf_at(root.path(), &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(ok(&run)).expect("JSON");
    assert!(
        stats[0]["pids"].as_u64().is_some_and(|pids| pids >= 1),
        "{stats}"
    );
    assert!(
        stats[0]["memory_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "{stats}"
    );

    ok(&wharf_at(root.path(), &["stop", "cli/1"]));
    // Its monitor recorded the exit; nothing restarts it without an agent.
    assert_eq!(
        ps(root.path())[0]["status"],
        "exited (0); restart: always, but no agent is running"
    );
    // Written after the creating process had exited: the monitor outlives it too.
    assert_eq!(
        output_until(root.path(), &["logs", "cli", "--tail", "1"], "bye\n"),
        "bye\n"
    );
    let run = wharf_at(root.path(), &["logs", "cli", "--timestamps"]);
    let lines: Vec<&str> = ok(&run).lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for (line, text) in lines.iter().zip(["ready", "bye"]) {
        let (time, rest) = line.split_once(' ').expect("time, then text");
        assert!(
            time.len() > 20 && time.ends_with('Z') && time.contains('T'),
            "{line}"
        );
        assert_eq!(*rest, *text);
    }

    ok(&wharf_at(root.path(), &["rm", "cli"]));
    assert_eq!(ps(root.path()), serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(root.path().join("containers"))
            .expect("dir")
            .count(),
        0
    );
}

#[test]
fn unknown_targets_and_signals_are_clear_errors() {
    let root = tempfile::tempdir().expect("root");
    let run = wharf_at(root.path(), &["logs", "nothing"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "error: no container matches \"nothing\" (see `wharf ps`)\n"
    );
    let run = wharf_at(root.path(), &["kill", "web/x"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("the replica after / must be a number"),
        "{}",
        run.stderr
    );
    let run = wharf_at(root.path(), &["kill", "web", "--signal", "SIGNOPE"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown signal \"SIGNOPE\""),
        "{}",
        run.stderr
    );
}

#[test]
fn run_reports_an_image_that_is_not_present_with_pull_never() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let file = write(
        work.path(),
        "svc.yaml",
        service_yaml("offline", "127.0.0.1:9/absent:1", "pull: never\n"),
    );
    let run = wharf_at(root.path(), &["run", file.to_str().expect("UTF-8")]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("127.0.0.1:9/absent:1 is not present locally and its pull policy is `never`"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_dir(root.path().join("containers"))
            .expect("dir")
            .count(),
        0
    );
}

#[test]
fn prune_keeps_what_existing_containers_were_made_from() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let file = service_file(work.path(), "cli", "command: [sleep, \"30\"]\n");
    ok(&wharf_at(root.path(), &["run", &file]));
    let image = busybox();
    ok(&wharf_at(root.path(), &["image", "rm", &image]));

    // Only the compressed layer goes: the running container's unpacked layer stays, and
    // so do the image's manifest and config (a rollback can create it again from them).
    let run = wharf_at(root.path(), &["image", "prune"]);
    assert!(ok(&run).contains(": 1 blobs, 0 layers"), "{}", run.stdout);
    let run = wharf_at(root.path(), &["image", "prune"]);
    assert!(ok(&run).contains(": 0 blobs, 0 layers"), "{}", run.stdout);
    let run = wharf_at(root.path(), &["exec", "cli", "--", "ls", "/bin/busybox"]);
    assert_eq!(ok(&run), "/bin/busybox\n");
    ok(&wharf_at(root.path(), &["rm", "cli"]));
}

#[test]
fn logs_end_quietly_when_the_reader_stops_early() {
    use std::io::Read;

    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    // 20,000 lines: far more than a pipe holds.
    let file = service_file(
        dir.path(),
        "cli",
        "command: [/bin/sh, -c, 'seq 20000; echo done; exec sleep 1000']\nstop: {signal: KILL}\n",
    );
    ok(&wharf_at(root.path(), &["run", &file]));
    let last = output_until(root.path(), &["logs", "cli", "--tail", "1"], "done\n");
    assert_eq!(last, "done\n");

    // `wharf logs cli | head -c 10`: the reader goes away after 10 bytes.
    let mut logs = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--root")
        .arg(root.path())
        .args(["logs", "cli"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wharf logs");
    let mut first = [0u8; 10];
    logs.stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("read");
    let status = logs.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "no panic on a closed pipe");
    assert_eq!(&first, b"1\n2\n3\n4\n5\n");
    ok(&wharf_at(root.path(), &["rm", "cli"]));
}

#[test]
fn down_stops_containers_side_by_side_each_with_its_own_signal_and_timeout() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    // `sleep` as PID 1 ignores SIGTERM: each of these is killed at the end of its
    // 2 s timeout. `polite` handles SIGTERM and ends at once.
    let stubborn = "replicas: 6\nnetwork: none\ncommand: [sleep, '1000']\nstop: {timeout: 2s}\n";
    write(
        dir.path(),
        "stubborn.yaml",
        busybox_yaml("stubborn", stubborn),
    );
    let polite =
        crate::common::busybox_until_term("polite", "network: none\nstop: {timeout: 60s}\n");
    write(dir.path(), "polite.yaml", polite);
    ok(&crate::common::apply(root.path(), dir.path(), &[]));

    let down = wharf_at(root.path(), &["down", "--all"]);
    assert_eq!(
        ok(&down).lines().count(),
        7,
        "one line per removed container"
    );
    assert_eq!(ps(root.path()), serde_json::json!([]));
    // One event per removal, saying how each ended.
    let events = ok(&wharf_at(root.path(), &["events"])).to_owned();
    let killed = events
        .lines()
        .filter(|l| l.contains("removed stubborn/"))
        .filter(|l| l.ends_with("(wharf down): killed at the end of its stop timeout"))
        .count();
    assert_eq!(killed, 6, "{events}");
    assert!(
        events
            .lines()
            .any(|l| l.contains("removed polite/0") && l.ends_with("ended on its stop signal")),
        "{events}"
    );
}

#[test]
fn short_of_file_descriptors_down_reports_what_it_could_not_take_down_and_keeps_it() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let held = "replicas: 8\nnetwork: none\ncommand: [sleep, '1000']\nstop: {timeout: 1s}\n";
    write(dir.path(), "held.yaml", busybox_yaml("held", held));
    ok(&crate::common::apply(root.path(), dir.path(), &[]));
    let pids: std::collections::BTreeMap<String, i32> = ps(root.path())
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let pid = row["pid"].as_i64().expect("running") as i32;
            (row["id"].as_str().expect("id").to_owned(), pid)
        })
        .collect();

    // So few open files that some stops fail to look at their containers.
    let wharf = env!("CARGO_BIN_EXE_wharf");
    let root_arg = root.path().to_str().expect("UTF-8");
    let down = std::process::Command::new("prlimit")
        .args([
            "--nofile=18:18",
            wharf,
            "--root",
            root_arg,
            "--parallel",
            "8",
        ])
        .args(["down", "--all"])
        .env("NO_COLOR", "1")
        .output()
        .expect("prlimit runs");
    let stdout = String::from_utf8_lossy(&down.stdout);
    let stderr = String::from_utf8_lossy(&down.stderr);
    let removed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("removed "))
        .collect();

    // What it says it removed is gone, process and all; what it could not take down
    // is reported, still listed and still running, and a later down finishes the job.
    for id in &removed {
        let pid = pids[*id];
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "{id} still runs: {stat}"
        );
    }
    let left = ps(root.path());
    let left = left.as_array().expect("rows");
    assert_eq!(removed.len() + left.len(), 8, "{stdout}{stderr}");
    assert!(
        left.iter().all(|row| row["status"] == "running"),
        "{left:?}"
    );
    if !left.is_empty() {
        assert_eq!(down.status.code(), Some(1));
        let told = format!("{} of 8 containers could not be taken down", left.len());
        assert!(stderr.contains(&told), "{stderr}");
    }
    ok(&wharf_at(root.path(), &["down", "--all"]));
    assert_eq!(ps(root.path()), serde_json::json!([]));
}

#[test]
fn a_container_cannot_write_its_cgroups_to_raise_its_own_limits() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let file = service_file(
        work.path(),
        "boxed",
        "network: none\ncommand: [sleep, '1000']\nresources: {pids: 50}\n",
    );
    ok(&wharf_at(root.path(), &["run", &file]));
    // Every hierarchy (cgroup v1: one per controller; v2: the one) is read-only.
    let script = "for d in /sys/fs/cgroup /sys/fs/cgroup/*/; do \
                  (mkdir \"$d/escape\") 2>/dev/null && echo \"$d writable\"; \
                  (echo 100000 > \"$d/pids.max\") 2>/dev/null && echo \"$d pids.max\"; done; true";
    let run = wharf_at(root.path(), &["exec", "boxed/0", "--", "sh", "-c", script]);
    assert_eq!(ok(&run), "", "{}", run.stderr);
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn stop_of_a_service_stops_each_replica_with_sigkill_after_its_timeout() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let stubborn = "replicas: 3\nnetwork: none\nrestart: never\ncommand: [sleep, '1000']\nstop: {timeout: 1s}\n";
    write(
        dir.path(),
        "stubborn.yaml",
        busybox_yaml("stubborn", stubborn),
    );
    ok(&crate::common::apply(root.path(), dir.path(), &[]));

    let stopped = wharf_at(root.path(), &["stop", "stubborn"]);
    assert_eq!(
        ok(&stopped).lines().count(),
        3,
        "one id per stopped replica"
    );
    let rows = ps(root.path());
    let codes: Vec<&serde_json::Value> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["exit_code"])
        .collect();
    assert_eq!(
        codes,
        [137, 137, 137],
        "SIGTERM ignored: each killed after its timeout"
    );
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn containers_start_when_wharf_holds_more_descriptors_than_theirs_may() {
    // The agent holds descriptors for the containers it watches; a container's
    // process may have only 1,024. Here wharf inherits 1,100 open ones: the copy that
    // builds a container must not hand them on.
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "web.yaml",
        busybox_yaml("web", "network: none\ncommand: [sleep, '1000']\n"),
    );
    let script =
        "ulimit -n 4096 && for fd in $(seq 10 1110); do eval \"exec $fd</dev/null\"; done \
                  && exec \"$@\"";
    let wharf = env!("CARGO_BIN_EXE_wharf");
    let root_arg = root.path().to_str().expect("UTF-8");
    let dir_arg = dir.path().to_str().expect("UTF-8");
    let applied = std::process::Command::new("bash")
        .args([
            "-c", script, "bash", wharf, "--root", root_arg, "apply", "--yes", dir_arg,
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert_eq!(applied.status.code(), Some(0), "{stderr}");
    assert_eq!(ps(root.path())[0]["status"], "running");
    ok(&wharf_at(root.path(), &["down", "--all"]));
}
