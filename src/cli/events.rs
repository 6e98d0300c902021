use std::time::Duration;

use clap::Parser;

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
    let mut shown = 0;
    loop {
        // Opened again each time: a read-only view sees the writer's commits as of opening.
        let events = StateView::open(&session.root)
            .map(|view| view.events())
            .unwrap_or_default();
        // The log is bounded: if it was trimmed meanwhile, continue from its end.
        let start = if events.len() < shown {
            events.len()
        } else {
            shown
        };
        for event in &events[start..] {
            println!("{} {}", event.time, event.message);
        }
        shown = events.len();
        if !args.follow {
            return exit::OK;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
