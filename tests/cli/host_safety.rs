//! What other local users can reach of wharf's state: nothing. wharf runs as root and
//! keeps secrets (environment values in container configs, logs, the state database).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::common::{wharf, wharf_at, write};
use crate::support::busybox_yaml;

/// Runs `program ARGS...` as the user nobody; returns (exit code, stdout + stderr).
fn as_nobody(program: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(program)
        .args(args)
        .uid(65534)
        .gid(65534)
        .env("NO_COLOR", "1")
        .env_remove("WHARF_ROOT")
        .output()
        .expect("runs as nobody");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").mode() & 0o7777
}

#[test]
fn other_users_cannot_read_secrets_from_the_state_directory() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "db.yaml",
        busybox_yaml(
            "db",
            "command: [/bin/sh, -c, 'echo started with $DB_PASSWORD; sleep 60']\n\
             env: {DB_PASSWORD: hunter2-secret}\nstop: {timeout: 1s}\n",
        ),
    );
    // A root that any user could have created beforehand with open modes.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let run = wharf(&[
        "--root",
        root.path().to_str().expect("UTF-8"),
        "apply",
        "--yes",
        "--wait",
        dir.path().to_str().expect("UTF-8"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("tightened to 0700").count(),
        1,
        "one line says the root was tightened: {}",
        run.stderr
    );
    let again = wharf_at(root.path(), &["status"]);
    assert!(
        !again.stderr.contains("tightened"),
        "said once: {}",
        again.stderr
    );

    // Where the secret is on disk: the container's config and log, the state database.
    let container = std::fs::read_dir(root.path().join("containers"))
        .expect("containers")
        .flatten()
        .next()
        .expect("one container")
        .path();
    let log = container.join("output.log");
    for _ in 0..100 {
        if std::fs::read_to_string(&log).is_ok_and(|text| text.contains("hunter2")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(mode(root.path()), 0o700);
    for file in [
        root.path().join("state.redb"),
        container.join("config.json"),
        log,
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    for dir in [
        root.path().join("containers"),
        container.clone(),
        root.path().join("images"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }

    // And as a user would try it: nobody finds nothing.
    let (code, output) = as_nobody(
        Path::new("/bin/grep"),
        &["-rl", "hunter2", root.path().to_str().expect("UTF-8")],
    );
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("Permission denied"), "{output}");
    assert_eq!(wharf_at(root.path(), &["down", "--all"]).code, 0);
}

#[test]
fn wharf_run_by_another_user_says_to_run_it_as_root() {
    // A copy of the binary that nobody may execute (the build tree may be private).
    let bin = tempfile::tempdir().expect("bin dir");
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let wharf = bin.path().join("wharf");
    std::fs::copy(env!("CARGO_BIN_EXE_wharf"), &wharf).expect("copy wharf");
    std::fs::set_permissions(&wharf, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let (code, output) = as_nobody(&wharf, &["--root", "/nonexistent/wharf", "status"]);
    assert_eq!(code, 1, "{output}");
    assert_eq!(output.lines().count(), 1, "one line: {output}");
    assert!(output.contains("run wharf as root"), "{output}");

    // Reading manifests needs no privilege.
    let (code, output) = as_nobody(&wharf, &["schema"]);
    assert_eq!(code, 0, "{output}");
}
