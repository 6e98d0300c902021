use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::output::print_line;
use super::{exit, output, Cli};
use crate::export::to_kubernetes;
use crate::manifest::load_paths;

/// Print the services of manifests in another format.
#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum Format {
    /// Kubernetes YAML: a Deployment per service, a Service where the health check
    /// names a port, a PersistentVolumeClaim per named volume. What has no Kubernetes
    /// equivalent is reported as a warning on stderr, never dropped silently.
    #[command(
        after_help = "Examples:\n  wharf export kubernetes examples/ > k8s.yaml\n  wharf export kubernetes services/web.yaml | kubectl apply -f -\n\nExit status: 0 exported (warnings or not), 1 invalid manifests."
    )]
    Kubernetes {
        /// Manifest files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub fn run(cli: &Cli, args: &Args) -> u8 {
    let Format::Kubernetes { paths } = &args.format;
    let loaded = load_paths(paths);
    let errors = output::for_stderr(cli.color);
    if !loaded.errors.is_empty() {
        for error in &loaded.errors {
            output::fail_with(error, &errors);
        }
        return exit::FAILURE;
    }
    let (objects, warnings) = to_kubernetes(&loaded.services);
    for warning in &warnings {
        eprintln!("{} {warning}", errors.yellow("warning:"));
    }
    for object in &objects {
        let yaml = match serde_yaml::to_string(object) {
            Ok(yaml) => yaml,
            Err(err) => return output::fail_with(format!("cannot write YAML: {err}"), &errors),
        };
        if !print_line(format_args!("---\n{}", yaml.trim_end())) {
            break;
        }
    }
    exit::OK
}
