//! Configs and secrets: files of the manifest's directory and secrets set with
//! `wharf secret set` reach the containers with the mode and owner the manifest
//! gives; their content is part of the spec (a change is planned with its diff,
//! rolled out health-gated and rolled back), and a secret's value is never printed
//! nor stored anywhere but root-only files.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::AgentProcess;
use crate::common::{apply, ok, wharf_at, write, Run};
use crate::support::busybox_yaml;

/// An app reading its config and two secrets: one mounted, one in env.
fn app(extra: &str) -> String {
    busybox_yaml(
        "app",
        &format!(
            "network: none\n\
             user: \"1000:1000\"\n\
             command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
             stop: {{timeout: 2s}}\n\
             configs:\n  - {{source: conf/app.conf, target: /etc/app/app.conf, mode: 0440, uid: 1000}}\n\
             secrets:\n  - {{name: tls-key}}\n\
             env:\n  DB_PASSWORD: {{secret: dbpass}}\n\
             env_file: [app.env]\n\
             {extra}"
        ),
    )
}

/// A manifest directory with `app.yaml` (see [`app`]), its config and env file.
fn app_dir(config: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf")).expect("mkdir");
    write(dir.path(), "conf/app.conf", config);
    write(
        dir.path(),
        "app.env",
        "DB_HOST=db.internal\nGREETING=\"hello there\"\n",
    );
    write(dir.path(), "app.yaml", app(extra));
    dir
}

/// `wharf secret set NAME` with the value on standard input.
fn set_secret(root: &Path, name: &str, value: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "--root",
            root.to_str().expect("UTF-8"),
            "secret",
            "set",
            name,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wharf runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value.as_bytes())
        .expect("value written");
    Run::from(child.wait_with_output().expect("wharf ends"))
}

/// `sh -c SCRIPT` in replica 0 of app; what it printed.
fn in_app(root: &Path, script: &str) -> String {
    ok(&wharf_at(
        root,
        &["exec", "app/0", "--", "/bin/sh", "-c", script],
    ))
    .to_owned()
}

fn dir_arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8")
}

#[test]
fn configs_secrets_and_env_files_reach_the_container_with_their_mode_and_owner() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = app_dir("listen 8080\n", "");
    ok(&set_secret(root, "dbpass", "hunter2\n"));
    ok(&wharf_at(root, &["secret", "set", "tls-key", "-"]));
    ok(&apply(root, dir.path(), &[]));

    // The config: read-only, 0440, owned by uid 1000 as written; the secret: 0400,
    // owned by the container's user by default.
    let listing = in_app(root, "ls -ln /etc/app/app.conf /run/secrets/tls-key");
    assert!(listing.contains("-r--r-----    1 1000     0"), "{listing}");
    assert!(
        listing.contains("-r--------    1 1000     1000"),
        "{listing}"
    );
    assert_eq!(in_app(root, "cat /etc/app/app.conf"), "listen 8080\n");
    let written = wharf_at(
        root,
        &[
            "exec",
            "app/0",
            "--",
            "/bin/sh",
            "-c",
            "echo x >> /etc/app/app.conf",
        ],
    );
    assert_ne!(written.code, 0, "the config is read-only");
    // The env file's variables and the secret's value (without its newline).
    assert_eq!(
        in_app(root, "echo \"$DB_PASSWORD|$DB_HOST|$GREETING\""),
        "hunter2|db.internal|hello there\n"
    );
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn an_edited_config_is_planned_with_its_diff_rolled_out_and_rolled_back_when_unhealthy() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let health = "health: {exec: [grep, -q, listen, /etc/app/app.conf], interval: 1s, timeout: 1s, retries: 1, start_interval: 200ms}\n";
    let dir = app_dir("listen 8080\n", health);
    ok(&set_secret(root, "dbpass", "hunter2"));
    ok(&set_secret(root, "tls-key", "KEY"));
    ok(&apply(root, dir.path(), &[]));

    write(dir.path(), "conf/app.conf", "listen 9090\n");
    let plan = wharf_at(root, &["plan", "--detailed-exitcode", dir_arg(dir.path())]);
    assert_eq!(plan.code, 2, "changes: {}", plan.stderr);
    assert!(
        plan.stdout
            .contains("-/+ app (forced by config conf/app.conf)"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("- listen 8080"), "{}", plan.stdout);
    assert!(plan.stdout.contains("+ listen 9090"), "{}", plan.stdout);
    ok(&apply(root, dir.path(), &[]));
    assert_eq!(in_app(root, "cat /etc/app/app.conf"), "listen 9090\n");

    // A config the health check fails on: the replica goes back to the old content.
    write(dir.path(), "conf/app.conf", "broken\n");
    let failed = apply(root, dir.path(), &[]);
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("rolled back to the previous spec"),
        "{}",
        failed.stderr
    );
    assert_eq!(in_app(root, "cat /etc/app/app.conf"), "listen 9090\n");
    ok(&wharf_at(root, &["down", "--all"]));
}

#[test]
fn a_new_secret_value_is_named_in_the_plan_rolled_out_and_never_printed_or_stored_in_the_open() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = app_dir("listen 8080\n", "");
    ok(&set_secret(root, "tls-key", "KEY"));
    ok(&set_secret(root, "dbpass", "first-Secret-Value"));
    let mut printed = vec![apply(root, dir.path(), &[])];
    assert_eq!(printed[0].code, 0, "{}", printed[0].stderr);

    let rotated = set_secret(root, "dbpass", "second-Secret-Value");
    assert!(ok(&rotated).contains("used by app"), "{}", rotated.stdout);
    let plan = wharf_at(root, &["plan", dir_arg(dir.path())]);
    assert!(
        plan.stdout.contains("replace: secret dbpass changed"),
        "{}",
        plan.stdout
    );
    let same_again = set_secret(root, "dbpass", "second-Secret-Value");
    assert!(ok(&same_again).contains("unchanged"));
    printed.push(plan);
    printed.push(wharf_at(root, &["plan", "--json", dir_arg(dir.path())]));
    printed.push(apply(root, dir.path(), &[]));
    assert_eq!(in_app(root, "echo $DB_PASSWORD"), "second-Secret-Value\n");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["events"],
        &["ps", "--json"],
        &["secret", "ls"],
        &["secret", "ls", "--json"],
    ] {
        printed.push(wharf_at(root, args));
    }
    for value in ["first-Secret-Value", "second-Secret-Value"] {
        for run in &printed {
            assert!(!run.stdout.contains(value) && !run.stderr.contains(value));
        }
    }
    // Only root-only files hold the value: the secret store, the container's
    // config.json (env) and its memory file system; not the state database nor the
    // container's writable layer, and the previous value is gone.
    let holders = grep_files(root, "-Secret-Value");
    for holder in &holders {
        let name = holder.display().to_string();
        assert!(
            name.contains("/secrets/values/")
                || name.ends_with("/config.json")
                || name.contains("/files/secret-"),
            "the value is in {name}"
        );
        assert!(
            !name.contains("state.redb") && !name.contains("/upper/"),
            "{name}"
        );
        assert_eq!(mode(holder) & 0o077, 0, "{name} is root-only");
    }
    assert!(
        grep_files(root, "first-Secret-Value").is_empty(),
        "{holders:?}"
    );
    ok(&wharf_at(root, &["down", "--all"]));
}

/// Regular files under `dir` (mounts included) that contain `text`.
fn grep_files(dir: &Path, text: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if meta.is_file() && meta.len() < 64 << 20 {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(text.len()).any(|w| w == text.as_bytes()) {
                found.push(path);
            }
        }
    }
    found
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
}

#[test]
fn a_missing_secret_or_config_is_refused_before_anything_runs() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = app_dir("listen 8080\n", "");
    ok(&set_secret(root, "tls-key", "KEY"));
    let refused = apply(root, dir.path(), &[]);
    assert_eq!(refused.code, 1);
    let manifest = dir.path().join("app.yaml");
    let expected = format!(
        "{}:14:25: env.DB_PASSWORD.secret: service \"app\": secret dbpass is not set; set it with `wharf secret set dbpass`",
        manifest.display()
    );
    assert!(refused.stderr.contains(&expected), "{}", refused.stderr);

    ok(&set_secret(root, "dbpass", "x"));
    std::fs::remove_file(dir.path().join("conf/app.conf")).expect("rm");
    let refused = wharf_at(root, &["plan", dir_arg(dir.path())]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("configs[0].source: service \"app\": conf/app.conf does not exist in"),
        "{}",
        refused.stderr
    );
    // A source must stay inside the manifest's directory, links included.
    std::os::unix::fs::symlink("/etc/shadow", dir.path().join("conf/app.conf")).expect("ln");
    let outside = wharf_at(root, &["validate", dir_arg(dir.path())]);
    assert_eq!(outside.code, 1, "{}", outside.stdout);
    assert!(
        outside.stderr.contains("conf/app.conf does not exist in"),
        "{}",
        outside.stderr
    );
    assert!(std::fs::read_dir(root.join("containers")).map_or(true, |mut d| d.next().is_none()));
}

#[test]
fn secrets_are_listed_without_values_and_not_removed_while_in_use() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = app_dir("listen 8080\n", "");
    ok(&set_secret(root, "tls-key", "KEY"));
    ok(&set_secret(root, "dbpass", "hunter2"));
    ok(&apply(root, dir.path(), &[]));

    let listed: serde_json::Value =
        serde_json::from_str(ok(&wharf_at(root, &["secret", "ls", "--json"]))).expect("JSON");
    assert_eq!(listed[0]["name"], "dbpass");
    assert_eq!(listed[0]["size"], 7);
    assert_eq!(listed[0]["used_by"], serde_json::json!(["app"]));

    let refused = wharf_at(root, &["secret", "rm", "dbpass"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("secret dbpass is used by app"),
        "{}",
        refused.stderr
    );
    ok(&wharf_at(root, &["down", "--all"]));
    ok(&wharf_at(root, &["secret", "rm", "dbpass"]));
    let listed = ok(&wharf_at(root, &["secret", "ls"])).to_owned();
    assert!(
        !listed.contains("dbpass") && listed.contains("tls-key"),
        "{listed}"
    );
}

#[test]
fn the_agent_rolls_a_service_when_its_config_file_or_a_secret_changes() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let dir = app_dir("listen 8080\n", "");
    ok(&set_secret(root, "tls-key", "KEY"));
    ok(&set_secret(root, "dbpass", "hunter2"));
    let logs = tempfile::tempdir().expect("tempdir");
    let mut agent = AgentProcess::start(root, dir.path(), logs.path().join("agent.log"));
    let content_is = |expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = wharf_at(
                root,
                &[
                    "exec",
                    "app/0",
                    "--",
                    "cat",
                    "/etc/app/app.conf",
                    "/run/secrets/tls-key",
                ],
            );
            if run.code == 0 && run.stdout == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {expected:?}: {} {}",
                run.stdout,
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    content_is("listen 8080\nKEY");
    // In a subdirectory of the manifest directory, which the agent watches too.
    write(dir.path(), "conf/app.conf", "listen 9090\n");
    content_is("listen 9090\nKEY");
    ok(&set_secret(root, "tls-key", "NEW-KEY"));
    content_is("listen 9090\nNEW-KEY");
    assert_eq!(agent.terminate(), Some(0));
    ok(&wharf_at(root, &["down", "--all"]));
}
