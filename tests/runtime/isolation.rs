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
