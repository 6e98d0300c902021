//! Restart backoff: an exited replica is restarted after 1 s, then 2 s, 4 s... up to
//! 5 minutes; a replica that stayed up 10 minutes starts over at 1 s. Pure: the
//! caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(300);
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Backoff {
    /// By replica slot ("web/0"): the delay before the next restart and when the
    /// last restart happened.
    slots: HashMap<String, (Duration, Instant)>,
}

impl Backoff {
    /// When replica `slot` may be restarted next (now, if never restarted or long stable).
    pub fn next_allowed(&self, slot: &str, now: Instant) -> Instant {
        match self.slots.get(slot) {
            Some((delay, last)) if now.duration_since(*last) < RESET_AFTER + *delay => {
                *last + *delay
            }
            _ => now,
        }
    }

    /// Records a restart of `slot` at `now`; returns the delay before the one after.
    pub fn restarted(&mut self, slot: &str, now: Instant) -> Duration {
        let delay = match self.slots.get(slot) {
            Some((delay, last)) if now.duration_since(*last) < RESET_AFTER + *delay => {
                (*delay * 2).min(MAX_DELAY)
            }
            _ => FIRST_DELAY,
        };
        self.slots.insert(slot.to_owned(), (delay, now));
        delay
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
    }
}
