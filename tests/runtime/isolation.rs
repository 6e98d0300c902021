//! Resources, network and hardening.

use crate::harness::{sh, Host};

#[tokio::test(flavor = "multi_thread")]
async fn a_process_over_the_memory_limit_is_oom_killed() {
    let host = Host::new().await;
    let service = host.service(
        "hungry",
        &(sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived")
            + "resources: {memory: 16Mi}\n"),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!(code, Some(137), "{output}");
    assert!(!output.contains("survived"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pids_limit_stops_fork_bombs() {
    let host = Host::new().await;
    let service = host.service(
        "forky",
        &(sh("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done 2>&1; echo started")
            + "resources: {pids: 4}\n"),
    );
    let (_, output) = host.run_to_exit(&service).await;
    assert!(
        output.contains("can't fork") || output.contains("Resource temporarily unavailable"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_has_a_working_loopback_and_nothing_else() {
    let host = Host::new().await;
    let service = host.service(
        "isolated",
        &(sh("ls /sys/class/net; ping -c 1 -W 1 127.0.0.1 >/dev/null && echo loopback works")
            + "network: none\n"),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!((code, output.as_str()), (Some(0), "lo\nloopback works\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn network_host_sees_the_hosts_interfaces() {
    let host = Host::new().await;
    let service = host.service("hostnet", &(sh("ls /sys/class/net") + "network: host\n"));
    let (code, output) = host.run_to_exit(&service).await;
    let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("host interfaces")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    interfaces.sort();
    assert_eq!(code, Some(0));
    assert_eq!(output.lines().collect::<Vec<_>>(), interfaces);
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_hardened_by_default() {
    let host = Host::new().await;
    let service = host.service(
        "hardened",
        &sh(
            "hostname; grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status; \
             mount -t tmpfs none /mnt 2>/dev/null || echo mount refused; \
             cat /proc/kcore 2>/dev/null | head -c 1 | wc -c",
        ),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!(code, Some(0), "{output}");
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    assert_eq!(lines[0], "hardened-0");
    assert_eq!(lines[1], "NoNewPrivs:\t1".trim());
    assert_eq!(lines[2], "Seccomp:\t2".trim());
    assert_eq!(lines[3], "mount refused");
    assert_eq!(lines[4], "0", "/proc/kcore is masked");
}

/// A static probe program, compiled for the test, that tries to create namespaces the
/// ways a container escape would start: `clone` with namespace flags and `clone3`.
const NAMESPACE_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, long pid) {
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, 0, 0);
    printf("%s: %s\n", what, pid < 0 ? strerror(errno) : "created");
}

int main(void) {
    report("clone user namespace", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    report("clone mount namespace", syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0));
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    report("clone3 user namespace", syscall(SYS_clone3, &args, sizeof args));
    report("fork", fork());
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn containers_cannot_create_namespaces() {
    let host = Host::new().await;
    let probe = tempfile::tempdir().expect("probe dir");
    std::fs::write(probe.path().join("probe.c"), NAMESPACE_PROBE).expect("write probe");
    // Other tests run containers in this process meanwhile: wharf's reaper collects
    // every child's exit, so gcc's is taken from it rather than waited for here.
    let log = std::fs::File::create(probe.path().join("gcc.log")).expect("log file");
    let since = std::time::SystemTime::now();
    #[allow(clippy::zombie_processes, reason = "wharf's reaper collects it")]
    let gcc = wharf::process::spawn_beside_containers(
        std::process::Command::new("gcc")
            .args(["-static", "-O1", "-o", "probe", "probe.c"])
            .current_dir(probe.path())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log),
    )
    .expect("gcc (Debian's gcc and libc6-dev)");
    let exit = wharf::runtime::Reaper::global()
        .wait_for(gcc.id() as i32, since, std::time::Duration::from_secs(120))
        .expect("gcc finishes");
    assert_eq!(
        exit.code,
        0,
        "{}",
        std::fs::read_to_string(probe.path().join("gcc.log")).unwrap_or_default()
    );
    // Executable by anyone, as in an image (the test process runs with wharf's umask).
    use std::os::unix::fs::PermissionsExt;
    let probe_file = probe.path().join("probe");
    std::fs::set_permissions(&probe_file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let service = host.service(
        "probe",
        &format!(
            "command: [/probe/probe]\nvolumes:\n  - {{type: bind, source: {}, target: /probe, readonly: true}}\n",
            probe.path().display()
        ),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        output,
        "clone user namespace: Operation not permitted\n\
         clone mount namespace: Operation not permitted\n\
         clone3 user namespace: Function not implemented\n\
         fork: created\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_start_with_default_signal_dispositions() {
    let host = Host::new().await;
    // Rust ignores SIGPIPE; a container must not inherit that: `yes` would spin on
    // EPIPE forever once `head` has exited.
    let service = host.service(
        "pipes",
        &sh("grep -E 'SigIgn|SigBlk' /proc/self/status; \
             yes wharf-log-line-padding | head -c 6291456 >/dev/null; echo done"),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        output.split_whitespace().collect::<Vec<_>>(),
        [
            "SigBlk:",
            "0000000000000000",
            "SigIgn:",
            "0000000000000000",
            "done"
        ]
    );
}
