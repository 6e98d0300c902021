//! Job schedules: cron syntax (minute hour day-of-month month day-of-week) in the
//! host's local time zone. Pure: the agent asks whether a run is due and when the
//! next one is; only the agent runs schedules.
//!
//! A missed time is made up at most once: a run is due when the latest scheduled
//! time at or before now comes after the job's last run (or, for a job that has not
//! run yet, after the agent first saw the schedule — a new job waits for its first
//! time rather than running at once). An agent that was down across several times
//! runs the job once when it starts, not once per missed time.

use chrono::{DateTime, Local};

use crate::manifest::parse_schedule;

/// The first scheduled time after `after`.
pub fn next_run(schedule: &str, after: DateTime<Local>) -> Option<DateTime<Local>> {
    parse_schedule(schedule)
        .ok()?
        .find_next_occurrence(&after, false)
        .ok()
}

/// Whether a run is due at `now`: the latest scheduled time at or before `now` is
/// after `since` (the job's last run, else when its schedule was first seen).
pub fn is_due(schedule: &str, since: DateTime<Local>, now: DateTime<Local>) -> bool {
    let Ok(cron) = parse_schedule(schedule) else {
        return false;
    };
    cron.find_previous_occurrence(&now, true)
        .is_ok_and(|latest| latest > since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 12, day, hour, minute, 0)
            .single()
            .expect("a local time")
    }

    #[test]
    fn a_daily_schedule_is_due_once_its_time_passed_since_the_last_run() {
        let daily = "0 3 * * *";
        assert_eq!(next_run(daily, at(2, 12, 0)), Some(at(3, 3, 0)));
        // Ran at 03:00 on the 2nd: not due again until 03:00 on the 3rd.
        assert!(!is_due(daily, at(2, 3, 0), at(2, 23, 59)));
        assert!(is_due(daily, at(2, 3, 0), at(3, 3, 0)));
        // Down from the 2nd to the 5th: due once (the caller runs it once, which
        // moves `since` past the missed times).
        assert!(is_due(daily, at(2, 3, 0), at(5, 10, 0)));
        assert!(!is_due(daily, at(5, 10, 0), at(5, 11, 0)));
    }

    #[test]
    fn a_new_schedule_waits_for_its_first_time() {
        // First seen at noon: 03:00 that morning is not a missed run.
        assert!(!is_due("0 3 * * *", at(2, 12, 0), at(2, 12, 1)));
        assert!(is_due("*/5 * * * *", at(2, 12, 1), at(2, 12, 5)));
    }

    #[test]
    fn schedules_have_five_fields() {
        assert!(parse_schedule("0 3 * * *").is_ok());
        assert!(parse_schedule("*/15 9-17 * * MON-FRI").is_ok());
        let err = parse_schedule("0 0 3 * * *").expect_err("six fields");
        assert!(err.contains("write five fields"), "{err}");
        assert!(parse_schedule("every day").is_err());
        // croner's extensions are not cron's (and Kubernetes refuses them); names are.
        for extension in [
            "0 0 L * *",
            "0 0 * * 5#3",
            "@daily",
            "0 0 15W * *",
            "0 0 ? * *",
        ] {
            assert!(parse_schedule(extension).is_err(), "{extension}");
        }
        assert!(parse_schedule("0 0 * JUL WED").is_ok());
    }
}
