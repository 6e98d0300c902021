use std::time::Duration;

use clap::Parser;

use super::output::print_line;
use super::{exit, Session};
use crate::state::StateView;

/// What wharf did and why: apply and agent steps, kept or ignored manifests.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  wharf events\n  wharf events --follow")]
pub struct Args {
    /// Keep printing new events until interrupted.
    #[arg(long, short)]
    pub follow: bool,
}

pub fn run(session: &Session, args: &Args) -> u8 {
    let mut last: Option<u64> = None;
    loop {
        // Opened again each time: a read-only view sees the writer's commits as of opening.
        let events = match StateView::open(&session.root) {
            Ok(view) => view.map(|view| view.events_after(last)).unwrap_or_default(),
            Err(err) => return session.fail(&err),
        };
        for (number, event) in &events {
            if !print_line(format_args!("{} {}", event.time, event.message)) {
                return exit::OK;
            }
            last = Some(*number);
        }
        if !args.follow {
            return exit::OK;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
