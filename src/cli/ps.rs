use clap::Parser;
use serde::Serialize;

use super::{exit, Cli, Session};
use crate::runtime::Runtime;

/// List wharf's containers.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf ps\n  wharf ps --json")]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    id: String,
    service: String,
    replica: u32,
    status: String,
    pid: Option<i32>,
    started: Option<String>,
    image: String,
    image_digest: String,
    spec_hash: String,
}

pub fn run(cli: &Cli, args: &Args) -> u8 {
    let session = match Session::open(cli) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let containers = match session.block_on(session.runtime.list()) {
        Ok(containers) => containers,
        Err(err) => return session.fail(&err),
    };
    let rows: Vec<Row> = containers
        .into_iter()
        .map(|c| Row {
            status: c.status.to_string(),
            started: c
                .started_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            id: c.id,
            service: c.service,
            replica: c.slot,
            pid: c.pid,
            image: c.image,
            image_digest: c.image_digest,
            spec_hash: c.spec_hash,
        })
        .collect();
    if args.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(json) => println!("{json}"),
            Err(err) => return session.fail(&err),
        }
        return exit::OK;
    }
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(0).max(2);
    println!(
        "{:width$}  {:12}  {:8}  STARTED               IMAGE",
        "ID", "STATUS", "PID"
    );
    for row in &rows {
        println!(
            "{:width$}  {:12}  {:8}  {:20}  {}",
            row.id,
            row.status,
            row.pid.map_or("-".into(), |p| p.to_string()),
            row.started.as_deref().unwrap_or("-"),
            row.image
        );
    }
    exit::OK
}
