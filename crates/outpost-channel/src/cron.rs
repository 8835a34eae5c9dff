//! Cron schedules ("30 2 * * *"), evaluated in local wall-clock time.
//!
//! Five fields: minute, hour, day of month, month, day of week, each `*`, a
//! number, a range `a-b`, a list `a,b`, or a step `*/n` / `a-b/n`; month and
//! day names are accepted. As in Vixie cron, when both day fields are
//! restricted a day matching either one runs. `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly` are shorthands.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Duration, Timelike};

pub use chrono::NaiveDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid schedule {text:?}: {reason} (expected cron fields \"minute hour day month weekday\", e.g. \"0 2 * * *\")"
)]
pub struct CronError {
    text: String,
    reason: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(v: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Result<u32, String> {
    let lower = v.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + name_base);
    }
    let n: u32 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}-{max}"));
    }
    Ok(n)
}

/// Parses one field into a bit set of allowed values.
fn parse_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut restricted = true;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if step == 0 {
                    return Err("a step must be at least 1".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            if step == 1 && field == "*" {
                restricted = false;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, min, max, names, name_base)?,
                parse_value(b, min, max, names, name_base)?,
            )
        } else {
            let v = parse_value(range, min, max, names, name_base)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, restricted))
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, CronError> {
        let err = |reason: String| CronError {
            text: text.to_string(),
            reason,
        };
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!("{} fields, not 5", fields.len())));
        }
        let (minutes, _) = parse_field(fields[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = parse_field(fields[1], 0, 23, &[], 0).map_err(err)?;
        let (days, days_restricted) = parse_field(fields[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = parse_field(fields[3], 1, 12, &MONTHS, 1).map_err(err)?;
        let (mut weekdays, weekdays_restricted) =
            parse_field(fields[4], 0, 7, &WEEKDAYS, 0).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted,
            weekdays_restricted,
            text: text.trim().to_string(),
        })
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl CronSchedule {
    fn day_matches(&self, t: &NaiveDateTime) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first matching minute strictly after `after` (local time), within
    /// about five years; `None` for a schedule that never matches (such as
    /// "0 0 31 2 *").
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let limit = after + Duration::days(366 * 5);
        while t <= limit {
            if self.months & (1 << t.month()) == 0 || !self.day_matches(&t) {
                t = (t.date() + Duration::days(1)).and_hms_opt(0, 0, 0)?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
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
            .unwrap()
    }

    #[test]
    fn nightly_and_stepped_schedules() {
        assert_eq!(
            next("0 2 * * *", at(2026, 11, 24, 3, 0)),
            at(2026, 11, 25, 2, 0)
        );
        assert_eq!(
            next("0 2 * * *", at(2026, 11, 24, 1, 59)),
            at(2026, 11, 24, 2, 0)
        );
        assert_eq!(
            next("*/15 * * * *", at(2026, 11, 24, 3, 7)),
            at(2026, 11, 24, 3, 15)
        );
        assert_eq!(
            next("@hourly", at(2026, 12, 31, 23, 30)),
            at(2027, 1, 1, 0, 0)
        );
    }

    #[test]
    fn weekdays_months_and_either_day_rule() {
        // 2026-11-24 is a Tuesday.
        assert_eq!(
            next("30 22 * * mon-fri", at(2026, 11, 27, 23, 0)),
            at(2026, 11, 30, 22, 30)
        );
        assert_eq!(
            next("0 0 * * 7", at(2026, 11, 24, 0, 0)),
            at(2026, 11, 29, 0, 0)
        );
        assert_eq!(
            next("0 3 1 feb *", at(2026, 11, 24, 0, 0)),
            at(2027, 2, 1, 3, 0)
        );
        // Day 1 of the month or any Friday.
        assert_eq!(
            next("0 0 1 * fri", at(2026, 11, 24, 0, 0)),
            at(2026, 11, 27, 0, 0)
        );
        assert!(
            "0 0 31 2 *"
                .parse::<CronSchedule>()
                .unwrap()
                .next_after(at(2026, 1, 1, 0, 0))
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "0 0 * * funday",
        ] {
            assert!(bad.parse::<CronSchedule>().is_err(), "{bad:?} parsed");
        }
    }
}
