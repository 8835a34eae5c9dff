//! One stored object: its file, its head, which byte extents are on disk, and
//! the signal that wakes readers when more bytes land.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use outpost_http::{ByteRange, CacheKey, RangeSet};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::head::StoredHead;
use crate::small_body::{SMALL_BODY_MAX, SmallBudget};

/// Where an object is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Some bytes may be missing; a fill may or may not be running.
    Filling,
    /// Every byte of the known length is on disk and synced.
    Complete,
    /// The object must not be read any further (changed upstream, purged,
    /// failed to write). Readers stop; bytes already sent were correct.
    Failed(String),
}

/// What a reader waiting at an offset gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Bytes from the offset up to (excluding) this end are on disk.
    Ready(u64),
    /// The offset is at or past the end of the object.
    End,
    /// The object failed: stop reading.
    Failed(String),
}

/// An object's head and length, read together.
#[derive(Debug, Clone)]
pub struct HeadAndLen {
    pub head: Arc<StoredHead>,
    pub len: Option<u64>,
}

/// A consistent copy of an object's state.
#[derive(Debug, Clone)]
pub struct ObjectSnapshot {
    pub head: Arc<StoredHead>,
    pub len: Option<u64>,
    pub phase: Phase,
    pub present: RangeSet,
    pub pinned: bool,
}

pub(crate) struct State {
    pub head: Arc<StoredHead>,
    pub len: Option<u64>,
    pub present: RangeSet,
    pub phase: Phase,
    pub pinned: bool,
    /// Bytes written since the last checkpoint.
    pub unsynced: u64,
}

pub struct Object {
    key: CacheKey,
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    pub(crate) hits: AtomicU64,
    pub(crate) last_access: AtomicI64,
    pub(crate) access_dirty: AtomicBool,
    /// The object failed for a local reason (the disk): the origin's copy
    /// is as good as ever, and a reader may take the rest from it.
    failed_locally: AtomicBool,
    /// The body must match a digest before it is complete: readers get
    /// every byte but the last until it has, so that no client ever holds
    /// a whole body that fails the check.
    hold_last_byte: AtomicBool,
    /// The body of a small complete object, kept in memory (see `small_body`).
    small: OnceLock<Option<Bytes>>,
    small_budget: Arc<SmallBudget>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

impl Object {
    pub(crate) fn new(
        key: CacheKey,
        id: u64,
        path: PathBuf,
        file: File,
        state: State,
        small_budget: Arc<SmallBudget>,
    ) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            key,
            id,
            path,
            file: Arc::new(file),
            state: Mutex::new(state),
            version,
            hits: AtomicU64::new(0),
            last_access: AtomicI64::new(0),
            access_dirty: AtomicBool::new(false),
            failed_locally: AtomicBool::new(false),
            hold_last_byte: AtomicBool::new(false),
            small: OnceLock::new(),
            small_budget,
        }
    }

    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this crate; the
        // state itself stays consistent (every update is a single assignment
        // or RangeSet::insert), so keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> ObjectSnapshot {
        let s = self.state();
        ObjectSnapshot {
            head: s.head.clone(),
            len: s.len,
            phase: s.phase.clone(),
            present: s.present.clone(),
            pinned: s.pinned,
        }
    }

    /// Head and length without copying the extents (the hit path).
    pub fn head_and_len(&self) -> HeadAndLen {
        let s = self.state();
        HeadAndLen {
            head: s.head.clone(),
            len: s.len,
        }
    }

    pub fn head(&self) -> Arc<StoredHead> {
        self.state().head.clone()
    }

    pub fn len(&self) -> Option<u64> {
        self.state().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    pub fn phase(&self) -> Phase {
        self.state().phase.clone()
    }

    pub fn is_complete(&self) -> bool {
        self.state().phase == Phase::Complete
    }

    /// The parts of `range` not on disk yet.
    pub fn missing(&self, range: ByteRange) -> Vec<ByteRange> {
        self.state().present.gaps(range)
    }

    /// Bumps the version so that every waiting reader looks again.
    pub(crate) fn notify(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records the representation length once it is known. Returns false if
    /// it contradicts a length recorded earlier (the origin changed).
    pub fn set_len(&self, len: u64) -> bool {
        let mut s = self.state();
        match s.len {
            Some(known) => known == len,
            None => {
                s.len = Some(len);
                s.present.truncate(len);
                drop(s);
                self.notify();
                true
            }
        }
    }

    /// Writes `data` at `offset` and makes it readable. Returns how many new
    /// bytes this added to the object's footprint.
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<u64, StoreError> {
        if data.is_empty() {
            return Ok(0);
        }
        let file = self.file.clone();
        let len = data.len() as u64;
        let written = tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(|_| StoreError::Task)?;
        written.map_err(|e| StoreError::file(&self.path, e))?;
        let added = {
            let mut s = self.state();
            let before = s.present.covered();
            s.present.insert(ByteRange::new(offset, offset + len));
            if let Some(l) = s.len {
                s.present.truncate(l);
            }
            s.unsynced += len;
            s.present.covered() - before
        };
        self.notify();
        Ok(added)
    }

    /// Reads up to `max` bytes at `offset`; the caller has checked that they
    /// are present.
    pub async fn read(&self, offset: u64, max: usize) -> Result<Bytes, StoreError> {
        let file = self.file.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; max];
            let mut filled = 0;
            while filled < max {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        })
        .await
        .map_err(|_| StoreError::Task)?;
        let buf = result.map_err(|e| StoreError::file(&self.path, e))?;
        if buf.len() < max {
            return Err(StoreError::file(
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "object file shorter than its extents",
                ),
            ));
        }
        Ok(Bytes::from(buf))
    }

    /// How far bytes are available from `offset`, without waiting.
    pub fn availability(&self, offset: u64) -> Availability {
        let s = self.state();
        if let Phase::Failed(reason) = &s.phase {
            return Availability::Failed(reason.clone());
        }
        if s.len.is_some_and(|l| offset >= l) {
            return Availability::End;
        }
        let mut end = s.present.contiguous_end(offset);
        if s.phase != Phase::Complete
            && self
                .hold_last_byte
                .load(std::sync::atomic::Ordering::Acquire)
        {
            // With the length unknown (a chunked body) the last byte present
            // may be the last of all: it waits too.
            let last = s.len.unwrap_or(end);
            end = end.min(last.saturating_sub(1)).max(offset);
        }
        if end > offset {
            Availability::Ready(end)
        } else if s.phase == Phase::Complete {
            // Complete with an unknown length cannot happen; complete means
            // every byte up to the length is present.
            Availability::End
        } else {
            Availability::Ready(offset)
        }
    }

    /// Waits until at least one byte at `offset` is on disk, the object ends
    /// there, or the object fails.
    pub async fn wait_available(&self, offset: u64) -> Availability {
        loop {
            let mut changes = self.subscribe();
            match self.availability(offset) {
                Availability::Ready(end) if end == offset => {}
                other => return other,
            }
            if changes.changed().await.is_err() {
                return Availability::Failed("object dropped".into());
            }
        }
    }

    /// Whether readers are kept from the last byte until a digest check.
    pub fn holds_last_byte(&self) -> bool {
        self.hold_last_byte
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Holds (or releases) the last byte from readers until the object is
    /// complete, i.e. has passed its digest check.
    pub(crate) fn set_hold_last_byte(&self, hold: bool) {
        self.hold_last_byte
            .store(hold, std::sync::atomic::Ordering::Release);
        self.notify();
    }

    /// Whether the object failed because the edge could not keep it (see
    /// [`crate::Store::fail_locally`]), not because of its content.
    pub fn failed_locally(&self) -> bool {
        self.failed_locally
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn mark_failed_locally(&self) {
        self.failed_locally
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn fail(&self, reason: &str) {
        {
            let mut s = self.state();
            if s.phase != Phase::Failed(reason.to_string()) {
                s.phase = Phase::Failed(reason.to_string());
            }
        }
        self.notify();
    }

    /// The object's file, for sending present bytes with sendfile.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The whole body of a small complete object, read once and kept in
    /// memory, so a hit is one write of head and body. `None` for objects
    /// above `SMALL_BODY_MAX`, incomplete ones, or when the memory budget
    /// for small bodies is used up.
    pub fn small_body(&self) -> Option<Bytes> {
        let len = {
            let s = self.state();
            if s.phase != Phase::Complete {
                return None;
            }
            s.len?
        };
        if len > SMALL_BODY_MAX {
            return None;
        }
        self.small
            .get_or_init(|| {
                if !self.small_budget.reserve(len) {
                    return None;
                }
                let mut buf = vec![0u8; len as usize];
                match self.file.read_exact_at(&mut buf, 0) {
                    Ok(()) => Some(Bytes::from(buf)),
                    Err(e) => {
                        self.small_budget.release(len);
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot read small object");
                        None
                    }
                }
            })
            .clone()
    }

    /// Whether every byte of the known length is present.
    pub fn is_fully_present(&self) -> bool {
        let s = self.state();
        s.len
            .is_some_and(|l| s.present.contains(ByteRange::new(0, l)))
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if let Some(Some(body)) = self.small.get() {
            self.small_budget.release(body.len() as u64);
        }
    }
}
