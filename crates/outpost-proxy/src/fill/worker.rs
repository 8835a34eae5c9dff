//! A fill's workers: each fetches one claimed range from the origin (with
//! `Range` + `If-Range` when resuming), streams it to disk in batches,
//! retries with backoff through WAN outages, and ends the fill (complete,
//! parked with bytes missing, or failed).

use super::*;

impl ObjectFill {
    pub(super) async fn run_worker(
        self: Arc<Self>,
        claim: u64,
        range: ByteRange,
        body: Option<Incoming>,
        kind: WorkerKind,
    ) {
        let result = self.fetch(claim, range, body).await;
        {
            let mut st = lock(&self.state);
            st.claims.retain(|c| c.id != claim);
            match kind {
                WorkerKind::Demand => st.demand_workers -= 1,
                WorkerKind::Background => st.background_running = false,
                WorkerKind::Initial => {}
            }
        }
        let store = &self.ctx.store;
        match result {
            Ok(()) => {
                if self.object.is_fully_present() {
                    self.complete().await;
                } else {
                    let idle = {
                        let mut st = lock(&self.state);
                        if st.finished {
                            false
                        } else {
                            self.pump(&mut st);
                            // Nothing more will come unless someone asks:
                            // leave the partial object to the store.
                            let idle = st.claims.is_empty() && st.queue.is_empty();
                            st.finished |= idle;
                            idle
                        }
                    };
                    if idle {
                        self.park().await;
                    }
                }
            }
            Err(FetchError::Changed(reason)) => {
                tracing::warn!(key = %self.object.key(), %reason, "origin changed the object during a fill; dropping it");
                self.finish_with(|| store.fail(&self.object, &reason, false));
            }
            Err(FetchError::Disk(outpost_store::StoreError::Task)) => {
                // The runtime is shutting down under us: what is on disk
                // stays for the next start to resume.
                tracing::info!(key = %self.object.key(), "fill stopped by shutdown; keeping its bytes");
                self.finish_with(|| store.fail(&self.object, "edge shutting down", true));
            }
            Err(FetchError::Disk(e)) => {
                tracing::error!(key = %self.object.key(), error = %e, "cannot write object; dropping it (its readers go on from the origin)");
                self.finish_with(|| store.fail_locally(&self.object, &e.to_string()));
            }
            Err(e @ (FetchError::Exhausted { .. } | FetchError::Abandoned)) => {
                tracing::warn!(key = %self.object.key(), error = %e, "fill stopped; keeping the bytes fetched so far");
                if let Err(e) = store.checkpoint(&self.object).await {
                    tracing::warn!(key = %self.object.key(), error = %e, "checkpoint failed");
                }
                let reason = e.to_string();
                self.finish_with(|| store.fail(&self.object, &reason, true));
            }
        }
    }

    /// Ends this fill once: runs `f` and detaches from the context.
    pub(super) fn finish_with(&self, f: impl FnOnce()) {
        let first = {
            let mut st = lock(&self.state);
            !std::mem::replace(&mut st.finished, true)
        };
        if first {
            f();
            self.ctx.detach(self);
        }
    }

    pub(super) async fn complete(self: &Arc<Self>) {
        {
            let mut st = lock(&self.state);
            if st.finished {
                return;
            }
            st.finished = true;
        }
        match self.ctx.store.finish(&self.object).await {
            Ok(true) => {
                self.ctx.stats.completed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %self.object.key(), len = ?self.object.len(), "object complete");
            }
            Ok(false) => {}
            Err(outpost_store::StoreError::Task) => {
                // Shutting down: reconcile completes it at the next start.
                self.ctx
                    .store
                    .fail(&self.object, "edge shutting down", true);
            }
            Err(e @ outpost_store::StoreError::DigestMismatch { .. }) => {
                tracing::error!(key = %self.object.key(), error = %e, "object failed its digest check; dropping it");
                self.ctx.store.fail(&self.object, &e.to_string(), false);
            }
            Err(e) => {
                tracing::error!(key = %self.object.key(), error = %e, "cannot complete object; dropping it (its readers go on from the origin)");
                self.ctx.store.fail_locally(&self.object, &e.to_string());
            }
        }
        self.ctx.detach(self);
    }

    /// Checkpoints a partial object nobody is filling and detaches.
    pub(super) async fn park(self: &Arc<Self>) {
        if let Err(e) = self.ctx.store.checkpoint(&self.object).await {
            tracing::warn!(key = %self.object.key(), error = %e, "checkpoint failed");
        }
        self.ctx.detach(self);
    }

    pub(super) fn advance_claim(&self, claim: u64, cursor: u64) {
        if let Some(c) = lock(&self.state).claims.iter_mut().find(|c| c.id == claim) {
            c.cursor = cursor;
        }
    }

    /// Whether a fetch that failed `failures` times in a row, the last byte
    /// having arrived at `last_progress`, stops retrying.
    pub(super) fn give_up(&self, failures: u32, last_progress: Instant) -> bool {
        let cfg = &self.ctx.config;
        failures > cfg.max_retries && last_progress.elapsed() >= cfg.retry_for
    }

    pub(super) fn backoff(&self, failures: u32) -> Duration {
        let cfg = &self.ctx.config;
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        cfg.retry_backoff_initial
            .saturating_mul(factor)
            .min(cfg.retry_backoff_max)
    }

    /// Requests `[cursor, end)` again, validated with If-Range.
    pub(super) async fn request_range(
        &self,
        cursor: u64,
        end: u64,
    ) -> Result<Incoming, RangeReply> {
        let head = self.object.head();
        let mut headers = self.target.headers.clone();
        headers.insert(header::RANGE, ByteRange::new(cursor, end).request_header());
        if let Some(validator) = head.if_range_validator() {
            headers.insert(header::IF_RANGE, validator);
        }
        let resp = self
            .ctx
            .get_upstream(&self.target.uri, headers, self.class(), self.target.reach)
            .await
            .map_err(|e| RangeReply::Transient(e.to_string()))?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ContentRange::parse)
                    .ok_or_else(|| {
                        RangeReply::Changed("206 without a usable Content-Range".into())
                    })?;
                if cr.range.start != cursor {
                    return Err(RangeReply::Changed(format!(
                        "asked for bytes from {cursor}, got {}",
                        cr.range
                    )));
                }
                if let Some(total) = cr.complete_len
                    && !self.object.set_len(total)
                {
                    return Err(RangeReply::Changed(format!(
                        "length is now {total}, was {:?}",
                        self.object.len()
                    )));
                }
                if let Some(reason) = validators_differ(&head.headers, resp.headers()) {
                    return Err(RangeReply::Changed(reason));
                }
                Ok(resp.into_body())
            }
            StatusCode::OK => Err(RangeReply::Changed(
                "origin answered a validated Range request with 200".into(),
            )),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(RangeReply::Changed(
                "origin says the range is not satisfiable".into(),
            )),
            status if status.is_server_error() => {
                Err(RangeReply::Transient(format!("origin answered {status}")))
            }
            status => Err(RangeReply::Changed(format!(
                "origin answered {status} to a Range request"
            ))),
        }
    }

    /// Requests `[cursor - overlap, end)`; with an overlap, checks those
    /// bytes against the disk and returns the body with what its first
    /// frames held beyond them.
    pub(super) async fn resume_at(
        &self,
        cursor: u64,
        overlap: u64,
        end: u64,
    ) -> Result<(Incoming, Bytes), RangeReply> {
        let mut body = self.request_range(cursor - overlap, end).await?;
        let rest = if overlap > 0 {
            self.check_overlap(&mut body, cursor - overlap, overlap)
                .await?
        } else {
            Bytes::new()
        };
        Ok((body, rest))
    }

    /// Reads the first `overlap` bytes of a resumed body (which starts at
    /// `from`) and compares them with the bytes on disk there. Returns what
    /// the last frame held beyond them.
    pub(super) async fn check_overlap(
        &self,
        body: &mut Incoming,
        from: u64,
        overlap: u64,
    ) -> Result<Bytes, RangeReply> {
        let idle = self.ctx.config.upstream_idle_timeout;
        let mut got = BytesMut::with_capacity(overlap as usize);
        while (got.len() as u64) < overlap {
            let frame = tokio::time::timeout(idle, body.frame())
                .await
                .map_err(|_| RangeReply::Transient(format!("no data from origin for {idle:?}")))?;
            match frame {
                None => return Err(RangeReply::Transient("origin closed the body early".into())),
                Some(Err(e)) => return Err(RangeReply::Transient(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.ctx
                            .stats
                            .wan_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        got.extend_from_slice(&data);
                    }
                }
            }
        }
        let rest = got.split_off(overlap as usize).freeze();
        let stored = self
            .object
            .read(from, overlap as usize)
            .await
            .map_err(|e| RangeReply::Transient(e.to_string()))?;
        if stored[..] != got[..] {
            return Err(RangeReply::Changed(format!(
                "bytes {from}..{} differ from the copy on disk (no validator to ask with)",
                from + overlap
            )));
        }
        Ok(rest)
    }

    /// Fetches `[range.start, range.end)` into the object, resuming after
    /// drops. `body` is an already-received response for that range.
    pub(super) async fn fetch(
        &self,
        claim: u64,
        range: ByteRange,
        mut body: Option<Incoming>,
    ) -> Result<(), FetchError> {
        let cfg = &self.ctx.config;
        let mut cursor = range.start;
        let mut end = range.end;
        let mut failures = 0u32;
        let mut last_progress = Instant::now();
        let mut last_error;
        loop {
            if let Some(len) = self.object.len() {
                end = end.min(len);
            }
            if cursor >= end {
                return Ok(());
            }
            if !cfg.continue_on_client_abort && self.readers.load(Ordering::Acquire) == 0 {
                return Err(FetchError::Abandoned);
            }
            let mut incoming = match body.take() {
                Some(b) => b,
                None => {
                    if failures > 0 {
                        self.ctx
                            .stats
                            .upstream_retries
                            .fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(self.backoff(failures)).await;
                    }
                    // Without a validator If-Range cannot tell a changed
                    // object: ask again from a little before the cursor and
                    // compare those bytes with the ones on disk.
                    let overlap = if self.object.head().if_range_validator().is_none() {
                        (cursor - range.start).min(RESUME_OVERLAP)
                    } else {
                        0
                    };
                    match self.resume_at(cursor, overlap, end).await {
                        Ok((b, rest)) => {
                            let mut pending = BytesMut::from(&rest[..]);
                            pending.truncate(end.saturating_sub(cursor) as usize);
                            self.flush(claim, &mut pending, &mut cursor).await?;
                            b
                        }
                        Err(RangeReply::Changed(reason)) => {
                            return Err(FetchError::Changed(reason));
                        }
                        Err(RangeReply::Transient(reason)) => {
                            failures += 1;
                            tracing::info!(key = %self.object.key(), cursor, failures, %reason, retry_in = ?self.backoff(failures), "upstream fetch failed; retrying");
                            last_error = reason;
                            if self.give_up(failures, last_progress) {
                                return Err(FetchError::Exhausted {
                                    attempts: failures,
                                    last: last_error,
                                });
                            }
                            continue;
                        }
                    }
                }
            };
            let start_cursor = cursor;
            let outcome = self
                .stream_body(claim, &mut incoming, &mut cursor, end)
                .await?;
            if cursor > start_cursor {
                failures = 0;
                last_progress = Instant::now();
            }
            match outcome {
                BodyEnd::Complete => {
                    if end == u64::MAX && self.object.len().is_none() {
                        // A body without a length ended cleanly: that is the length.
                        self.object.set_len(cursor);
                        return Ok(());
                    }
                    if cursor >= end || self.object.len().is_some_and(|l| cursor >= l) {
                        return Ok(());
                    }
                    last_error = format!("origin closed the body at byte {cursor}");
                }
                BodyEnd::Reached => return Ok(()),
                BodyEnd::Dropped(reason) => last_error = reason,
            }
            failures += 1;
            tracing::info!(key = %self.object.key(), cursor, failures, reason = %last_error, "upstream body interrupted; resuming");
            if self.give_up(failures, last_progress) {
                return Err(FetchError::Exhausted {
                    attempts: failures,
                    last: last_error,
                });
            }
        }
    }

    /// Copies a response body into the object from `cursor`, in batches.
    pub(super) async fn stream_body(
        &self,
        claim: u64,
        body: &mut Incoming,
        cursor: &mut u64,
        end: u64,
    ) -> Result<BodyEnd, FetchError> {
        let idle = self.ctx.config.upstream_idle_timeout;
        let shaper = &self.ctx.shaper;
        let flow = FlowId(shaper.flow(), shaper);
        let mut pending = BytesMut::new();
        let mut pending_since: Option<Instant> = None;
        loop {
            let deadline = pending_since.map_or_else(|| Instant::now() + idle, |t| t + FLUSH_DELAY);
            let frame = tokio::time::timeout_at(deadline, body.frame()).await;
            let mut received = 0;
            let end_state = match frame {
                Err(_) if pending_since.is_some() => {
                    self.flush(claim, &mut pending, cursor).await?;
                    pending_since = None;
                    continue;
                }
                Err(_) => Some(BodyEnd::Dropped(format!(
                    "no data from origin for {idle:?}"
                ))),
                Ok(None) => Some(BodyEnd::Complete),
                Ok(Some(Err(e))) => Some(BodyEnd::Dropped(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.ctx
                            .stats
                            .wan_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        received = data.len() as u64;
                        let room = end.saturating_sub(*cursor + pending.len() as u64);
                        let take = (data.len() as u64).min(room) as usize;
                        pending.extend_from_slice(&data[..take]);
                        pending_since.get_or_insert_with(Instant::now);
                        if *cursor + pending.len() as u64 >= end {
                            Some(BodyEnd::Reached)
                        } else {
                            None
                        }
                    } else {
                        None
                    }
                }
            };
            if pending.len() >= FLUSH_BYTES || end_state.is_some() {
                self.flush(claim, &mut pending, cursor).await?;
                pending_since = None;
            }
            if let Some(state) = end_state {
                if received > 0 {
                    shaper.charge_last(self.class(), self.target.group, received);
                }
                return Ok(state);
            }
            if received > 0
                && let Err(wait) =
                    shaper.try_charge(self.class(), self.target.group, flow.0, received)
            {
                // Readers get what is here before the fill pauses.
                self.flush(claim, &mut pending, cursor).await?;
                pending_since = None;
                wait.wait().await;
            }
        }
    }

    pub(super) async fn flush(
        &self,
        claim: u64,
        pending: &mut BytesMut,
        cursor: &mut u64,
    ) -> Result<(), FetchError> {
        if pending.is_empty() {
            return Ok(());
        }
        let data = pending.split().freeze();
        let n = data.len() as u64;
        if self.ctx.store.check_space(n).is_err() {
            // The disk reserve protects the system, not only new objects:
            // evict what no one uses, and if that is not enough this fill
            // stops keeping bytes (its readers go on from the origin).
            let store = self.ctx.store.clone();
            tokio::task::spawn_blocking(move || store.make_room_within_reserve(n))
                .await
                .map_err(|_| outpost_store::StoreError::Task)??;
            self.ctx.store.check_space(n)?;
        }
        let added = match self.object.write(*cursor, data.clone()).await {
            Err(e) if e.is_disk_full() => {
                // Make room by evicting what no one is using, then try once
                // more; a disk that stays full ends the fill as before.
                tracing::warn!(key = %self.object.key(), error = %e, "disk full during a fill; evicting");
                let store = self.ctx.store.clone();
                let wanted = n + DISK_FULL_HEADROOM;
                let freed = tokio::task::spawn_blocking(move || store.make_room(wanted))
                    .await
                    .map_err(|_| outpost_store::StoreError::Task)??;
                if freed == 0 {
                    return Err(e.into());
                }
                self.object.write(*cursor, data).await?
            }
            result => result?,
        };
        *cursor += n;
        self.ctx.store.account(added);
        self.advance_claim(claim, *cursor);
        let unsynced = self.ctx.store.unsynced(&self.object);
        let due = unsynced >= self.ctx.config.checkpoint_bytes
            || (unsynced >= FLUSH_BYTES as u64
                && lock(&self.last_checkpoint).elapsed() >= CHECKPOINT_INTERVAL);
        if due {
            *lock(&self.last_checkpoint) = Instant::now();
            self.ctx.store.checkpoint(&self.object).await?;
        }
        if matches!(self.object.phase(), Phase::Failed(_)) {
            return Err(FetchError::Changed(
                "object was dropped while filling".into(),
            ));
        }
        Ok(())
    }
}

/// One upstream body's fair-queueing identity, forgotten when it ends.
pub(super) struct FlowId<'a>(u64, &'a Arc<WanShaper>);

impl Drop for FlowId<'_> {
    fn drop(&mut self) {
        self.1.end_flow(self.0);
    }
}

pub(super) enum BodyEnd {
    /// The upstream body ended.
    Complete,
    /// We have every byte we asked for (the rest of the body is not needed).
    Reached,
    Dropped(String),
}

pub(super) enum RangeReply {
    Transient(String),
    Changed(String),
}

/// Compares the validators of the stored head with those of a new response
/// for the same object.
pub(super) fn validators_differ(stored: &HeaderMap, fresh: &HeaderMap) -> Option<String> {
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let (Some(a), Some(b)) = (stored.get(&name), fresh.get(&name))
            && a != b
        {
            return Some(format!("{name} changed from {a:?} to {b:?}"));
        }
    }
    None
}
