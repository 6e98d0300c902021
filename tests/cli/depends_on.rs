//! `depends_on`: a service is created after the services it depends on are started
//! or healthy. apply waits for them (with a deadline), and leaves a service alone
//! when one of them is not; cycles are refused before anything runs.

use crate::common::{apply, ok, wharf_at, write};
use crate::support::busybox_yaml;

/// A database that becomes healthy two seconds after it starts (or never, with
/// `ready_after` None), and an app that waits for it.
fn database_and_app(dir: &std::path::Path, ready_after: Option<u32>) {
    let start = match ready_after {
        Some(seconds) => format!("sleep {seconds}; touch /tmp/ready; "),
        None => String::new(),
    };
    let db = busybox_yaml(
        "db",
        &format!(
            "network: none\n\
             command: [/bin/sh, -c, '{start}trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
             health: {{exec: [test, -f, /tmp/ready], interval: 1s, timeout: 1s, retries: 2, start_period: 5s, start_interval: 200ms}}\n"
        ),
    );
    let app = busybox_yaml(
        "app",
        "network: none\n\
         command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
         depends_on: {db: healthy}\n",
    );
    write(dir, "db.yaml", db);
    write(dir, "app.yaml", app);
}

#[test]
fn an_app_is_created_once_its_database_is_healthy() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = tempfile::tempdir().expect("tempdir");
    database_and_app(dir.path(), Some(2));

    // The plan lists db first and says what app waits for.
    let plan = wharf_at(root, &["plan", dir.path().to_str().expect("UTF-8")]);
    let plan = ok(&plan);
    let db_at = plan.find("+ db").expect("db planned");
    let app_at = plan
        .find("+ app (after db healthy)")
        .expect("app planned after db");
    assert!(db_at < app_at, "{plan}");

    let applied = apply(root, dir.path(), &[]);
    ok(&applied);
    // Each step's line goes to stderr as it finishes.
    let out = &applied.stderr;
    let created_db = out.find("created db/0").expect("db created");
    let created_app = out.find("created app/0").expect("app created");
    assert!(created_db < created_app, "{out}");
    // app started after db had written its readiness file.
    let ready = ok(&wharf_at(
        root,
        &["exec", "db", "--", "stat", "-c", "%Y", "/tmp/ready"],
    ))
    .trim()
    .parse::<u64>()
    .expect("a time");
    let ps: serde_json::Value =
        serde_json::from_str(ok(&wharf_at(root, &["ps", "--json"]))).expect("JSON");
    let app = ps
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["service"] == "app"))
        .expect("app runs");
    let started = humantime::parse_rfc3339_weak(app["started"].as_str().expect("started"))
        .expect("a time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        started >= ready,
        "app started at {started}, db ready at {ready}"
    );
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn a_database_that_never_gets_healthy_holds_its_app_back_and_apply_fails_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = tempfile::tempdir().expect("tempdir");
    database_and_app(dir.path(), None);
    let applied = apply(root, dir.path(), &[]);
    assert_eq!(applied.code, 1, "{}", applied.stdout);
    assert!(
        applied
            .stderr
            .contains("app waits for db to be healthy, but replica db-0-"),
        "{}",
        applied.stderr
    );
    assert!(
        applied.stderr.contains("app was left as it is"),
        "{}",
        applied.stderr
    );
    let ps = ok(&wharf_at(root, &["ps"])).to_owned();
    assert!(ps.contains("db-0-") && !ps.contains("app-0-"), "{ps}");
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn a_dependency_cycle_is_refused_with_the_cycle_spelled_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a.yaml",
        busybox_yaml("a", "depends_on: {b: started}\n"),
    );
    write(
        dir.path(),
        "b.yaml",
        busybox_yaml("b", "depends_on: {a: started}\n"),
    );
    let refused = wharf_at(
        root.path(),
        &["validate", dir.path().to_str().expect("UTF-8")],
    );
    assert_eq!(refused.code, 1);
    let expected = format!(
        "{}:5:17: depends_on.b: dependency cycle: a -> b -> a; remove one of these dependencies",
        dir.path().join("a.yaml").display()
    );
    assert!(refused.stderr.contains(&expected), "{}", refused.stderr);
}
