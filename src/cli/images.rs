use clap::Parser;
use serde::Serialize;

use super::{exit, output::human_bytes, Session};

/// List the images in the local store.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf images\n  wharf images --json")]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    reference: &'a str,
    digest: &'a str,
    size: u64,
    pulled: Option<&'a str>,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let images = match session.images.list() {
        Ok(images) => images,
        Err(err) => return session.fail(&err),
    };
    let rows: Vec<Row> = images
        .iter()
        .map(|image| Row {
            reference: &image.name,
            digest: image.digest().as_str(),
            size: image.size(),
            pulled: image.pulled(),
        })
        .collect();
    if args.json {
        return session.print_json(&rows);
    }
    let width = rows
        .iter()
        .map(|r| r.reference.len())
        .max()
        .unwrap_or(0)
        .max("REFERENCE".len());
    println!(
        "{:width$}  {:19}  {:>10}  PULLED",
        "REFERENCE", "DIGEST", "SIZE"
    );
    for row in &rows {
        println!(
            "{:width$}  {:19}  {:>10}  {}",
            row.reference,
            &row.digest[..row.digest.len().min(19)],
            human_bytes(row.size),
            row.pulled.unwrap_or("-")
        );
    }
    exit::OK
}
