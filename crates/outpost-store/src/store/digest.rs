//! Body digests: the SHA-256 a manifest requires before a body may be
//! complete, the recorded digest of each complete object, and `verify`,
//! which re-reads every complete object against its length and digest.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use outpost_http::CacheKey;
use outpost_http::vary::{url_key, url_part};

use super::{Store, lock, nofollow};
use crate::error::StoreError;
use crate::layout::object_path;
use crate::object::Object;

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub checked: u64,
    pub digests_checked: u64,
    /// Objects dropped, with the reason.
    pub dropped: Vec<(String, String)>,
}

/// Hex SHA-256 of the first `len` bytes of `file`.
pub(super) fn sha256_file(file: &std::fs::File, len: u64) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    sha256_read(len, |buf, offset| file.read_at(buf, offset))
}

/// Hex SHA-256 of the first `len` bytes that `read(buf, offset)` yields.
fn sha256_read(
    len: u64,
    mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let want = ((len - offset) as usize).min(buf.len());
        let n = read(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than the object",
            ));
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Like [`sha256_file`] for a stored object, without keeping it from
/// eviction: the object is held only while a chunk is read, so a full disk
/// can take it back mid-hash (the answer is then `NotFound`).
pub(super) fn sha256_while_stored(
    obj: &std::sync::Weak<Object>,
    len: u64,
) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    sha256_read(len, |buf, offset| {
        let obj = obj
            .upgrade()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "evicted"))?;
        obj.file().read_at(buf, offset)
    })
}

impl Store {
    /// Requires the next completion of `key` to have this SHA-256 (hex), or
    /// lifts the requirement with `None`. A completion that does not match
    /// fails the object and is reported by [`Store::take_digest_mismatch`].
    /// The requirement holds for the URL: every variant of `key`'s URL,
    /// whichever the response turns out to select.
    pub fn expect_digest(&self, key: &CacheKey, sha256: Option<&str>) {
        let url = url_key(key);
        {
            let mut expected = lock(&self.inner.expected_digests);
            match sha256 {
                Some(d) => {
                    expected.insert(url.clone(), d.to_ascii_lowercase());
                }
                None => {
                    expected.remove(&url);
                }
            }
        }
        // Fills already running for the URL hold their last byte too.
        let live: Vec<Arc<Object>> = lock(&self.inner.live)
            .values()
            .filter(|o| url_part(o.key().as_str()) == url.as_str())
            .cloned()
            .collect();
        for obj in live {
            obj.set_hold_last_byte(sha256.is_some());
        }
    }

    /// The digest the completion of `key` must match, if a manifest set one.
    pub fn expected_digest(&self, key: &CacheKey) -> Option<String> {
        lock(&self.inner.expected_digests)
            .get(url_part(key.as_str()))
            .cloned()
    }

    /// Whether a manifest gives the digest of `key`'s URL (asked for every
    /// request: neither the key nor the digest is copied).
    pub fn expects_digest(&self, key: &CacheKey) -> bool {
        lock(&self.inner.expected_digests).contains_key(url_part(key.as_str()))
    }

    /// The (expected, actual) digests of the last refused completion of `key`.
    pub fn take_digest_mismatch(&self, key: &CacheKey) -> Option<(String, String)> {
        let mut mismatches = lock(&self.inner.digest_mismatches);
        if let Some(found) = mismatches.remove(key) {
            return Some(found);
        }
        // Recorded under the variant the response selected.
        let url = url_key(key);
        let variant = mismatches
            .keys()
            .find(|k| url_part(k.as_str()) == url.as_str())
            .cloned()?;
        mismatches.remove(&variant)
    }

    /// The SHA-256 of `obj`'s complete body: the recorded one, or computed
    /// now (and recorded) when none is.
    pub async fn digest_of(&self, obj: &Arc<Object>) -> Result<String, StoreError> {
        if let Some(d) = lock(&self.inner.index)
            .get(obj.key().as_str())?
            .filter(|r| r.complete && r.id == obj.id())
            .and_then(|r| r.sha256)
        {
            return Ok(d);
        }
        let file = obj.file();
        let len = obj.len().unwrap_or(0);
        let path = obj.path().to_path_buf();
        let digest = tokio::task::spawn_blocking(move || sha256_file(&file, len))
            .await
            .map_err(|_| StoreError::Task)?
            .map_err(|e| StoreError::file(&path, e))?;
        if let Err(e) = lock(&self.inner.index).set_digest(obj.key().as_str(), obj.id(), &digest) {
            tracing::warn!(key = %obj.key(), error = %e, "cannot record digest");
        }
        Ok(digest)
    }

    /// The recorded SHA-256 of the complete object under `key`, if known.
    pub fn digest(&self, key: &CacheKey) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.inner.index)
            .get(key.as_str())?
            .filter(|r| r.complete)
            .and_then(|r| r.sha256))
    }

    /// Re-reads every complete object and drops those whose file no longer
    /// matches its recorded length or SHA-256. Blocking; returns what it
    /// checked and what it dropped.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let rows = lock(&self.inner.index).all()?;
        let mut report = VerifyReport::default();
        for row in rows.into_iter().filter(|r| r.complete) {
            report.checked += 1;
            let path = object_path(&self.inner.objects_dir, row.id);
            let len = row.len.unwrap_or(0);
            let problem = match OpenOptions::new()
                .read(true)
                .custom_flags(nofollow())
                .open(&path)
            {
                Err(e) => Some(format!("cannot open: {e}")),
                Ok(file) => match file.metadata().map(|m| m.len()) {
                    Ok(on_disk) if on_disk != len => {
                        Some(format!("file holds {on_disk} bytes, object is {len}"))
                    }
                    Err(e) => Some(format!("cannot stat: {e}")),
                    Ok(_) => match (&row.sha256, sha256_file(&file, len)) {
                        (Some(want), Ok(got)) if *want != got => {
                            Some(format!("SHA-256 {got} differs from recorded {want}"))
                        }
                        (_, Err(e)) => Some(format!("cannot read: {e}")),
                        _ => None,
                    },
                },
            };
            if row.sha256.is_some() {
                report.digests_checked += 1;
            }
            if let Some(reason) = problem {
                tracing::warn!(key = row.key, %reason, "verify: dropping object");
                let key = CacheKey::from_stored(row.key.clone());
                if let Some(obj) = lock(&self.inner.live).remove(&key) {
                    obj.fail(&reason);
                }
                if self.remove_row(&row.key, row.id) {
                    self.drop_file(row.id, Some(row.extents.covered().max(len)));
                }
                report.dropped.push((row.key, reason));
            }
        }
        Ok(report)
    }
}
