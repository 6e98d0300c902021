use clap::Parser;

use super::exit;
use crate::manifest::schema_json;

/// Print the JSON Schema of a service manifest.
#[derive(Debug, Parser)]
#[command(
    after_help = "Example:\n  wharf schema > schemas/service.schema.json\n\nEditors validate and complete manifests that start with\n  # yaml-language-server: $schema=<path or URL of the schema>"
)]
pub struct Args {}

pub fn run(_args: &Args) -> u8 {
    print!("{}", schema_json());
    exit::OK
}
