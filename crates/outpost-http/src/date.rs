//! HTTP-date (RFC 9110 section 5.6.7), parsed strictly.
//!
//! Only the three grammars of the RFC are dates: IMF-fixdate
//! (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
//! (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
//! Names are case-sensitive (`%s"..."` in the grammar), white space is exactly
//! one SP where the grammar has one, the zone is exactly `GMT`. Anything else
//! is not a date: for `Expires` that means "already expired" (RFC 9111
//! section 5.3), which is why this parser refuses what `httpdate` and the
//! policy library's RFC 2822 parser let through (a doubled space, `UTC`,
//! a lower-case month).
//!
//! Sans-io: the two-digit year of the RFC 850 form is resolved against a
//! `now` the caller passes.

use std::time::{Duration, SystemTime};

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A calendar instant as written, before conversion.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn new(year: u32, month: u32, day: u32, (hour, minute, second): (u32, u32, u32)) -> Self {
        Self {
            year: i64::from(year),
            month,
            day,
            hour,
            minute,
            second,
        }
    }
}

/// The instant `value` names, when it is an HTTP-date in one of the three
/// forms; `None` for anything else. `now` resolves the two-digit year of the
/// RFC 850 form: a year more than 50 years ahead of `now` is the most recent
/// past year with the same last two digits.
pub fn parse_http_date(value: &str, now: SystemTime) -> Option<SystemTime> {
    let civil = imf_fixdate(value)
        .or_else(|| rfc850_date(value, now))
        .or_else(|| asctime_date(value))?;
    to_system_time(&civil)
}

/// `value` in the one form a sender must generate (IMF-fixdate).
pub fn format_http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(v: &str) -> Option<Civil> {
    day_name_first(v, &DAY_NAMES, b' ', 4)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850_date(v: &str, now: SystemTime) -> Option<Civil> {
    let mut civil = day_name_first(v, &LONG_DAY_NAMES, b'-', 2)?;
    let this_year = current_year(now);
    let mut year = this_year - this_year.rem_euclid(100) + civil.year;
    if year > this_year + 50 {
        year -= 100;
    }
    civil.year = year;
    Some(civil)
}

/// The two forms that start with the day's name:
/// `<name>, <dd><sep><Mon><sep><year> <HH:MM:SS> GMT`, the year of exactly
/// `year_len` digits (returned as written), single separators throughout.
fn day_name_first(v: &str, day_names: &[&str], sep: u8, year_len: usize) -> Option<Civil> {
    let rest = v.strip_suffix(" GMT")?;
    let (day_name, rest) = rest.split_once(", ")?;
    if !day_names.contains(&day_name) {
        return None;
    }
    // `06 Nov 1994 08:49:37` (20 bytes) or `06-Nov-94 08:49:37` (18).
    let b = rest.as_bytes();
    let time_at = 8 + year_len;
    if b.len() != time_at + 8 || b[2] != sep || b[6] != sep || b[time_at - 1] != b' ' {
        return None;
    }
    let day = digits(&rest[0..2])?;
    let month = month(&rest[3..6])?;
    let year = digits(&rest[7..7 + year_len])?;
    Some(Civil::new(year, month, day, time_of_day(&rest[time_at..])?))
}

/// `Sun Nov  6 08:49:37 1994` (a one-digit day is preceded by a space).
fn asctime_date(v: &str) -> Option<Civil> {
    let b = v.as_bytes();
    // `Sun Nov  6 08:49:37 1994`: exactly 24 bytes.
    if b.len() != 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    if !DAY_NAMES.contains(&&v[0..3]) {
        return None;
    }
    let month = month(&v[4..7])?;
    let day = match (b[8], b[9]) {
        (b' ', d) if d.is_ascii_digit() => u32::from(d - b'0'),
        _ => digits(&v[8..10])?,
    };
    let time = time_of_day(&v[11..19])?;
    let year = digits(&v[20..24])?;
    Some(Civil::new(year, month, day, time))
}

/// Only ASCII digits (no sign, no space), as a number.
fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month(s: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1)
}

/// `HH:MM:SS`, each two digits.
fn time_of_day(s: &str) -> Option<(u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn current_year(now: SystemTime) -> i64 {
    let days = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64);
    // The inverse of `days_from_civil`, for the year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400;
    if mp >= 10 { year + 1 } else { year }
}

/// The instant, or `None` for a date the calendar does not have (31 Apr,
/// 25:00). Dates before 1970 are the epoch: for freshness, long past is
/// long past.
fn to_system_time(c: &Civil) -> Option<SystemTime> {
    let valid = (1..=12).contains(&c.month)
        && c.day >= 1
        && c.day <= days_in_month(c.year, c.month)
        && c.hour < 24
        && c.minute < 60
        // 60: a leap second (RFC 9110 allows it); counted as :59.
        && c.second <= 60;
    if !valid {
        return None;
    }
    let days = days_from_civil(c.year, c.month, c.day);
    let secs = days * 86_400
        + i64::from(c.hour) * 3600
        + i64::from(c.minute) * 60
        + i64::from(c.second.min(59));
    Some(match u64::try_from(secs) {
        Ok(secs) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))?,
        Err(_) => SystemTime::UNIX_EPOCH,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T12:00:00Z, fixed so that the two-digit-year rule is tested
    /// against a known "now".
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800)
    }

    fn secs(v: &str) -> Option<u64> {
        parse_http_date(v, now()).map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        })
    }

    const NOV_6_1994: u64 = 784_111_777;

    #[test]
    fn the_three_forms_name_the_same_instant() {
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), Some(NOV_6_1994));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), Some(NOV_6_1994));
        assert_eq!(secs("Sun Nov  6 08:49:37 1994"), Some(NOV_6_1994));
        assert_eq!(secs("Sun Nov 06 08:49:37 1994"), Some(NOV_6_1994));
    }

    #[test]
    fn agrees_with_httpdate_on_valid_dates() {
        for v in [
            "Tue, 19 Jan 2038 14:14:08 GMT",
            "Sun, 21 Nov 2286 04:46:39 GMT",
            "Thu, 29 Feb 2024 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            let ours = parse_http_date(v, now());
            assert!(ours.is_some(), "{v}");
            assert_eq!(ours, httpdate::parse_http_date(v).ok(), "{v}");
            assert_eq!(format_http_date(ours.unwrap()), v);
        }
    }

    #[test]
    fn a_two_digit_year_is_at_most_50_years_ahead() {
        assert_eq!(
            parse_http_date("Thursday, 18-Aug-50 02:01:18 GMT", now()),
            parse_http_date("Thu, 18 Aug 2050 02:01:18 GMT", now())
        );
        assert_eq!(
            parse_http_date("Monday, 18-Aug-77 02:01:18 GMT", now()),
            parse_http_date("Thu, 18 Aug 1977 02:01:18 GMT", now()),
            "2077 is more than 50 years ahead of 2026"
        );
    }

    #[test]
    fn anything_else_is_not_a_date() {
        for v in [
            "",
            "0",
            "-1",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu,  18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18  GMT",
            " Thu, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT ",
            "Thu, 18 Aug 2050 02:01:18 GMT x",
            "Thu, 18 Aug 2050 02:01:18",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Thu, 18 Aug 2050 02:01:18 +0000",
            "Thu, 18 aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 8 Aug 2050 02:01:18 GMT",
            "Thu, 31 Apr 2050 02:01:18 GMT",
            "Thu, 29 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:00:00 GMT",
            "Thu, 18 Aug 2050 02:60:00 GMT",
            "Thu, +8 Aug 2050 02:01:18 GMT",
            "Thursday, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18-Aug-50 02:01:18 GMT",
            "Thursday, 18 Aug 50 02:01:18 GMT",
            "Thu Aug 8 02:01:18 2050",
            "Thu Aug  8 02:01:18 2050 GMT",
            "Thu Aug  8  02:01:18 2050",
            "thu Aug  8 02:01:18 2050",
            "Thu, 18 Aug 2050 02:01:18 GMT\u{e9}",
        ] {
            assert_eq!(parse_http_date(v, now()), None, "{v:?} accepted");
        }
    }
}
