//! Revalidation: one conditional request for a stale copy, the 304 merged
//! into the stored head, stale-if-error and stale-while-revalidate.

use super::*;

/// Whether a 304's validators name a representation other than the stored
/// one (a strong ETag mismatch, or a different Last-Modified).
pub(super) fn validators_contradict(stored: &HeaderMap, fresh: &HeaderMap) -> bool {
    let tag = |h: &HeaderMap| {
        h.get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.trim().trim_start_matches("W/").to_string())
    };
    if let (Some(a), Some(b)) = (tag(stored), tag(fresh)) {
        return a != b;
    }
    match (
        stored.get(header::LAST_MODIFIED),
        fresh.get(header::LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

impl Engine {
    /// Revalidates `obj` for later clients (stale-while-revalidate), joined
    /// with any revalidation already running for the key.
    pub(super) fn refresh_in_background(
        self: &Arc<Self>,
        obj: Arc<Object>,
        conditional: HeaderMap,
        parts: &request::Parts,
        route: &Route,
        now: SystemTime,
    ) {
        let engine = self.clone();
        let target = self.target(&parts.headers, route);
        let client = parts.headers.clone();
        let route = route.clone();
        let seen = Some(obj.id());
        tokio::spawn(async move {
            let key = route.key.clone();
            let inner = engine.clone();
            let outcome = engine
                .collapse(&key, seen, async move {
                    inner
                        .revalidate(obj, conditional, client, target, route, now)
                        .await
                })
                .await;
            // A changed object starts a fill; nobody waits for it here, and
            // the fill goes on by itself.
            drop(outcome);
        });
    }

    /// Leader of a revalidation: one conditional request for everyone.
    pub(crate) async fn revalidate(
        self: Arc<Self>,
        obj: Arc<Object>,
        conditional: HeaderMap,
        client: HeaderMap,
        target: UpstreamTarget,
        route: Route,
        now: SystemTime,
    ) -> Outcome {
        let mut headers = target.headers.clone();
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(v) = conditional.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        let head = obj.head();
        // Stale on error: within the response's or the request's
        // stale-if-error window, or by the admin switch where the origin
        // did not close the door (cache_control::stale_on_error_allows).
        // Staleness counts from the end of freshness the lookup used, the
        // admin's rule applied, as stale-while-revalidate's does.
        let judged = self.judged_head(head.clone(), &client, &route);
        let stale_ok = cache_control::stale_on_error_allows(
            &self.caching_view(&head.headers, &route),
            &client,
            judged.staleness(now),
            self.config.fill.serve_stale_on_error,
        );
        let sent = self
            .fills
            .get_upstream(&target.uri, headers, target.class, target.reach)
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(UpstreamError::Refused(refusal)) => return Outcome::Refused(refusal),
            Err(e) if stale_ok => {
                tracing::warn!(key = %route.key, error = %e, "origin unreachable; serving stale");
                return Outcome::Stale(obj);
            }
            Err(e) => return Outcome::Failed(Failure::origin(e)),
        };
        if resp.status() == StatusCode::NOT_MODIFIED {
            let (rparts, _) = resp.into_parts();
            // RFC 9111 section 4.3.4: a 304 whose validators contradict ours
            // is about another representation; fetch the current one. A 304
            // without validators answers the conditional we sent for ours.
            if validators_contradict(&head.headers, &rparts.headers) {
                return self.fetch_miss(client, target, route, None).await;
            }
            let turned_private = |h: &HeaderMap| {
                cache_control::has(h, "private") || cache_control::has(h, "no-store")
            };
            // Either field saying so is enough: what clients see and what
            // the edge obeys as the CDN.
            if turned_private(&rparts.headers)
                || turned_private(&self.caching_view(&rparts.headers, &route))
            {
                // The response is no longer for everyone: merged into the
                // stored copy, it (and whatever per-user field came with
                // it) would be served to every PC. The stored copy goes;
                // the leader gets a full answer of its own.
                if let Err(e) = self.purge(obj.key()) {
                    tracing::warn!(key = %route.key, error = %e, "cannot drop a copy that turned private");
                }
                return self.fetch_miss(client, target, route, None).await;
            }
            // RFC 9111 section 3.2: every field of the 304 replaces the
            // stored one, except those that describe the stored body itself
            // (its coding, digest and range), which a 304 cannot change.
            let mut headers = head.headers.clone();
            let update = stored_headers(&rparts.headers, StatusCode::PARTIAL_CONTENT);
            for name in update.keys() {
                if matches!(
                    name.as_str(),
                    "content-encoding"
                        | "content-md5"
                        | "digest"
                        | "content-digest"
                        | "repr-digest"
                ) {
                    continue;
                }
                // A cookie set on a 304 is for the client whose request
                // revalidated, not for every PC the stored response serves;
                // likewise the origin's answer to its credentials.
                // (`Set-Cookie2`, obsolete since RFC 6265 and read by no
                // client, is updated as RFC 9111 section 3.2 says.)
                if matches!(
                    name.as_str(),
                    "set-cookie" | "authentication-info" | "proxy-authentication-info"
                ) {
                    continue;
                }
                headers.remove(name);
                for value in update.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            let mut merged: response::Parts = Response::new(()).into_parts().0;
            merged.status = head.status;
            merged.headers = headers.clone();
            let (policy, _) = self.policies(&client, &route, &merged);
            headers.remove(header::AGE);
            let new_head = StoredHead::new(head.status, headers, policy);
            if let Err(e) = self.store.update_head(&obj, new_head) {
                tracing::warn!(key = %route.key, error = %e, "could not record revalidation");
            }
            return Outcome::Refreshed(obj);
        }
        if resp.status().is_server_error() && stale_ok {
            return Outcome::Stale(obj);
        }
        self.store_response(&client, resp, target, &route)
    }
}
