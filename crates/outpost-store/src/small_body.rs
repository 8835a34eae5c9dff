//! The memory budget for small complete bodies kept in memory (a hit on
//! one is a single write of head and body).
//!
//! A leaf module: `object` charges its copies to the budget and `store`
//! creates it, so neither needs the other for it (no `object` <-> `store`
//! import cycle).

use std::sync::atomic::{AtomicU64, Ordering};

/// Complete objects up to this size are served from a copy in memory.
pub const SMALL_BODY_MAX: u64 = 16 * 1024;
/// Memory for those copies, in all.
pub(crate) const SMALL_BODIES_BUDGET: u64 = 8 * 1024 * 1024;

/// Bytes of memory that small-body copies may still take.
pub(crate) struct SmallBudget(AtomicU64);

impl SmallBudget {
    pub(crate) fn new(bytes: u64) -> Self {
        Self(AtomicU64::new(bytes))
    }

    pub(crate) fn reserve(&self, n: u64) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    pub(crate) fn release(&self, n: u64) {
        self.0.fetch_add(n, Ordering::AcqRel);
    }
}
