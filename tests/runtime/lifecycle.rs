//! Create, start, observe, stop, remove, exec.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use wharf::runtime::{ContainerStatus, Runtime};

use crate::harness::{sh, Host};

#[tokio::test(flavor = "multi_thread")]
async fn output_is_read_back_from_the_logs() {
    let host = Host::new().await;
    let service = host.service(
        "echo",
        &sh("echo hello from $WHARF_SERVICE-$WHARF_REPLICA; echo oops >&2"),
    );
    let id = host.run(&service).await;
    assert_eq!(host.exit_code(&id).await, Some(0));
    // stdout and stderr are separate pipes: each keeps its order, not their interleaving.
    let mut lines: Vec<(String, String)> = host
        .runtime
        .logs(&id)
        .read(None)
        .expect("logs")
        .into_iter()
        .map(|line| (line.stream, line.text))
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            ("stderr".to_owned(), "oops".to_owned()),
            ("stdout".to_owned(), "hello from echo-0".to_owned())
        ]
    );
    host.runtime.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread")]
async fn command_args_and_env_take_precedence_over_the_image() {
    let host = Host::new().await;
    // args replace the image's Cmd (/bin/sh).
    let service = host.service("args", "args: [/bin/echo, from args]\n");
    assert_eq!(
        host.run_to_exit(&service).await,
        (Some(0), "from args\n".into())
    );
    // command replaces the Entrypoint and drops the image's Cmd; args follow it.
    let service = host.service("command", "command: [/bin/echo, cmd]\nargs: [and, args]\n");
    assert_eq!(
        host.run_to_exit(&service).await,
        (Some(0), "cmd and args\n".into())
    );
    // Manifest env overrides the image's (PATH) and adds to it.
    let service = host.service(
        "env",
        &(sh("echo $PATH $GREETING $WHARF_REPLICA") + "env: {PATH: /bin, GREETING: hi}\n"),
    );
    assert_eq!(
        host.run_to_exit(&service).await,
        (Some(0), "/bin hi 0\n".into())
    );
    // workdir
    let service = host.service("workdir", &(sh("pwd") + "workdir: /tmp\n"));
    assert_eq!(host.run_to_exit(&service).await, (Some(0), "/tmp\n".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn users_switch_by_name_or_id() {
    let host = Host::new().await;
    let service = host.service("by-name", &(sh("id -u; id -g") + "user: nobody\n"));
    assert_eq!(
        host.run_to_exit(&service).await,
        (Some(0), "65534\n65534\n".into())
    );
    let service = host.service("by-id", &(sh("id -u; id -g") + "user: \"1000:2000\"\n"));
    assert_eq!(
        host.run_to_exit(&service).await,
        (Some(0), "1000\n2000\n".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_follow_the_process() {
    let host = Host::new().await;
    let service = host.service("status", &sh("sleep 30"));
    let id = host.create(&service, 3).await.expect("create");
    let created = host.observe(&id).await;
    assert_eq!(created.status, ContainerStatus::Created);
    assert_eq!((created.service.as_str(), created.slot), ("status", 3));
    assert_eq!(created.spec_hash, service.hash.as_str());
    assert!(created.image_digest.starts_with("sha256:"));
    assert_eq!(
        created.manifest_dir.as_deref(),
        Some(std::path::Path::new("/etc/wharf/services"))
    );

    host.runtime.start(&id).await.expect("start");
    let running = host.observe(&id).await;
    assert_eq!(running.status, ContainerStatus::Running);
    assert!(running.pid.is_some() && running.started_at.is_some());

    host.runtime.kill(&id, Signal::SIGKILL).await.expect("kill");
    assert_eq!(host.exit_code(&id).await, Some(137));
    host.runtime.remove(&id).await.expect("remove");
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let host = Host::new().await;
    // sleep as PID 1 ignores SIGTERM.
    let service = host.service("stubborn", "command: [sleep, \"1000\"]\n");
    let id = host.run(&service).await;
    let started = Instant::now();
    host.runtime
        .stop(&id, Signal::SIGTERM, Duration::from_millis(300))
        .await
        .expect("stop");
    // It waited out the grace period, then SIGKILL (128 + 9) ended it.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(host.exit_code(&id).await, Some(137));

    // One that handles SIGTERM exits with its own code, long before its 60 s grace period
    // would have run out: the code shows SIGTERM ended it, not SIGKILL.
    let service = host.service(
        "polite",
        &sh("trap 'exit 3' TERM; echo trap set; while true; do sleep 0.05; done"),
    );
    let id = host.run(&service).await;
    wait_for_output(&host, &id, "trap set").await;
    host.runtime
        .stop(&id, Signal::SIGTERM, Duration::from_secs(60))
        .await
        .expect("stop");
    assert_eq!(host.exit_code(&id).await, Some(3));
}

/// Until the container has printed `line` (a handler installed, a port open...).
async fn wait_for_output(host: &Host, id: &str, line: &str) {
    for _ in 0..500 {
        let logs = host.runtime.logs(id).read(None).expect("logs");
        if logs.iter().any(|printed| printed.text == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} did not print {line:?} within 10 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_returns_exit_code_and_output() {
    let host = Host::new().await;
    let service = host.service("exec", &(sh("sleep 30") + "env: {SECRET: sesame}\n"));
    let id = host.run(&service).await;
    let output = host
        .runtime
        .exec(
            &id,
            &[
                "/bin/sh".into(),
                "-c".into(),
                "echo $SECRET; echo err >&2; exit 7".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(output.code, 7);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "sesame\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    host.runtime.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread")]
async fn directories_wharf_did_not_create_are_not_its_containers() {
    let host = Host::new().await;
    let foreign = host.root.path().join("containers/someone-else");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(
        foreign.join("config.json"),
        r#"{"ociVersion": "1.0.2", "annotations": {"owner": "podman"}}"#,
    )
    .expect("write");
    assert!(host.runtime.list().await.expect("list").is_empty());
    assert!(host.runtime.remove("someone-else").await.is_err());
    assert!(foreign.join("config.json").exists(), "never touched");
}

/// libcontainer starts processes with raw clone3 calls; done from a process whose
/// other threads are allocating, the new process could inherit a held malloc lock and
/// hang forever (the agent's health checks and creations stopped that way).
#[test]
fn execs_and_creations_finish_while_other_threads_allocate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // A runtime of its own, shut down without waiting: a hung build must fail the
    // test, not hang it.
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let host = runtime.block_on(Host::new());
    let service = host.service("busy", &sh("sleep 60"));
    let id = runtime.block_on(host.run(&service));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // More threads than glibc has arenas (8 per core), so they share the main one.
    let allocators: Vec<_> = (0..40)
        .map(|seed: usize| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                let mut size = seed * 7919;
                while !stop.load(Ordering::Relaxed) {
                    size = (size * 31 + 17) % 300_000;
                    kept.push(vec![1; size]);
                    if kept.len() > 8 {
                        kept.swap_remove(size % kept.len());
                    }
                }
            })
        })
        .collect();
    let outcome = runtime.block_on(async {
        let exec = ["/bin/true".to_owned()];
        for round in 0..20 {
            let done = tokio::time::timeout(
                Duration::from_secs(20),
                host.runtime.exec(&id, &exec, Duration::from_secs(10)),
            )
            .await;
            if !matches!(done, Ok(Ok(ref output)) if output.code == 0) {
                return Err(format!("exec {round}: {done:?}"));
            }
        }
        tokio::time::timeout(Duration::from_secs(20), host.create(&service, 1))
            .await
            .map_err(|_| "the creation hung".to_owned())?
            .map_err(|err| err.to_string())
    });
    stop.store(true, Ordering::Relaxed);
    for allocator in allocators {
        allocator.join().expect("allocator thread");
    }
    let created = match outcome {
        Ok(created) => created,
        Err(hung) => {
            runtime.shutdown_timeout(Duration::from_secs(1));
            panic!("every exec and creation finishes: {hung}")
        }
    };
    for id in [created, id] {
        runtime.block_on(host.runtime.remove(&id)).expect("remove");
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}
