//! What the client side counts: bytes written by where they came from,
//! responses by verdict, and requests and bytes by how they reached the
//! edge (the proxy's modes, the library listener's ways in).

use crate::cache_status::{ByteSource, CacheStatus};

/// Bytes written to clients, by where the response came from: the savings
/// figure is `from_cache + from_fills` against what the fills fetched.
#[derive(Default)]
pub struct ServedBytes {
    /// Hits, revalidated and stale responses: from disk.
    pub from_cache: std::sync::atomic::AtomicU64,
    /// Responses streamed from a fill (misses, collapsed, partial hits).
    pub from_fills: std::sync::atomic::AtomicU64,
    /// Passed through, errors and the edge's own answers.
    pub other: std::sync::atomic::AtomicU64,
    /// Requests and bytes by the mode they reached the edge in, indexed by
    /// [`Mode`].
    pub mode_requests: [std::sync::atomic::AtomicU64; 3],
    pub mode_bytes: [std::sync::atomic::AtomicU64; 3],
    /// Responses by cache verdict, indexed like [`CacheStatus::ALL`].
    pub by_status: [std::sync::atomic::AtomicU64; CacheStatus::ALL.len()],
    /// Requests and bytes of the library listener's ways in, indexed by
    /// [`LibraryWay`] then by where the bytes came from (cache, fill,
    /// other: a hit, a miss, anything else).
    pub library_requests: [[std::sync::atomic::AtomicU64; 3]; LibraryWay::ALL.len()],
    pub library_bytes: [[std::sync::atomic::AtomicU64; 3]; LibraryWay::ALL.len()],
}

/// How a request on the library listener was served; set on the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryWay {
    DeliveryOptimization = 0,
    DnsMode = 1,
    Pac = 2,
    Local = 3,
}

impl LibraryWay {
    pub const ALL: [LibraryWay; 4] = [
        LibraryWay::DeliveryOptimization,
        LibraryWay::DnsMode,
        LibraryWay::Pac,
        LibraryWay::Local,
    ];
}

/// The index of a byte source in [`ServedBytes::library_requests`].
pub fn source_index(source: ByteSource) -> usize {
    match source {
        ByteSource::Cache => 0,
        ByteSource::Fill => 1,
        ByteSource::Other => 2,
    }
}

/// How a request reached the edge; set on the response by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward = 0,
    Transparent = 1,
    Reverse = 2,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Forward, Mode::Transparent, Mode::Reverse];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Transparent => "transparent",
            Mode::Reverse => "reverse",
        }
    }
}

impl ServedBytes {
    pub(super) fn counter(&self, verdict: CacheStatus) -> &std::sync::atomic::AtomicU64 {
        match verdict.source() {
            ByteSource::Cache => &self.from_cache,
            ByteSource::Fill => &self.from_fills,
            ByteSource::Other => &self.other,
        }
    }

    /// Responses sent with each cache verdict.
    pub fn responses(&self) -> impl Iterator<Item = (CacheStatus, u64)> + '_ {
        CacheStatus::ALL
            .into_iter()
            .zip(&self.by_status)
            .map(|(status, n)| (status, n.load(std::sync::atomic::Ordering::Relaxed)))
    }
}
