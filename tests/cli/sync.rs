//! `wharf sync --git` and `wharf agent --git`: manifests from a real Git repository
//! (a bare repository made by the test), applied to real containers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{wharf_at, Run};
use crate::support::busybox_yaml;

/// A bare repository and a clone to commit from.
struct Repo {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bare = dir.path().join("services.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "--quiet", "--bare", "services.git"]);
        git(
            dir.path(),
            &["init", "--quiet", "--initial-branch=main", "work"],
        );
        std::fs::create_dir(work.join("hosts")).expect("mkdir");
        Repo {
            _dir: dir,
            bare,
            work,
        }
    }

    fn url(&self) -> &str {
        self.bare.to_str().expect("UTF-8")
    }

    /// Writes (or with None removes) `hosts/NAME`, commits and pushes main.
    fn commit(&self, name: &str, text: Option<&str>, message: &str) {
        self.commit_files(&[(name, text)], message);
    }

    /// Writes (or with None removes) each `hosts/NAME` (NAME may have directories),
    /// then commits them together and pushes main.
    fn commit_files(&self, files: &[(&str, Option<&str>)], message: &str) {
        for (name, text) in files {
            let path = self.work.join("hosts").join(name);
            match text {
                Some(text) => {
                    let dir = path.parent().expect("in hosts/");
                    std::fs::create_dir_all(dir).expect("mkdir");
                    std::fs::write(&path, text).expect("write");
                }
                None => std::fs::remove_file(&path).expect("rm"),
            }
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "--quiet", "-m", message]);
        git(&self.work, &["push", "--quiet", self.url(), "main"]);
    }

    fn head(&self) -> String {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&self.work)
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).trim()[..12].to_owned()
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=wharf test",
            "-c",
            "user.email=test@wharf.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn service(name: &str, env: &str) -> String {
    busybox_yaml(
        name,
        &format!("command: [sleep, '1000']\nstop: {{signal: KILL}}\nenv: {{MODE: {env}}}\n"),
    )
}

fn sync(root: &Path, repo: &Repo) -> Run {
    wharf_at(
        root,
        &[
            "sync",
            "--git",
            repo.url(),
            "--ref",
            "main",
            "--path",
            "hosts",
            "--prune",
            "--yes",
            "--detailed-exitcode",
            "--json",
        ],
    )
}

fn running(root: &Path) -> Vec<(String, String)> {
    let rows: serde_json::Value =
        serde_json::from_str(&wharf_at(root, &["ps", "--json"]).stdout).unwrap_or_default();
    let mut found: Vec<(String, String)> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "running")
        .map(|r| {
            (
                r["service"].as_str().unwrap_or("").to_owned(),
                r["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn sync_applies_a_ref_exits_as_a_ci_job_expects_and_keeps_the_last_good_commit() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    let repo = Repo::new();
    repo.commit("web.yaml", Some(&service("web", "a")), "web");

    // First sync: web starts; exit 2 = changes applied.
    let run = sync(root, &repo);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let result: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(result["changed"], true);
    let first = running(root);
    assert_eq!(first.len(), 1);
    let good = repo.head();
    assert!(wharf_at(root, &["status"])
        .stdout
        .contains(&format!("commit {good}")));

    // Nothing new: exit 0, nothing touched.
    assert_eq!(sync(root, &repo).code, 0);
    assert_eq!(running(root), first);

    // A broken commit: exit 1, says where, keeps the last good commit running.
    repo.commit(
        "web.yaml",
        Some(&service("web", "a").replace("command", "comand")),
        "typo",
    );
    let run = sync(root, &repo);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("has invalid manifests, staying at")
            && run.stderr.contains(&good)
            && run.stderr.contains("hosts/web.yaml:5:1"),
        "{}",
        run.stderr
    );
    assert_eq!(running(root), first);
    let status = wharf_at(root, &["status"]).stdout;
    assert!(
        status.contains(&format!("commit {good}")) && status.contains("last sync failed"),
        "{status}"
    );
    // The same for a job reading JSON.
    let status: serde_json::Value =
        serde_json::from_str(&wharf_at(root, &["status", "--json"]).stdout).expect("JSON");
    let source = &status["git"][0];
    assert_eq!(source["source"]["reference"], "main");
    assert!(
        source["commit"]
            .as_str()
            .is_some_and(|c| c.starts_with(&good)),
        "{source}"
    );
    assert!(
        source["error"]
            .as_str()
            .is_some_and(|e| e.contains("hosts/web.yaml:5:1")),
        "{source}"
    );

    // The revert brings back the same manifests: a new commit, nothing to change.
    git(&repo.work, &["revert", "--no-edit", "HEAD"]);
    git(&repo.work, &["push", "--quiet", repo.url(), "main"]);
    assert_eq!(sync(root, &repo).code, 0);
    assert_eq!(running(root), first);
    assert!(wharf_at(root, &["status"])
        .stdout
        .contains(&format!("commit {}", repo.head())));

    // A change, then a removal with --prune.
    repo.commit("web.yaml", Some(&service("web", "b")), "mode b");
    repo.commit("api.yaml", Some(&service("api", "a")), "api");
    assert_eq!(sync(root, &repo).code, 2);
    let now = running(root);
    assert_eq!(now.len(), 2);
    assert!(!now.contains(&first[0]), "web was replaced");
    repo.commit("api.yaml", None, "no more api");
    assert_eq!(sync(root, &repo).code, 2);
    assert_eq!(running(root).len(), 1);

    // A repository that cannot be reached: exit 1, nothing changes.
    let run = wharf_at(
        root,
        &["sync", "--git", "/nonexistent/repo.git", "--prune", "--yes"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("cannot fetch main from /nonexistent/repo.git"),
        "{}",
        run.stderr
    );
    assert_eq!(running(root).len(), 1);
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn the_agent_follows_a_git_ref() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let root = root.path();
    let repo = Repo::new();
    repo.commit("web.yaml", Some(&service("web", "a")), "web");
    let log = work.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--root")
        .arg(root)
        .args([
            "agent",
            "--git",
            repo.url(),
            "--path",
            "hosts",
            "--interval",
            "500ms",
        ])
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("agent starts");
    let eventually = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    eventually("web runs", &|| running(root).len() == 1);
    let first = running(root);
    repo.commit("web.yaml", Some(&service("web", "b")), "mode b");
    eventually("web is replaced", &|| {
        let now = running(root);
        now.len() == 1 && now != first
    });
    let events = wharf_at(root, &["events"]).stdout;
    assert!(
        events.contains(&format!("at commit {}", repo.head())),
        "{events}"
    );
    let pid = nix::unistd::Pid::from_raw(agent.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = agent.wait();
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

#[test]
fn a_commit_is_read_with_bounds_an_oversized_manifest_is_refused_and_big_files_are_skipped() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    let repo = Repo::new();
    // A large file that is not a manifest, beside one: streamed past, never held.
    let mut blob = vec![b'x'; 8 << 20];
    blob.push(b'\n');
    std::fs::write(repo.work.join("hosts/data.bin"), &blob).expect("write");
    repo.commit("web.yaml", Some(&service("web", "a")), "web and data");
    let run = sync(root, &repo);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let first = running(root);
    assert_eq!(first.len(), 1);

    // A manifest over the limit is refused by its size, and what runs stays.
    let padding = "# padding\n".repeat(110_000);
    repo.commit("big.yaml", Some(&padding), "a 1.1 MB manifest");
    let run = sync(root, &repo);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("hosts/big.yaml is 1100000 bytes, more than the 1 MiB limit"),
        "{}",
        run.stderr
    );
    assert_eq!(running(root), first);
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}

/// The directory `wharf sync` mirrors the commit into (`ROOT/git/KEY/manifests`), for
/// a root that synced one source.
fn mirrored(root: &Path) -> PathBuf {
    let sources: Vec<PathBuf> = std::fs::read_dir(root.join("git"))
        .expect("a source was synced")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    sources[0].join("manifests")
}

/// A service with a config file in a subdirectory and an env file, both next to the
/// manifest (paths are relative to the manifest's directory).
fn service_with_files(name: &str) -> String {
    busybox_yaml(
        name,
        "command: [sleep, '1000']\n\
         stop: {signal: KILL}\n\
         configs:\n  - {source: conf/app.conf, target: /etc/app/app.conf}\n\
         env_file: [app.env]\n",
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn sync_brings_the_files_manifests_name_from_the_same_commit() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path();
    let repo = Repo::new();
    let web = service_with_files("web");
    repo.commit_files(
        &[
            ("web.yaml", Some(web.as_str())),
            ("conf/app.conf", Some("listen 8080\n")),
            ("app.env", Some("GREETING=hello\n")),
        ],
        "web with a config and an env file",
    );

    // The config and the env file are mirrored next to the manifest, so the mirrored
    // directory is complete on its own.
    let run = sync(root, &repo);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let first = running(root);
    assert_eq!(first.len(), 1);
    let manifests = mirrored(root);
    assert_eq!(read(&manifests.join("conf/app.conf")), "listen 8080\n");
    assert_eq!(read(&manifests.join("app.env")), "GREETING=hello\n");
    let dir = manifests.to_str().expect("UTF-8");
    let run = wharf_at(root, &["validate", dir]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 service in 1 file OK"),
        "{}",
        run.stdout
    );

    // A commit that changes only the config file: sync mirrors it, and the service
    // is replaced because its config changed.
    repo.commit("conf/app.conf", Some("listen 9090\n"), "port 9090");
    let run = sync(root, &repo);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(read(&manifests.join("conf/app.conf")), "listen 9090\n");
    let result: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(result["changed"], true);
    let done = result["done"].as_array().expect("steps done");
    assert!(
        done.iter().any(|step| step["service"] == "web"
            && step["action"] == "replace"
            && step["reason"] == "config conf/app.conf changed"),
        "{}",
        run.stdout
    );
    let second = running(root);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "web was replaced");
    let good = repo.head();

    // A commit whose manifest names a file that is not in it is refused: the error
    // names the commit, the manifest, the field and the file, and the mirrored
    // directory stays at the last good commit.
    repo.commit("conf/app.conf", None, "config removed by mistake");
    let run = sync(root, &repo);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let broken = repo.head();
    assert!(
        run.stderr.contains(&format!(
            "commit {broken} has invalid manifests, staying at {good}"
        )) && run.stderr.contains(&format!("{broken}:hosts/web.yaml:"))
            && run.stderr.contains(&format!(
                "configs[0].source: service \"web\": conf/app.conf does not exist in {broken}:hosts"
            )),
        "{}",
        run.stderr
    );
    assert_eq!(read(&manifests.join("conf/app.conf")), "listen 9090\n");
    assert_eq!(running(root), second);

    // So is a config over the 1 MiB limit, by its size (it is not read).
    let padding = "# padding\n".repeat(110_000);
    repo.commit("conf/app.conf", Some(&padding), "a 1.1 MB config");
    let run = sync(root, &repo);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("configs[0].source")
            && run.stderr.contains("conf/app.conf is 1100000 bytes"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&manifests.join("conf/app.conf")), "listen 9090\n");

    // Files no manifest names any more leave the mirrored directory with their
    // directories; the manifest stays.
    let web = service("web", "a");
    repo.commit_files(
        &[
            ("web.yaml", Some(web.as_str())),
            ("conf/app.conf", None),
            ("app.env", None),
        ],
        "web without files",
    );
    let run = sync(root, &repo);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(manifests.join("web.yaml").is_file());
    assert!(!manifests.join("conf").exists(), "conf/ was removed");
    assert!(!manifests.join("app.env").exists(), "app.env was removed");
    assert_eq!(wharf_at(root, &["down", "--all"]).code, 0);
}
