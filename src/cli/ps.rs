use clap::Parser;
use serde::Serialize;

use super::{exit, Session};

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

pub fn run(session: &Session, args: &Args) -> u8 {
    let containers = match session.containers() {
        Ok(containers) => containers,
        Err(code) => return code,
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
        return session.print_json(&rows);
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
