//! Byte ranges: the `RangeSet` that tracks which bytes of an object are on
//! disk, and the parsers for `Range` (RFC 9110 section 14.2) and
//! `Content-Range` (section 14.4).

use std::fmt;

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn new(start: u64, end: u64) -> Self {
        debug_assert!(start <= end, "range start {start} after end {end}");
        Self { start, end }
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// The `Range` request header asking for these bytes (`bytes=10-` when
    /// the end is unknown, `u64::MAX`).
    pub fn request_header(&self) -> http::HeaderValue {
        let value = if self.end == u64::MAX {
            format!("bytes={}-", self.start)
        } else {
            format!("bytes={}-{}", self.start, self.end.saturating_sub(1))
        };
        http::HeaderValue::from_str(&value).expect("digits and ASCII are a valid header value")
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// A set of disjoint, non-adjacent half-open ranges, kept sorted.
///
/// Used for the extents of a partial object: which bytes are on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeSet {
    /// Sorted, disjoint and non-adjacent `(start, end)` pairs.
    spans: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from arbitrary pairs (as read back from an index); empty and
    /// inverted pairs are dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = Self::new();
        for (start, end) in pairs {
            if start < end {
                set.insert(ByteRange::new(start, end));
            }
        }
        set
    }

    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Total number of bytes covered.
    pub fn covered(&self) -> u64 {
        self.spans.iter().map(|(s, e)| e - s).sum()
    }

    /// Adds a range, merging it with any range it overlaps or touches.
    pub fn insert(&mut self, range: ByteRange) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // First span whose end reaches `start` (touching counts).
        let first = self.spans.partition_point(|&(_, e)| e < start);
        let mut last = first;
        while last < self.spans.len() && self.spans[last].0 <= end {
            start = start.min(self.spans[last].0);
            end = end.max(self.spans[last].1);
            last += 1;
        }
        self.spans
            .splice(first..last, std::iter::once((start, end)));
    }

    /// Keeps only the bytes below `limit`.
    pub fn truncate(&mut self, limit: u64) {
        self.spans.retain(|&(s, _)| s < limit);
        if let Some(last) = self.spans.last_mut() {
            last.1 = last.1.min(limit);
        }
    }

    /// Does the set hold every byte of `range`?
    pub fn contains(&self, range: ByteRange) -> bool {
        if range.is_empty() {
            return true;
        }
        let idx = self.spans.partition_point(|&(_, e)| e <= range.start);
        self.spans
            .get(idx)
            .is_some_and(|&(s, e)| s <= range.start && range.end <= e)
    }

    /// The end of the contiguous run of present bytes that starts at or covers
    /// `offset`, or `offset` itself when that byte is missing.
    pub fn contiguous_end(&self, offset: u64) -> u64 {
        let idx = self.spans.partition_point(|&(_, e)| e <= offset);
        match self.spans.get(idx) {
            Some(&(s, e)) if s <= offset => e,
            _ => offset,
        }
    }

    /// The missing sub-ranges of `range`, in order.
    pub fn gaps(&self, range: ByteRange) -> Vec<ByteRange> {
        let mut gaps = Vec::new();
        let mut cursor = range.start;
        for &(s, e) in &self.spans {
            if e <= cursor {
                continue;
            }
            if s >= range.end {
                break;
            }
            if s > cursor {
                gaps.push(ByteRange::new(cursor, s.min(range.end)));
            }
            cursor = cursor.max(e);
            if cursor >= range.end {
                break;
            }
        }
        if cursor < range.end {
            gaps.push(ByteRange::new(cursor, range.end));
        }
        gaps
    }
}

/// One `byte-range-spec` or `suffix-byte-range-spec` of a `Range` header,
/// before the representation length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` (inclusive) or `first-` (`last` is `None`).
    FromTo { first: u64, last: Option<u64> },
    /// `-suffix`: the last `suffix` bytes.
    Suffix(u64),
}

/// Why a `Range` header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `bytes=`, or syntactically invalid: RFC 9110 says to ignore it.
    #[error("malformed or unsupported Range header")]
    Invalid,
    /// Valid but no range overlaps the representation: 416.
    #[error("no requested range is satisfiable")]
    Unsatisfiable,
}

/// At most this many ranges in one header; more is a denial-of-service pattern
/// (RFC 9110 section 14.2 lets a server ignore such a request's ranges).
pub const MAX_RANGES: usize = 64;

/// Parses a `Range` header value.
pub fn parse_range_header(value: &str) -> Result<Vec<RangeSpec>, RangeError> {
    let value = value.trim();
    let Some(set) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return Err(RangeError::Invalid);
    };
    let mut specs = Vec::new();
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return Err(RangeError::Invalid);
        }
        let (first, last) = part.split_once('-').ok_or(RangeError::Invalid)?;
        let (first, last) = (first.trim(), last.trim());
        let spec = if first.is_empty() {
            RangeSpec::Suffix(parse_digits(last)?)
        } else {
            let first = parse_digits(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(parse_digits(last)?)
            };
            if last.is_some_and(|l| l < first) {
                return Err(RangeError::Invalid);
            }
            RangeSpec::FromTo { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(RangeError::Invalid);
    }
    Ok(specs)
}

fn parse_digits(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Invalid);
    }
    s.parse().map_err(|_| RangeError::Invalid)
}

impl RangeSpec {
    /// The bytes this spec selects in a representation of `len` bytes, or
    /// `None` when it selects none.
    pub fn resolve(self, len: u64) -> Option<ByteRange> {
        match self {
            RangeSpec::FromTo { first, last } => {
                if first >= len {
                    return None;
                }
                let end = last.map_or(len, |l| l.saturating_add(1).min(len));
                Some(ByteRange::new(first, end))
            }
            // A suffix of an empty representation selects nothing: 416
            // (RFC 9110 section 14.1.3), not an empty 206.
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(_) if len == 0 => None,
            RangeSpec::Suffix(n) => Some(ByteRange::new(len.saturating_sub(n), len)),
        }
    }

    /// The range this spec asks for when the length is not known yet, if it
    /// can be expressed without it (suffixes cannot).
    pub fn known_start(self) -> Option<(u64, Option<u64>)> {
        match self {
            RangeSpec::FromTo { first, last } => Some((first, last.map(|l| l.saturating_add(1)))),
            RangeSpec::Suffix(_) => None,
        }
    }
}

/// Resolves the specs against a length: the ranges to send, in request order.
/// Overlapping ranges are coalesced (RFC 9110 section 14.2 allows it, and it
/// defeats the "many overlapping ranges" amplification).
pub fn resolve_ranges(specs: &[RangeSpec], len: u64) -> Result<Vec<ByteRange>, RangeError> {
    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|s| s.resolve(len)).collect();
    if ranges.is_empty() {
        return Err(RangeError::Unsatisfiable);
    }
    if ranges.len() > 1 {
        ranges.sort();
        let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        ranges = merged;
    }
    Ok(ranges)
}

/// A parsed `Content-Range: bytes first-last/complete` of a 206 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub range: ByteRange,
    /// The complete length, when the server gave it (`*` otherwise).
    pub complete_len: Option<u64>,
}

impl ContentRange {
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.trim();
        let rest = rest
            .get(..6)
            .filter(|u| u.eq_ignore_ascii_case("bytes "))
            .map(|_| rest[6..].trim_start())?;
        let (span, complete) = rest.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        let first = parse_digits(first.trim()).ok()?;
        let last = parse_digits(last.trim()).ok()?;
        if last < first {
            return None;
        }
        let complete_len = match complete.trim() {
            "*" => None,
            n => Some(parse_digits(n).ok()?),
        };
        if complete_len.is_some_and(|c| last >= c) {
            return None;
        }
        Some(Self {
            range: ByteRange::new(first, last.checked_add(1)?),
            complete_len,
        })
    }

    /// The header value for `range` of a representation of `len` bytes.
    pub fn header_value(range: ByteRange, len: u64) -> String {
        format!(
            "bytes {}-{}/{}",
            range.start,
            range.end.saturating_sub(1),
            len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_satisfiable_in_an_empty_representation() {
        // Found by the `range` fuzz target: `bytes=-2` on a 0-byte object
        // resolved to an empty range.
        for header in ["bytes=-2", "bytes=0-", "bytes=0-0", "bytes=-2, 0-"] {
            let specs = parse_range_header(header).unwrap();
            assert_eq!(
                resolve_ranges(&specs, 0),
                Err(RangeError::Unsatisfiable),
                "{header}"
            );
        }
    }

    #[test]
    fn range_set_merges_overlapping_and_adjacent() {
        let mut set = RangeSet::new();
        set.insert(ByteRange::new(10, 20));
        set.insert(ByteRange::new(30, 40));
        set.insert(ByteRange::new(20, 25));
        assert_eq!(set.pairs(), &[(10, 25), (30, 40)]);
        set.insert(ByteRange::new(0, 35));
        assert_eq!(set.pairs(), &[(0, 40)]);
        assert_eq!(set.covered(), 40);
    }

    #[test]
    fn range_set_gaps_and_contains() {
        let set = RangeSet::from_pairs([(10, 20), (30, 40)]);
        assert_eq!(
            set.gaps(ByteRange::new(0, 50)),
            vec![
                ByteRange::new(0, 10),
                ByteRange::new(20, 30),
                ByteRange::new(40, 50)
            ]
        );
        assert_eq!(set.gaps(ByteRange::new(12, 18)), vec![]);
        assert_eq!(
            set.gaps(ByteRange::new(15, 35)),
            vec![ByteRange::new(20, 30)]
        );
        assert!(set.contains(ByteRange::new(10, 20)));
        assert!(!set.contains(ByteRange::new(10, 21)));
        assert_eq!(set.contiguous_end(12), 20);
        assert_eq!(set.contiguous_end(25), 25);
    }

    #[test]
    fn range_set_truncate() {
        let mut set = RangeSet::from_pairs([(0, 10), (20, 30)]);
        set.truncate(25);
        assert_eq!(set.pairs(), &[(0, 10), (20, 25)]);
        set.truncate(5);
        assert_eq!(set.pairs(), &[(0, 5)]);
    }

    #[test]
    fn parses_range_forms() {
        assert_eq!(
            parse_range_header("bytes=0-99, 200-, -50").unwrap(),
            vec![
                RangeSpec::FromTo {
                    first: 0,
                    last: Some(99)
                },
                RangeSpec::FromTo {
                    first: 200,
                    last: None
                },
                RangeSpec::Suffix(50)
            ]
        );
        assert_eq!(parse_range_header("items=0-1"), Err(RangeError::Invalid));
        assert_eq!(parse_range_header("bytes=5-1"), Err(RangeError::Invalid));
        assert_eq!(parse_range_header("bytes=a-1"), Err(RangeError::Invalid));
        assert_eq!(
            parse_range_header("bytes=99999999999999999999-"),
            Err(RangeError::Invalid)
        );
    }

    #[test]
    fn resolves_against_length() {
        let specs = parse_range_header("bytes=0-9,5-19,-5,1000-").unwrap();
        assert_eq!(
            resolve_ranges(&specs, 100).unwrap(),
            vec![ByteRange::new(0, 20), ByteRange::new(95, 100)]
        );
        let specs = parse_range_header("bytes=100-").unwrap();
        assert_eq!(resolve_ranges(&specs, 100), Err(RangeError::Unsatisfiable));
        let specs = parse_range_header("bytes=90-200").unwrap();
        assert_eq!(
            resolve_ranges(&specs, 100).unwrap(),
            vec![ByteRange::new(90, 100)]
        );
    }

    #[test]
    fn parses_content_range() {
        let cr = ContentRange::parse("bytes 0-99/1000").unwrap();
        assert_eq!(cr.range, ByteRange::new(0, 100));
        assert_eq!(cr.complete_len, Some(1000));
        assert_eq!(
            ContentRange::parse("bytes 0-99/*").unwrap().complete_len,
            None
        );
        assert!(ContentRange::parse("bytes 0-1000/1000").is_none());
        assert!(ContentRange::parse("bytes 9-1/100").is_none());
        assert!(ContentRange::parse("bytes */100").is_none());
        assert_eq!(
            ContentRange::header_value(ByteRange::new(0, 100), 1000),
            "bytes 0-99/1000"
        );
    }
}
