//! `wharf export kubernetes`: every object it prints must be one the Kubernetes API
//! accepts. Each is read into k8s-openapi's type for its kind and written back: the
//! result must equal the original, so a misspelt or misplaced field (which the
//! generated types would drop) fails as surely as a wrong type.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service as KubeService};
use serde_json::Value;
use wharf::export::to_kubernetes;
use wharf::manifest::load_paths;

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
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "PersistentVolumeClaim"]);

    let deployment = &objects[0]["spec"];
    assert_eq!(deployment["replicas"], 3);
    assert_eq!(
        deployment["strategy"]["rollingUpdate"],
        serde_json::json!({"maxSurge": 2, "maxUnavailable": 0})
    );
    assert_eq!(deployment["progressDeadlineSeconds"], 180);
    let pod = &deployment["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 2);
    let container = &pod["containers"][0];
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
    assert_eq!(objects[1]["spec"]["ports"][0]["port"], 8080);

    // Whatever has no equivalent is said, with the service and the field.
    let said = |field: &str| {
        warnings.iter().any(|w| {
            w.contains("tests/manifests/every-field.yaml:5:7 service everything:")
                && w.contains(&format!(": {field}: "))
        })
    };
    for field in [
        "network",
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
            && stderr.contains("network: none has no Kubernetes equivalent"),
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
