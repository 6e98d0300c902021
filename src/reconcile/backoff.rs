//! Backoff, pure: the caller passes the time.
//!
//! Restarts: an exited replica is restarted after 1 s, then 2 s, 4 s... up to 5
//! minutes; a replica that stayed up 10 minutes starts over at 1 s.
//!
//! Registries: a registry whose tag checks fail is asked again after the resync
//! period, then twice that... up to 5 minutes, with one log line when it starts
//! failing, a reminder every few minutes and one when it is back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

// tokio's clock, so that tests can pause it.
use tokio::time::Instant;

pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(300);
pub const RESET_AFTER: Duration = Duration::from_secs(600);
/// A registry that keeps failing is mentioned again no more often than this.
pub const REMIND_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Backoff {
    /// The first delay; later ones double up to `MAX_DELAY` (or this, if longer).
    first: Duration,
    /// By key (a replica slot "web/0", a registry): the delay before the next attempt
    /// and when the last attempt happened.
    slots: HashMap<String, (Duration, Instant)>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::starting_at(FIRST_DELAY)
    }
}

impl Backoff {
    /// Delays that start at `first` (at least `FIRST_DELAY`: a zero delay would retry
    /// at every wake).
    pub fn starting_at(first: Duration) -> Self {
        Backoff {
            first: first.max(FIRST_DELAY),
            slots: HashMap::new(),
        }
    }

    /// When `slot` may be tried next (now, if never tried or long stable).
    pub fn next_allowed(&self, slot: &str, now: Instant) -> Instant {
        match self.slots.get(slot) {
            Some((delay, last)) if now.duration_since(*last) < RESET_AFTER + *delay => {
                *last + *delay
            }
            _ => now,
        }
    }

    /// Records an attempt (a restart) of `slot` at `now`; returns the delay before the
    /// next one.
    pub fn restarted(&mut self, slot: &str, now: Instant) -> Duration {
        let delay = self.delay_after_restart(slot, now);
        self.slots.insert(slot.to_owned(), (delay, now));
        delay
    }

    /// The delay [`Backoff::restarted`] would return for an attempt at `now`.
    pub fn delay_after_restart(&self, slot: &str, now: Instant) -> Duration {
        match self.slots.get(slot) {
            Some((delay, last)) if now.duration_since(*last) < RESET_AFTER + *delay => {
                (*delay * 2).min(MAX_DELAY.max(self.first))
            }
            _ => self.first,
        }
    }

    /// Starts `slot` over: its next attempt may be now, and the one after a failure of
    /// it waits the first delay again.
    pub fn forget(&mut self, slot: &str) {
        self.slots.remove(slot);
    }
}

/// A registry whose tag checks are failing.
#[derive(Debug, Clone, PartialEq)]
pub struct Outage {
    /// The first failed attempt.
    pub since: SystemTime,
    /// Failed attempts so far.
    pub attempts: u64,
    /// What the last attempt failed with.
    pub error: String,
    /// When a line about it was last logged.
    logged_at: Instant,
}

/// A line for the agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub message: String,
    /// Whether it goes to the event log too (a reminder does not: the first line and
    /// `wharf status` say it already).
    pub event: bool,
}

/// The registries the agent asks what `pull: always` tags resolve to, as it sees
/// them: when each failing one may be asked again, and what to log about it.
#[derive(Debug)]
pub struct RegistryHealth {
    backoff: Backoff,
    outages: BTreeMap<String, Outage>,
}

impl RegistryHealth {
    /// A failing registry is asked again after `first` (the resync period), then
    /// twice that, up to `MAX_DELAY`.
    pub fn new(first: Duration) -> Self {
        RegistryHealth {
            backoff: Backoff::starting_at(first),
            outages: BTreeMap::new(),
        }
    }

    /// When `registry` may be asked next (now, unless it is failing).
    pub fn next_attempt(&self, registry: &str, now: Instant) -> Instant {
        self.backoff.next_allowed(registry, now)
    }

    /// Whether `registry` may be asked at `now`.
    pub fn may_ask(&self, registry: &str, now: Instant) -> bool {
        self.next_attempt(registry, now) <= now
    }

    /// Records a failed attempt at `now` (`wall` is the same moment on the clock);
    /// returns the line to log, if one is due: the first failure, then a reminder at
    /// most every `REMIND_EVERY`.
    pub fn failed(
        &mut self,
        registry: &str,
        error: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Option<LogLine> {
        let next = humantime::format_duration(self.backoff.restarted(registry, now));
        let Some(outage) = self.outages.get_mut(registry) else {
            self.outages.insert(
                registry.to_owned(),
                Outage {
                    since: wall,
                    attempts: 1,
                    error: error.to_owned(),
                    logged_at: now,
                },
            );
            return Some(LogLine {
                message: format!(
                    "registry {registry} failing: {error}; trying again with backoff (next in {next}); running containers of its pull: always images are left as they are, new ones wait"
                ),
                event: true,
            });
        };
        outage.attempts += 1;
        outage.error = error.to_owned();
        if now.duration_since(outage.logged_at) < REMIND_EVERY {
            return None;
        }
        outage.logged_at = now;
        Some(LogLine {
            message: format!(
                "registry {registry} still failing ({} attempts since {}): {error}; next try in {next}",
                outage.attempts,
                humantime::format_rfc3339_seconds(outage.since)
            ),
            event: false,
        })
    }

    /// Records a successful attempt; returns the line to log if the registry was
    /// failing.
    pub fn recovered(&mut self, registry: &str) -> Option<LogLine> {
        self.backoff.forget(registry);
        let outage = self.outages.remove(registry)?;
        Some(LogLine {
            message: format!(
                "registry {registry} is back after {} failed attempts since {}",
                outage.attempts,
                humantime::format_rfc3339_seconds(outage.since)
            ),
            event: true,
        })
    }

    /// The outage of `registry`, if its tag checks are failing.
    pub fn outage(&self, registry: &str) -> Option<&Outage> {
        self.outages.get(registry)
    }

    /// Forgets the registries for which `keep` is false (no service uses them now).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .outages
            .keys()
            .filter(|registry| !keep(registry.as_str()))
            .cloned()
            .collect();
        for registry in gone {
            self.outages.remove(&registry);
            self.backoff.forget(&registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_five_minutes_and_reset_after_ten_stable_minutes() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        assert_eq!(backoff.next_allowed("web/0", start), start);
        let mut now = start;
        let mut delays = Vec::new();
        for _ in 0..11 {
            let delay = backoff.restarted("web/0", now);
            assert_eq!(backoff.next_allowed("web/0", now), now + delay);
            delays.push(delay.as_secs());
            now += delay;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Stable for long enough: back to 1 s.
        let later = now + RESET_AFTER + MAX_DELAY;
        assert_eq!(backoff.next_allowed("web/0", later), later);
        assert_eq!(backoff.restarted("web/0", later), FIRST_DELAY);
        // Other replicas are independent.
        assert_eq!(backoff.next_allowed("web/1", start), start);
        // Forgotten: tried now, then the first delay again.
        backoff.forget("web/0");
        assert_eq!(backoff.next_allowed("web/0", later), later);
        assert_eq!(backoff.restarted("web/0", later), FIRST_DELAY);
    }

    #[test]
    fn a_backoff_can_start_at_another_delay_and_never_at_zero() {
        let start = Instant::now();
        let mut backoff = Backoff::starting_at(Duration::from_secs(30));
        let delays: Vec<u64> = (0..6)
            .map(|n| {
                backoff
                    .restarted("r", start + Duration::from_secs(n))
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 300, 300]);
        // A first delay over the cap is the cap: never more often than that.
        let mut slow = Backoff::starting_at(Duration::from_secs(600));
        assert_eq!(slow.restarted("r", start).as_secs(), 600);
        assert_eq!(slow.restarted("r", start).as_secs(), 600);
        let mut zero = Backoff::starting_at(Duration::ZERO);
        assert_eq!(zero.restarted("r", start), FIRST_DELAY);
    }

    /// Asks a failing `registry` whenever the agent wakes (every `wake`) for
    /// `outage`, as the agent does; returns the lines logged and the attempts' times.
    fn fail_for(
        health: &mut RegistryHealth,
        registry: &str,
        start: Instant,
        wake: Duration,
        outage: Duration,
    ) -> (Vec<LogLine>, Vec<Duration>) {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (mut lines, mut attempts) = (Vec::new(), Vec::new());
        let mut now = start;
        while now < start + outage {
            if health.may_ask(registry, now) {
                attempts.push(now - start);
                let at = wall + (now - start);
                lines.extend(health.failed(registry, "connection refused", now, at));
            }
            now += wake;
        }
        (lines, attempts)
    }

    #[test]
    fn a_failing_registry_is_asked_with_backoff_and_logged_once_then_every_few_minutes() {
        let start = Instant::now();
        let mut health = RegistryHealth::new(Duration::from_secs(1));
        assert!(health.may_ask("r:5000", start));
        assert!(health.recovered("r:5000").is_none(), "never failed");

        // An hour of outage, the agent waking every 100 ms (file events, exits).
        let (lines, attempts) = fail_for(
            &mut health,
            "r:5000",
            start,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        let seconds: Vec<u64> = attempts.iter().take(10).map(Duration::as_secs).collect();
        assert_eq!(seconds, [0, 1, 3, 7, 15, 31, 63, 127, 255, 511]);
        // Then one every 5 minutes: 10 more in the hour.
        assert_eq!(attempts.len(), 20, "{attempts:?}");
        assert_eq!(
            lines[0].message,
            "registry r:5000 failing: connection refused; trying again with backoff (next in 1s); running containers of its pull: always images are left as they are, new ones wait"
        );
        assert!(lines[0].event, "the outage is an event");
        assert_eq!(
            lines[1].message,
            "registry r:5000 still failing (10 attempts since 2023-11-14T22:13:20Z): connection refused; next try in 5m"
        );
        // One line, then at most one every 5 minutes, in the log only.
        assert!(lines.len() <= 1 + 3600 / 300, "{lines:#?}");
        assert!(lines[1..]
            .iter()
            .all(|l| l.message.contains("still failing") && !l.event));
        let outage = health.outage("r:5000").expect("failing");
        assert_eq!(outage.attempts, 20);
        assert_eq!(outage.error, "connection refused");
        // Another registry is asked as usual meanwhile.
        let now = start + Duration::from_secs(3600);
        assert!(health.may_ask("other:5000", now));
        assert!(health.outage("other:5000").is_none());

        // Back: one line, and asked as usual again.
        let back = health.recovered("r:5000").expect("a line");
        assert_eq!(
            back.message,
            "registry r:5000 is back after 20 failed attempts since 2023-11-14T22:13:20Z"
        );
        assert!(back.event);
        assert!(health.recovered("r:5000").is_none(), "logged once");
        assert!(health.may_ask("r:5000", now));
        assert!(health.outage("r:5000").is_none());

        // A new outage starts over: a first line, and the first delay.
        let (lines, attempts) = fail_for(
            &mut health,
            "r:5000",
            now,
            Duration::from_millis(100),
            Duration::from_secs(2),
        );
        assert_eq!(attempts, [Duration::ZERO, Duration::from_secs(1)]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].message.starts_with("registry r:5000 failing: "));
    }

    #[test]
    fn registries_no_longer_used_are_forgotten() {
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut health = RegistryHealth::new(Duration::from_secs(30));
        health.failed("gone:5000", "refused", start, wall);
        health.failed("kept:5000", "refused", start, wall);
        health.retain(|registry| registry == "kept:5000");
        assert!(health.outage("gone:5000").is_none());
        assert!(health.may_ask("gone:5000", start));
        assert!(health.recovered("gone:5000").is_none());
        assert!(health.outage("kept:5000").is_some());
        assert!(!health.may_ask("kept:5000", start));
    }
}
