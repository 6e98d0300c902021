//! `kind: Job`: one container run to completion, once per spec, retried as `retries`
//! say and stopped past its `timeout`; services wait for it with `depends_on:
//! {job: completed}`, and a changed job runs again before its dependants are
//! replaced.

use std::path::Path;

use crate::common::{apply, ok, wharf_at, write};
use crate::support::busybox;

/// A manifest of kind `kind` named `name`, on the test image, in its own network.
fn manifest(kind: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: wharf/v1\nkind: {kind}\nname: {name}\nimage: {}\nnetwork: none\n{extra}",
        busybox()
    )
}

/// A migration writing `version` into the named volume `data`, and an app that
/// reads it when it starts.
fn migration_and_app(dir: &Path, version: u32) {
    let migrate = manifest(
        "Job",
        "migrate",
        &format!(
            "command: [/bin/sh, -c, 'echo migrating to {version}; echo schema-{version} > /data/schema']\n\
             volumes: [{{type: volume, name: data, target: /data}}]\n"
        ),
    );
    let app = manifest(
        "Service",
        "app",
        &format!(
            "env: {{VERSION: \"{version}\"}}\n\
             command: [/bin/sh, -c, 'cat /data/schema; trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
             volumes: [{{type: volume, name: data, target: /data}}]\n\
             depends_on: {{migrate: completed}}\n"
        ),
    );
    write(dir, "migrate.yaml", migrate);
    write(dir, "app.yaml", app);
}

fn dir_arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8")
}

#[test]
fn a_migration_runs_before_the_app_that_reads_its_result_and_once_per_spec() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = tempfile::tempdir().expect("tempdir");
    migration_and_app(dir.path(), 1);

    let plan = ok(&wharf_at(root, &["plan", dir_arg(dir.path())])).to_owned();
    assert!(plan.contains("+ migrate  run: new job"), "{plan}");
    assert!(plan.contains("+ app (after migrate completed)"), "{plan}");
    ok(&apply(root, dir.path(), &[]));
    let logs = ok(&wharf_at(root, &["logs", "app"])).to_owned();
    assert_eq!(logs.trim(), "schema-1");
    // The job's output stays readable after it finished, and status says how it ended.
    assert!(ok(&wharf_at(root, &["logs", "migrate"])).contains("migrating to 1"));
    let status = ok(&wharf_at(root, &["status"])).to_owned();
    assert!(status.contains("migrate  job completed (0)"), "{status}");

    // Unchanged: nothing runs again.
    let again = wharf_at(root, &["plan", "--detailed-exitcode", dir_arg(dir.path())]);
    assert_eq!(again.code, 0, "{}", again.stdout);

    // A new version: the migration runs again first, then the app is replaced and
    // reads the new schema.
    migration_and_app(dir.path(), 2);
    let plan = ok(&wharf_at(root, &["plan", dir_arg(dir.path())])).to_owned();
    let run_at = plan
        .find("-/+ migrate  run again: command changed")
        .expect("runs again");
    let replace_at = plan.find("-/+ app/0  replace").expect("app replaced");
    assert!(run_at < replace_at, "{plan}");
    ok(&apply(root, dir.path(), &[]));
    let logs = ok(&wharf_at(root, &["logs", "app"])).to_owned();
    assert_eq!(logs.trim(), "schema-2");
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn a_failing_job_is_retried_then_holds_its_dependants_back_and_apply_fails_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "migrate.yaml",
        manifest(
            "Job",
            "migrate",
            "command: [/bin/sh, -c, 'echo cannot migrate; exit 4']\nretries: 1\n",
        ),
    );
    write(
        dir.path(),
        "app.yaml",
        manifest(
            "Service",
            "app",
            "command: [sleep, '1000']\ndepends_on: {migrate: completed}\n",
        ),
    );
    let failed = apply(root, dir.path(), &[]);
    assert_eq!(failed.code, 1);
    assert!(
        failed
            .stderr
            .contains("job migrate failed after 2 tries: the last exited with code 4"),
        "{}",
        failed.stderr
    );
    assert!(
        failed
            .stderr
            .contains("app waits for migrate to be completed"),
        "{}",
        failed.stderr
    );
    let status = ok(&wharf_at(root, &["status"])).to_owned();
    assert!(
        status.contains("migrate  job failed (4) after 2 tries"),
        "{status}"
    );
    assert!(!status.contains("app-0-"), "{status}");
    // The failed run is the job's outcome for this spec: not run again until it changes.
    let again = wharf_at(root, &["plan", "--json", dir_arg(dir.path())]);
    let again: serde_json::Value = serde_json::from_str(ok(&again)).expect("JSON");
    assert_eq!(again["summary"]["run"], 0, "{again}");
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn a_job_past_its_timeout_is_stopped_and_fails() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "slow.yaml",
        manifest(
            "Job",
            "slow",
            "command: [sleep, '60']\ntimeout: 1s\nstop: {timeout: 1s}\n",
        ),
    );
    let started = std::time::Instant::now();
    let failed = apply(root, dir.path(), &[]);
    assert_eq!(failed.code, 1);
    assert!(
        failed
            .stderr
            .contains("job slow failed after 1 try: the last ran past its timeout of 1s"),
        "{}",
        failed.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn fields_of_a_service_that_a_job_has_no_use_for_are_refused_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "job.yaml",
        manifest(
            "Job",
            "once",
            "command: [true]\nreplicas: 2\nrestart: never\n",
        ),
    );
    let refused = wharf_at(dir.path(), &["validate", file.to_str().expect("UTF-8")]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("replicas: `replicas` is not for a job (a job runs one container at a time, to completion); remove it"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("restart: `restart` is not for a job"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_scheduled_job_runs_under_the_agent_when_its_time_comes_and_not_at_apply() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "tick.yaml",
        manifest(
            "Job",
            "tick",
            "command: [echo, tick]\nschedule: '* * * * *'\n",
        ),
    );
    let applied = apply(root, dir.path(), &[]);
    assert!(
        ok(&applied).contains("note: tick runs on its schedule (* * * * *, the host's local time); only `wharf agent` runs schedules"),
        "{}",
        applied.stdout
    );
    assert!(!ok(&wharf_at(root, &["ps"])).contains("tick-0-"));

    // Every minute: the agent runs it within a minute (once the next minute starts).
    let logs = tempfile::tempdir().expect("tempdir");
    let mut agent =
        crate::agent::AgentProcess::start(root, dir.path(), logs.path().join("agent.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let status = ok(&wharf_at(root, &["status"])).to_owned();
        if status.contains("tick  job completed (0)") {
            assert!(status.contains(", next run "), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{status}\n{}",
            agent.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(ok(&wharf_at(root, &["logs", "tick"])).trim(), "tick");
    assert_eq!(agent.terminate(), Some(0));
    ok(&wharf_at(root, &["down", "--all"]));
}
