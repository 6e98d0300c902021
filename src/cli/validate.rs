use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

use super::{exit, output, Cli};
use crate::files::SecretStore;
use crate::manifest::{load_paths, Diagnostic, Loaded};
use crate::style::Palette;

/// Check manifests without touching any container.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf validate examples/\n  wharf validate services/web.yaml services/worker.yaml\n  wharf validate --json /etc/wharf/services\n\nLimits: a manifest is a regular file (or a symlink to one) of at most 1 MiB, and its YAML aliases may add at most 16 MiB to it.\n\nExit status: 0 all valid, 1 errors found, 2 usage error."
)]
pub struct Args {
    /// Manifest files or directories (a directory's top-level *.yaml and *.yml files).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> u8 {
    let mut loaded = load_paths(&args.paths);
    // Secrets are checked where this user can read the root (root, usually).
    match SecretStore::existing(&cli.root) {
        Some(store) => {
            let missing = store.resolve(&mut loaded.services);
            loaded.errors.extend(missing);
        }
        None if loaded.services.iter().any(|s| !s.secret_uses.is_empty()) => eprintln!(
            "note: secrets not checked: this user cannot read {} (run as root, or pass --root)",
            cli.root.display()
        ),
        None => {}
    }
    if args.json {
        if let Err(err) = print_json(&loaded) {
            return output::fail_with(
                format!("cannot encode the report as JSON: {err}"),
                &output::for_stderr(cli.color),
            );
        }
    } else {
        print_human(cli, &loaded);
    }
    if loaded.errors.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    }
}

fn print_human(cli: &Cli, loaded: &Loaded) {
    let services = plural(loaded.services.len(), "service");
    let files = plural(loaded.files, "file");
    if loaded.errors.is_empty() {
        let out = output::for_stdout(cli.color);
        if cli.verbose > 0 {
            for service in &loaded.services {
                println!(
                    "{}  {}  replicas {}  spec {}",
                    service.name(),
                    service.location(),
                    service.spec.replicas,
                    service.hash.short()
                );
            }
        }
        println!("{services} in {files} {}", out.green("OK"));
        return;
    }
    let err = output::for_stderr(cli.color);
    for diagnostic in &loaded.errors {
        eprintln!("{}", render(diagnostic, &err));
    }
    let files_with_errors: BTreeSet<_> = loaded.errors.iter().map(|d| &d.file).collect();
    eprintln!(
        "{} in {} ({files} read)",
        err.red(&plural(loaded.errors.len(), "error")),
        plural(files_with_errors.len(), "file"),
    );
}

fn render(diagnostic: &Diagnostic, palette: &Palette) -> String {
    let text = diagnostic.to_string();
    let location_end = text.find(": ").unwrap_or(0);
    let (location, rest) = text.split_at(location_end);
    format!("{}{rest}", palette.bold(location))
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    files: usize,
    services: Vec<JsonService<'a>>,
    errors: &'a [Diagnostic],
}

#[derive(Serialize)]
struct JsonService<'a> {
    name: &'a str,
    file: &'a std::path::Path,
    line: usize,
    replicas: u32,
    spec_hash: &'a str,
}

fn print_json(loaded: &Loaded) -> serde_json::Result<()> {
    let report = JsonReport {
        valid: loaded.errors.is_empty(),
        files: loaded.files,
        services: loaded
            .services
            .iter()
            .map(|s| JsonService {
                name: s.name(),
                file: &s.file,
                line: s.mark.line,
                replicas: s.spec.replicas,
                spec_hash: s.hash.as_str(),
            })
            .collect(),
        errors: &loaded.errors,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
