//! Collapsed forwarding: one upstream request per key for every client
//! that wants it at once, and what its leader found.

use super::*;

pub(super) type PendingMap = HashMap<CacheKey, watch::Receiver<Option<Outcome>>>;

impl Outcome {
    pub(super) fn passthrough(resp: Response<Incoming>) -> Self {
        Self::Passthrough(resp.status(), Arc::new(Mutex::new(Some(resp))))
    }
}

/// What a collapsed caller gets: the outcome, and whether its own request
/// was the one sent (it led) or it waited on another client's.
pub(crate) struct Collapsed {
    pub outcome: Outcome,
    pub led: bool,
}

/// What the leader of a collapsed miss or revalidation found.
#[derive(Clone)]
pub(crate) enum Outcome {
    Fill(Arc<ObjectFill>),
    Refreshed(Arc<Object>),
    Stale(Arc<Object>),
    /// Not storable: the response is for the leader's request only (it may
    /// be private to that client); every other waiter makes its own request.
    Passthrough(StatusCode, Arc<Mutex<Option<Response<Incoming>>>>),
    Failed(Failure),
    /// The destination guard refused the client's destination.
    Refused(crate::destination::Refusal),
    /// `max_fills` fills run already: the client should come back.
    Busy,
}

/// Which side a failed fetch failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedSide {
    /// The origin could not be reached, or broke off.
    Origin,
    /// The edge's disk or index refused the object.
    Disk,
}

/// Why a leader's fetch produced nothing to serve, as pingora's errors
/// say it: the side that failed, and whether asking again later makes
/// sense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    pub side: FailedSide,
    /// A later attempt may succeed (the origin was down, the disk full);
    /// false when the same request would fail the same way.
    pub retry: bool,
    pub reason: String,
}

impl Failure {
    pub(crate) fn origin(reason: impl std::fmt::Display) -> Self {
        Self {
            side: FailedSide::Origin,
            retry: true,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn disk(reason: impl std::fmt::Display) -> Self {
        Self {
            side: FailedSide::Disk,
            retry: true,
            reason: reason.to_string(),
        }
    }
}

impl Engine {
    /// Runs `work` once for all concurrent callers with the same key; `None`
    /// means the caller should look again: the leader vanished, or the key
    /// moved on since the caller's lookup found the object `seen` (a leader
    /// that finished just before this call already stored or is filling
    /// what the caller would fetch a second time).
    pub(crate) async fn collapse(
        &self,
        key: &CacheKey,
        seen: Option<u64>,
        work: impl Future<Output = Outcome> + Send + 'static,
    ) -> Option<Collapsed> {
        let (mut rx, led) = loop {
            if let Some(rx) = lock(&self.pending).get(key).cloned() {
                break (rx, false);
            }
            // A leader removes itself only after its fill is attached, so
            // once no leader is seen, its work is visible here.
            if self.moved_on(key, seen) {
                return None;
            }
            let mut pending = lock(&self.pending);
            if pending.contains_key(key) {
                continue;
            }
            let (tx, rx) = watch::channel(None);
            pending.insert(key.clone(), rx.clone());
            let pending_map = self.pending.clone();
            let key = key.clone();
            // The leader runs on its own so that a client hanging up does
            // not cancel the fetch everyone waits for. Interim responses
            // to its request go to the client that led, not the joiners.
            let interim = crate::interim::current();
            tokio::spawn(crate::interim::scope(interim, async move {
                let outcome = work.await;
                lock(&pending_map).remove(&key);
                let _ = tx.send(Some(outcome));
            }));
            break (rx, true);
        };
        // Counted while it waits, however the wait ends (a client that
        // hangs up drops this future).
        struct Waiting<'a>(Option<&'a std::sync::atomic::AtomicUsize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if let Some(n) = self.0 {
                    n.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let _waiting = Waiting((!led).then(|| {
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            &self.waiting
        }));
        match rx.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone().map(|outcome| Collapsed { outcome, led }),
            Err(_) => None,
        }
    }

    /// Requests waiting on another's upstream request that has not answered
    /// yet (a stampede's followers before the first byte).
    pub fn waiting_on_others(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a fill started or the stored object changed under `key`
    /// since a lookup found the object `seen` (by id).
    pub(super) fn moved_on(&self, key: &CacheKey, seen: Option<u64>) -> bool {
        let filling = self
            .fills
            .active(key)
            .is_some_and(|f| Some(f.object.id()) != seen && !f.object.is_complete());
        filling || self.store.get(key).ok().flatten().map(|o| o.id()) != seen
    }
}
