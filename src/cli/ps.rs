use clap::Parser;
use serde::Serialize;

use super::status::state_of;
use super::{exit, Session};
use crate::reconcile::AgentPresence;

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
    /// How it ended, once it has and its monitor recorded it.
    exit_code: Option<i32>,
    oom_killed: bool,
    pid: Option<i32>,
    /// Its address on wharf's bridge (`network: bridge`).
    address: Option<String>,
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
    let agent_running = AgentPresence::any(&session.root);
    let rows: Vec<Row> = containers
        .into_iter()
        .map(|c| Row {
            status: state_of(&c, agent_running),
            exit_code: c.status.exit_code(),
            oom_killed: c.status.oom_killed(),
            address: c.address.map(|address| address.to_string()),
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
    let status_width = rows
        .iter()
        .map(|r| r.status.len())
        .max()
        .unwrap_or(0)
        .max(12);
    println!(
        "{:width$}  {:status_width$}  {:8}  {:15}  STARTED               IMAGE",
        "ID", "STATUS", "PID", "ADDRESS"
    );
    for row in &rows {
        println!(
            "{:width$}  {:status_width$}  {:8}  {:15}  {:20}  {}",
            row.id,
            row.status,
            row.pid.map_or("-".into(), |p| p.to_string()),
            row.address.as_deref().unwrap_or("-"),
            row.started.as_deref().unwrap_or("-"),
            row.image
        );
    }
    exit::OK
}
