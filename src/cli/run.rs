use std::path::PathBuf;

use clap::Parser;

use super::output::Failure;
use super::progress::Progress;
use super::{exit, Session};
use crate::manifest::load_file;

/// Create and start one replica of a service from a manifest file, outside any plan
/// (for experiments and debugging; `wharf apply` reconciles whole directories).
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf run examples/web.yaml\n  wharf run services/stack.yaml --service worker --replica 2"
)]
pub struct Args {
    /// Manifest file.
    pub manifest: PathBuf,
    /// Which service of the file (needed when it defines several).
    #[arg(long)]
    pub service: Option<String>,
    /// Replica slot.
    #[arg(long, default_value_t = 0)]
    pub replica: u32,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let loaded = load_file(&args.manifest).and_then(|mut services| {
        let missing = session.resolve_secrets(&mut services);
        if missing.is_empty() {
            Ok(services)
        } else {
            Err(missing)
        }
    });
    let services = match loaded {
        Ok(services) => services,
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            return exit::FAILURE;
        }
    };
    let chosen = match (&args.service, services.as_slice()) {
        (None, [only]) => Some(only),
        (Some(name), _) => services.iter().find(|s| s.name() == name),
        (None, _) => None,
    };
    let Some(service) = chosen else {
        let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
        return session.fail_with(format!(
            "{} defines {}; choose one with --service",
            args.manifest.display(),
            if names.is_empty() {
                "no service".into()
            } else {
                names.join(", ")
            }
        ));
    };
    let result = session.block_on(async {
        let reference = service.spec.image.parse::<crate::manifest::ImageRef>()?;
        session
            .images
            .pull(
                &session.registries,
                &reference,
                service.spec.pull,
                &Progress::for_stderr(),
            )
            .await?;
        let executor = session.executor();
        let id = executor.create(service, args.replica).await?;
        Ok::<_, Failure>(id)
    });
    session.exit_code(result.map(|id| println!("{id}")))
}
