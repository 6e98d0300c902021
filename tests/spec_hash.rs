//! The spec hash decides whether a running container still matches its manifest.

#[path = "support/mod.rs"]
mod support;

use wharf::manifest::Service;

fn service(text: &str) -> Service {
    support::parse_service("test.yaml", text)
}

const WEB: &str = "\
apiVersion: wharf/v1
kind: Service
name: web
image: busybox
replicas: 2
env: {A: '1', B: '2'}
resources: {memory: 128Mi, cpus: 0.5}
";

#[test]
fn order_formatting_comments_and_spelling_do_not_change_the_hash() {
    let rewritten = "\
# the web tier
kind: Service
apiVersion: wharf/v1
name: web
resources:
  cpus: 0.5
  memory: 134217728   # the same 128Mi
env:
  B: \"2\"
  A: 1
image: docker.io/library/busybox:latest
replicas: 2
";
    assert_eq!(service(WEB).hash, service(rewritten).hash);
}

#[test]
fn scaling_and_policies_do_not_change_the_hash() {
    let changed = WEB.replace("replicas: 2", "replicas: 7")
        + "restart: never\npull: always\nstop: {timeout: 30s, drain: 5s}\nupdate: {order: stop-first}\nhealth: {tcp: {port: 80}}\n\
           logs: {driver: journald, max_size: 1Mi, max_files: 5}\n";
    assert_eq!(service(WEB).hash, service(&changed).hash);
}

#[test]
fn what_shapes_the_container_changes_the_hash() {
    let base = service(WEB).hash;
    for changed in [
        WEB.replace("A: '1'", "A: '3'"),
        WEB.replace("busybox", "busybox:1.36"),
        WEB.replace("128Mi", "256Mi"),
        WEB.to_owned() + "command: [/bin/sh]\n",
        WEB.to_owned() + "network: none\n",
        WEB.to_owned() + "network: host\n",
        WEB.to_owned() + "ports: [{container: 8080, host: 18080}]\n",
        WEB.to_owned() + "volumes: [{type: tmpfs, target: /tmp}]\n",
        WEB.to_owned() + "labels: {team: web}\n",
    ] {
        assert_ne!(service(&changed).hash, base, "{changed}");
    }
}

#[test]
fn published_ports_change_the_hash_by_what_they_publish_not_by_how_they_are_listed() {
    let ports = |list: &str| service(&format!("{WEB}ports: {list}\n")).hash;
    let two = ports("[{container: 8080, host: 18080}, {container: 53, host: 53, protocol: udp}]");
    assert_eq!(
        two,
        ports("[{container: 53, host: 53, protocol: udp}, {host: 18080, container: 8080, protocol: tcp}]")
    );
    assert_eq!(
        ports("[{container: 8080, host: 18080}]"),
        ports("[{container: 8080, host: 18080, host_ip: 0.0.0.0}]")
    );
    assert_ne!(
        ports("[{container: 8080, host: 18080}]"),
        ports("[{container: 8080, host: 18081}]")
    );
    assert_ne!(
        ports("[{container: 8080, host: 18080}]"),
        ports("[{container: 8080, host: 18080, host_ip: 127.0.0.1}]")
    );
}

#[test]
fn the_hash_is_stable_across_releases() {
    // If this changes, every running container looks outdated after an upgrade:
    // only change it on purpose, with a note in the release. It changed once, when
    // the default network became bridge (issue 15): containers that ran on the host's
    // network by default are recreated on the bridge.
    assert_eq!(
        service(WEB).hash.as_str(),
        "92e280cd876aa5e699ec98064501e32af3f69489023d7fab05b024c803a9383b"
    );
}

#[test]
fn writing_network_host_keeps_the_hash_it_had_when_host_was_the_default() {
    // Only the default moved: what a manifest writes hashes as before, and an
    // empty `ports` is not hashed.
    let host = WEB.to_owned() + "network: host\n";
    assert_eq!(
        service(&host).hash.as_str(),
        "856968b9e7cef167eb68629d5a2bf06a5b14e083d62a0c7dacf3529965cde338"
    );
}

/// A manifest directory holding `web.yaml` and its `app.conf`.
fn with_config(config: &str) -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.conf"), config).expect("write");
    let manifest = dir.path().join("web.yaml");
    let text = format!("{WEB}configs: [{{source: app.conf, target: /etc/app.conf}}]\n");
    std::fs::write(&manifest, text).expect("write");
    let service = wharf::manifest::load_file(&manifest)
        .expect("valid")
        .remove(0);
    (dir, service)
}

#[test]
fn a_config_file_s_content_is_part_of_the_hash_and_its_name_on_disk_is_not() {
    let (_a, first) = with_config("listen 80\n");
    let (_b, same) = with_config("listen 80\n");
    let (_c, edited) = with_config("listen 8080\n");
    assert_eq!(
        first.hash, same.hash,
        "the same content in another directory"
    );
    assert_ne!(first.hash, edited.hash);
}

#[test]
fn a_secret_s_version_is_part_of_the_hash_its_value_never_is() {
    let mut service = service(&format!("{WEB}secrets: [{{name: dbpass}}]\n"));
    let unresolved = service.hash.clone();
    service
        .files
        .secrets
        .insert("dbpass".into(), "0".repeat(32));
    service.rehash();
    let first = service.hash.clone();
    assert_ne!(unresolved, first);
    service
        .files
        .secrets
        .insert("dbpass".into(), "1".repeat(32));
    service.rehash();
    assert_ne!(first, service.hash, "a new value is a new version");
}

#[test]
fn an_env_file_is_hashed_as_the_variables_it_gives() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.env"), "GREETING=hi\n").expect("write");
    std::fs::write(dir.path().join("b.env"), "# the same\nGREETING=\"hi\"\n").expect("write");
    let load = |file: &str| {
        let manifest = dir.path().join(format!("{file}.yaml"));
        std::fs::write(&manifest, format!("{WEB}env_file: [{file}.env]\n")).expect("write");
        wharf::manifest::load_file(&manifest)
            .expect("valid")
            .remove(0)
    };
    let (a, b) = (load("a"), load("b"));
    assert_eq!(
        a.spec.env.get("GREETING").and_then(|v| v.text()),
        Some("hi")
    );
    // The file's name is in the spec (it is shown), its variables decide the hash.
    assert_eq!(a.spec.env, b.spec.env);
}
