//! The monitor beside each container: how a container ended is known to every wharf
//! process, whoever created it; its output is bounded on disk; a full disk and a
//! killed monitor leave the container running.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{ok, ps, service_file, wharf_at, write};
use crate::logs::SmallDisk;
use crate::support::busybox_yaml;

/// Polls `wharf ARGS` until its output contains `expected` (at most 30 s); returns it.
fn output_containing(root: &Path, args: &[&str], expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = ok(&wharf_at(root, args)).to_owned();
        if output.contains(expected) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "`wharf {}` never showed {expected:?}; last:\n{output}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn apply(root: &Path, dir: &Path) {
    ok(&wharf_at(
        root,
        &["apply", "--yes", dir.to_str().expect("UTF-8")],
    ));
}

#[test]
fn an_exit_after_apply_returned_is_known_with_its_code() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "quitter.yaml",
        busybox_yaml(
            "quitter",
            "command: [/bin/sh, -c, 'sleep 1; exit 3']\nrestart: never\n",
        ),
    );
    write(
        dir.path(),
        "crasher.yaml",
        busybox_yaml(
            "crasher",
            "command: [/bin/sh, -c, 'sleep 1; exit 1']\nrestart: always\n",
        ),
    );
    apply(root.path(), dir.path());

    // apply has returned: the containers' monitors saw them exit.
    let status = output_containing(root.path(), &["status"], "exited (3)");
    let status = if status.contains("exited (1)") {
        status
    } else {
        output_containing(root.path(), &["status"], "exited (1)")
    };
    // Nothing restarts the crasher without an agent, and status says so.
    assert!(
        status.contains("exited (1); restart: always, but no agent is running"),
        "{status}"
    );
    assert!(!status.contains("exited (3);"), "restart: never: {status}");
    let rows = ps(root.path());
    let quitter = rows
        .as_array()
        .into_iter()
        .flatten()
        .find(|row| row["service"] == "quitter")
        .expect("quitter is listed");
    assert_eq!(quitter["exit_code"], 3);
    assert_eq!(quitter["oom_killed"], false);
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    // dd's 64 MiB buffer cannot fit in 16 MiB: the kernel's OOM killer ends it.
    write(
        dir.path(),
        "hog.yaml",
        busybox_yaml(
            "hog",
            "command: [dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]\n\
             resources: {memory: 16Mi}\nrestart: never\n",
        ),
    );
    apply(root.path(), dir.path());
    output_containing(root.path(), &["status"], "exited (137, OOM killed)");
    let rows = ps(root.path());
    assert_eq!(rows[0]["oom_killed"], true, "{rows}");
    assert_eq!(rows[0]["status"], "exited (137, OOM killed)");
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn output_beyond_the_bound_is_rotated_away_and_the_tail_is_the_last_line() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    // 60 MiB of 100-byte lines, then LAST; at most 3 files of 1 MiB are kept.
    let manifest = service_file(
        work.path(),
        "chatty",
        "command: [/bin/sh, -c, 'yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c 62914560; echo; echo LAST']\n\
         restart: never\nlogs: {max_size: 1Mi, max_files: 3}\n",
    );
    let id = ok(&wharf_at(root.path(), &["run", &manifest]))
        .trim()
        .to_owned();
    output_containing(root.path(), &["status"], "exited (0)");

    let container = root.path().join("containers").join(&id);
    let logs: Vec<(String, u64)> = fs::read_dir(&container)
        .expect("the container's directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("output.log"))
        .map(|name| {
            let size = fs::metadata(container.join(&name)).map_or(0, |m| m.len());
            (name, size)
        })
        .collect();
    let total: u64 = logs.iter().map(|(_, size)| size).sum();
    assert!(logs.len() <= 3, "{logs:?}");
    assert!(total <= 3 << 20, "{total} bytes kept of 60 MiB: {logs:?}");
    assert!(total >= 2 << 20, "the newest output is kept: {logs:?}");
    assert_eq!(
        ok(&wharf_at(root.path(), &["logs", "chatty", "--tail", "1"])),
        "LAST\n"
    );
    ok(&wharf_at(root.path(), &["rm", "chatty"]));
}

#[test]
fn a_full_disk_keeps_the_container_running_and_logging_resumes_when_space_is_freed() {
    // The whole root on a small disk (the image store wants 132 MiB free to pull):
    // the image, the container and its log.
    let disk = SmallDisk::mount("200m");
    let work = tempfile::tempdir().expect("work");
    let manifest = service_file(
        work.path(),
        "ticker",
        &format!(
            "command: [/bin/sh, -c, 'n=0; while true; do n=$((n+1)); echo tick $n {}; sleep 0.02; done']\n\
             stop: {{signal: KILL}}\n",
            // Lines long enough to need a new page of the full disk within a second.
            "x".repeat(400)
        ),
    );
    ok(&wharf_at(disk.path(), &["run", &manifest]));
    output_containing(disk.path(), &["logs", "ticker"], "tick 3 ");

    disk.fill("filler");
    std::thread::sleep(Duration::from_secs(2));
    fs::remove_file(disk.path().join("filler")).expect("free the disk");

    let logs = output_containing(disk.path(), &["logs", "ticker"], "lines dropped");
    let marker = logs
        .lines()
        .position(|line| line.ends_with("lines dropped: no space left on device"))
        .unwrap_or_else(|| panic!("a line says what was lost:\n{logs}"));
    // The container kept running (and writing) through it: ticks follow the marker.
    let logs = output_containing(disk.path(), &["logs", "ticker"], "tick");
    let after: Vec<&str> = logs.lines().skip(marker + 1).collect();
    assert!(after.iter().any(|line| line.starts_with("tick ")), "{logs}");
    let rows = ps(disk.path());
    assert_eq!(rows[0]["status"], "running", "{rows}");
    ok(&wharf_at(disk.path(), &["rm", "ticker"]));
}

#[test]
fn a_killed_monitor_leaves_the_container_running_with_its_exit_unknown() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let manifest = service_file(
        work.path(),
        "orphan",
        "command: [sleep, '1000']\nstop: {signal: KILL}\n",
    );
    let id = ok(&wharf_at(root.path(), &["run", &manifest]))
        .trim()
        .to_owned();
    let record = fs::read_to_string(root.path().join("containers").join(&id).join("monitor"))
        .expect("the monitor's record");
    let monitor: i32 = record
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");

    let ps_text = output_containing(root.path(), &["ps"], "monitor is gone");
    assert!(
        ps_text.contains("running (its monitor is gone: its exit will not be known)"),
        "{ps_text}"
    );
    // It is still managed: stopped and removed as any other.
    ok(&wharf_at(root.path(), &["rm", "orphan"]));
    assert_eq!(ps(root.path()), serde_json::json!([]));
}

#[test]
fn a_container_stopped_after_an_oom_kill_inside_it_is_not_reported_oom_killed() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    // dd (not the container's init) is OOM-killed; the shell lives on until stopped.
    let manifest = service_file(
        work.path(),
        "survivor",
        "command: [/bin/sh, -c, 'dd if=/dev/zero of=/dev/null bs=64M count=1; exec sleep 1000']\n\
         resources: {memory: 16Mi}\nrestart: never\nstop: {signal: KILL}\n",
    );
    let id = ok(&wharf_at(root.path(), &["run", &manifest]))
        .trim()
        .to_owned();
    let counter = format!("/sys/fs/cgroup/memory/wharf/{id}/memory.oom_control");
    let counter = if Path::new(&counter).exists() {
        counter
    } else {
        format!("/sys/fs/cgroup/wharf/{id}/memory.events")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&counter).is_ok_and(|text| text.contains("oom_kill 1")) {
        assert!(Instant::now() < deadline, "dd was never OOM-killed");
        std::thread::sleep(Duration::from_millis(100));
    }

    ok(&wharf_at(root.path(), &["stop", "survivor"]));
    let rows = ps(root.path());
    assert_eq!(rows[0]["status"], "exited (137)", "{rows}");
    assert_eq!(rows[0]["oom_killed"], false);
    ok(&wharf_at(root.path(), &["rm", "survivor"]));
}

#[test]
fn without_its_monitor_beside_it_wharf_says_so_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let alone = work.path().join("wharf");
    fs::copy(env!("CARGO_BIN_EXE_wharf"), &alone).expect("copy wharf alone");
    let manifest = service_file(work.path(), "lonely", "command: [sleep, '1000']\n");
    let run = std::process::Command::new(&alone)
        .args([
            "--root",
            root.path().to_str().expect("UTF-8"),
            "run",
            &manifest,
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("wharf runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_ne!(run.status.code(), Some(0));
    assert!(
        stderr.contains("wharf-monitor is missing") || stderr.contains("is missing: wharf-monitor"),
        "{stderr}"
    );
    assert_eq!(ps(root.path()), serde_json::json!([]));
    let left = fs::read_dir(root.path().join("containers")).map_or(0, |entries| entries.count());
    assert_eq!(left, 0, "no bundle is left behind");
}

#[test]
fn the_monitor_refuses_to_run_by_hand() {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_wharf-monitor"))
        .args(["/tmp", "/wharf/x", "1", "file", "1024", "3"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("wharf-monitor runs");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("not meant to be run by hand"));
}
