//! The store: opening and reconciling a cache directory, finding and creating
//! objects, checkpoints, completion, pins and eviction.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use outpost_http::{ByteRange, CacheKey, RangeSet};

use crate::error::StoreError;
use crate::head::StoredHead;
use crate::index::{Index, Row};
use crate::layout::object_path;
use crate::lock::DirLock;
use crate::object::{Object, Phase, State};
use crate::reconcile::reconcile;
use crate::small_body::{SMALL_BODIES_BUDGET, SmallBudget};

mod digest;
mod evict;
mod files;

pub use digest::VerifyReport;
use digest::{sha256_file, sha256_while_stored};
use files::{private_dir, private_index_files};

/// Where the store lives and how big it may grow.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Byte limit of the bodies on disk.
    pub max_bytes: u64,
    /// Eviction starts above `max_bytes * high_watermark` ...
    pub high_watermark: f64,
    /// ... and stops below `max_bytes * low_watermark`.
    pub low_watermark: f64,
    /// Free space always left on the cache's file system.
    pub disk_reserve: DiskReserve,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            high_watermark: 0.95,
            low_watermark: 0.90,
            disk_reserve: DiskReserve::Auto,
        }
    }
}

/// How much of the cache's file system the store leaves free: a new object
/// is refused (passed through uncached) when storing it would eat into it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum DiskReserve {
    /// 1 % of the file system, at least 16 MiB and at most 4 GiB, and never
    /// more than half of a file system smaller than 32 MiB.
    #[default]
    Auto,
    /// A fixed number of bytes.
    Bytes(u64),
    /// A share of the file system's size, in percent (0 to 100).
    Percent(f64),
}

impl DiskReserve {
    /// Smallest automatic reserve.
    pub const AUTO_MIN: u64 = 16 * 1024 * 1024;
    /// Largest automatic reserve.
    pub const AUTO_MAX: u64 = 4 * 1024 * 1024 * 1024;

    /// The reserve in bytes on a file system of `fs_size` bytes.
    pub fn bytes_for(self, fs_size: u64) -> u64 {
        match self {
            Self::Auto => (fs_size / 100)
                .clamp(Self::AUTO_MIN, Self::AUTO_MAX)
                .min(fs_size / 2),
            Self::Bytes(n) => n,
            Self::Percent(p) => (fs_size as f64 * p.clamp(0.0, 100.0) / 100.0) as u64,
        }
    }
}

/// Mode of the cache directory and its subdirectories: the index holds
/// every cached URL, query strings (and the tokens some carry) included.
const DIR_MODE: u32 = 0o700;
/// Mode of the index files and object files.
const FILE_MODE: u32 = 0o600;

/// `open(2)` flags for object files: a symbolic link planted in place of
/// one is refused (ELOOP), never followed.
fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Whether `e` is the refusal of a symbolic link by `O_NOFOLLOW`.
fn is_symlink_refusal(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Figures for status pages and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub objects: u64,
    pub bytes: u64,
    pub pinned_bytes: u64,
    pub max_bytes: u64,
    pub evictions: u64,
}

/// One row of `cache ls`.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub key: String,
    pub len: Option<u64>,
    pub present: u64,
    pub complete: bool,
    pub pinned: bool,
    pub last_access: i64,
    pub hits: u64,
    pub sha256: Option<String>,
}

/// CPU niceness of the eviction thread (the edge's other threads keep 0).
const EVICT_NICENESS: i32 = 10;

/// Live objects kept in memory beyond those in use; a bound, not a cache
/// tuning knob (lookups fall back to the index).
const LIVE_SOFT_LIMIT: usize = 4096;

struct Inner {
    /// Held for the store's life: no other process uses the directory.
    _dir_lock: Arc<DirLock>,
    config: StoreConfig,
    objects_dir: PathBuf,
    index: Mutex<Index>,
    live: Mutex<HashMap<CacheKey, Arc<Object>>>,
    used: AtomicU64,
    next_id: AtomicU64,
    evicting: AtomicBool,
    evictions: AtomicU64,
    access_dirty: Mutex<HashSet<CacheKey>>,
    small_budget: Arc<SmallBudget>,
    /// SHA-256 (lower-case hex) that the next completion of a key must
    /// match, as a pre-positioning manifest states it.
    expected_digests: Mutex<HashMap<CacheKey, String>>,
    /// Completions refused for a wrong digest: key -> (expected, actual).
    digest_mismatches: Mutex<HashMap<CacheKey, (String, String)>>,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) the store in `config.dir` and reconciles the
    /// index with the files. Blocking: call it before serving, or from a
    /// blocking task.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        private_dir(&config.dir)?;
        // Before anything is read or written: the directory may be another
        // edge's, mid-fill.
        let dir_lock = DirLock::acquire(&config.dir)?;
        let objects_dir = config.dir.join("objects");
        private_dir(&objects_dir)?;
        let index_path = config.dir.join("index.sqlite");
        private_index_files(&index_path)?;
        let mut index = Index::open(&index_path)?;
        let used = reconcile(&mut index, &objects_dir)?;
        let next_id = index.max_id()? + 1;
        let store = Self {
            inner: Arc::new(Inner {
                _dir_lock: dir_lock,
                config,
                objects_dir,
                index: Mutex::new(index),
                live: Mutex::new(HashMap::new()),
                used: AtomicU64::new(used),
                next_id: AtomicU64::new(next_id),
                evicting: AtomicBool::new(false),
                evictions: AtomicU64::new(0),
                access_dirty: Mutex::new(HashSet::new()),
                small_budget: Arc::new(SmallBudget::new(SMALL_BODIES_BUDGET)),
                expected_digests: Mutex::new(HashMap::new()),
                digest_mismatches: Mutex::new(HashMap::new()),
            }),
        };
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The object stored under `key`, complete or partial, if any.
    pub fn get(&self, key: &CacheKey) -> Result<Option<Arc<Object>>, StoreError> {
        if let Some(obj) = lock(&self.inner.live).get(key) {
            return Ok(Some(obj.clone()));
        }
        let row = lock(&self.inner.index).get(key.as_str())?;
        let Some(row) = row else { return Ok(None) };
        let head = match StoredHead::from_json(&row.head) {
            Ok(h) => h,
            Err(reason) => {
                tracing::warn!(key = %key, %reason, "dropping object with unreadable metadata");
                // Counted in the usage at start-up, unlike a vanished file.
                if self.remove_row(key.as_str(), row.id) {
                    self.drop_file(row.id, Some(row.extents.covered()));
                }
                return Ok(None);
            }
        };
        let path = object_path(&self.inner.objects_dir, row.id);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nofollow())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(key = %key, path = %path.display(), "object file vanished; dropping entry");
                self.remove_row_and_file(key.as_str(), row.id);
                return Ok(None);
            }
            Err(e) if is_symlink_refusal(&e) => {
                // Someone with write access to objects/ put a link there:
                // reading through it would serve (and writing would
                // overwrite) whatever file it points at.
                tracing::error!(
                    key = %key,
                    path = %path.display(),
                    "object file is a symbolic link: refused, not followed; dropping the entry and the link"
                );
                self.remove_row_and_file(key.as_str(), row.id);
                return Ok(None);
            }
            Err(e) => return Err(StoreError::file(&path, e)),
        };
        if row.complete {
            // Checked here rather than at start-up (see `reconcile`): a
            // file cut after its row said complete is never served.
            let on_disk = file.metadata().map(|m| m.len()).ok();
            if on_disk.is_none() || on_disk != row.len {
                tracing::warn!(
                    key = %key,
                    path = %path.display(),
                    file_bytes = ?on_disk,
                    object_bytes = ?row.len,
                    "object file is not the object's length; dropping entry"
                );
                drop(file);
                if self.remove_row(key.as_str(), row.id) {
                    self.drop_file(row.id, Some(row.extents.covered()));
                }
                return Ok(None);
            }
        }
        let state = State {
            head: Arc::new(head),
            len: row.len,
            present: row.extents,
            phase: if row.complete {
                Phase::Complete
            } else {
                Phase::Filling
            },
            pinned: row.pinned,
            unsynced: 0,
        };
        let obj = Arc::new(Object::new(
            key.clone(),
            row.id,
            path,
            file,
            state,
            self.inner.small_budget.clone(),
        ));
        obj.last_access.store(row.last_access, Ordering::Relaxed);
        if !row.complete && self.expects_digest(key) {
            obj.set_hold_last_byte(true);
        }
        let mut live = lock(&self.inner.live);
        // Another task may have loaded it meanwhile: keep the first.
        let obj = live.entry(key.clone()).or_insert(obj).clone();
        prune_live(&mut live);
        Ok(Some(obj))
    }

    /// Creates a new, empty object for `key` with the given head, replacing any
    /// object stored under that key. Readers of the old object keep reading it.
    pub fn create(
        &self,
        key: &CacheKey,
        head: StoredHead,
        len: Option<u64>,
    ) -> Result<Arc<Object>, StoreError> {
        self.create_with(key, head, len, |_| ())
            .map(|(obj, ())| obj)
    }

    /// [`Store::create`], running `publish` on the new object before any
    /// lookup can find it: whatever `publish` sets up (the object's fill)
    /// is there for every reader. `publish` must not call into the store.
    pub fn create_with<R>(
        &self,
        key: &CacheKey,
        head: StoredHead,
        len: Option<u64>,
        publish: impl FnOnce(&Arc<Object>) -> R,
    ) -> Result<(Arc<Object>, R), StoreError> {
        self.check_space(len.unwrap_or(0))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let path = object_path(&self.inner.objects_dir, id);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)
                .map_err(|e| StoreError::file(parent, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(nofollow())
            .open(&path)
            .map_err(|e| StoreError::file(&path, e))?;
        let complete = len == Some(0);
        let row = Row {
            key: key.as_str().to_string(),
            id,
            head: head.to_json(),
            len,
            complete,
            extents: RangeSet::new(),
            pinned: false,
            last_access: now_secs(),
            hits: 0,
            sha256: None,
        };
        let state = State {
            head: Arc::new(head),
            len,
            present: RangeSet::new(),
            phase: if complete {
                Phase::Complete
            } else {
                Phase::Filling
            },
            pinned: false,
            unsynced: 0,
        };
        let obj = Arc::new(Object::new(
            key.clone(),
            id,
            path,
            file,
            state,
            self.inner.small_budget.clone(),
        ));
        obj.last_access.store(row.last_access, Ordering::Relaxed);
        if self.expects_digest(key) {
            obj.set_hold_last_byte(true);
        }
        // The row and the live entry appear together: a lookup between the
        // two would load the row as a second object for the same file.
        let mut live = lock(&self.inner.live);
        let replaced = match lock(&self.inner.index).put(&row) {
            Ok(replaced) => replaced,
            Err(e) => {
                drop(live);
                let _ = fs::remove_file(obj.path());
                return Err(e);
            }
        };
        let published = publish(&obj);
        let old = live.insert(key.clone(), obj.clone());
        drop(live);
        if let Some(old_id) = replaced {
            let old_present = old
                .as_ref()
                .filter(|o| o.id() == old_id)
                .map(|o| o.snapshot().present.covered());
            self.drop_file(old_id, old_present);
        }
        if let Some(old) = old {
            // Carry the pin over: pre-positioned content stays pinned across
            // refreshes.
            if old.snapshot().pinned {
                let _ = self.set_pinned(key, true);
            }
        }
        Ok((obj, published))
    }

    /// Whether `needed` more bytes fit on the file system and leave the
    /// disk reserve free (one `statvfs`): asked when an object is created
    /// and before each batch a fill writes (a body of unknown length, or
    /// many fills at once, pass the first check). A full disk must turn
    /// caching off, not break downloads.
    pub fn check_space(&self, needed: u64) -> Result<(), StoreError> {
        let Ok(vfs) = rustix::fs::statvfs(&self.inner.objects_dir) else {
            return Ok(());
        };
        let available = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let reserve = self.disk_reserve_of(vfs.f_blocks.saturating_mul(vfs.f_frsize));
        if available < needed.saturating_add(reserve) {
            return Err(StoreError::NoSpace {
                path: self.inner.objects_dir.clone(),
                needed,
                available,
            });
        }
        Ok(())
    }

    /// Evicts what no one is using until `needed` bytes plus the reserve
    /// are free. Returns the bytes freed. Blocking (index and unlinks).
    pub fn make_room_within_reserve(&self, needed: u64) -> Result<u64, StoreError> {
        let fs_size = rustix::fs::statvfs(&self.inner.objects_dir)
            .map(|v| v.f_blocks.saturating_mul(v.f_frsize))
            .unwrap_or(0);
        self.make_room(needed.saturating_add(self.disk_reserve_of(fs_size)))
    }

    /// The free space this store leaves on a file system of `fs_size` bytes.
    pub fn disk_reserve_of(&self, fs_size: u64) -> u64 {
        self.inner.config.disk_reserve.bytes_for(fs_size)
    }

    /// Accounts bytes newly written to an object and evicts if needed.
    pub fn account(&self, added: u64) {
        if added == 0 {
            return;
        }
        let used = self.inner.used.fetch_add(added, Ordering::Relaxed) + added;
        let high = (self.inner.config.max_bytes as f64 * self.inner.config.high_watermark) as u64;
        if used > high && !self.inner.evicting.swap(true, Ordering::AcqRel) {
            let store = self.clone();
            let evict = move || {
                if let Err(e) = store.evict() {
                    tracing::error!(error = %e, "eviction failed");
                }
                store.inner.evicting.store(false, Ordering::Release);
            };
            if tokio::runtime::Handle::try_current().is_err() {
                evict();
                return;
            }
            // A thread of its own at a lower CPU priority: evicting 100,000
            // small objects keeps a core busy for seconds, and on a small
            // box hits must come first (bench/evict.py). Linux applies
            // setpriority(PRIO_PROCESS, 0) to the calling thread only.
            let spawned = std::thread::Builder::new()
                .name("outpost-evict".into())
                .spawn(move || {
                    let _ = rustix::process::setpriority_process(None, EVICT_NICENESS);
                    evict();
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the eviction thread");
                self.inner.evicting.store(false, Ordering::Release);
            }
        }
    }

    /// Syncs the object's file and records its present extents in the index,
    /// so that a crash after this point resumes from here.
    pub async fn checkpoint(&self, obj: &Arc<Object>) -> Result<(), StoreError> {
        let (present, len) = {
            let mut s = obj.state();
            s.unsynced = 0;
            (s.present.clone(), s.len)
        };
        let file = obj.file();
        let store = self.clone();
        let obj2 = obj.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_data()
                .map_err(|e| StoreError::file(obj2.path(), e))?;
            lock(&store.inner.index).update_extents(
                obj2.key().as_str(),
                obj2.id(),
                len,
                false,
                &present,
            )
        })
        .await
        .map_err(|_| StoreError::Task)?
    }

    /// Bytes written to the object since its last checkpoint.
    pub fn unsynced(&self, obj: &Object) -> u64 {
        obj.state().unsynced
    }

    /// Marks the object complete if every byte of its length is present:
    /// syncs the file, then records it in the index. Returns whether it is
    /// complete now.
    pub async fn finish(&self, obj: &Arc<Object>) -> Result<bool, StoreError> {
        let (present, len) = {
            let s = obj.state();
            if s.phase == Phase::Complete {
                return Ok(true);
            }
            match s.len {
                Some(len) if s.present.contains(ByteRange::new(0, len)) => (s.present.clone(), len),
                _ => return Ok(false),
            }
        };
        let file = obj.file();
        let store = self.clone();
        let obj2 = obj.clone();
        let expected = self.expected_digest(obj.key());
        let checked = expected.is_some();
        tokio::task::spawn_blocking(move || {
            let path = obj2.path();
            let on_disk = file
                .metadata()
                .map_err(|e| StoreError::file(path, e))?
                .len();
            if on_disk < len {
                // Never expected: present extents say the bytes were written.
                return Err(StoreError::file(
                    path,
                    std::io::Error::other(format!("file holds {on_disk} bytes, object is {len}")),
                ));
            }
            if on_disk > len {
                file.set_len(len).map_err(|e| StoreError::file(path, e))?;
            }
            // A body that must match a known digest is checked before it
            // can be served as complete, never after.
            let digest = match expected {
                Some(expected) => {
                    let actual = sha256_file(&file, len).map_err(|e| StoreError::file(path, e))?;
                    if !actual.eq_ignore_ascii_case(&expected) {
                        lock(&store.inner.digest_mismatches)
                            .insert(obj2.key().clone(), (expected.clone(), actual.clone()));
                        return Err(StoreError::DigestMismatch { expected, actual });
                    }
                    Some(actual)
                }
                None => None,
            };
            file.sync_all().map_err(|e| StoreError::file(path, e))?;
            let index = lock(&store.inner.index);
            index.update_extents(obj2.key().as_str(), obj2.id(), Some(len), true, &present)?;
            if let Some(digest) = digest {
                index.set_digest(obj2.key().as_str(), obj2.id(), &digest)?;
            }
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Task)??;
        {
            let mut s = obj.state();
            if s.phase == Phase::Filling {
                s.phase = Phase::Complete;
            }
        }
        obj.notify();
        if checked {
            return Ok(true);
        }
        // Record the body's digest for `cache verify`, off the fill's path
        // (the bytes are still in the page cache).
        // The task must not pin the object: eviction skips objects in use,
        // and a disk filling up right now may need this one's space.
        let store = self.clone();
        let weak = Arc::downgrade(obj);
        let (key, id) = (obj.key().clone(), obj.id());
        tokio::task::spawn_blocking(move || match sha256_while_stored(&weak, len) {
            Ok(digest) => {
                if let Err(e) = lock(&store.inner.index).set_digest(key.as_str(), id, &digest) {
                    tracing::warn!(%key, error = %e, "cannot record digest");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(%key, "evicted before its digest was recorded");
            }
            Err(e) => tracing::warn!(%key, error = %e, "cannot digest object"),
        });
        Ok(true)
    }

    /// Replaces the head of a stored object (after a 304 revalidation).
    pub fn update_head(&self, obj: &Object, head: StoredHead) -> Result<(), StoreError> {
        let json = head.to_json();
        obj.state().head = Arc::new(head);
        lock(&self.inner.index).update_head(obj.key().as_str(), obj.id(), &json)
    }

    /// Stops storing `obj` because of the edge's own trouble (a disk that
    /// is full or failing), dropping its bytes. Readers learn that the
    /// origin's copy is still good ([`Object::failed_locally`]).
    pub fn fail_locally(&self, obj: &Arc<Object>, reason: &str) {
        obj.mark_failed_locally();
        self.fail(obj, reason, false);
    }

    /// Stops serving `obj`: readers stop, later lookups miss. When `keep_bytes`
    /// is false the row and file go too.
    pub fn fail(&self, obj: &Arc<Object>, reason: &str, keep_bytes: bool) {
        obj.fail(reason);
        {
            let mut live = lock(&self.inner.live);
            if live.get(obj.key()).is_some_and(|o| Arc::ptr_eq(o, obj)) {
                live.remove(obj.key());
            }
        }
        if !keep_bytes {
            let covered = obj.snapshot().present.covered();
            if self.remove_row(obj.key().as_str(), obj.id()) {
                self.drop_file(obj.id(), Some(covered));
            }
        }
    }

    /// Forgets the in-memory copy of `obj` so that the next lookup reloads
    /// it from the index (after a fill gave up; its checkpointed bytes stay).
    pub fn release(&self, obj: &Arc<Object>) {
        let mut live = lock(&self.inner.live);
        if live.get(obj.key()).is_some_and(|o| Arc::ptr_eq(o, obj)) {
            live.remove(obj.key());
        }
    }

    /// Removes whatever is stored under `key`. Returns whether anything was.
    pub fn purge(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let live = lock(&self.inner.live).remove(key);
        if let Some(obj) = &live {
            obj.fail("purged");
        }
        let row = lock(&self.inner.index).get(key.as_str())?;
        let Some(row) = row else {
            return Ok(live.is_some());
        };
        if self.remove_row(key.as_str(), row.id) {
            self.drop_file(row.id, Some(row.extents.covered()));
        }
        Ok(true)
    }

    /// Pins or unpins `key`. Returns false if nothing is stored under it.
    pub fn set_pinned(&self, key: &CacheKey, pinned: bool) -> Result<bool, StoreError> {
        if let Some(obj) = lock(&self.inner.live).get(key) {
            obj.state().pinned = pinned;
        }
        lock(&self.inner.index).set_pinned(key.as_str(), pinned)
    }

    /// Notes a hit for eviction ordering; written to the index in batches by
    /// `flush_access`.
    pub fn touch(&self, obj: &Object) {
        obj.hits.fetch_add(1, Ordering::Relaxed);
        obj.last_access.store(now_secs(), Ordering::Relaxed);
        // Only the first hit of a flush interval takes the shared lock.
        if !obj.access_dirty.swap(true, Ordering::AcqRel) {
            lock(&self.inner.access_dirty).insert(obj.key().clone());
        }
    }

    /// Writes the batched hit counts and access times to the index.
    pub fn flush_access(&self) -> Result<(), StoreError> {
        let keys: Vec<CacheKey> = lock(&self.inner.access_dirty).drain().collect();
        if keys.is_empty() {
            return Ok(());
        }
        let updates: Vec<(String, u64, i64, u64)> = {
            let live = lock(&self.inner.live);
            keys.iter()
                .filter_map(|k| live.get(k))
                .map(|o| {
                    o.access_dirty.store(false, Ordering::Release);
                    let hits = o.hits.swap(0, Ordering::Relaxed);
                    (
                        o.key().as_str().to_string(),
                        o.id(),
                        o.last_access.load(Ordering::Relaxed),
                        hits,
                    )
                })
                .collect()
        };
        lock(&self.inner.index).record_access(&updates)
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let (objects, _, pinned_bytes) = lock(&self.inner.index).totals()?;
        Ok(StoreStats {
            objects,
            bytes: self.inner.used.load(Ordering::Relaxed),
            pinned_bytes,
            max_bytes: self.inner.config.max_bytes,
            evictions: self.inner.evictions.load(Ordering::Relaxed),
        })
    }

    /// Stored keys that contain `needle`.
    pub fn keys_containing(&self, needle: &str) -> Result<Vec<CacheKey>, StoreError> {
        Ok(lock(&self.inner.index)
            .keys_containing(needle)?
            .into_iter()
            .map(CacheKey::from_stored)
            .collect())
    }

    pub fn list(&self, limit: usize) -> Result<Vec<EntryInfo>, StoreError> {
        let rows = lock(&self.inner.index).list(limit)?;
        Ok(rows
            .into_iter()
            .map(|r| EntryInfo {
                key: r.key,
                len: r.len,
                present: r.extents.covered(),
                complete: r.complete,
                pinned: r.pinned,
                last_access: r.last_access,
                hits: r.hits,
                sha256: r.sha256,
            })
            .collect())
    }

    fn remove_row(&self, key: &str, id: u64) -> bool {
        match lock(&self.inner.index).remove(key, id) {
            Ok(removed) => removed,
            Err(e) => {
                tracing::error!(key, error = %e, "could not remove index row");
                false
            }
        }
    }

    fn remove_row_and_file(&self, key: &str, id: u64) {
        if self.remove_row(key, id) {
            self.drop_file(id, None);
        }
    }

    /// Deletes an object's file and takes its bytes off the usage figure.
    fn drop_file(&self, id: u64, accounted: Option<u64>) {
        let path = object_path(&self.inner.objects_dir, id);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %path.display(), error = %e, "could not delete object file");
        }
        if let Some(bytes) = accounted {
            let _ = self
                .inner
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(bytes))
                });
        }
    }
}

/// Drops live entries nobody uses once the map grows past its soft limit.
fn prune_live(live: &mut HashMap<CacheKey, Arc<Object>>) {
    if live.len() <= LIVE_SOFT_LIMIT {
        return;
    }
    live.retain(|_, obj| Arc::strong_count(obj) > 1 || obj.phase() == Phase::Filling);
}
