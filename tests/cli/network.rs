//! `network: bridge` (the default): each container has its own address on wharf's
//! bridge; a service's published ports and its name reach its ready replicas only;
//! updates lose no request. Traffic goes only to 127.0.0.1 and to containers this
//! test made. Each test publishes its own host port: tests run side by side.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{apply, ok, ps, wharf_at, write};
use crate::support::busybox_yaml;

/// The body of `GET /` from `address`, or why not.
fn try_get(address: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(|err| format!("connect: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|err| err.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|err| format!("send: {err}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| format!("receive: {err}"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_owned())
        }
        _ => Err(format!("answer: {response:?}")),
    }
}

/// `try_get`, once it answers (at most 20 s).
fn get(address: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_get(address) {
            Ok(body) => return body,
            Err(err) => assert!(Instant::now() < deadline, "{address} never answered: {err}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wharf apply --yes DIR`, which succeeds; what it printed.
fn applied(root: &Path, dir: &Path) -> String {
    ok(&apply(root, dir, &[])).to_owned()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether the host side of container `id`'s veth pair exists (`wh` and 13 hex
/// digits of the id's SHA-256: other tests' containers come and go meanwhile).
fn has_link(id: &str) -> bool {
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Path::new("/sys/class/net")
        .join(format!("wh{}", &hex[..13]))
        .exists()
}

fn ids(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("containers"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The chain of `service` of wharf root `root` in table inet wharf.
fn service_chain(root: &Path, service: &str) -> String {
    let root = root.canonicalize().expect("root");
    let mut hasher = Sha256::new();
    hasher.update(root.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    hasher.update(service.as_bytes());
    let key: String = hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("svc-{key}")
}

fn wharf_table() -> String {
    let listed = Command::new("nft")
        .args(["list", "table", "inet", "wharf"])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&listed.stdout).into_owned()
}

/// busybox httpd on 8080 in each replica, serving "<VERSION> <hostname>".
fn web(name: &str, extra: &str) -> String {
    busybox_yaml(
        name,
        &format!(
            "stop: {{signal: KILL}}\n\
             command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo \"$VERSION $(hostname)\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']\n\
             {extra}"
        ),
    )
}

fn addresses(root: &Path) -> Vec<String> {
    ps(root)
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row["address"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_published_port_spreads_over_the_replicas_each_with_its_own_address() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "web.yaml",
        web(
            "web",
            "replicas: 3\nenv: {VERSION: v1}\nports: [{container: 8080, host: 18181}]\n",
        ),
    );
    applied(root.path(), dir.path());

    let addresses = addresses(root.path());
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 3, "each replica has its own: {addresses:?}");
    for address in &addresses {
        let address: Ipv4Addr = address.parse().expect("IPv4");
        assert_eq!(address.octets()[..2], [10, 77], "on wharf's subnet");
        // Both replicas listen on port 8080: on a bridge they do not collide.
        assert!(get(SocketAddr::from((address, 8080))).starts_with("v1 web-"));
    }
    // The host's own 127.0.0.1:18181 spreads over the replicas.
    let answered: BTreeSet<String> = (0..40).map(|_| get(local(18181))).collect();
    assert!(answered.len() >= 2, "answers from {answered:?}");
    // Containers reach it too, by a service name and through the host's port.
    let by_name = wharf_at(
        root.path(),
        &["exec", "web/0", "--", "wget", "-qO-", "http://web:8080/"],
    );
    assert!(ok(&by_name).starts_with("v1 web-"));
    let status = ok(&wharf_at(root.path(), &["status"])).to_owned();
    assert_eq!(status.matches("in rotation").count(), 3, "{status}");
    assert!(
        status.starts_with("web  3/3 running  name web → 10.77."),
        "{status}"
    );
    assert!(
        status
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(", publishes 18181/tcp")),
        "{status}"
    );
    let table = wharf_table();
    assert!(
        table.contains(&service_chain(root.path(), "web")),
        "{table}"
    );

    let containers = ids(root.path());
    assert!(containers.iter().all(|id| has_link(id)));
    ok(&wharf_at(root.path(), &["down", "--all"]));
    assert!(
        !containers.iter().any(|id| has_link(id)),
        "no veth is left behind"
    );
    let table = wharf_table();
    assert!(!table.contains("port-tcp-18181"), "{table}");
    assert!(
        !table.contains(&service_chain(root.path(), "web")),
        "{table}"
    );
    assert!(try_get(local(18181)).is_err(), "nothing answers any more");
    assert!(
        Path::new("/sys/class/net/wharf0").exists(),
        "the bridge stays"
    );
}

#[test]
fn services_reach_each_other_by_name_also_ones_created_later() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "api.yaml",
        web("api", "replicas: 2\nenv: {VERSION: api}\n"),
    );
    write(
        dir.path(),
        "client.yaml",
        busybox_yaml("client", "stop: {signal: KILL}\ncommand: [sleep, '1000']\n"),
    );
    applied(root.path(), dir.path());
    let fetch = |url: &str| {
        wharf_at(
            root.path(),
            &["exec", "client/0", "--", "wget", "-qO-", url],
        )
    };
    assert!(ok(&fetch("http://api:8080/")).starts_with("api api-"));

    // A service created after the client is found by name as well.
    write(
        dir.path(),
        "later.yaml",
        web("later", "env: {VERSION: later}\n"),
    );
    applied(root.path(), dir.path());
    assert_eq!(ok(&fetch("http://later:8080/")), "later later-0\n");
    // Another root's services are not its names.
    let other_root = tempfile::tempdir().expect("another root");
    let other_dir = tempfile::tempdir().expect("its manifests");
    write(
        other_dir.path(),
        "client.yaml",
        busybox_yaml("client", "stop: {signal: KILL}\ncommand: [sleep, '1000']\n"),
    );
    applied(other_root.path(), other_dir.path());
    let elsewhere = wharf_at(
        other_root.path(),
        &[
            "exec",
            "client/0",
            "--",
            "wget",
            "-T",
            "2",
            "-qO-",
            "http://api:8080/",
        ],
    );
    assert_ne!(elsewhere.code, 0, "{}", elsewhere.stdout);
    ok(&wharf_at(other_root.path(), &["down", "--all"]));

    // Scaling keeps the name's address: it spreads over the replicas there are.
    write(
        dir.path(),
        "api.yaml",
        web("api", "replicas: 1\nenv: {VERSION: api}\n"),
    );
    applied(root.path(), dir.path());
    for _ in 0..5 {
        assert_eq!(ok(&fetch("http://api:8080/")), "api api-0\n");
    }
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn a_rolling_update_under_a_request_loop_loses_no_request() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let manifest = |version: &str| {
        web(
            "roll",
            &format!(
                "replicas: 3\nenv: {{VERSION: {version}}}\nports: [{{container: 8080, host: 18182}}]\n\
                 health: {{http: {{port: 8080}}, interval: 200ms, start_period: 5s}}\n"
            ),
        )
    };
    write(dir.path(), "roll.yaml", manifest("v1"));
    applied(root.path(), dir.path());
    assert!(get(local(18182)).starts_with("v1 "));

    // Every request is counted: a new connection each, one after the other.
    let stop = Arc::new(AtomicBool::new(false));
    let loop_thread = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut answers, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match try_get(local(18182)) {
                    Ok(body) => answers.push(body),
                    Err(err) => failures.push(err),
                }
            }
            (answers, failures)
        })
    };
    write(dir.path(), "roll.yaml", manifest("v2"));
    let applied = applied(root.path(), dir.path());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = loop_thread.join().expect("the request loop");

    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        answers.len() + failures.len()
    );
    assert!(
        answers.len() > 20,
        "the loop ran during the update: {}",
        answers.len()
    );
    assert!(
        answers.iter().any(|body| body.starts_with("v1 ")),
        "{applied}"
    );
    assert!(answers.last().is_some_and(|body| body.starts_with("v2 ")));
    assert!((0..10).all(|_| get(local(18182)).starts_with("v2 ")));
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn an_unhealthy_replica_gets_no_requests() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let work = tempfile::tempdir().expect("work");
    // The check asks for /tmp/www/ok; `sick` removes it and says so in the page.
    write(
        dir.path(),
        "web.yaml",
        busybox_yaml(
            "sick",
            "replicas: 2\nstop: {signal: KILL}\nrestart: never\n\
             command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo ok > /tmp/www/ok && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']\n\
             ports: [{container: 8080, host: 18184}]\n\
             health: {http: {port: 8080, path: /ok}, interval: 200ms, retries: 2, start_period: 5s}\n",
        ),
    );
    let mut agent =
        crate::agent::AgentProcess::start(root.path(), dir.path(), work.path().join("agent.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok(&wharf_at(root.path(), &["status"]))
        .matches("in rotation")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&wharf_at(
        root.path(),
        &[
            "exec",
            "sick/1",
            "--",
            "sh",
            "-c",
            "rm /tmp/www/ok && echo sick > /tmp/www/index.html",
        ],
    ));
    // Out of rotation once its check failed (then restarted: restart: never keeps it
    // out only if the agent does not replace it; either way it gets nothing).
    while !ok(&wharf_at(root.path(), &["status"])).contains("unhealthy") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..30 {
        assert_ne!(
            get(local(18184)),
            "sick\n",
            "the unhealthy replica got a request"
        );
    }
    assert_eq!(agent.terminate(), Some(0));
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn a_kill_during_apply_then_apply_again_leaves_no_duplicate_address_or_interface() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "web.yaml",
        web(
            "killed",
            "replicas: 4\nenv: {VERSION: v1}\nports: [{container: 8080, host: 18183}]\n",
        ),
    );
    let mut killed = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "--root",
            root.path().to_str().expect("UTF-8"),
            "apply",
            "--yes",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply starts");
    // Killed once some container has its network; every container seen is followed.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|id: &String| has_link(id)) && Instant::now() < deadline {
        seen.extend(ids(root.path()));
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.kill().expect("kill -9");
    let _ = killed.wait();
    seen.extend(ids(root.path()));

    applied(root.path(), dir.path());
    let addresses = addresses(root.path());
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(
        distinct.len(),
        addresses.len(),
        "no address twice: {addresses:?}"
    );
    assert_eq!(addresses.len(), 4, "{addresses:?}");
    seen.extend(ids(root.path()));
    let with_link = seen.iter().filter(|id| has_link(id)).count();
    assert_eq!(with_link, 4, "one interface per container: {seen:?}");
    let answered: BTreeSet<String> = (0..40).map(|_| get(local(18183))).collect();
    assert!(answered.len() >= 2, "{answered:?}");

    ok(&wharf_at(root.path(), &["down", "--all"]));
    assert!(
        !seen.iter().any(|id| has_link(id)),
        "no veth is left behind"
    );
    let table = wharf_table();
    assert!(!table.contains("port-tcp-18183"), "{table}");
    assert!(
        !table.contains(&service_chain(root.path(), "killed")),
        "{table}"
    );
}

#[test]
fn a_replica_that_never_passes_its_check_stays_out_of_rotation_and_apply_says_so() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "never.yaml",
        web(
            "never",
            "env: {VERSION: v1}\nports: [{container: 8080, host: 18185}]\n\
             health: {exec: [/bin/false], interval: 200ms, retries: 2}\n",
        ),
    );
    let run = apply(root.path(), dir.path(), &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("replica never/0 unhealthy")
            && said.contains("keeps running out of rotation"),
        "{said}"
    );
    // It runs (its output can be read) and gets no connection: nothing answers.
    let status = ok(&wharf_at(root.path(), &["status"])).to_owned();
    assert!(status.contains("out of rotation"), "{status}");
    assert!(try_get(local(18185)).is_err());
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn rules_another_program_removed_are_put_back_by_the_next_apply() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "back.yaml",
        web(
            "back",
            "env: {VERSION: v1}\nports: [{container: 8080, host: 18186}]\n",
        ),
    );
    applied(root.path(), dir.path());
    assert_eq!(get(local(18186)), "v1 back-0\n");
    // As a firewall reload would (only this test's chain: other tests run meanwhile).
    let flushed = Command::new("nft")
        .args(["flush", "chain", "inet", "wharf", "port-tcp-18186"])
        .status()
        .expect("nft runs");
    assert!(flushed.success());
    assert!(try_get(local(18186)).is_err(), "the port leads nowhere now");
    let again = applied(root.path(), dir.path());
    assert!(again.contains("No changes"), "{again}");
    assert_eq!(get(local(18186)), "v1 back-0\n");
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn a_host_port_a_program_listens_on_or_another_service_publishes_is_refused() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    // This test listens on 18187 itself: wharf names it.
    let listener = std::net::TcpListener::bind("0.0.0.0:18187").expect("bind 18187");
    write(
        dir.path(),
        "taken.yaml",
        web(
            "taken",
            "env: {VERSION: v1}\nports: [{container: 8080, host: 18187}]\n",
        ),
    );
    let run = apply(root.path(), dir.path(), &[]);
    assert_eq!(run.code, 1);
    let said = format!("{}{}", run.stdout, run.stderr);
    let me = format!("(pid {})", std::process::id());
    assert!(
        said.contains("host port 18187/tcp is already in use on this host by")
            && said.contains(&me),
        "{said}"
    );
    assert!(
        ps(root.path()).as_array().is_some_and(Vec::is_empty),
        "nothing is left"
    );
    drop(listener);

    // Published by a service of this root, the port is refused to another root.
    applied(root.path(), dir.path());
    let other_root = tempfile::tempdir().expect("another root");
    let other_dir = tempfile::tempdir().expect("its manifests");
    write(
        other_dir.path(),
        "thief.yaml",
        web(
            "thief",
            "env: {VERSION: v1}\nports: [{container: 8080, host: 18187}]\n",
        ),
    );
    let run = apply(other_root.path(), other_dir.path(), &[]);
    assert_eq!(run.code, 1);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("host port 18187/tcp is already published by service taken (wharf root"),
        "{said}"
    );
    assert_eq!(
        get(local(18187)),
        "v1 taken-0\n",
        "the first service keeps it"
    );
    ok(&wharf_at(root.path(), &["down", "--all"]));
    ok(&wharf_at(other_root.path(), &["down", "--all"]));
}

#[test]
fn a_replica_that_dies_after_apply_leaves_the_rotation_without_an_agent() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    write(
        dir.path(),
        "dies.yaml",
        web(
            "dies",
            "replicas: 2\nrestart: never\nenv: {VERSION: v1}\nports: [{container: 8080, host: 18188}]\n",
        ),
    );
    applied(root.path(), dir.path());
    ok(&wharf_at(
        root.path(),
        &["kill", "dies/1", "--signal", "KILL"],
    ));
    // Its monitor takes it out as it ends (connections in that moment fail: nothing
    // announced the end)...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ok(&wharf_at(root.path(), &["status"])).to_owned();
        if status.matches("in rotation").count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still in rotation: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and from then on every connection goes to the other one, none tried again.
    for _ in 0..30 {
        assert_eq!(try_get(local(18188)).as_deref(), Ok("v1 dies-0\n"));
    }
    ok(&wharf_at(root.path(), &["down", "--all"]));
}

#[test]
fn a_wharf_told_another_subnet_than_the_bridge_has_changes_nothing() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    // The bridge exists: another test, or this one, set it up with the default.
    write(
        dir.path(),
        "first.yaml",
        busybox_yaml("first", "stop: {signal: KILL}\ncommand: [sleep, '1000']\n"),
    );
    applied(root.path(), dir.path());
    let other_root = tempfile::tempdir().expect("another root");
    let run = wharf_at(
        other_root.path(),
        &[
            "--subnet",
            "172.30.0.0/16",
            "apply",
            "--yes",
            dir.path().to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("wharf0 is set up with the subnet 10.77.0.0/16, not 172.30.0.0/16"),
        "{}",
        run.stderr
    );
    assert!(ps(other_root.path()).as_array().is_some_and(Vec::is_empty));
    let table = wharf_table();
    assert!(
        !table.contains("172.30."),
        "nothing of it reached the rules: {table}"
    );
    ok(&wharf_at(root.path(), &["down", "--all"]));
}
