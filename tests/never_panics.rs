//! Whatever bytes a manifest file holds, loading it returns services or errors:
//! it never panics.

use std::path::Path;

use proptest::prelude::*;
use wharf::manifest::parse_manifest;

const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "name",
    "image",
    "pull",
    "replicas",
    "command",
    "args",
    "env",
    "workdir",
    "user",
    "network",
    "resources",
    "cpus",
    "memory",
    "pids",
    "restart",
    "stop",
    "signal",
    "timeout",
    "health",
    "http",
    "tcp",
    "exec",
    "port",
    "path",
    "interval",
    "retries",
    "start_period",
    "update",
    "order",
    "max_unavailable",
    "volumes",
    "type",
    "source",
    "target",
    "readonly",
    "size",
    "labels",
    "<<",
];

const SCALARS: &[&str] = &[
    "wharf/v1",
    "Service",
    "web",
    "busybox",
    "0",
    "-1",
    "1",
    "0.5",
    "1e999",
    ".nan",
    "~",
    "null",
    "true",
    "128Mi",
    "12Q",
    "10s",
    "0s",
    "1m30s",
    "/data",
    "rel",
    "always",
    "start-first",
    "volume",
    "bind",
    "tmpfs",
    "''",
    "\"\\u0000\"",
    "&a x",
    "*a",
    "!!str 5",
    "!custom x",
    "18446744073709551616",
    "0x10",
    "SIGTERM",
];

/// YAML-shaped text built from manifest vocabulary, nested a few levels deep.
fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = proptest::sample::select(SCALARS).prop_map(str::to_owned);
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec((proptest::sample::select(FIELDS), inner), 0..6).prop_map(
                |entries| {
                    let body: Vec<String> =
                        entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{{}}}", body.join(", "))
                }
            ),
        ]
    })
}

fn yaml_document() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(FIELDS), yaml_value()), 0..12).prop_map(
        |entries| {
            entries
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_manifest(Path::new("fuzz.yaml"), &bytes);
    }

    #[test]
    fn random_yaml_never_panics(docs in proptest::collection::vec(yaml_document(), 1..4)) {
        let text = docs.join("---\n");
        let _ = parse_manifest(Path::new("fuzz.yaml"), text.as_bytes());
    }

    #[test]
    fn mutated_examples_never_panic(
        example in proptest::sample::select(&["examples/web.yaml", "examples/worker.yaml", "examples/notes.yaml"][..]),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = std::fs::read(example).expect("example exists");
        for (index, byte) in cuts {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = parse_manifest(Path::new(example), &bytes);
    }

    #[test]
    fn every_error_has_a_position_inside_the_file(doc in yaml_document()) {
        if let Err(errors) = parse_manifest(Path::new("fuzz.yaml"), doc.as_bytes()) {
            let lines = doc.lines().count().max(1);
            for error in errors {
                let mark = error.mark.expect("parse errors are located");
                prop_assert!(mark.line >= 1 && mark.line <= lines + 1, "{error}");
                prop_assert!(mark.column >= 1, "{error}");
            }
        }
    }
}
