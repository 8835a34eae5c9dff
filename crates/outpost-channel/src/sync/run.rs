//! One sync run: list the source, admit files against the budget, fetch
//! them through the engine (a few at a time, paced by the channel's
//! shaper bucket), record each file's state, quarantine digest
//! mismatches, and unpin what a complete listing no longer names.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use outpost_http::CacheKey;
use outpost_protocol::{RunPhase, RunSummary, SyncResult};
use outpost_proxy::prefetch::{PrefetchError, PrefetchOutcome, PrefetchRequest};

use crate::state::FileRow;

use super::budget::{Admission, Budget, LimitLog};
use super::source::{Listed, SourceFile, to_uri};
use super::{Channel, Channels, lock, now_secs};

impl Channels {
    pub(super) async fn run(
        self: &Arc<Self>,
        ch: &Arc<Channel>,
        run: u64,
        started: i64,
    ) -> RunSummary {
        let name = &ch.config.name;
        let limits = *lock(&ch.limits);
        let mut summary = RunSummary {
            run,
            started,
            ..Default::default()
        };
        let Listed {
            files,
            problems,
            hits: mut limit_hits,
        } = match tokio::select! {
            listed = self.list(ch, &limits) => listed,
            _ = ch.retired.cancelled() => return self.stopped(ch, summary, None).await,
        } {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "cannot list the channel's source");
                summary.result = SyncResult::Failed;
                summary.message = Some(format!("cannot list the source: {e}"));
                summary.finished = now_secs();
                return summary;
            }
        };
        // A listing cut by a limit is as incomplete as one with a folder
        // that did not list: what it did not reach may still be there.
        let complete_listing = problems.is_empty() && limit_hits.0.is_empty();
        let known: HashMap<String, FileRow> = lock(&self.db)
            .files(name)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.url.clone(), r))
            .collect();
        let listed: HashSet<&str> = files.iter().map(|f| f.url.as_str()).collect();
        let mut budget = Budget {
            max_files: limits.max_files,
            max_bytes: limits.max_bytes,
            files: 0,
            bytes: 0,
            full: false,
            hits: LimitLog::default(),
        };
        // What the channel goes on holding whatever this run brings: the
        // files still listed, and with an incomplete listing all it held
        // (they are not unpinned then).
        for row in known.values() {
            if let Some(len) = row.len
                && (!complete_listing || listed.contains(row.url.as_str()))
            {
                budget.files += 1;
                budget.bytes = budget.bytes.saturating_add(len);
            }
        }
        let budget = Arc::new(Mutex::new(budget));
        {
            let mut r = lock(&ch.run);
            if let Some(r) = r.as_mut() {
                r.phase = RunPhase::Syncing;
                r.files_total = files.len() as u64;
                r.bytes_total = files
                    .iter()
                    .map(|f| {
                        f.size
                            .or_else(|| known.get(f.url.as_str()).and_then(|k| k.len))
                            .unwrap_or(0)
                    })
                    .sum();
            }
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(ch.config.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for file in files.iter().cloned() {
            let permit = tokio::select! {
                permit = sem.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = ch.retired.cancelled() => return self.stopped(ch, summary, Some(tasks)).await,
            };
            // Admitted once a permit is free, so that the files settled
            // before count (one at a time, the limit is exact).
            let previous = known.get(file.url.as_str()).cloned();
            let admitted = lock(&budget).admit(
                file.url.as_str(),
                file.size,
                previous.as_ref().and_then(|p| p.len),
            );
            let Some(admission) = admitted else {
                summary.skipped += 1;
                if let Some(r) = lock(&ch.run).as_mut() {
                    r.files_done += 1;
                }
                continue;
            };
            let this = self.clone();
            let ch = ch.clone();
            let budget = budget.clone();
            tasks.spawn(async move {
                let _permit = permit;
                this.sync_file(&ch, file, previous, admission, &budget)
                    .await
            });
            while let Some(done) = tasks.try_join_next() {
                tally(&mut summary, done);
            }
        }
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => tally(&mut summary, done),
                    None => break,
                },
                _ = ch.retired.cancelled() => return self.stopped(ch, summary, Some(tasks)).await,
            }
        }
        limit_hits.merge(std::mem::take(&mut lock(&budget).hits));
        summary.files = files.len() as u64;
        // Files that left the source: no longer pinned, ordinary cache.
        // Not for a retired channel: its successor's listing decides.
        if complete_listing && !ch.retired.is_cancelled() {
            for (url, row) in &known {
                if listed.contains(url.as_str()) {
                    continue;
                }
                let key = CacheKey::from_stored(row.key.clone());
                let db = lock(&self.db);
                if !db.held_elsewhere(name, &row.key).unwrap_or(true)
                    && let Err(e) = self.engine.store.set_pinned(&key, false)
                {
                    tracing::warn!(channel = %name, key = %key, error = %e, "cannot unpin");
                }
                if row.state == "quarantined" {
                    self.engine.set_quarantined(&key, None);
                }
                if row.expected_sha256.is_some() {
                    self.engine.store.expect_digest(&key, None);
                }
                self.engine.set_sync_fresh(&key, None);
                if let Err(e) = db.remove_file(name, url) {
                    tracing::warn!(channel = %name, error = %e, "cannot forget a removed file");
                }
                summary.removed += 1;
            }
        }
        if let Some(r) = lock(&ch.run).as_ref() {
            summary.fetched_bytes = r.fetched_bytes;
        }
        summary.finished = now_secs();
        summary.limits = limit_hits.0;
        summary.result = if !summary.limits.is_empty() {
            SyncResult::Limit
        } else if summary.failed + summary.quarantined > 0 || !complete_listing {
            SyncResult::Errors
        } else {
            SyncResult::Ok
        };
        if !summary.limits.is_empty() {
            tracing::warn!(channel = %name, limits = ?summary.limits, "sync stopped at a limit");
        }
        let mut message: Vec<String> = summary.limits.iter().map(ToString::to_string).collect();
        if !problems.is_empty() {
            message.push(first_few(&problems, 5));
        }
        if !complete_listing {
            message = vec![format!(
                "listing incomplete, nothing unpinned: {}",
                message.join("; ")
            )];
        }
        if !message.is_empty() {
            summary.message = Some(message.join("; "));
        }
        summary
    }

    /// Ends a run whose channel a reload removed or replaced: the file
    /// syncs in flight are stopped and waited for (so none records a row
    /// afterwards), and the files they had pinned but the channel never
    /// held are unpinned again.
    async fn stopped(
        &self,
        ch: &Channel,
        mut summary: RunSummary,
        tasks: Option<tokio::task::JoinSet<FileResult>>,
    ) -> RunSummary {
        if let Some(mut tasks) = tasks {
            tasks.shutdown().await;
        }
        let name = &ch.config.name;
        let active: Vec<(String, CacheKey)> = lock(&ch.run)
            .as_ref()
            .map(|r| {
                r.active
                    .iter()
                    .map(|(url, (key, _))| (url.clone(), key.clone()))
                    .collect()
            })
            .unwrap_or_default();
        {
            let db = lock(&self.db);
            let held: HashSet<String> = db
                .files(name)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.state == "ok")
                .map(|r| r.url)
                .collect();
            for (url, key) in active {
                if !held.contains(&url) && !db.held_elsewhere(name, key.as_str()).unwrap_or(true) {
                    let _ = self.engine.store.set_pinned(&key, false);
                }
            }
        }
        summary.result = SyncResult::Interrupted;
        summary.message = Some("stopped: a reload removed or replaced the channel".into());
        summary.finished = now_secs();
        summary
    }

    async fn sync_file(
        self: &Arc<Self>,
        ch: &Arc<Channel>,
        file: SourceFile,
        previous: Option<FileRow>,
        admission: Admission,
        budget: &Mutex<Budget>,
    ) -> FileResult {
        let name = &ch.config.name;
        let url = file.url.to_string();
        let (uri, key) = match to_uri(&file.url).and_then(|u| {
            let key = self
                .engine
                .prefetch_key(u.clone())
                .map_err(|e| e.to_string())?;
            Ok((u, key))
        }) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(channel = %name, %url, error = %e, "bad URL in source");
                lock(budget).release(admission);
                return FileResult::Failed;
            }
        };
        let before = self.engine.store.get(&key).ok().flatten().map_or(0, |o| {
            if o.is_complete() {
                o.len().unwrap_or(0)
            } else {
                o.snapshot().present.covered()
            }
        });
        if let Some(r) = lock(&ch.run).as_mut() {
            r.active.insert(url.clone(), (key.clone(), file.size));
        }
        // Pin first, so that cache pressure cannot take a partial copy
        // while the rest comes in.
        let _ = self.engine.store.set_pinned(&key, true);
        let request = PrefetchRequest {
            reach: ch.config.reach(),
            uri,
            group: Some(ch.group),
            sha256: if ch.config.verify {
                file.sha256.clone()
            } else {
                None
            },
        };
        if request.sha256.is_none()
            && previous
                .as_ref()
                .is_some_and(|p| p.expected_sha256.is_some())
        {
            // The manifest no longer vouches for a digest: the file is
            // checked against nothing from now on.
            self.engine.store.expect_digest(&key, None);
        }
        let result = self.engine.prefetch(&request).await;
        let now = now_secs();
        let mut row = FileRow {
            url: url.clone(),
            key: key.to_string(),
            len: None,
            sha256: None,
            expected_sha256: request.sha256.clone(),
            state: "ok".into(),
            detail: None,
            updated: now,
        };
        let outcome = match result {
            Ok(done) => {
                let fetched = match done.outcome {
                    PrefetchOutcome::Fetched => done.len.saturating_sub(before.min(done.len)),
                    _ => 0,
                };
                let kept = lock(budget).settle(admission, done.len, &url);
                if let Some(r) = lock(&ch.run).as_mut() {
                    r.fetched_bytes += fetched;
                    if kept
                        && file.size.is_none()
                        && previous.as_ref().and_then(|p| p.len).is_none()
                    {
                        r.bytes_total += done.len;
                    }
                }
                if !kept {
                    // Only its response said how big it is; past max_bytes
                    // it stays as ordinary, evictable cache, unrecorded.
                    tracing::warn!(channel = %name, %url, len = done.len, "past the channel's max_bytes: not kept");
                    if !lock(&self.db)
                        .held_elsewhere(name, done.key.as_str())
                        .unwrap_or(true)
                    {
                        let _ = self.engine.store.set_pinned(&done.key, false);
                    }
                    if let Some(r) = lock(&ch.run).as_mut() {
                        r.active.remove(&url);
                        r.files_done += 1;
                    }
                    return FileResult::OverLimit;
                }
                row.len = Some(done.len);
                row.sha256 = done.sha256.clone();
                if let Err(e) = self.engine.store.set_pinned(&done.key, true) {
                    tracing::warn!(channel = %name, key = %done.key, error = %e, "cannot pin");
                }
                self.engine.set_quarantined(&done.key, None);
                // The origin was just asked: the channel vouches for this
                // copy until its next sync.
                self.vouch(&ch.config, &done.key, now);
                FileResult::Done(done.outcome)
            }
            Err(PrefetchError::DigestMismatch { expected, actual }) => {
                lock(budget).release(admission);
                let detail = format!("SHA-256 {actual} differs from the manifest's {expected}");
                tracing::error!(channel = %name, %url, %detail, "quarantined");
                row.state = "quarantined".into();
                row.detail = Some(detail.clone());
                self.engine.set_quarantined(&key, Some(detail));
                let _ = self.engine.store.set_pinned(&key, false);
                FileResult::Quarantined
            }
            Err(e) => {
                lock(budget).release(admission);
                tracing::warn!(channel = %name, %url, error = %e, "file sync failed");
                row.state = "error".into();
                row.detail = Some(e.to_string());
                // Keep what an earlier sync stored (still pinned).
                if let Some(p) = &previous {
                    row.len = p.len;
                    row.sha256 = p.sha256.clone();
                }
                if previous.as_ref().is_none_or(|p| p.state != "ok") {
                    let _ = self.engine.store.set_pinned(&key, false);
                }
                FileResult::Failed
            }
        };
        if let Err(e) = lock(&self.db).put_file(name, &row) {
            tracing::error!(channel = %name, error = %e, "cannot record synced file");
        }
        if let Some(r) = lock(&ch.run).as_mut() {
            r.active.remove(&url);
            r.files_done += 1;
            r.bytes_done += row.len.unwrap_or(0);
        }
        outcome
    }
}

enum FileResult {
    Done(PrefetchOutcome),
    Quarantined,
    Failed,
    /// Fetched, but past max_bytes: not kept.
    OverLimit,
}

fn tally(summary: &mut RunSummary, done: Result<FileResult, tokio::task::JoinError>) {
    match done {
        Ok(FileResult::OverLimit) => summary.skipped += 1,
        Ok(FileResult::Done(PrefetchOutcome::Fetched)) => summary.fetched += 1,
        Ok(FileResult::Done(PrefetchOutcome::NotModified)) => summary.not_modified += 1,
        Ok(FileResult::Done(PrefetchOutcome::Unchanged)) => summary.unchanged += 1,
        Ok(FileResult::Quarantined) => summary.quarantined += 1,
        Ok(FileResult::Failed) | Err(_) => summary.failed += 1,
    }
}

/// "a; b; c (and 7 more)": a message stays readable (and small) however
/// many folders failed.
fn first_few(items: &[String], n: usize) -> String {
    let mut text = items
        .iter()
        .take(n)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > n {
        text.push_str(&format!(" (and {} more)", items.len() - n));
    }
    text
}
