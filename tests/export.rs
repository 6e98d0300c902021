//! `wharf export kubernetes`: every object it prints must be one the Kubernetes API
//! accepts. Each is read into k8s-openapi's type for its kind and written back: the
//! result must equal the original, so a misspelt or misplaced field (which the
//! generated types would drop) fails as surely as a wrong type.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service as KubeService};
use serde_json::Value;
use wharf::export::to_kubernetes;
use wharf::manifest::{load_paths, parse_manifest};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) -> Value {
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|err| panic!("not a valid {}: {err}\n{object:#}", object["kind"]));
    serde_json::to_value(&typed).expect("serializes")
}

fn assert_valid_kubernetes(object: &Value) {
    let back = match object["kind"].as_str() {
        Some("Deployment") => round_trip::<Deployment>(object),
        Some("Service") => round_trip::<KubeService>(object),
        Some("PersistentVolumeClaim") => round_trip::<PersistentVolumeClaim>(object),
        Some("ConfigMap") => round_trip::<ConfigMap>(object),
        Some("Job") => round_trip::<Job>(object),
        Some("CronJob") => round_trip::<CronJob>(object),
        other => panic!("unexpected kind {other:?}"),
    };
    assert_eq!(
        &back, object,
        "fields the Kubernetes schema does not know were dropped"
    );
}

fn export(path: &str) -> (Vec<Value>, Vec<String>) {
    let loaded = load_paths(&[repo(path)]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let (objects, warnings) = to_kubernetes(&loaded.services);
    (objects, warnings.iter().map(ToString::to_string).collect())
}

/// The objects (each checked) and warnings for service `web` with the YAML lines `extra`.
fn export_service(extra: &str) -> (Vec<Value>, Vec<String>) {
    let text = format!("apiVersion: wharf/v1\nkind: Service\nname: web\nimage: busybox\n{extra}");
    let services = parse_manifest(Path::new("web.yaml"), text.as_bytes())
        .unwrap_or_else(|errors| panic!("invalid test manifest: {errors:?}"));
    let (objects, warnings) = to_kubernetes(&services);
    for object in &objects {
        assert_valid_kubernetes(object);
    }
    (objects, warnings.iter().map(ToString::to_string).collect())
}

/// A directory holding `files` (a manifest and the files it names), for exports of
/// services with configs, which are read next to their manifest.
fn directory(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("in the directory")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
    dir
}

/// The objects (each checked) and warnings for the manifests of `dir`.
fn export_directory(dir: &Path) -> (Vec<Value>, Vec<String>) {
    let loaded = load_paths(&[dir.to_owned()]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let (objects, warnings) = to_kubernetes(&loaded.services);
    for object in &objects {
        assert_valid_kubernetes(object);
    }
    (objects, warnings.iter().map(ToString::to_string).collect())
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects.iter().filter_map(|o| o["kind"].as_str()).collect()
}

#[test]
fn the_check_catches_a_misspelt_field() {
    let typo = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replica": 3, "selector": {}, "template": {}},
    });
    assert_ne!(round_trip::<Deployment>(&typo), typo);
}

#[test]
fn every_example_exports_to_valid_kubernetes_objects() {
    let (objects, _) = export("examples");
    assert!(objects.iter().filter(|o| o["kind"] == "Deployment").count() >= 3);
    for object in &objects {
        assert_valid_kubernetes(object);
    }
}

#[test]
fn every_field_is_carried_over_or_warned_about() {
    let (objects, warnings) = export("tests/manifests/every-field.yaml");
    for object in &objects {
        assert_valid_kubernetes(object);
    }
    assert_eq!(
        kinds(&objects),
        ["Deployment", "Service", "PersistentVolumeClaim"]
    );

    let deployment = &objects[0]["spec"];
    assert_eq!(deployment["replicas"], 3);
    assert_eq!(
        deployment["strategy"]["rollingUpdate"],
        serde_json::json!({"maxSurge": 2, "maxUnavailable": 0})
    );
    assert_eq!(deployment["progressDeadlineSeconds"], 180);
    let pod = &deployment["template"]["spec"];
    // The drain (a preStop sleep, in whole seconds) and then the stop timeout.
    assert_eq!(pod["terminationGracePeriodSeconds"], 2);
    let container = &pod["containers"][0];
    assert_eq!(
        container["lifecycle"],
        serde_json::json!({"preStop": {"sleep": {"seconds": 1}}})
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["command"], serde_json::json!(["/app/server"]));
    assert_eq!(container["args"], serde_json::json!(["--port", "8080"]));
    assert_eq!(
        container["env"][1],
        serde_json::json!({"name": "WORKERS", "value": "4"})
    );
    assert_eq!(container["workingDir"], "/app");
    assert_eq!(
        container["securityContext"],
        serde_json::json!({"runAsUser": 1000, "runAsGroup": 1000})
    );
    assert_eq!(
        container["resources"]["limits"],
        serde_json::json!({"cpu": "500m", "memory": "128Mi"})
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["failureThreshold"], 4);
    assert_eq!(container["startupProbe"]["periodSeconds"], 2);
    assert_eq!(container["startupProbe"]["failureThreshold"], 5);
    let volumes = &pod["volumes"];
    assert_eq!(volumes[0]["persistentVolumeClaim"]["claimName"], "data");
    assert_eq!(volumes[1]["emptyDir"], serde_json::json!({}));
    assert_eq!(volumes[2]["hostPath"]["path"], "/srv/static");
    assert_eq!(
        volumes[3]["emptyDir"],
        serde_json::json!({"medium": "Memory", "sizeLimit": "64Mi"})
    );
    assert_eq!(container["volumeMounts"][2]["readOnly"], true);
    assert_eq!(objects[0]["metadata"]["labels"]["team"], "payments");
    // Each published port: a containerPort, and a port of the Service (the host port,
    // forwarded to the container's).
    assert_eq!(
        container["ports"],
        serde_json::json!([
            {"containerPort": 8080, "protocol": "TCP"},
            {"containerPort": 8125, "protocol": "UDP"},
        ])
    );
    let service = &objects[1]["spec"];
    assert_eq!(service["selector"], deployment["selector"]["matchLabels"]);
    assert_eq!(
        service["ports"],
        serde_json::json!([
            {"name": "tcp-18080", "port": 18080, "targetPort": 8080, "protocol": "TCP"},
            {"name": "udp-8125", "port": 8125, "targetPort": 8125, "protocol": "UDP"},
        ])
    );

    // Whatever has no equivalent is said, with the service and the field.
    let said = |field: &str| {
        warnings.iter().any(|w| {
            w.contains("tests/manifests/every-field.yaml:5:7 service everything:")
                && w.contains(&format!(": {field}: "))
        })
    };
    for field in [
        "ports",
        "ports[1].host_ip",
        "restart",
        "stop.signal",
        "resources.pids",
        "health.interval",
        "volumes",
    ] {
        assert!(said(field), "no warning about {field}: {warnings:#?}");
    }
}

#[test]
fn a_kubernetes_service_is_made_for_what_other_hosts_can_reach() {
    let check = "health: {tcp: {port: 8080}}\n";
    // Published ports.
    let published = format!("{check}ports: [{{container: 8080, host: 18080}}]\n");
    assert_eq!(
        kinds(&export_service(&published).0),
        ["Deployment", "Service"]
    );
    // On the bridge without ports, nothing outside the host reaches it.
    assert_eq!(kinds(&export_service(check).0), ["Deployment"]);
    // With network: host, the port the health check names is bound on the host.
    let (objects, _) = export_service(&format!("{check}network: host\n"));
    assert_eq!(kinds(&objects), ["Deployment", "Service"]);
    assert_eq!(objects[1]["spec"]["ports"][0]["port"], 8080);
    // With network: none, nothing reaches it, and the pod's network is said.
    let (objects, warnings) = export_service(&format!("{check}network: none\n"));
    assert_eq!(kinds(&objects), ["Deployment"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("network: none has no Kubernetes equivalent")),
        "{warnings:#?}"
    );
}

#[test]
fn the_rollout_strategy_follows_the_update_order_and_its_default() {
    let strategy =
        |extra: &str| export_service(extra).0[0]["spec"]["strategy"]["rollingUpdate"].clone();
    // On the bridge, start-first: a new pod before an old one goes.
    assert_eq!(
        strategy(""),
        serde_json::json!({"maxSurge": 1, "maxUnavailable": 0})
    );
    // With network: host, stop-first: both would bind the same ports.
    assert_eq!(
        strategy("network: host\n"),
        serde_json::json!({"maxSurge": 0, "maxUnavailable": 1})
    );
    assert_eq!(
        strategy("update: {order: stop-first}\n"),
        serde_json::json!({"maxSurge": 0, "maxUnavailable": 1})
    );
}

#[test]
fn the_command_prints_yaml_documents_and_warnings_on_stderr() {
    let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["export", "kubernetes"])
        .arg(repo("tests/manifests/every-field.yaml"))
        .output()
        .expect("wharf runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let documents: Vec<Value> = stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).expect("YAML"))
        .collect();
    assert_eq!(documents.len(), 3);
    for document in &documents {
        assert_valid_kubernetes(document);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning:")
            && stderr.contains(
                "ports: host ports become ports of a ClusterIP Service, reachable only inside \
                 the cluster (18080/tcp, 8125/udp on Service \"everything\"): to expose them, \
                 make it a NodePort or LoadBalancer Service, or add an Ingress"
            ),
        "{stderr}"
    );

    let broken = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["export", "kubernetes"])
        .arg(repo("tests/manifests/invalid"))
        .output()
        .expect("wharf runs");
    assert_eq!(broken.status.code(), Some(1));
    assert!(broken.stdout.is_empty());
}

/// A service with a config file next to its manifest, a mounted secret and a secret
/// in env, as the tests below export it.
const WEB_WITH_FILES: &str = "\
apiVersion: wharf/v1
kind: Service
name: web
image: busybox
env:
  LOG_LEVEL: info
  DB_PASSWORD: {secret: dbpass}
configs:
  - {source: app.conf, target: /etc/app/app.conf}
  - {source: logo.png, target: /srv/www/logo.png, mode: 0440}
secrets:
  - {name: tls-key, target: /etc/app/tls.key}
";

/// WEB_WITH_FILES in its directory, with the configs it names.
fn web_with_files() -> tempfile::TempDir {
    directory(&[
        ("web.yaml", WEB_WITH_FILES.as_bytes()),
        ("app.conf", b"listen 8080\n"),
        // Not UTF-8: carried as binaryData (base64).
        ("logo.png", b"\x89PNG\xff\x00"),
    ])
}

#[test]
fn configs_become_a_config_map_mounted_at_their_targets() {
    let dir = web_with_files();
    let (objects, _) = export_directory(dir.path());
    // The ConfigMap comes first, so that `kubectl apply` creates it before the pods
    // that mount it.
    assert_eq!(kinds(&objects), ["ConfigMap", "Deployment"]);

    // One ConfigMap per service, `<service>-config`, keyed by the sources' file names.
    let config_map = &objects[0];
    assert_eq!(config_map["metadata"]["name"], "web-config");
    assert_eq!(
        config_map["data"],
        serde_json::json!({"app.conf": "listen 8080\n"})
    );
    assert_eq!(
        config_map["binaryData"],
        serde_json::json!({"logo.png": "iVBOR/8A"})
    );

    // Each config is one file of the ConfigMap's volume, mounted read-only at its
    // target (subPath), with its mode (0444 unless given) as Kubernetes writes modes:
    // a decimal number (0o444 is 292).
    let pod = &objects[1]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0],
        serde_json::json!({
            "name": "configs",
            "configMap": {
                "name": "web-config",
                "items": [
                    {"key": "app.conf", "path": "app.conf", "mode": 0o444},
                    {"key": "logo.png", "path": "logo.png", "mode": 0o440},
                ],
            },
        })
    );
    let mounts = &pod["containers"][0]["volumeMounts"];
    assert_eq!(
        mounts[0],
        serde_json::json!({
            "name": "configs",
            "mountPath": "/etc/app/app.conf",
            "subPath": "app.conf",
            "readOnly": true,
        })
    );
    assert_eq!(mounts[1]["mountPath"], "/srv/www/logo.png");
    assert_eq!(mounts[1]["subPath"], "logo.png");

    // An edit of a config changes the pod template, so the Deployment replaces its
    // pods, as wharf replaces its containers.
    let digest = |objects: &[Value]| {
        objects[1]["spec"]["template"]["metadata"]["annotations"]["checksum/config"].clone()
    };
    assert!(digest(&objects).is_string());
    std::fs::write(dir.path().join("app.conf"), "listen 9090\n").expect("write");
    let (edited, _) = export_directory(dir.path());
    assert_ne!(digest(&edited), digest(&objects));
}

#[test]
fn secrets_are_referred_to_by_name_and_never_exported() {
    let dir = web_with_files();
    let (objects, warnings) = export_directory(dir.path());
    // No Secret object: the values stay on the host.
    assert!(!kinds(&objects).contains(&"Secret"), "{objects:#?}");
    let pod = &objects[1]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // `{secret: dbpass}` in env: the key `value` of the Secret `dbpass`.
    assert_eq!(
        container["env"],
        serde_json::json!([
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "dbpass", "key": "value"}},
            },
            {"name": "LOG_LEVEL", "value": "info"},
        ])
    );

    // A mounted secret: a `secret` volume with that key as one file (mode 0400 unless
    // given), mounted read-only at the target.
    assert_eq!(
        pod["volumes"][1],
        serde_json::json!({
            "name": "secret-0",
            "secret": {
                "secretName": "tls-key",
                "items": [{"key": "value", "path": "value", "mode": 0o400}],
            },
        })
    );
    assert_eq!(
        container["volumeMounts"][2],
        serde_json::json!({
            "name": "secret-0",
            "mountPath": "/etc/app/tls.key",
            "subPath": "value",
            "readOnly": true,
        })
    );

    // Each secret's warning says how to create it in the cluster.
    let manifest = dir.path().join("web.yaml");
    let location = format!("{}:3:7 service web:", manifest.display());
    for expected in [
        "secrets[0].name: secret tls-key is referred to by name and its value is not \
         exported: create the Secret in the cluster before applying, with the value in key \
         \"value\": kubectl create secret generic tls-key --from-file=value=./tls-key.txt",
        // Used in env: wharf leaves a trailing newline out of the value, Kubernetes keeps it.
        "env.DB_PASSWORD.secret: secret dbpass is referred to by name and its value is not \
         exported: create the Secret in the cluster before applying, with the value in key \
         \"value\": kubectl create secret generic dbpass --from-file=value=./dbpass.txt \
         (the file without a trailing newline: Kubernetes keeps one in env values, wharf \
         does not)",
    ] {
        let warning = format!("{location} {expected}");
        assert!(
            warnings.contains(&warning),
            "no {warning:?} in {warnings:#?}"
        );
    }
    // Kubernetes cannot give a mounted file an owner: tls.key is root's there, and
    // with mode 0400 only root can read it.
    let owner = warnings
        .iter()
        .find(|w| w.contains("secrets[0]: the owner (the container's user) is not carried over"))
        .expect("a warning about the owner");
    assert!(owner.contains("with mode 0400"), "{owner}");
}

#[test]
fn secret_names_are_made_kubernetes_names_and_owners_are_warned_about() {
    let extra = "\
user: \"0\"
env: {TOKEN: {secret: API_Token}}
secrets:
  - {name: API_Token}
  - {name: ca.pem, target: /etc/ca.pem, mode: 0444, uid: 1000}
";
    let (objects, warnings) = export_service(extra);
    let pod = &objects[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "api-token"
    );
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "api-token");
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/run/secrets/API_Token"
    );
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "ca.pem");
    let said = |text: &str| warnings.iter().any(|w| w.contains(text));
    assert!(
        said(
            "secret name API_Token is not a Kubernetes name (lowercase letters, digits, '-' \
             and '.'); the pods refer to the Secret api-token"
        ),
        "{warnings:#?}"
    );
    assert!(
        said("kubectl create secret generic api-token --from-file=value=./API_Token.txt"),
        "{warnings:#?}"
    );
    // Run as root, the default owner changes nothing; an owner given is not carried over.
    assert!(!said("secrets[0]: the owner"), "{warnings:#?}");
    assert!(
        said(
            "secrets[1]: the owner (uid 1000) is not carried over: Kubernetes cannot set a \
             mounted file's owner, /etc/ca.pem is owned by root"
        ),
        "{warnings:#?}"
    );
}

#[test]
fn config_keys_are_unique_and_valid_whatever_the_file_names() {
    let manifest = "\
apiVersion: wharf/v1
kind: Service
name: web
image: busybox
configs:
  - {source: a/app.conf, target: /etc/a.conf}
  - {source: b/app.conf, target: /etc/b.conf}
  - {source: my settings.ini, target: /etc/settings.ini, uid: 1000, gid: 1000}
";
    let dir = directory(&[
        ("web.yaml", manifest.as_bytes()),
        ("a/app.conf", b"a\n"),
        ("b/app.conf", b"b\n"),
        ("my settings.ini", b"[x]\n"),
    ]);
    let (objects, warnings) = export_directory(dir.path());
    assert_eq!(
        objects[0]["data"],
        serde_json::json!({"app.conf": "a\n", "app.conf-2": "b\n", "my-settings.ini": "[x]\n"})
    );
    let mounts = &objects[1]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    let sub_paths: Vec<&Value> = (0..3).map(|i| &mounts[i]["subPath"]).collect();
    assert_eq!(sub_paths, ["app.conf", "app.conf-2", "my-settings.ini"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("configs[2]: the owner (uid 1000, gid 1000) is not carried over")),
        "{warnings:#?}"
    );
}

#[test]
fn the_command_prints_the_config_map_and_how_to_create_each_secret() {
    let dir = web_with_files();
    let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["export", "kubernetes"])
        .arg(dir.path())
        .output()
        .expect("wharf runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let documents: Vec<Value> = stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).expect("YAML"))
        .collect();
    assert_eq!(kinds(&documents), ["ConfigMap", "Deployment"]);
    for document in &documents {
        assert_valid_kubernetes(document);
    }
    assert_eq!(documents[0]["data"]["app.conf"], "listen 8080\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for command in [
        "kubectl create secret generic dbpass --from-file=value=./dbpass.txt",
        "kubectl create secret generic tls-key --from-file=value=./tls-key.txt",
    ] {
        assert!(stderr.contains(command), "no {command:?} in {stderr}");
    }
}

#[test]
fn a_job_becomes_a_kubernetes_job_and_a_scheduled_one_a_cron_job() {
    let job = "apiVersion: wharf/v1\nkind: Job\nname: migrate\nimage: busybox\ncommand: [migrate]\nretries: 2\ntimeout: 10m\n";
    let app = "---\napiVersion: wharf/v1\nkind: Service\nname: app\nimage: busybox\ndepends_on: {migrate: completed}\n";
    let nightly = "---\napiVersion: wharf/v1\nkind: Job\nname: nightly\nimage: busybox\ncommand: [clean]\nschedule: '0 3 * * *'\n";
    let text = format!("{job}{app}{nightly}");
    let services = parse_manifest(Path::new("all.yaml"), text.as_bytes()).expect("valid");
    let (objects, warnings) = to_kubernetes(&services);
    for object in &objects {
        assert_valid_kubernetes(object);
    }
    assert_eq!(kinds(&objects), ["Job", "Deployment", "CronJob"]);
    let job = &objects[0]["spec"];
    assert_eq!(job["backoffLimit"], 2);
    assert_eq!(job["activeDeadlineSeconds"], 600);
    assert_eq!(job["template"]["spec"]["restartPolicy"], "Never");
    let cron = &objects[2]["spec"];
    assert_eq!(cron["schedule"], "0 3 * * *");
    assert_eq!(cron["concurrencyPolicy"], "Forbid");
    let warned = |text: &str| warnings.iter().any(|w| w.to_string().contains(text));
    assert!(
        warned("depends_on.migrate: completed has no Kubernetes equivalent"),
        "{warnings:#?}"
    );
    assert!(
        warned("schedule: wharf runs it in the host's local time zone"),
        "{warnings:#?}"
    );
}
