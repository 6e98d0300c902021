//! Stage 1 of the data flow: manifest files in, validated services out.
//!
//! `yaml` parses text into position-carrying trees, `de` deserializes the `spec`
//! types from them, `validate` checks and normalises, `hash` fingerprints the result
//! and `load` ties it together for files and directories; `trust` says whether
//! only root can change a manifest (the agent follows no other).

mod de;
mod diagnostic;
mod files;
mod hash;
mod image_ref;
mod load;
mod spec;
mod trust;
mod units;
mod validate;
mod yaml;

pub use diagnostic::Diagnostic;
pub use files::{MAX_CONFIG_BYTES, MAX_ENV_FILE_BYTES};
pub use hash::{FileRefs, SpecHash};
pub use image_ref::{ImageRef, ImageRefProblem, InvalidImageRef};
pub use load::{
    clashes, is_manifest_name, load_file, load_paths, manifest_files, parse_manifest, start_order,
    Loaded, Service, MAX_MANIFEST_BYTES,
};
pub use spec::*;
pub use trust::only_root_can_write;
pub use units::{ByteSize, Duration};
pub use validate::{check_secret_name, parse_schedule};
pub use yaml::Mark;

/// The JSON Schema of a `wharf/v1` manifest, as committed in `schemas/service.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(ServiceSpec);
    // A schema built from our own types always serializes.
    let mut json = serde_json::to_string_pretty(&schema).unwrap_or_default();
    json.push('\n');
    json
}
