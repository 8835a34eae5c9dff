//! Login throttling: after [`LOGIN_FAILURES_PER_WINDOW`] failed logins for
//! one name within [`LOGIN_WINDOW_SECONDS`], further attempts for that name
//! are refused (HTTP 429) until the oldest failure leaves the window.
//!
//! Keyed by the submitted name whether or not it exists, so the throttle
//! itself tells nothing about which names are real. Memory is bounded:
//! past [`MAX_TRACKED_NAMES`] names, expired entries are dropped, and if
//! none has expired the oldest entry goes.

use std::collections::{HashMap, VecDeque};

pub const LOGIN_FAILURES_PER_WINDOW: usize = 5;
pub const LOGIN_WINDOW_SECONDS: i64 = 60;
const MAX_TRACKED_NAMES: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<String, VecDeque<i64>>,
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(seconds to wait)` when `name` may not try now.
    pub fn check(&mut self, name: &str, now: i64) -> Result<(), i64> {
        let Some(times) = self.failures.get_mut(name) else {
            return Ok(());
        };
        expire(times, now);
        if times.len() >= LOGIN_FAILURES_PER_WINDOW {
            let oldest = times.front().copied().unwrap_or(now);
            return Err((oldest + LOGIN_WINDOW_SECONDS - now).max(1));
        }
        Ok(())
    }

    pub fn record_failure(&mut self, name: &str, now: i64) {
        if !self.failures.contains_key(name) && self.failures.len() >= MAX_TRACKED_NAMES {
            self.failures.retain(|_, times| {
                expire(times, now);
                !times.is_empty()
            });
            if self.failures.len() >= MAX_TRACKED_NAMES {
                let oldest = self
                    .failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied().unwrap_or(i64::MIN))
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest {
                    self.failures.remove(&oldest);
                }
            }
        }
        let times = self.failures.entry(name.to_owned()).or_default();
        expire(times, now);
        times.push_back(now);
        while times.len() > LOGIN_FAILURES_PER_WINDOW {
            times.pop_front();
        }
    }

    /// A successful login forgets the name's failures.
    pub fn record_success(&mut self, name: &str) {
        self.failures.remove(name);
    }
}

fn expire(times: &mut VecDeque<i64>, now: i64) {
    while times
        .front()
        .is_some_and(|&t| now - t >= LOGIN_WINDOW_SECONDS)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_minute_block_the_name_until_the_first_ages_out() {
        let mut throttle = LoginThrottle::new();
        for t in 0..5 {
            assert_eq!(throttle.check("alice", 100 + t), Ok(()));
            throttle.record_failure("alice", 100 + t);
        }
        assert_eq!(throttle.check("alice", 110), Err(50));
        assert_eq!(throttle.check("bob", 110), Ok(()));
        assert_eq!(throttle.check("alice", 160), Ok(()));
    }

    #[test]
    fn success_clears_and_memory_stays_bounded() {
        let mut throttle = LoginThrottle::new();
        for t in 0..4 {
            throttle.record_failure("alice", t);
        }
        throttle.record_success("alice");
        for t in 0..4 {
            throttle.record_failure("alice", 10 + t);
        }
        assert_eq!(throttle.check("alice", 20), Ok(()));
        for i in 0..(MAX_TRACKED_NAMES + 50) {
            throttle.record_failure(&format!("name{i}"), 30);
        }
        assert!(throttle.failures.len() <= MAX_TRACKED_NAMES);
    }
}
