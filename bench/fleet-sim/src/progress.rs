//! When each simulated edge got a published change applied: the time from
//! the publish to the heartbeat answer that reported the new version (the
//! moment the manager knows the edge runs it).
//!
//! Invariant: an edge counts once per measurement, and only for a version
//! above the baseline the measurement started from.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Progress {
    inner: Mutex<Option<Measurement>>,
}

struct Measurement {
    baseline: u64,
    started: Instant,
    counted: Vec<bool>,
    times: Vec<Duration>,
}

impl Progress {
    /// Starts counting the `edges` edges that report a version above
    /// `baseline`, from now.
    pub fn start(&self, baseline: u64, edges: usize) {
        *self.lock() = Some(Measurement {
            baseline,
            started: Instant::now(),
            counted: vec![false; edges],
            times: Vec::with_capacity(edges),
        });
    }

    /// An edge's heartbeat with `applied` was answered.
    pub fn record(&self, edge: usize, applied: u64) {
        let mut guard = self.lock();
        let Some(m) = guard.as_mut() else { return };
        if applied > m.baseline && m.counted.get(edge) == Some(&false) {
            m.counted[edge] = true;
            let elapsed = m.started.elapsed();
            m.times.push(elapsed);
        }
    }

    pub fn count(&self) -> usize {
        self.lock().as_ref().map_or(0, |m| m.times.len())
    }

    /// The times so far, and ends the measurement.
    pub fn finish(&self) -> Vec<Duration> {
        self.lock().take().map(|m| m.times).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Measurement>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_edge_counts_once_and_only_above_the_baseline() {
        let progress = Progress::default();
        progress.record(0, 5);
        assert_eq!(progress.count(), 0, "nothing before start");
        progress.start(3, 3);
        progress.record(0, 3);
        assert_eq!(progress.count(), 0, "the baseline itself is old");
        progress.record(0, 4);
        progress.record(0, 4);
        progress.record(2, 9);
        progress.record(7, 9);
        assert_eq!(progress.count(), 2);
        assert_eq!(progress.finish().len(), 2);
        assert_eq!(progress.count(), 0);
    }
}
