//! The committed JSON Schema is what `wharf schema` prints, examples point to it, and
//! it agrees with `wharf validate`. Checked by a JSON Schema validator, as an editor
//! checks a manifest (the YAML language server does), it accepts every manifest wharf
//! accepts and refuses the broken ones, except for the few rules JSON Schema cannot
//! say (listed in [`BEYOND_THE_SCHEMA`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::common::{wharf, wharf_at, write};

const SCHEMA: &str = "schemas/service.schema.json";

/// A manifest whose configs, env file and secrets live next to it.
const WITH_FILES: &str = "tests/manifests/with-files/app.yaml";

#[test]
fn committed_schema_matches_the_spec_types() {
    let run = wharf(&["schema"]);
    assert_eq!(run.code, 0);
    let committed = fs::read_to_string(SCHEMA).expect("schema is committed");
    assert!(
        run.stdout == committed,
        "schemas/service.schema.json is out of date: run `cargo run --bin wharf -- schema > schemas/service.schema.json`"
    );
}

#[test]
fn schema_shows_every_default() {
    let schema: serde_json::Value =
        serde_json::from_str(&wharf(&["schema"]).stdout).expect("schema is JSON");
    let properties = &schema["properties"];
    assert_eq!(properties["replicas"]["default"], 1);
    assert_eq!(properties["pull"]["default"], "if-not-present");
    assert_eq!(properties["network"]["default"], "bridge");
    assert_eq!(properties["restart"]["default"], "always");
    assert_eq!(properties["stop"]["default"]["timeout"], "10s");
    // The update order's default depends on the network: no one value to show.
    assert!(properties["update"]["default"].get("order").is_none());
    assert_eq!(properties["stop"]["default"]["drain"], "500ms");
    assert_eq!(
        schema["$defs"]["Health"]["properties"]["retries"]["default"],
        3
    );
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn every_example_declares_the_schema_for_editors() {
    for entry in fs::read_dir("examples").expect("examples exist") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            let text = fs::read_to_string(&path).expect("readable");
            assert!(
                text.starts_with(
                    "# yaml-language-server: $schema=../schemas/service.schema.json\n"
                ),
                "{} must start with the yaml-language-server schema line",
                path.display()
            );
        }
    }
}

/// The committed schema, compiled by a JSON Schema validator as an editor compiles it.
fn validator() -> jsonschema::Validator {
    let text = fs::read_to_string(SCHEMA).expect("schema is committed");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// The documents of a YAML file as JSON values, as an editor's YAML reader hands
/// them to its JSON Schema validator; empty documents define nothing (for wharf too)
/// and are left out. `Err`: serde_yaml cannot read the file, which an editor flags
/// before any schema does.
///
/// serde_yaml reads plain scalars much as wharf's own YAML 1.2 reader does
/// (src/manifest/yaml.rs). Where they differ, e.g. `mode: 0440` is text to serde_yaml
/// and a number to wharf's reader (which takes file modes as written anyway), the
/// schema accepts both forms.
fn documents(path: &Path) -> Result<Vec<serde_json::Value>, serde_yaml::Error> {
    let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(serde_json::Value::deserialize)
        .filter(|document| !matches!(document, Ok(serde_json::Value::Null)))
        .collect()
}

/// What the schema finds wrong with a document, one line per error with its place.
fn schema_errors(validator: &jsonschema::Validator, document: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|error| {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/" } else { at.as_str() };
            format!("    at {at}: {error}")
        })
        .collect()
}

/// The `.yaml` files of a directory, sorted by name.
fn yaml_files(dir: impl AsRef<Path>) -> Vec<PathBuf> {
    let dir = dir.as_ref();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// An editor never flags a manifest that wharf accepts: the examples, the manifest
/// that uses every field and the one with configs, secrets and env files.
#[test]
fn the_schema_accepts_every_valid_manifest() {
    let validator = validator();
    let mut files = yaml_files("examples");
    files.push(PathBuf::from("tests/manifests/every-field.yaml"));
    files.push(PathBuf::from(WITH_FILES));
    let mut rejected = Vec::new();
    for file in &files {
        let documents = documents(file)
            .unwrap_or_else(|err| panic!("{}: serde_yaml cannot read it: {err}", file.display()));
        assert!(
            !documents.is_empty(),
            "{} defines no service",
            file.display()
        );
        for (index, document) in documents.iter().enumerate() {
            let errors = schema_errors(&validator, document);
            if !errors.is_empty() {
                rejected.push(format!(
                    "{} (document {index}):\n{}",
                    file.display(),
                    errors.join("\n")
                ));
            }
        }
    }
    assert!(
        rejected.is_empty(),
        "the schema rejects manifests that wharf accepts:\n{}",
        rejected.join("\n")
    );
}

/// The manifest with files next to it is valid for wharf too: its config and env
/// file are read from its directory, its secrets are set in the root. Where this
/// user has no root to read (a CI job checking a repository), secrets are not
/// checked, and wharf says so.
#[test]
fn a_manifest_with_configs_secrets_and_env_files_is_valid() {
    let root = tempfile::tempdir().expect("temp dir");
    let value = root.path().join("value");
    std::fs::write(&value, "x").expect("write");
    for secret in ["api-token", "db-password", "tls-key"] {
        let set = wharf_at(
            root.path(),
            &["secret", "set", secret, value.to_str().expect("UTF-8")],
        );
        assert_eq!(set.code, 0, "{}", set.stderr);
    }
    let run = wharf_at(root.path(), &["validate", WITH_FILES]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "1 service in 1 file OK\n");
    assert_eq!(run.stderr, "");

    let no_root = root.path().join("absent");
    let run = wharf_at(&no_root, &["validate", WITH_FILES]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("note: secrets not checked"),
        "{}",
        run.stderr
    );
}

/// Broken manifests in tests/manifests/invalid/ whose rule JSON Schema cannot say:
/// the schema accepts them, and `wharf validate` (tests/cli/validate.rs) refuses them.
const BEYOND_THE_SCHEMA: [(&str, &str); 4] = [
    (
        "duplicate-key.yaml",
        "serde_yaml keeps the last of two equal keys; editors' YAML parsers flag it themselves",
    ),
    (
        "duplicate-name-in-one-file.yaml",
        "each document is valid alone: names clash across documents and files",
    ),
    (
        "duplicate-volume-target.yaml",
        "`/data` and `/data/` are one target: uniqueItems compares whole entries, not paths",
    ),
    (
        "port-published-twice.yaml",
        "a host port clashes across entries (and manifests): uniqueItems compares whole entries",
    ),
];

/// An editor flags every broken manifest of tests/manifests/invalid/ that JSON Schema
/// can tell from a valid one. A file serde_yaml cannot read counts as flagged: an
/// editor reports the YAML error before any schema.
#[test]
fn the_schema_rejects_every_broken_manifest_it_can() {
    let validator = validator();
    let files = yaml_files("tests/manifests/invalid");
    for (name, _) in BEYOND_THE_SCHEMA {
        assert!(
            files.iter().any(|file| file.ends_with(name)),
            "{name} is listed in BEYOND_THE_SCHEMA but not in tests/manifests/invalid"
        );
    }
    let mut accepted = Vec::new();
    let mut now_rejected = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name");
        let rejected = match documents(file) {
            Err(_) => true,
            Ok(documents) => documents
                .iter()
                .any(|document| !validator.is_valid(document)),
        };
        let beyond = BEYOND_THE_SCHEMA.iter().any(|(known, _)| *known == name);
        if !rejected && !beyond {
            let expect = fs::read_to_string(file).expect("readable");
            let expect = expect.lines().next().unwrap_or_default();
            accepted.push(format!("{name} ({expect})"));
        }
        if rejected && beyond {
            now_rejected.push(name);
        }
    }
    assert!(
        accepted.is_empty(),
        "the schema accepts broken manifests:\n  {}\n(if JSON Schema cannot say the rule, \
         list the file in BEYOND_THE_SCHEMA with the reason)",
        accepted.join("\n  ")
    );
    assert!(
        now_rejected.is_empty(),
        "the schema now rejects {now_rejected:?}: remove them from BEYOND_THE_SCHEMA"
    );
}

/// Manifests at the edges of wharf's rules, `(YAML lines, valid?)`, each after
/// `apiVersion` and `kind` (and a `name` and `image` when the lines have none).
const EDGES: &[(&str, bool)] = &[
    // Text fields take YAML numbers and booleans as written.
    ("env: {WORKERS: 4, DEBUG: true, RATIO: 0.5}", true),
    ("args: [--port, 8080]", true),
    ("labels: {version: 2}", true),
    ("user: 1000", true),
    ("name: 2024", true),
    // Environment variables: names without `=` or spaces, not set by wharf itself.
    ("env: {WHARF_SERVICE: web}", false),
    ("env: {\"LOG LEVEL\": info}", false),
    ("env: {TOKEN: {secret: api-token}}", true),
    ("env: {TOKEN: {secret: ../api-token}}", false),
    // Stop signals in any case, with or without SIG; timeouts above 0s, drains up to 1m.
    ("stop: {signal: term}", true),
    ("stop: {signal: SIGSTOP}", false),
    ("stop: {timeout: 0s}", false),
    ("stop: {drain: 0s}", true),
    ("stop: {drain: 1m}", true),
    ("stop: {drain: 61s}", false),
    // max_unavailable: 0 only with start-first, written or the bridge's default.
    ("update: {max_unavailable: 0}", true),
    ("network: none\nupdate: {max_unavailable: 0}", false),
    (
        "network: host\nupdate: {order: start-first, max_unavailable: 0}",
        true,
    ),
    ("update: {deadline: 0s}", false),
    // Ports only on the bridge; an empty list is no ports.
    ("network: none\nports: []", true),
    ("ports: [{container: 80, host: 18081, host_ip: 0.0.0.0}]", true),
    ("ports: [{container: 80, host: 18082, host_ip: 127.0.0.01}]", false),
    // One health check; null counts as unset.
    ("health: {exec: null, tcp: {port: 8080}}", true),
    ("health: {exec: []}", false),
    ("health: {http: {port: 8080, path: healthz}}", false),
    // Least resources and log sizes, in any unit.
    ("resources: {cpus: 0.01, memory: 6Mi, pids: 1}", true),
    ("resources: {memory: 6291455}", false),
    ("resources: {memory: 6292k}", true),
    ("logs: {max_size: 64Ki}", true),
    ("logs: {max_size: 65535}", false),
    // Paths: absolute without `..`; volume fields by type.
    ("workdir: /srv/../etc", false),
    ("volumes: [{type: volume, target: /}]", false),
    (
        "volumes: [{type: bind, source: /srv/www, target: /www, name: null}]",
        true,
    ),
    ("volumes: [{type: tmpfs, target: /tmp, source: /tmp}]", false),
    // Image references.
    (
        "image: ghcr.io/owner/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        true,
    ),
    ("image: localhost:5000/App", false),
    // Files of the manifest's directory, and octal modes.
    (
        "configs: [{source: app.conf, target: /etc/app.conf, mode: 0o640}]",
        true,
    ),
    (
        "configs: [{source: app.conf, target: /etc/app.conf, mode: 644}]",
        true,
    ),
    (
        "configs: [{source: app.conf, target: /etc/app.conf, mode: 0800}]",
        false,
    ),
    (
        "configs: [{source: /etc/app.conf, target: /etc/app.conf}]",
        false,
    ),
    ("env_file: [app.env]", true),
    ("env_file: [../app.env]", false),
    ("secrets: [{name: tls-key, mode: 0440}]", true),
    ("secrets: [{name: tls-key, target: /run/tls/}]", false),
];

/// `wharf validate` and the schema agree at the edges of each rule (in
/// tests/manifests/invalid/ the broken side of most rules is checked one file each).
#[test]
fn wharf_and_the_schema_agree_at_the_edges_of_each_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "app.conf", "listen = 8080\n");
    write(dir.path(), "app.env", "APP_MODE=production\n");
    let mut cases = Vec::new();
    for (index, (lines, valid)) in EDGES.iter().enumerate() {
        let has = |key: &str| lines.lines().any(|line| line.starts_with(key));
        let mut text = String::from("apiVersion: wharf/v1\nkind: Service\n");
        if !has("name:") {
            text.push_str(&format!("name: edge-{index}\n"));
        }
        if !has("image:") {
            text.push_str("image: 127.0.0.1:5000/app:1\n");
        }
        text.push_str(lines);
        text.push('\n');
        let file = write(dir.path(), &format!("edge-{index:02}.yaml"), text);
        cases.push((file, *lines, *valid));
    }

    // wharf: one run over them all; its report names the files with errors. No root
    // to read: secrets are not checked (the schema cannot know them either).
    let root = tempfile::tempdir().expect("temp dir");
    let run = wharf_at(
        &root.path().join("absent"),
        &["validate", "--json", dir.path().to_str().expect("UTF-8")],
    );
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("a JSON report: {err}\n{}\n{}", run.stdout, run.stderr));
    let mut wharf_errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for error in report["errors"].as_array().expect("errors") {
        let file = error["file"].as_str().expect("file");
        wharf_errors
            .entry(file.to_owned())
            .or_default()
            .push(format!(
                "{}: {}",
                error["field"].as_str().unwrap_or_default(),
                error["message"].as_str().unwrap_or_default()
            ));
    }

    let validator = validator();
    let mut disagreements = Vec::new();
    for (file, lines, valid) in &cases {
        let said_by_wharf = wharf_errors
            .get(file.to_str().expect("UTF-8"))
            .cloned()
            .unwrap_or_default();
        let documents = documents(file).expect("serde_yaml reads it");
        let said_by_schema: Vec<String> = documents
            .iter()
            .flat_map(|document| schema_errors(&validator, document))
            .collect();
        if said_by_wharf.is_empty() != *valid || said_by_schema.is_empty() != *valid {
            disagreements.push(format!(
                "{lines:?} should be {}:\n  wharf: {}\n  schema: {}",
                if *valid { "valid" } else { "invalid" },
                if said_by_wharf.is_empty() {
                    "valid".to_owned()
                } else {
                    said_by_wharf.join("; ")
                },
                if said_by_schema.is_empty() {
                    "valid".to_owned()
                } else {
                    format!("\n{}", said_by_schema.join("\n"))
                },
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
