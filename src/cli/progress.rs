//! Pull progress: bars on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::output::human_bytes;
use crate::image::{Digest, PullProgress};

pub enum Progress {
    Bars {
        bars: MultiProgress,
        by_digest: Mutex<HashMap<Digest, ProgressBar>>,
    },
    Lines,
}

impl Progress {
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Progress::Bars {
                bars: MultiProgress::new(),
                by_digest: Mutex::new(HashMap::new()),
            }
        } else {
            Progress::Lines
        }
    }
}

impl PullProgress for Progress {
    fn started(&self, digest: &Digest, size: u64) {
        match self {
            Progress::Bars { bars, by_digest } => {
                let bar = bars.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(digest.short().to_owned());
                by_digest
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(digest.clone(), bar);
            }
            Progress::Lines => eprintln!("pulling {} ({})", digest.short(), human_bytes(size)),
        }
    }

    fn advanced(&self, digest: &Digest, bytes: u64) {
        if let Progress::Bars { by_digest, .. } = self {
            let bars = by_digest
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(bar) = bars.get(digest) {
                bar.inc(bytes);
            }
        }
    }

    fn finished(&self, digest: &Digest) {
        match self {
            Progress::Bars { by_digest, .. } => {
                let bars = by_digest
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(bar) = bars.get(digest) {
                    bar.finish();
                }
            }
            Progress::Lines => eprintln!("pulled  {}", digest.short()),
        }
    }
}
