//! Cron schedules ("30 2 * * *"), evaluated in the edge's local wall-clock
//! time by the `croner` crate. This module fixes the dialect and keeps the
//! schedule sans-io: [`CronSchedule::next_after`] takes `now`.
//!
//! The dialect: five fields (minute, hour, day of month, month, day of
//! week), each `*`, a number, a range `a-b`, a list `a,b`, or a step `*/n`
//! / `a-b/n`; month and day names; day of week 0 or 7 is Sunday. Beyond
//! Vixie cron: `L` (last day of the month; `5L` last Friday), `W` (`15W`:
//! the weekday nearest the 15th), `#` (`1#2`: the second Monday).
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly`
//! (`@annually`) are shorthands. Seconds and years are not accepted.
//!
//! Day rule (Vixie cron's): when both day fields are restricted (neither is
//! `*`), a day matching *either* runs: "0 0 1 * fri" is the 1st and every
//! Friday. A `+` before the day-of-week field asks for both instead
//! ("0 0 1-7 * +fri": the first Friday).

use std::fmt;
use std::str::FromStr;

use chrono::Timelike;
use croner::parser::{CronParser, Seconds, Year};

pub use chrono::NaiveDateTime;

#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    /// As the admin wrote it (trimmed): shown in status and compared by
    /// reload.
    text: String,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.cron == other.cron
    }
}

impl Eq for CronSchedule {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid schedule {text:?}: {reason} (expected cron fields \"minute hour day-of-month month day-of-week\", e.g. \"0 2 * * *\")"
)]
pub struct CronError {
    text: String,
    reason: String,
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, CronError> {
        let text = text.trim();
        let err = |reason: String| CronError {
            text: text.to_string(),
            reason,
        };
        let expanded = match text {
            // croner does not know Vixie's @midnight; earlier versions of
            // this parser accepted it.
            t if t.eq_ignore_ascii_case("@midnight") => "@daily",
            t => t,
        };
        let fields = expanded.split_whitespace().count();
        if !expanded.starts_with('@') && fields != 5 {
            return Err(err(format!("{fields} fields, not 5")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expanded)
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            cron,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl CronSchedule {
    /// The first matching minute strictly after `after` (local wall-clock
    /// time); `None` for a schedule that never matches (such as
    /// "0 0 31 2 *").
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        // Whole minutes: a run at 02:00:00 must not be followed by another
        // at 02:00 when the loop wakes a few milliseconds early or late.
        let minute = after.with_second(0)?.with_nanosecond(0)?;
        self.cron.find_next_occurrence(&minute, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    fn next(expr: &str, from: NaiveDateTime) -> NaiveDateTime {
        expr.parse::<CronSchedule>()
            .unwrap()
            .next_after(from)
            .unwrap_or_else(|| panic!("{expr} never runs after {from}"))
    }

    /// Each row: the schedule, the instant asked from, the run expected
    /// next, and why.
    fn runs_as(rows: &[(&str, NaiveDateTime, NaiveDateTime, &str)]) {
        for (expr, from, expected, why) in rows {
            assert_eq!(next(expr, *from), *expected, "{expr} after {from}: {why}");
        }
    }

    #[test]
    fn nightly_and_stepped_schedules() {
        let just_after_two = at(2026, 11, 24, 2, 0) + chrono::Duration::seconds(30);
        runs_as(&[
            (
                "0 2 * * *",
                at(2026, 11, 24, 3, 0),
                at(2026, 11, 25, 2, 0),
                "tomorrow",
            ),
            (
                "0 2 * * *",
                at(2026, 11, 24, 1, 59),
                at(2026, 11, 24, 2, 0),
                "today",
            ),
            (
                "0 2 * * *",
                just_after_two,
                at(2026, 11, 25, 2, 0),
                "strictly after: the run's own minute is not found again",
            ),
            (
                "*/15 * * * *",
                at(2026, 11, 24, 3, 7),
                at(2026, 11, 24, 3, 15),
                "a step",
            ),
            (
                "@hourly",
                at(2026, 12, 31, 23, 30),
                at(2027, 1, 1, 0, 0),
                "a shorthand",
            ),
            (
                "@midnight",
                at(2026, 12, 31, 23, 30),
                at(2027, 1, 1, 0, 0),
                "Vixie's alias",
            ),
        ]);
    }

    #[test]
    fn weekdays_months_and_the_either_day_rule() {
        // 2026-11-24 is a Tuesday.
        runs_as(&[
            (
                "30 22 * * mon-fri",
                at(2026, 11, 27, 23, 0),
                at(2026, 11, 30, 22, 30),
                "a weekday range",
            ),
            (
                "0 0 * * 7",
                at(2026, 11, 24, 0, 0),
                at(2026, 11, 29, 0, 0),
                "7 is Sunday",
            ),
            (
                "0 3 1 feb *",
                at(2026, 11, 24, 0, 0),
                at(2027, 2, 1, 3, 0),
                "a month name",
            ),
            (
                "0 0 1 * fri",
                at(2026, 11, 24, 0, 0),
                at(2026, 11, 27, 0, 0),
                "Vixie: day 1 OR any Friday, the 27th comes first",
            ),
            (
                "0 0 1 * fri",
                at(2026, 11, 28, 0, 0),
                at(2026, 12, 1, 0, 0),
                "Vixie: day 1 OR any Friday, the 1st comes first",
            ),
            (
                "0 0 13 * *",
                at(2026, 11, 24, 0, 0),
                at(2026, 12, 13, 0, 0),
                "one restricted field alone decides",
            ),
            (
                "0 0 1-7 * +fri",
                at(2026, 12, 5, 0, 0),
                at(2027, 1, 1, 0, 0),
                "+ asks for both: the first Friday (2027-01-01)",
            ),
        ]);
        assert!(
            "0 0 31 2 *"
                .parse::<CronSchedule>()
                .map_or(true, |s| s.next_after(at(2026, 1, 1, 0, 0)).is_none())
        );
    }

    #[test]
    fn last_nearest_weekday_and_nth_weekday() {
        runs_as(&[
            (
                "0 4 L * *",
                at(2027, 2, 1, 0, 0),
                at(2027, 2, 28, 4, 0),
                "L: the last day (February 2027 has 28)",
            ),
            (
                "0 4 * * 5L",
                at(2026, 11, 1, 0, 0),
                at(2026, 11, 27, 4, 0),
                "5L: the last Friday",
            ),
            (
                "0 4 15W * *",
                at(2026, 11, 1, 0, 0),
                at(2026, 11, 16, 4, 0),
                "15W: the weekday nearest the 15th (a Sunday): Monday the 16th",
            ),
            (
                "0 4 * * 1#2",
                at(2026, 11, 1, 0, 0),
                at(2026, 11, 9, 4, 0),
                "1#2: the second Monday",
            ),
        ]);
    }

    #[test]
    fn wall_clock_times_have_no_daylight_saving_gaps() {
        // Schedules run on the naive local wall clock the caller passes:
        // 02:30 exists every day, including the nights clocks change in
        // Europe (2027-03-28) and the US (2027-03-14).
        for day in [14, 28] {
            assert_eq!(
                next("30 2 * * *", at(2027, 3, day, 0, 0)),
                at(2027, 3, day, 2, 30)
            );
        }
        // A whole year of a nightly schedule: every run exactly 24 hours
        // after the one before, DST dates included, as in UTC.
        let schedule: CronSchedule = "30 2 * * *".parse().unwrap();
        let mut run = schedule.next_after(at(2026, 12, 31, 12, 0)).unwrap();
        for _ in 0..365 {
            let following = schedule.next_after(run).unwrap();
            assert_eq!(following - run, chrono::Duration::hours(24), "after {run}");
            run = following;
        }
        assert_eq!(run, at(2028, 1, 1, 2, 30));
        let leap = next("0 0 29 2 *", at(2026, 3, 1, 0, 0));
        assert_eq!(leap, at(2028, 2, 29, 0, 0));
    }

    #[test]
    fn rejects_bad_expressions_with_the_text_and_what_is_expected() {
        for bad in [
            "",
            "* * * *",
            "0 0 0 * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "0 0 * * funday",
            "every night",
        ] {
            let err = bad.parse::<CronSchedule>().expect_err(bad).to_string();
            assert!(
                err.contains(&format!("{:?}", bad.trim())) && err.contains("minute hour"),
                "{bad:?}: {err}"
            );
        }
    }
}
