use std::io::Write;
use std::time::{Duration, SystemTime};

use clap::Parser;

use super::output::print_line;
use super::target::matching;
use super::{exit, Session};
use crate::manifest::LogDriver;
use crate::runtime::{LogLine, LogStream};

/// Show a service's output (stdout and stderr as written), its rotated log files
/// included.
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf logs web\n  wharf logs web --since 10m\n  wharf logs worker --replica 2 --tail 20 --follow\n  wharf logs worker --since 1h30m --tail 100"
)]
pub struct Args {
    /// Service name (or SERVICE/N, or a container id).
    pub service: String,
    /// Only this replica.
    #[arg(long)]
    pub replica: Option<u32>,
    /// Keep printing new output until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines of each container.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only output written in the last DURATION (e.g. 30s, 10m, 1h30m); with --tail,
    /// the last N lines of it.
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Prefix each line with the time it was written (RFC 3339).
    #[arg(long, short)]
    pub timestamps: bool,
}

/// `--since`'s value: a duration such as `10m` or `1h30m`.
fn parse_since(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("not a duration ({err}); give one such as 30s, 10m or 1h30m"))
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let target = match args.replica {
        Some(replica) => format!("{}/{replica}", args.service),
        None => args.service.clone(),
    };
    let containers = match session.containers() {
        Ok(containers) => containers,
        Err(code) => return code,
    };
    let mut chosen = match matching(&containers, &target) {
        Ok(chosen) => chosen,
        Err(message) => return session.fail_with(message),
    };
    chosen.sort_by_key(|c| (c.slot, c.started_at));
    let prefix = |id: &str| {
        if chosen.len() > 1 {
            format!("{id} | ")
        } else {
            String::new()
        }
    };
    // False once nobody reads stdout any more (`| head`).
    let show = |prefix: &str, line: &LogLine| {
        if args.timestamps {
            print_line(format_args!("{prefix}{} {}", line.time, line.text))
        } else {
            print_line(format_args!("{prefix}{}", line.text))
        }
    };
    // Prints what each stream has now; false once nobody reads any more.
    let show_available = |id: &str, prefix: &str, stream: &mut LogStream| -> bool {
        loop {
            match stream.next_line() {
                Ok(Some(line)) => {
                    if !show(prefix, &line) {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(err) => {
                    eprintln!("warning: {id}: {err}");
                    return true;
                }
            }
        }
    };
    // One time for every container; a duration longer than the clock's past is all.
    let since = args.since.map(|ago| {
        SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let mut streams = Vec::new();
    for container in &chosen {
        let id = container.id.as_str();
        // Its output was never in a file here: say where it is.
        if container.spec.as_deref().map(|spec| spec.logs.driver) == Some(LogDriver::Journald) {
            eprintln!(
                "warning: {id}: its output goes to the journal: journalctl CONTAINER_NAME={id}"
            );
            continue;
        }
        let label = prefix(id);
        // The tail is read from the end of the log, and following goes on from
        // where it ends: nothing written in between is missed.
        let logs = session.runtime.logs(id);
        let mut stream = match logs.open(args.tail, since, args.follow) {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("warning: {id}: no output yet ({err})");
                continue;
            }
        };
        if !show_available(id, label.as_str(), &mut stream) {
            return exit::OK;
        }
        if args.follow {
            streams.push((id, label, stream));
        }
    }
    // Nothing to follow (every container logs to the journal, say): done.
    if args.follow && !streams.is_empty() {
        // Followed until interrupted (Ctrl-C ends the process).
        loop {
            for (id, label, stream) in &mut streams {
                if !show_available(id, label.as_str(), stream) {
                    return exit::OK;
                }
            }
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    exit::OK
}
