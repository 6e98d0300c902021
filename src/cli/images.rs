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
    /// None for a broken image: its blobs cannot be read.
    size: Option<u64>,
    pulled: Option<&'a str>,
    /// Why the image cannot be used and what to do; only for a broken one.
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<&'a str>,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let listed = match session.images.list() {
        Ok(listed) => listed,
        Err(err) => return session.fail(&err),
    };
    // A broken name is listed, marked, among the others: listing still succeeds.
    let rows: Vec<Row> = listed
        .iter()
        .map(|entry| match entry {
            Ok(image) => Row {
                reference: &image.name,
                digest: image.digest().as_str(),
                size: Some(image.size()),
                pulled: image.pulled(),
                broken: None,
            },
            Err(broken) => Row {
                reference: &broken.name,
                digest: broken.digest().as_str(),
                size: None,
                pulled: broken.pulled(),
                broken: Some(broken.problem.as_str()),
            },
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
        let size = row.size.map_or_else(|| "-".to_owned(), human_bytes);
        let pulled = row.pulled.unwrap_or("-");
        let line = format!(
            "{:width$}  {:19}  {:>10}  {pulled}",
            row.reference,
            &row.digest[..row.digest.len().min(19)],
            size,
        );
        match row.broken {
            Some(problem) => println!("{line}  broken: {problem}"),
            None => println!("{line}"),
        }
    }
    exit::OK
}
