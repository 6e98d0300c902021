use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{exit, output::human_bytes, Session};
use crate::image::{Digest, InUse};
use crate::manifest::ImageRef;

/// Manage stored images: remove, tag, prune, import.
#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove an image name (its content goes with `wharf image prune`).
    #[command(after_help = "Example:\n  wharf image rm busybox:1.36")]
    Rm { image: ImageRef },
    /// Give a stored image another name.
    #[command(after_help = "Example:\n  wharf image tag 127.0.0.1:5000/web:1.4 web:stable")]
    Tag { source: ImageRef, target: ImageRef },
    /// Remove blobs and layers that no image name and no container uses.
    #[command(after_help = "Example:\n  wharf image prune")]
    Prune,
    /// Import images from an OCI layout directory or an oci-archive tar.
    #[command(
        after_help = "Examples:\n  skopeo copy docker://busybox:1.36 oci-archive:busybox.tar:busybox:1.36\n  wharf image import busybox.tar\n  wharf image import ./layout --name registry.lan/web:1.4"
    )]
    Import {
        path: PathBuf,
        /// Name for the image when the source holds exactly one.
        #[arg(long)]
        name: Option<ImageRef>,
    },
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let images = &session.images;
    let result = match &args.command {
        Command::Rm { image } => images
            .remove(&image.to_string())
            .map(|()| format!("removed {image}")),
        Command::Tag { source, target } => images
            .tag(&source.to_string(), &target.to_string())
            .map(|()| format!("tagged {source} as {target}")),
        Command::Prune => {
            let containers = match session.containers() {
                Ok(containers) => containers,
                Err(code) => return code,
            };
            let in_use = InUse {
                manifests: containers
                    .iter()
                    .filter_map(|c| Digest::parse(&c.image_digest).ok())
                    .collect(),
                layers: session.runtime.layers_in_use().into_iter().collect(),
            };
            let waiting = || eprintln!("waiting for pulls and imports in progress to finish");
            images.prune(&in_use, waiting).map(|report| {
                format!(
                    "freed {}: {} blobs, {} layers, {} leftovers of interrupted pulls",
                    human_bytes(report.bytes),
                    report.blobs,
                    report.layers,
                    report.leftovers
                )
            })
        }
        Command::Import { path, name } => session
            .block_on(images.import(path, name.as_ref()))
            .map(|names| format!("imported {}", names.join(", "))),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            exit::OK
        }
        Err(err) => session.fail(&err),
    }
}
