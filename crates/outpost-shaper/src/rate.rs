//! Bandwidths as written in configs.

use std::fmt;
use std::str::FromStr;

/// A bandwidth in bytes per second; `None` inside means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(Option<f64>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error(
        "invalid rate {0:?}: expected a number and a unit such as \"2 Mbit/s\", \"256 kbit/s\", \"10 MB/s\" or \"unlimited\""
    )]
    Syntax(String),
    #[error("invalid rate {0:?}: must not be negative")]
    Negative(String),
}

impl Rate {
    pub const UNLIMITED: Rate = Rate(None);

    pub fn bytes_per_sec(bytes: f64) -> Self {
        Self(Some(bytes.max(0.0)))
    }

    pub fn bits_per_sec(bits: f64) -> Self {
        Self::bytes_per_sec(bits / 8.0)
    }

    /// Bytes per second, or `None` when unlimited.
    pub fn limit(self) -> Option<f64> {
        self.0
    }

    pub fn is_unlimited(self) -> bool {
        self.0.is_none()
    }

    /// The tighter of two rates.
    pub fn min(self, other: Rate) -> Rate {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Rate(Some(a.min(b))),
            (Some(a), None) | (None, Some(a)) => Rate(Some(a)),
            (None, None) => Rate(None),
        }
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, RateError> {
        let s = text.trim();
        let lower = s.to_ascii_lowercase();
        if matches!(lower.as_str(), "unlimited" | "none" | "off") {
            return Ok(Rate::UNLIMITED);
        }
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| RateError::Syntax(text.to_string()))?;
        if !value.is_finite() {
            return Err(RateError::Syntax(text.to_string()));
        }
        if value < 0.0 {
            return Err(RateError::Negative(text.to_string()));
        }
        let unit = unit.trim();
        let unit = unit
            .strip_suffix("/s")
            .or_else(|| unit.strip_suffix("ps"))
            .ok_or_else(|| RateError::Syntax(text.to_string()))?
            .trim();
        // Network people write bits with decimal prefixes; storage people
        // write bytes. Both are accepted, spelled out so that "Mb" and "MB"
        // cannot be confused.
        let bits_per_unit = match unit {
            "bit" | "b" => 1.0,
            "kbit" | "kb" => 1e3,
            "mbit" | "mb" => 1e6,
            "gbit" | "gb" => 1e9,
            "byte" | "bytes" => 8.0,
            "kbyte" | "kbytes" | "kib" => 8.0 * 1024.0,
            "mbyte" | "mbytes" | "mib" => 8.0 * 1024.0 * 1024.0,
            "gbyte" | "gbytes" | "gib" => 8.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(RateError::Syntax(text.to_string())),
        };
        // "MB/s" (capital B) means megabytes: the lower-cased match above
        // reads it as megabits, so look at the original spelling.
        let bytes_unit = s.contains("B/s") || s.contains("Bps") || s.contains("B /s");
        let bits = if bytes_unit && matches!(unit, "b" | "kb" | "mb" | "gb") {
            value * bits_per_unit * 8.0
        } else {
            value * bits_per_unit
        };
        Ok(Rate::bits_per_sec(bits))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("unlimited"),
            Some(bytes) => {
                let bits = bytes * 8.0;
                if bits >= 1e9 {
                    write!(f, "{:.3} Gbit/s", bits / 1e9)
                } else if bits >= 1e6 {
                    write!(f, "{:.3} Mbit/s", bits / 1e6)
                } else {
                    write!(f, "{:.1} kbit/s", bits / 1e3)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> f64 {
        s.parse::<Rate>().unwrap().limit().unwrap()
    }

    #[test]
    fn parses_bit_and_byte_units() {
        assert_eq!(bytes("2 Mbit/s"), 250_000.0);
        assert_eq!(bytes("256 kbit/s"), 32_000.0);
        assert_eq!(bytes("20Mbps"), 2_500_000.0);
        assert_eq!(bytes("10 MB/s"), 10_000_000.0);
        assert_eq!(bytes("1 MiB/s"), 1_048_576.0);
        assert_eq!(bytes("0 kbit/s"), 0.0);
        assert!("unlimited".parse::<Rate>().unwrap().is_unlimited());
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "fast",
            "2",
            "2 Mbit",
            "-1 Mbit/s",
            "1e400 bit/s",
            "2 furlongs/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn min_prefers_the_limit() {
        let two: Rate = "2 Mbit/s".parse().unwrap();
        assert_eq!(two.min(Rate::UNLIMITED), two);
        assert_eq!(Rate::UNLIMITED.min(Rate::UNLIMITED), Rate::UNLIMITED);
    }
}
