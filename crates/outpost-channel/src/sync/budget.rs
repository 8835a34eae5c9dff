//! What one channel may hold during a run: the limits it ran into
//! ([`LimitLog`]) and the files and bytes it holds against `max_files` and
//! `max_bytes` ([`Budget`]). Plain bookkeeping, no I/O.
//!
//! Invariant: what a file reserved is given back or settled exactly once,
//! so the counts never drift from what the channel holds.

use outpost_protocol::LimitHit;

/// The limits a run ran into, one entry per limit.
#[derive(Default)]
pub(super) struct LimitLog(pub(super) Vec<LimitHit>);

impl LimitLog {
    pub(super) fn hit(&mut self, limit: &str, value: Option<u64>, url: &str) {
        match self.0.iter_mut().find(|h| h.limit == limit) {
            Some(h) => h.times += 1,
            None => self.0.push(LimitHit {
                limit: limit.to_string(),
                value,
                url: url.to_string(),
                times: 1,
            }),
        }
    }

    /// Adds `later`'s hits (a limit hit in both keeps its first URL).
    pub(super) fn merge(&mut self, later: LimitLog) {
        for hit in later.0 {
            match self.0.iter_mut().find(|h| h.limit == hit.limit) {
                Some(h) => h.times += hit.times,
                None => self.0.push(hit),
            }
        }
    }
}

/// What a channel holds during a run, against max_files and max_bytes:
/// first the files it keeps whatever the run brings, then each file as it
/// is admitted and, once its length is known, settled.
pub(super) struct Budget {
    pub(super) max_files: u64,
    pub(super) max_bytes: Option<u64>,
    pub(super) files: u64,
    pub(super) bytes: u64,
    /// A file did not fit in max_bytes: no new file starts after it.
    pub(super) full: bool,
    /// Each file kept out, in the order it was.
    pub(super) hits: LimitLog,
}

/// What one admitted file counts for in the [`Budget`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    /// The length the channel held of the file before the run (counted
    /// already), if it held it.
    pub(super) held: Option<u64>,
    pub(super) reserved: u64,
}

impl Budget {
    /// Admits a file of `size` (from the manifest; `None`: known once its
    /// response arrives), or notes the limit that keeps it out. A file of
    /// unknown size starts while there is room left; a file the channel
    /// holds is refreshed unless it is known to grow past the limit.
    pub(super) fn admit(
        &mut self,
        url: &str,
        size: Option<u64>,
        held: Option<u64>,
    ) -> Option<Admission> {
        if held.is_none() && self.files >= self.max_files {
            self.hits.hit("max_files", Some(self.max_files), url);
            return None;
        }
        let mut reserved = 0;
        if let Some(max) = self.max_bytes {
            let grow = match (size, held) {
                (Some(s), Some(h)) => s.saturating_sub(h),
                (Some(s), None) => s,
                (None, _) => 0,
            };
            let fits = match held {
                Some(_) => grow == 0 || self.bytes.saturating_add(grow) <= max,
                None => {
                    !self.full
                        && self.bytes.saturating_add(grow) <= max
                        && (size.is_some() || self.bytes < max)
                }
            };
            if !fits {
                // Files are taken in listing order until the budget is
                // full, not picked to fill it: the result is predictable.
                self.full = true;
                self.hits.hit("max_bytes", self.max_bytes, url);
                return None;
            }
            reserved = grow;
            self.bytes += grow;
        }
        if held.is_none() {
            self.files += 1;
        }
        Some(Admission { held, reserved })
    }

    /// Counts a fetched file at its real length; false when a file the
    /// channel did not hold does not fit (it is not to be kept).
    pub(super) fn settle(&mut self, a: Admission, len: u64, url: &str) -> bool {
        self.bytes = self
            .bytes
            .saturating_sub(a.reserved.saturating_add(a.held.unwrap_or(0)))
            .saturating_add(len);
        let Some(max) = self.max_bytes else {
            return true;
        };
        if self.bytes <= max {
            return true;
        }
        self.full = true;
        if a.held.is_some() {
            // Its new version replaced the one held: nothing to give back.
            return true;
        }
        self.bytes = self.bytes.saturating_sub(len);
        self.files = self.files.saturating_sub(1);
        self.hits.hit("max_bytes", self.max_bytes, url);
        false
    }

    /// Gives back what a file that was not brought in reserved.
    pub(super) fn release(&mut self, a: Admission) {
        self.bytes = self.bytes.saturating_sub(a.reserved);
        if a.held.is_none() {
            self.files = self.files.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_files: u64, max_bytes: Option<u64>) -> Budget {
        Budget {
            max_files,
            max_bytes,
            files: 0,
            bytes: 0,
            full: false,
            hits: LimitLog::default(),
        }
    }

    #[test]
    fn files_of_unknown_size_start_while_there_is_room_and_the_one_past_is_not_kept() {
        let mut b = budget(100, Some(250));
        let first = b.admit("u0", None, None).unwrap();
        assert!(b.settle(first, 100, "u0"));
        let second = b.admit("u1", None, None).unwrap();
        assert!(b.settle(second, 100, "u1"));
        let third = b.admit("u2", None, None).unwrap();
        assert!(!b.settle(third, 100, "u2"), "past max_bytes");
        assert_eq!((b.files, b.bytes), (2, 200));
        // Room is left, but the budget is full: nothing new starts.
        assert!(b.admit("u3", Some(10), None).is_none());
        assert_eq!(b.hits.0[0].url, "u2");
        assert_eq!(b.hits.0[0].times, 2);
    }

    #[test]
    fn held_files_count_first_and_are_refreshed_unless_they_grow_past_the_limit() {
        let mut b = budget(2, Some(1000));
        b.files = 2;
        b.bytes = 900;
        assert!(b.admit("new", Some(1), None).is_none(), "max_files");
        assert_eq!(b.hits.0[0].limit, "max_files");
        let same = b.admit("held", None, Some(400)).unwrap();
        assert!(b.settle(same, 400, "held"));
        assert_eq!(b.bytes, 900);
        assert!(
            b.admit("held", Some(600), Some(400)).is_none(),
            "grows past"
        );
        let shrinks = b.admit("held", Some(300), Some(400)).unwrap();
        assert!(b.settle(shrinks, 300, "held"));
        assert_eq!((b.files, b.bytes), (2, 800));
    }

    #[test]
    fn a_failed_file_gives_its_reservation_back() {
        let mut b = budget(1, Some(1000));
        let a = b.admit("u", Some(600), None).unwrap();
        assert_eq!((b.files, b.bytes), (1, 600));
        b.release(a);
        assert_eq!((b.files, b.bytes), (0, 0));
        assert!(b.admit("v", Some(1000), None).is_some());
    }
}
