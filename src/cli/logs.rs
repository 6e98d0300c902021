use std::io::Write;
use std::time::Duration;

use clap::Parser;

use super::output::print_line;
use super::target::matching;
use super::{exit, Session};
use crate::runtime::{copy_timestamped, LogLine, LogStream};

/// Show a service's output (stdout and stderr as written).
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  wharf logs web\n  wharf logs worker --replica 2 --tail 20 --follow"
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
    /// Prefix each line with the time it was written (RFC 3339).
    #[arg(long, short)]
    pub timestamps: bool,
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
    let mut streams = Vec::new();
    for container in &chosen {
        let label = prefix(&container.id);
        // The tail is read from the end of the log, and following goes on from
        // where it ends: nothing written in between is missed.
        let logs = session.runtime.logs(&container.id);
        let mut stream = match logs.open(args.tail, args.follow) {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("warning: {}: no output yet ({err})", container.id);
                continue;
            }
        };
        if !show_available(container.id.as_str(), label.as_str(), &mut stream) {
            return exit::OK;
        }
        if args.follow {
            streams.push((container.id.as_str(), label, stream));
        }
    }
    if args.follow {
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

/// `wharf log-shim LOG`: the container's stdout arrives on fd 0 and its stderr on
/// fd 1 (both pipe read ends); lines go to LOG, timestamped, until both close.
pub fn shim(log: &std::path::Path) -> u8 {
    use std::fs::File;
    use std::os::fd::AsFd;
    let stdout = std::io::stdin().as_fd().try_clone_to_owned();
    let stderr = std::io::stdout().as_fd().try_clone_to_owned();
    let copied = match stdout.and_then(|out| Ok((out, stderr?))) {
        Ok((out, err)) => {
            copy_timestamped(File::from(out), File::from(err), log).map_err(|err| err.to_string())
        }
        Err(err) => Err(format!(
            "cannot take the container's pipes (fds 0 and 1): {err}"
        )),
    };
    match copied {
        Ok(()) => exit::OK,
        Err(message) => {
            // To the shim's stderr, wherever its starter sent it; ignored if that fails.
            let _ = writeln!(
                std::io::stderr(),
                "wharf log-shim: {}: {message}",
                log.display()
            );
            exit::FAILURE
        }
    }
}
