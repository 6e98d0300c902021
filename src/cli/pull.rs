use clap::Parser;

use super::progress::Progress;
use super::{exit, output::human_bytes, Session};
use crate::manifest::{ImageRef, PullPolicy};

/// Pull an image from its registry into the local store.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf pull busybox:1.36\n  wharf pull 127.0.0.1:5000/web:1.4\n  wharf pull --insecure-registry registry.lan:5000 registry.lan:5000/web@sha256:..."
)]
pub struct Args {
    /// Image reference; short names as Docker: busybox = docker.io/library/busybox:latest.
    pub image: ImageRef,

    /// Use the stored image when it is already present instead of asking the registry.
    #[arg(long)]
    pub if_not_present: bool,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let policy = if args.if_not_present {
        PullPolicy::IfNotPresent
    } else {
        PullPolicy::Always
    };
    let progress = Progress::for_stderr();
    let pulled = session.block_on(session.images.pull(
        &session.registries,
        &args.image,
        policy,
        &progress,
    ));
    match pulled {
        Ok(image) => {
            println!(
                "pulled {} ({}, {})",
                image.name,
                image.digest().short(),
                human_bytes(image.size())
            );
            exit::OK
        }
        Err(err) => session.fail(&err),
    }
}
