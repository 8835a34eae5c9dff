//! Time-of-day windows ("mon-fri 08:00-18:00") and rates that follow them.

use std::fmt;
use std::str::FromStr;

use crate::Rate;

/// A local wall-clock time reduced to what windows look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 = Monday ... 6 = Sunday.
    pub weekday: u8,
    /// Minutes since local midnight, 0..1440.
    pub minute: u16,
}

impl LocalTime {
    pub fn new(weekday: u8, hour: u8, minute: u8) -> Self {
        Self {
            weekday: weekday % 7,
            minute: u16::from(hour.min(23)) * 60 + u16::from(minute.min(59)),
        }
    }
}

/// Days of the week and a span of the day. A span that ends before it starts
/// runs past midnight (`22:00-06:00`); it belongs to the day it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    /// Bit `d` set: the window opens on weekday `d` (0 = Monday).
    days: u8,
    start: u16,
    end: u16,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time window {text:?}: {reason} (expected e.g. \"mon-fri 08:00-18:00\", \"22:00-06:00\" or \"sat,sun\")"
)]
pub struct WindowError {
    text: String,
    reason: &'static str,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| name.starts_with(d) && d.len() >= 3)
        .map(|i| i as u8)
}

fn parse_days(spec: &str) -> Option<u8> {
    let mut days = 0u8;
    for part in spec.split(',') {
        let part = part.trim();
        if part.eq_ignore_ascii_case("daily") || part == "*" {
            days = 0x7f;
            continue;
        }
        if part.eq_ignore_ascii_case("weekdays") {
            days |= 0x1f;
            continue;
        }
        if part.eq_ignore_ascii_case("weekends") {
            days |= 0x60;
            continue;
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << day_index(part)?,
        }
    }
    Some(days)
}

fn parse_clock(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    // 24:00 is the end of the day.
    if (h < 24 && m < 60) || (h == 24 && m == 0) {
        Some(h * 60 + m)
    } else {
        None
    }
}

impl FromStr for TimeWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, WindowError> {
        let err = |reason| WindowError {
            text: text.to_string(),
            reason,
        };
        let mut days = 0x7f;
        let mut span = None;
        for word in text.split_whitespace() {
            if word.contains(':') {
                if span.is_some() {
                    return Err(err("more than one time span"));
                }
                let (a, b) = word.split_once('-').ok_or(err("a span is HH:MM-HH:MM"))?;
                let start = parse_clock(a).ok_or(err("bad start time"))?;
                let end = parse_clock(b).ok_or(err("bad end time"))?;
                if start == end {
                    return Err(err("a span must not be empty"));
                }
                span = Some((start, end));
            } else {
                days = parse_days(word).ok_or(err("unknown day name"))?;
            }
        }
        if text.trim().is_empty() {
            return Err(err("empty"));
        }
        let (start, end) = span.unwrap_or((0, 24 * 60));
        Ok(Self {
            days,
            start,
            end,
            text: text.trim().to_string(),
        })
    }
}

impl TimeWindow {
    pub fn contains(&self, t: LocalTime) -> bool {
        let opens_on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.start < self.end {
            opens_on(t.weekday) && t.minute >= self.start && t.minute < self.end
        } else {
            // Past midnight: the evening part of the opening day, or the
            // morning part of the day after.
            (opens_on(t.weekday) && t.minute >= self.start)
                || (opens_on(t.weekday + 6) && t.minute < self.end)
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A rate that applies inside a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    pub window: TimeWindow,
    pub rate: Rate,
}

/// A rate that changes with the time of day: the first rule whose window
/// contains the time wins, else the default.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    pub default: Rate,
    pub rules: Vec<RateRule>,
}

impl RateSchedule {
    pub fn constant(rate: Rate) -> Self {
        Self {
            default: rate,
            rules: Vec::new(),
        }
    }

    pub fn unlimited() -> Self {
        Self::constant(Rate::UNLIMITED)
    }

    pub fn at(&self, t: LocalTime) -> Rate {
        self.rules
            .iter()
            .find(|r| r.window.contains(t))
            .map_or(self.default, |r| r.rate)
    }

    /// Whether the rate is unlimited at every time.
    pub fn always_unlimited(&self) -> bool {
        self.default.is_unlimited() && self.rules.iter().all(|r| r.rate.is_unlimited())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> TimeWindow {
        s.parse().unwrap()
    }

    #[test]
    fn weekday_office_hours() {
        let office = w("mon-fri 08:00-18:00");
        assert!(office.contains(LocalTime::new(0, 8, 0)));
        assert!(office.contains(LocalTime::new(4, 17, 59)));
        assert!(!office.contains(LocalTime::new(4, 18, 0)));
        assert!(!office.contains(LocalTime::new(5, 12, 0)));
        assert!(!office.contains(LocalTime::new(2, 7, 59)));
    }

    #[test]
    fn span_past_midnight_belongs_to_its_opening_day() {
        let night = w("fri 22:00-06:00");
        assert!(night.contains(LocalTime::new(4, 23, 0)));
        assert!(night.contains(LocalTime::new(5, 5, 59)));
        assert!(!night.contains(LocalTime::new(5, 22, 30)));
        assert!(!night.contains(LocalTime::new(4, 5, 0)));
    }

    #[test]
    fn days_only_and_wrapping_day_ranges() {
        assert!(w("sat,sun").contains(LocalTime::new(6, 3, 0)));
        assert!(!w("weekends").contains(LocalTime::new(0, 3, 0)));
        assert!(w("sat-mon").contains(LocalTime::new(0, 3, 0)));
        assert!(w("12:00-13:00").contains(LocalTime::new(3, 12, 30)));
    }

    #[test]
    fn rejects_bad_windows() {
        for bad in [
            "",
            "someday",
            "25:00-26:00",
            "08:00",
            "08:00-08:00",
            "mon 1-2",
        ] {
            assert!(bad.parse::<TimeWindow>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let schedule = RateSchedule {
            default: Rate::UNLIMITED,
            rules: vec![RateRule {
                window: w("mon-fri 08:00-18:00"),
                rate: "256 kbit/s".parse().unwrap(),
            }],
        };
        assert_eq!(schedule.at(LocalTime::new(1, 9, 0)).limit(), Some(32_000.0));
        assert!(schedule.at(LocalTime::new(1, 19, 0)).is_unlimited());
        assert!(schedule.at(LocalTime::new(6, 9, 0)).is_unlimited());
    }
}
