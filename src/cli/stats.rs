use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use super::output::human_bytes;
use super::{exit, Session};
use crate::runtime::{read_usage, ContainerStatus, LibcontainerRuntime, Usage};

/// CPU, memory and process counts of running containers, from their cgroups.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf stats\n  wharf stats web --json")]
pub struct Args {
    /// Only this service.
    pub service: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    id: String,
    service: String,
    replica: u32,
    /// Percent of one CPU over the sampling interval.
    cpu_percent: f64,
    #[serde(flatten)]
    usage: Usage,
}

const SAMPLE: Duration = Duration::from_millis(500);

pub fn run(session: &Session, args: &Args) -> u8 {
    let containers = match session.containers() {
        Ok(containers) => containers,
        Err(code) => return code,
    };
    let chosen: Vec<_> = containers
        .into_iter()
        .filter(|c| c.status == ContainerStatus::Running)
        .filter(|c| args.service.as_ref().is_none_or(|s| &c.service == s))
        .collect();
    let first: Vec<Option<Usage>> = chosen
        .iter()
        .map(|c| read_usage(&LibcontainerRuntime::cgroups_path(&c.id)))
        .collect();
    let started = Instant::now();
    std::thread::sleep(SAMPLE);
    let elapsed_ns = started.elapsed().as_nanos() as f64;
    let rows: Vec<Row> = chosen
        .iter()
        .zip(first)
        .filter_map(|(c, before)| {
            let after = read_usage(&LibcontainerRuntime::cgroups_path(&c.id))?;
            let used = after
                .cpu_ns
                .saturating_sub(before.map_or(after.cpu_ns, |b| b.cpu_ns));
            Some(Row {
                id: c.id.clone(),
                service: c.service.clone(),
                replica: c.slot,
                cpu_percent: (used as f64 / elapsed_ns * 1000.0).round() / 10.0,
                usage: after,
            })
        })
        .collect();
    if args.json {
        return session.print_json(&rows);
    }
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(0).max(2);
    println!(
        "{:width$}  {:>6}  {:>23}  PIDS",
        "ID", "CPU %", "MEMORY / LIMIT"
    );
    for row in &rows {
        let limit = row.usage.memory_limit.map_or("-".into(), human_bytes);
        let pids_limit = row.usage.pids_limit.map_or("-".into(), |p| p.to_string());
        println!(
            "{:width$}  {:>6.1}  {:>23}  {} / {}",
            row.id,
            row.cpu_percent,
            format!("{} / {limit}", human_bytes(row.usage.memory_bytes)),
            row.usage.pids,
            pids_limit
        );
    }
    exit::OK
}
