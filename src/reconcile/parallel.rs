//! How many containers are worked on at once: many are stopped together (a stop is
//! mostly waiting for the container to end, on a file descriptor). The CPU-bound part
//! of building and removing takes turns in the runtime (two per CPU).

use futures_util::StreamExt;

/// At most this many containers stop at once by default, per CPU...
const STOPS_PER_CPU: usize = 64;
/// ...within these bounds.
const DEFAULT_STOPS: std::ops::RangeInclusive<usize> = 32..=256;
/// File descriptors a stop holds (pidfds of the container's init and monitor) plus
/// a margin for what else may be open meanwhile.
const FDS_PER_STOP: u64 = 4;

/// How many containers a step may work on at once: stopping, removing, replacing
/// (`max_unavailable` at a time at most) or creating and waiting for them to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    pub stops: usize,
}

impl Parallelism {
    /// `stops` at once (the `--parallel` option), or what suits this machine: 64 per
    /// CPU, 32 to 256; either way no more than the open-file limit allows.
    pub fn new(stops: Option<usize>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let stops = stops.unwrap_or_else(|| {
            (cpus * STOPS_PER_CPU).clamp(*DEFAULT_STOPS.start(), *DEFAULT_STOPS.end())
        });
        Parallelism {
            stops: stops.min(file_budget()).max(1),
        }
    }
}

/// How many stops the open-file limit leaves room for.
fn file_budget() -> usize {
    let budget = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft / FDS_PER_STOP);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// Runs `work` on each of `items`, at most `limit` at once, the next starting as
/// soon as any one ends; the outcomes come in the items' order.
pub async fn each_bounded<I, F, T>(
    items: I,
    limit: usize,
    mut work: impl FnMut(I::Item) -> F,
) -> Vec<T>
where
    I: IntoIterator,
    F: std::future::Future<Output = T>,
{
    let mut outcomes: Vec<(usize, T)> = futures_util::stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| {
            let done = work(item);
            async move { (index, done.await) }
        })
        .buffer_unordered(limit.max(1))
        .collect()
        .await;
    outcomes.sort_by_key(|(index, _)| *index);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn an_asked_number_is_kept_within_the_open_file_limit() {
        let budget = file_budget();
        assert_eq!(Parallelism::new(Some(5)).stops, 5.min(budget).max(1));
        assert_eq!(Parallelism::new(Some(usize::MAX)).stops, budget.max(1));
        assert_eq!(Parallelism::new(Some(0)).stops, 1, "never none at all");
        let default = Parallelism::new(None);
        assert!((1..=256).contains(&default.stops));
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_limit_run_at_once_and_outcomes_keep_their_order() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let outcomes = each_bounded(0..10u64, 4, |n| {
            let (running, most) = (&running, &most);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Later items finish first: the order still holds.
                tokio::time::sleep(Duration::from_secs(10 - n)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                n * 2
            }
        })
        .await;
        assert_eq!(outcomes, (0..10).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 4);
        // One after another: 55 s. Four at a time, each starting when one ends: items
        // 4 to 7 start at 7, 8, 9 and 10 s and all end at 13 s; 8 and 9 end by 15 s.
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }
}
