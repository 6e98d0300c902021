//! `wharf plan` / `wharf apply` / `wharf status` / `wharf down` with real containers.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{apply, busybox_until_term, running_by_slot, wharf_at, write};
use crate::support::{busybox, busybox_yaml, service_yaml};

fn write_service(dir: &Path, name: &str, extra: &str) {
    let text = busybox_until_term(name, &format!("stop: {{timeout: 2s}}\n{extra}"));
    write(dir, &format!("{name}.yaml"), text);
}

/// container ids by "service/slot".
fn ids(root: &Path) -> BTreeMap<String, String> {
    let run = wharf_at(root, &["ps", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(rows.is_array(), "{rows}");
    running_by_slot(&rows)
}

#[test]
fn apply_converges_scales_replaces_and_prunes_only_what_it_must() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    write_service(dir, "web", "env: {LOG_LEVEL: info}\n");
    write_service(dir, "worker", "replicas: 3\n");

    let run = apply(root, dir, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Plan: 4 to create."), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Apply complete (generation 1): 4 created."),
        "{}",
        run.stdout
    );
    let first = ids(root);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        ["web/0", "worker/0", "worker/1", "worker/2"]
    );

    // Converged: nothing to do, and --detailed-exitcode says so.
    let run = wharf_at(
        root,
        &["plan", "--detailed-exitcode", dir.to_str().expect("UTF-8")],
    );
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "No changes. Containers match the manifests.")
    );
    assert_eq!(apply(root, dir, &["--detailed-exitcode"]).code, 0);

    // Scale 3 -> 1 -> 4: survivors keep their containers.
    write_service(dir, "worker", "replicas: 1\n");
    let run = apply(root, dir, &["--detailed-exitcode"]);
    assert_eq!(run.code, 2, "changes applied: {}", run.stderr);
    let scaled_down = ids(root);
    assert_eq!(scaled_down["worker/0"], first["worker/0"]);
    assert!(!scaled_down.contains_key("worker/1") && !scaled_down.contains_key("worker/2"));
    write_service(dir, "worker", "replicas: 4\n");
    assert_eq!(apply(root, dir, &[]).code, 0);
    let scaled_up = ids(root);
    assert_eq!(scaled_up["worker/0"], first["worker/0"]);
    assert_eq!(scaled_up.len(), 5);

    // One env var of web changes: only web is replaced, with a diff in the plan.
    write_service(dir, "web", "env: {LOG_LEVEL: debug}\n");
    let run = wharf_at(root, &["plan", dir.to_str().expect("UTF-8")]);
    assert!(
        run.stdout.contains("-/+ web (forced by env)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("-   LOG_LEVEL: info") && run.stdout.contains("+   LOG_LEVEL: debug"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Plan: 1 to replace."), "{}", run.stdout);
    assert_eq!(apply(root, dir, &[]).code, 0);
    let replaced = ids(root);
    assert_ne!(replaced["web/0"], scaled_up["web/0"]);
    for slot in 0..4 {
        let key = format!("worker/{slot}");
        assert_eq!(replaced[&key], scaled_up[&key], "{key} untouched");
    }

    // A broken manifest: errors, exit 1, nothing touched.
    write(dir, "web.yaml", service_yaml("web", "x", "replica: 2\n"));
    let run = apply(root, dir, &["--prune"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("web.yaml:5:1: replica: unknown field"),
        "{}",
        run.stderr
    );
    assert_eq!(ids(root), replaced);
    write_service(dir, "web", "env: {LOG_LEVEL: debug}\n");

    // A removed file: kept without --prune (with a note), removed with it.
    std::fs::remove_file(dir.join("worker.yaml")).expect("rm");
    let run = apply(root, dir, &[]);
    assert!(
        run.stdout
            .contains("note: worker is no longer in the manifests"),
        "{}",
        run.stdout
    );
    assert_eq!(ids(root).len(), 5);
    let run = apply(root, dir, &["--prune"]);
    assert!(run.stdout.contains("Plan: 4 to remove."), "{}", run.stdout);
    assert_eq!(ids(root).keys().collect::<Vec<_>>(), ["web/0"]);

    // An empty directory (an unmounted volume?) never prunes a fleet by accident.
    std::fs::remove_file(dir.join("web.yaml")).expect("rm");
    let run = apply(root, dir, &["--prune"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("holds no services, but 1 containers run from it"),
        "{}",
        run.stderr
    );
    assert_eq!(ids(root).len(), 1);
    assert_eq!(apply(root, dir, &["--prune", "--allow-empty"]).code, 0);
    assert!(ids(root).is_empty());
}

#[test]
fn apply_needs_confirmation_or_yes_and_waits_for_the_lock() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write_service(dir.path(), "locked", "");
    let dir_arg = dir.path().to_str().expect("UTF-8");

    let run = wharf_at(root.path(), &["apply", dir_arg]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("stdin is not a terminal; pass --yes"),
        "{}",
        run.stderr
    );

    // Another reconciler holds the lock.
    let lock = wharf::lockfile::FileLock::acquire(&root.path().join("lock")).expect("lock");
    let run = wharf_at(
        root.path(),
        &["apply", "--yes", "--lock-timeout", "300ms", dir_arg],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("waiting for another wharf apply"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("did not finish within the lock timeout"),
        "{}",
        run.stderr
    );
    drop(lock);
    assert!(ids(root.path()).is_empty(), "nothing was created");
}

#[test]
fn log_events_follow_the_log_level_and_format() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write_service(dir.path(), "locked", "");
    let dir_arg = dir.path().to_str().expect("UTF-8");
    let _lock = wharf::lockfile::FileLock::acquire(&root.path().join("lock")).expect("lock");
    let apply = |options: &[&str]| {
        let mut args = options.to_vec();
        args.extend(["apply", "--yes", "--lock-timeout", "200ms", dir_arg]);
        wharf_at(root.path(), &args)
    };
    let waiting = "waiting for another wharf apply";

    // JSON for log shippers: one object per line, the same message, its level.
    let run = apply(&["--log-format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|event: &serde_json::Value| {
            event["message"]
                .as_str()
                .is_some_and(|message| message.contains(waiting))
        })
        .collect();
    assert_eq!(events.len(), 1, "{}", run.stderr);
    assert_eq!(events[0]["level"], "INFO", "{}", run.stderr);

    // Below the chosen level: not shown.
    let run = apply(&["--log-level", "warn"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains(waiting), "{}", run.stderr);
}

#[test]
fn containers_wharf_did_not_create_survive_prune_and_down() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write_service(dir.path(), "mine", "");
    assert_eq!(apply(root.path(), dir.path(), &[]).code, 0);
    // Someone else's bundle in the same place (no wharf annotations).
    let foreign = root.path().join("containers/theirs");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("config.json"), r#"{"ociVersion": "1.0.2"}"#).expect("write");

    std::fs::remove_file(dir.path().join("mine.yaml")).expect("rm");
    let run = apply(root.path(), dir.path(), &["--prune", "--allow-empty"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = wharf_at(root.path(), &["down", "--all"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(foreign.join("config.json").is_file());

    let run = wharf_at(root.path(), &["status"]);
    assert_eq!(run.stdout, "No wharf containers.\n");
}

#[test]
fn status_shows_desired_and_running_replicas() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write_service(dir.path(), "pair", "replicas: 2\n");
    assert_eq!(apply(root.path(), dir.path(), &[]).code, 0);
    let run = wharf_at(root.path(), &["status"]);
    let first = run.stdout.lines().next().unwrap_or_default().to_owned();
    // On the bridge (the default), its name's address follows.
    assert!(
        first.starts_with("pair  2/2 running  name pair → 10.77."),
        "{first}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&wharf_at(root.path(), &["status", "--json"]).stdout).expect("JSON");
    assert_eq!(status["services"][0]["desired"], 2);
    assert_eq!(status["services"][0]["running"], 2);
    assert_eq!(status["git"], serde_json::json!([]), "no git source synced");
    assert_eq!(wharf_at(root.path(), &["down", "pair"]).code, 0);
}

#[test]
fn a_saved_plan_runs_exactly_and_is_refused_once_stale() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    let plan_file = work.path().join("change.plan");
    let plan_arg = plan_file.to_str().expect("UTF-8");
    write_service(dir.path(), "saved", "");
    let dir_arg = dir.path().to_str().expect("UTF-8");

    let run = wharf_at(root.path(), &["plan", dir_arg, "-o", plan_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The manifests change after the plan was made: refused, nothing done.
    write_service(dir.path(), "saved", "replicas: 2\n");
    let run = wharf_at(root.path(), &["apply", "--yes", plan_arg]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("changed since"), "{}", run.stderr);
    assert!(ids(root.path()).is_empty());

    // A fresh plan applies as saved.
    assert_eq!(
        wharf_at(root.path(), &["plan", dir_arg, "-o", plan_arg]).code,
        0
    );
    let run = wharf_at(root.path(), &["apply", "--yes", plan_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids(root.path()).len(), 2);
    // Applied once, the plan is stale: the containers changed.
    let run = wharf_at(root.path(), &["apply", "--yes", plan_arg]);
    assert_eq!(run.code, 1);
    assert_eq!(wharf_at(root.path(), &["down", "saved"]).code, 0);
}

#[test]
fn apply_wait_returns_when_replicas_run_and_times_out_when_they_cannot() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write_service(dir.path(), "steady", "replicas: 2\n");
    let run = apply(root.path(), dir.path(), &["--wait", "--timeout", "20s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Still in its health check's start period when the time is up (a replica that
    // exits fails the wait at once: see the tests below).
    // Off the bridge: there apply itself waits for a new replica's check to pass
    // before it takes traffic (see tests/cli/network.rs).
    write_service(
        dir.path(),
        "slow",
        "network: none\nhealth: {exec: [/bin/false], interval: 200ms, start_period: 1h}\n",
    );
    let run = apply(root.path(), dir.path(), &["--wait", "--timeout", "1s"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("timed out after 1s: slow/0 is not healthy yet"),
        "{}",
        run.stderr
    );
    assert_eq!(wharf_at(root.path(), &["down", "--all"]).code, 0);
}

#[test]
fn a_new_replica_that_fails_its_health_check_is_rolled_back_and_the_rollout_stops() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    let image = busybox();
    let api = |version: &str, ready: &str| {
        let fields = format!(
            "replicas: 3\n\
             env: {{VERSION: \"{version}\"}}\n\
             command: [/bin/sh, -c, 'touch {ready}; trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
             stop: {{timeout: 2s}}\n\
             update: {{order: stop-first}}\n\
             health: {{exec: [/bin/sh, -c, test -f /tmp/ready], interval: 200ms, retries: 2}}\n"
        );
        service_yaml("api", &image, &fields)
    };
    write(dir, "api.yaml", api("1", "/tmp/ready"));
    assert_eq!(apply(root, dir, &[]).code, 0);
    let v1 = ids(root);

    // Stop-first: replica 0 is replaced, fails its check, and gets version 1 back;
    // replicas 1 and 2 are never touched.
    write(dir, "api.yaml", api("2", "/tmp/elsewhere"));
    let run = apply(root, dir, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("FAILED api/0 Replace: new replica unhealthy: 2 checks failed")
            && run.stderr.contains("rolled back to the previous spec"),
        "{}",
        run.stderr
    );
    let now = ids(root);
    assert_eq!(now.len(), 3);
    assert_ne!(now.get("api/0"), v1.get("api/0"));
    assert_eq!(now.get("api/1"), v1.get("api/1"));
    assert_eq!(now.get("api/2"), v1.get("api/2"));
    let version = wharf_at(
        root,
        &["exec", "api/0", "--", "/bin/sh", "-c", "echo $VERSION"],
    );
    assert_eq!(version.stdout.trim(), "1", "{}", version.stderr);
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn a_damaged_state_database_is_reported_and_set_aside_by_the_next_apply() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    write_service(dir, "web", "");
    assert_eq!(apply(root, dir, &[]).code, 0);

    // Overwritten with zeros (a crash of the disk, a careless `dd`).
    let state = root.join("state.redb");
    let size = std::fs::metadata(&state).expect("stat").len() as usize;
    std::fs::write(&state, vec![0u8; size]).expect("damage");

    // Readers say what and where instead of showing an empty history.
    let status = wharf_at(root, &["status"]);
    assert_eq!(
        status.code, 0,
        "what runs is still shown: {}",
        status.stderr
    );
    assert!(
        status.stderr.contains("state.redb") && status.stderr.contains("damaged"),
        "{}",
        status.stderr
    );
    let events = wharf_at(root, &["events"]);
    assert_eq!(events.code, 1);
    assert!(events.stderr.contains("damaged"), "{}", events.stderr);

    // The next apply sets it aside, even with nothing to do, and says so.
    let run = apply(root, dir, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("No changes"), "{}", run.stdout);
    assert!(run.stderr.contains("moved it to"), "{}", run.stderr);
    let events = wharf_at(root, &["events"]);
    assert_eq!(events.code, 0, "{}", events.stderr);
    assert!(events.stdout.contains("was damaged"), "{}", events.stdout);
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn after_a_scale_only_apply_status_shows_the_new_replica_count_and_plan_agrees() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    let dir_arg = dir.to_str().expect("UTF-8");
    write_service(dir, "web", "replicas: 2\n");
    assert_eq!(apply(root, dir, &[]).code, 0);

    // Scaling changes no container: web/0 keeps running the spec it was made from,
    // which still says 2 replicas. What the apply set is what status shows.
    write_service(dir, "web", "replicas: 1\n");
    let run = apply(root, dir, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = wharf_at(root, &["plan", "--detailed-exitcode", dir_arg]);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "No changes. Containers match the manifests.")
    );
    let run = wharf_at(root, &["status"]);
    assert!(run.stdout.starts_with("web  1/1 running"), "{}", run.stdout);
    let status: serde_json::Value =
        serde_json::from_str(&wharf_at(root, &["status", "--json"]).stdout).expect("JSON");
    assert_eq!(status["services"][0]["desired"], 1);
    assert_eq!(status["services"][0]["running"], 1);

    // And back up: the new replicas and the record agree.
    write_service(dir, "web", "replicas: 3\n");
    assert_eq!(apply(root, dir, &[]).code, 0);
    let run = wharf_at(root, &["status"]);
    assert!(run.stdout.starts_with("web  3/3 running"), "{}", run.stdout);
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn apply_wait_fails_naming_a_replica_that_turns_unhealthy() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    // Off the bridge, apply itself does not wait for health checks (a replica on the
    // bridge joins its service's rotation once healthy: apply waits for that).
    write_service(
        dir,
        "web",
        "network: none\nhealth: {exec: [/bin/false], interval: 200ms, retries: 2}\n",
    );

    // The apply itself succeeds (the replica runs); the wait runs the check from the
    // apply process, as no agent does here, and fails after `retries` failures.
    let run = apply(root, dir, &["--wait", "--timeout", "20s"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("web/0 is unhealthy: 2 checks failed: `/bin/false` exited 1"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("timed out"), "{}", run.stderr);
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn apply_wait_fails_naming_a_replica_that_exits_and_its_exit_code() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    write(
        dir,
        "once.yaml",
        busybox_yaml("once", "command: [/bin/sh, -c, exit 3]\nrestart: never\n"),
    );

    // Before the 20 s are up: an exited replica will not become ready.
    let run = apply(root, dir, &["--wait", "--timeout", "20s"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("once/0 exited with code 3 before it was ready"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("wharf logs once --replica 0"),
        "says where to look: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("timed out"), "{}", run.stderr);

    // Nothing to change the second time: the wait still says what is wrong.
    let run = apply(root, dir, &["--wait", "--timeout", "20s"]);
    assert!(run.stdout.contains("No changes"), "{}", run.stdout);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("once/0 exited with code 3"),
        "{}",
        run.stderr
    );
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn apply_wait_returns_once_every_replica_passed_its_health_check() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let (root, dir) = (root.path(), dir.path());
    // The check leaves a mark in the container each time it runs.
    write_service(
        dir,
        "checked",
        "replicas: 2\nhealth: {exec: [/bin/sh, -c, touch /tmp/checked], interval: 200ms}\n",
    );
    let run = apply(root, dir, &["--wait", "--timeout", "20s"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("Ready: 2 replicas running, 2 of them checked healthy."),
        "{}",
        run.stderr
    );
    // Each replica's check ran before apply returned.
    for replica in ["checked/0", "checked/1"] {
        let run = wharf_at(root, &["exec", replica, "--", "test", "-f", "/tmp/checked"]);
        assert_eq!(run.code, 0, "{replica} was checked: {}", run.stderr);
    }
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}
