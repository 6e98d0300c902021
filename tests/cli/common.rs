//! Helpers shared by the integration tests: run the real `wharf` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{busybox_yaml, service_yaml};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `wharf ARGS...` in `dir` without colour and returns what it printed.
pub fn wharf_in(dir: &Path, args: &[&str]) -> Run {
    wharf_with_env(dir, args, &[])
}

/// Like [`wharf_in`], with extra environment variables.
pub fn wharf_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = command(dir, args, env)
        .output()
        .expect("the wharf binary runs");
    Run::from(output)
}

/// Like [`wharf_in`] for inputs that once made wharf hang: if the command is still
/// running after `limit` (far longer than it needs), it is killed and the test fails.
pub fn wharf_in_within(dir: &Path, args: &[&str], limit: Duration) -> Run {
    let child = command(dir, args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the wharf binary runs");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match finished.recv_timeout(limit) {
        Ok(output) => Run::from(output.expect("wharf's output can be read")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("`wharf {}` still runs after {limit:?}", args.join(" "));
        }
    }
}

/// `wharf ARGS...` in `dir`, without colour and without the caller's WHARF_ROOT.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("WHARF_ROOT")
        .envs(env.iter().copied());
    command
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `wharf ARGS...` from the repository root.
pub fn wharf(args: &[&str]) -> Run {
    wharf_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// A minimal valid manifest for service `name`.
pub fn manifest(name: &str) -> String {
    service_yaml(name, &format!("127.0.0.1:5000/{name}:1"), "")
}

/// A manifest of service `name` on the test busybox image whose command runs until
/// SIGTERM (then exits 0), with the YAML lines `extra` after.
pub fn busybox_until_term(name: &str, extra: &str) -> String {
    busybox_yaml(
        name,
        &format!(
            "command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 0.1; done']\n\
             {extra}"
        ),
    )
}

/// Writes `contents` to `dir/name` and returns its path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("test files can be written");
    path
}

/// Writes `dir/svc.yaml` with service `name` on the test busybox image (the YAML lines
/// `extra` after) and returns its path, e.g. for `wharf run`.
pub fn service_file(dir: &Path, name: &str, extra: &str) -> String {
    let path = write(dir, "svc.yaml", busybox_yaml(name, extra));
    path.display().to_string()
}

/// The command exited 0; returns what it printed.
pub fn ok(run: &Run) -> &str {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    &run.stdout
}

/// The rows of `wharf --root ROOT ps --json`.
pub fn ps(root: &Path) -> serde_json::Value {
    serde_json::from_str(ok(&wharf_at(root, &["ps", "--json"]))).expect("JSON")
}

/// Running containers' ids by "service/replica", from the rows of `wharf ps --json`.
pub fn running_by_slot(rows: &serde_json::Value) -> BTreeMap<String, String> {
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

/// The command exited 0 and printed exactly `stdout`.
pub fn assert_succeeds_with(run: &Run, stdout: &str) {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, stdout);
}

/// `wharf --root ROOT apply --yes EXTRA... DIR`.
pub fn apply(root: &Path, dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "--yes"];
    args.extend_from_slice(extra);
    args.push(dir.to_str().expect("UTF-8"));
    wharf_at(root, &args)
}

/// Runs `wharf --root ROOT ARGS...` from the repository root.
pub fn wharf_at(root: &Path, args: &[&str]) -> Run {
    // tempfile makes directories 0755; wharf would tighten the root and say so in a
    // line that tests of other things need not see (tests/cli/host_safety.rs does).
    use std::os::unix::fs::PermissionsExt;
    if root.is_dir() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .expect("chmod the test root");
    }
    let mut all = vec!["--root", root.to_str().expect("UTF-8 temp path")];
    all.extend_from_slice(args);
    wharf(&all)
}
