//! The committed JSON Schema is what `wharf schema` prints, and examples point to it.

use std::fs;

use crate::common::wharf;

#[test]
fn committed_schema_matches_the_spec_types() {
    let run = wharf(&["schema"]);
    assert_eq!(run.code, 0);
    let committed = fs::read_to_string("schemas/service.schema.json").expect("schema is committed");
    assert!(
        run.stdout == committed,
        "schemas/service.schema.json is out of date: run `cargo run -- schema > schemas/service.schema.json`"
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
