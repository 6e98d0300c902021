//! How many containers are worked on at once: many are stopped together (a stop is
//! mostly waiting for the container to end, one file descriptor each), fewer are built
//! together (a build is CPU work).

use futures_util::StreamExt;

/// At most this many containers stop at once by default, per CPU...
const STOPS_PER_CPU: usize = 64;
/// ...within these bounds.
const DEFAULT_STOPS: std::ops::RangeInclusive<usize> = 32..=256;
/// File descriptors a stop holds (pidfds of the container's init and monitor) plus
/// a margin for what else may be open meanwhile.
const FDS_PER_STOP: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// Containers stopped and removed at once.
    pub stops: usize,
    /// Containers built at once: at most one per CPU.
    pub builds: usize,
}

impl Parallelism {
    /// `stops` at once (the `--parallel` option), or what suits this machine: 64 per
    /// CPU, 32 to 256, and no more than the open-file limit allows.
    pub fn new(stops: Option<usize>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let stops = stops.unwrap_or_else(|| {
            let by_cpu = (cpus * STOPS_PER_CPU).clamp(*DEFAULT_STOPS.start(), *DEFAULT_STOPS.end());
            let by_files =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map_or(u64::MAX, |(soft, _)| soft / FDS_PER_STOP);
            by_cpu.min(usize::try_from(by_files).unwrap_or(usize::MAX))
        });
        let stops = stops.max(1);
        Parallelism {
            stops,
            builds: stops.min(cpus),
        }
    }
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
    fn an_asked_number_is_kept_and_builds_are_at_most_one_per_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(Parallelism::new(Some(500)).stops, 500);
        assert_eq!(Parallelism::new(Some(500)).builds, cpus.min(500));
        assert_eq!(Parallelism::new(Some(1)).builds, 1);
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
