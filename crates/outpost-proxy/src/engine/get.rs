//! A GET: one lookup ([`crate::lookup::decide`]) with the request's one
//! `now`, then a hit, a share of a running fill, a revalidation or a miss;
//! and the freshness policy a stored response is judged by (the admin's
//! rules applied at lookup).

use super::*;

/// What a lookup found and decided.
pub(crate) struct Lookup {
    pub(crate) running: Option<Arc<ObjectFill>>,
    pub(crate) stored: Option<Arc<Object>>,
    pub(crate) decision: Decision,
}

/// Who a lookup is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asking {
    /// A client's GET or HEAD; `authorized`: it carries credentials (and
    /// is not for a digest-bound file).
    Client { authorized: bool },
    /// A pre-positioning sync; `digest_expected`: the manifest gives the
    /// body's SHA-256.
    Sync { digest_expected: bool },
}

/// How long a request waits for a fill that has every byte to record its
/// object (a sync and an index write) before sharing the fill instead.
pub(super) const RECORD_WAIT: Duration = Duration::from_secs(2);

/// A hit's verdict: an error status the origin gave a lifetime is Squid's
/// negative hit.
pub(super) fn hit_status(obj: &Object) -> CacheStatus {
    let status = obj.head().status;
    if status.is_client_error() || status.is_server_error() {
        CacheStatus::NegativeHit
    } else {
        CacheStatus::Hit
    }
}

pub(super) fn gateway_timeout() -> Response<EdgeBody> {
    marked(
        error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "not cached, and the request says only-if-cached",
        ),
        CacheStatus::Edge,
    )
}

impl Engine {
    /// The freshness policy of a response for `route` as the origin states
    /// it (what is stored), and as the admin's override makes it (what
    /// decides whether it may be stored). Overrides are applied again at
    /// each lookup ([`Engine::judged_head`]), so a rule added later reaches
    /// what is stored already, and a rule removed stops applying.
    pub(super) fn policies(
        &self,
        client: &HeaderMap,
        route: &Route,
        response: &response::Parts,
    ) -> (
        outpost_http::policy::CachePolicy,
        outpost_http::policy::CachePolicy,
    ) {
        let preq = self.policy_request(client, route, &response.headers);
        let targeted = self.targeted_for(route);
        // The instant the response is received, by the engine's clock.
        let received = self.clock.now();
        let origin =
            outpost_http::policy::policy_with_override(&preq, response, received, None, targeted);
        let judged = match self.freshness_rule(route) {
            Some(rule) => outpost_http::policy::policy_with_override(
                &preq,
                response,
                received,
                Some(rule),
                targeted,
            ),
            None => origin.clone(),
        };
        (origin, judged)
    }

    /// The admin's freshness rule for `route`, when it changes anything.
    pub(super) fn freshness_rule<'r>(
        &self,
        route: &'r Route,
    ) -> Option<&'r outpost_http::policy::FreshnessOverride> {
        self.rule(route)
            .map(|r| &r.freshness)
            .filter(|f| **f != outpost_http::policy::FreshnessOverride::default())
    }

    /// A stored head as this request judges it: with the admin's rule for
    /// its URL applied to the origin's response as received (Squid's
    /// refresh_pattern, applied at lookup), else as stored.
    pub(crate) fn judged_head(
        &self,
        head: Arc<StoredHead>,
        client: &HeaderMap,
        route: &Route,
    ) -> Arc<StoredHead> {
        let Some(rule) = self.freshness_rule(route) else {
            return head;
        };
        let mut response: response::Parts = Response::new(()).into_parts().0;
        response.status = head.status;
        response.headers = head.headers.clone();
        if !head.arrival_age().is_zero() {
            response
                .headers
                .insert(header::AGE, HeaderValue::from(head.arrival_age().as_secs()));
        }
        let preq = self.policy_request(client, route, &head.headers);
        let targeted = self.targeted_for(route);
        let policy = outpost_http::policy::policy_with_override(
            &preq,
            &response,
            head.received(),
            Some(rule),
            targeted,
        );
        Arc::new(StoredHead::new(head.status, head.headers.clone(), policy))
    }

    /// The request as the policy library should see it, for a response
    /// with headers `response` (whose `Vary` names the fields to compare).
    pub(super) fn policy_request(
        &self,
        headers: &HeaderMap,
        route: &Route,
        response: &HeaderMap,
    ) -> request::Parts {
        let uri = super::policy_uri::policy_uri(&route.upstream_uri);
        let (mut parts, ()) = Request::builder()
            .method(Method::GET)
            .uri(uri.clone())
            .body(())
            .unwrap_or_default()
            .into_parts();
        parts.headers = headers.clone();
        vary::normalize_request(&mut parts.headers);
        if let Some(names) = vary::vary_names(response) {
            vary::canonicalize_request(&mut parts.headers, &names);
        }
        // Clients may address the edge by any name; what identifies the
        // representation is the origin URL.
        if let Some(authority) = uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
        parts
    }

    /// Waits, briefly, for a fill that has every byte to record its object.
    /// Returns whether it did (else the caller shares the fill as before:
    /// a slow disk must not turn into an error).
    pub(super) async fn until_recorded(&self, fill: &Arc<ObjectFill>) -> bool {
        let mut changes = fill.object.subscribe();
        let recorded = async {
            loop {
                let still_filling = self
                    .fills
                    .active(fill.object.key())
                    .is_some_and(|f| Arc::ptr_eq(&f, fill));
                if fill.object.is_complete() || !still_filling {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(RECORD_WAIT, recorded).await.is_ok()
    }

    /// The one lookup, of a client's GET or HEAD and of a sync alike: the
    /// facts for `route`'s key, and what [`decide`] makes of them at `now`.
    /// Heads are judged by the admin's rules for the route; a sync reads
    /// only their status and validators, which judging leaves as stored.
    pub(crate) fn look_up(
        &self,
        headers: &HeaderMap,
        route: &Route,
        asking: Asking,
        now: SystemTime,
    ) -> Lookup {
        let running = self.fills.active(&route.key);
        let stored = self.lookup(&route.key);
        let judged = |head| self.judged_head(head, headers, route);
        let running_head = running.as_ref().map(|f| judged(f.object.head()));
        let stored_head = stored.as_ref().map(|o| (judged(o.head()), o.phase()));
        let policy_request = |head: &StoredHead| self.policy_request(headers, route, &head.headers);
        let targeted = self.targeted_for(route);
        let asker = match asking {
            Asking::Client { authorized } => Asker::Client(ClientRequest {
                headers,
                authorized,
                policy_request: &policy_request,
                targeted,
                sync_fresh: self.sync_fresh.get(&route.key),
            }),
            Asking::Sync { digest_expected } => Asker::Sync { digest_expected },
        };
        let decision = decide(
            stored_head
                .as_ref()
                .map(|(head, phase)| Stored { head, phase }),
            running
                .as_ref()
                .zip(running_head.as_deref())
                .map(|(fill, head)| Running {
                    head,
                    complete: fill.object.is_complete(),
                    fully_present: fill.object.is_fully_present(),
                }),
            &asker,
            now,
        );
        Lookup {
            running,
            stored,
            decision,
        }
    }

    /// The object stored under `key`; a store that cannot be read is a miss.
    pub(super) fn lookup(&self, key: &CacheKey) -> Option<Arc<Object>> {
        match self.store.get(key) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(key = %key, error = %e, "store lookup failed; treating as a miss");
                None
            }
        }
    }

    pub(super) fn target(&self, client: &HeaderMap, route: &Route) -> UpstreamTarget {
        UpstreamTarget {
            uri: route.upstream_uri.clone(),
            headers: upstream_headers(client, true, route.surrogate, &self.via),
            class: Class::Interactive,
            group: None,
            reach: route.reach,
        }
    }

    pub(super) fn serve_fill(
        &self,
        fill: Arc<ObjectFill>,
        parts: &request::Parts,
        status: CacheStatus,
        now: SystemTime,
    ) -> Response<EdgeBody> {
        let source = FillSource {
            ctx: self.fills.clone(),
            target: fill.target().clone(),
        };
        fill.promote();
        let guard = fill.reader();
        object_response(
            fill.object.clone(),
            parts,
            Some(source),
            Some(guard),
            status,
            now,
        )
    }

    /// `digest_bound`: a manifest gives this URL's digest, so the answer is
    /// a checked copy or an error, never the origin's bytes passed on.
    pub(super) async fn handle_get(
        self: &Arc<Self>,
        parts: request::Parts,
        route: Route,
        digest_bound: bool,
    ) -> Response<EdgeBody> {
        // Every freshness decision of this request is made at this instant.
        let now = self.clock.now();
        if digest_bound && let Some(resp) = self.checked_copy(&parts, &route, now) {
            return resp;
        }
        // A response fetched for another client's request answers one with
        // credentials only if the origin made it shareable (RFC 9111
        // section 3.5). What the admin published for every PC (a
        // digest-bound file, a file a channel vouches for) is shared
        // whatever the request's credentials.
        let authorized = !digest_bound
            && !self.vouched(&route.key)
            && parts.headers.contains_key(header::AUTHORIZATION);
        let targeted = self.targeted_for(&route);
        let may_share = |head: &StoredHead| !authorized || explicitly_shared(head, targeted);
        // The upstream target is built only off the plain-hit path (most
        // requests never need it); a variant route differs only by its key.
        for _ in 0..4 {
            let route = self.select_variant(route.clone(), &parts.headers);
            let Lookup {
                running,
                stored,
                decision,
            } = self.look_up(&parts.headers, &route, Asking::Client { authorized }, now);
            let seen = stored.as_ref().map(|o| o.id());
            let mut revalidate = None;
            match decision {
                Decision::PassOwn => return self.pass_own(parts, &route).await,
                Decision::AwaitRecord => {
                    if let Some(fill) = &running
                        && self.until_recorded(fill).await
                    {
                        continue;
                    }
                    // Recording is slow (a busy disk): share the fill as
                    // before rather than fail.
                    if let Some(fill) = running {
                        self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                        return self.serve_fill(fill, &parts, CacheStatus::Miss, now);
                    }
                    continue;
                }
                Decision::JoinFill => {
                    let Some(fill) = running else { continue };
                    self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                    return self.serve_fill(fill, &parts, CacheStatus::Miss, now);
                }
                Decision::Hit => {
                    let Some(obj) = stored else { continue };
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    self.store.touch(&obj);
                    let status = hit_status(&obj);
                    return object_response(obj, &parts, None, None, status, now);
                }
                Decision::FetchRest => {
                    let Some(obj) = stored else { continue };
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    let fill = self.fills.attach(obj, self.target(&parts.headers, &route));
                    return self.serve_fill(fill, &parts, CacheStatus::PartialHit, now);
                }
                Decision::StaleWhileRevalidate { conditional } => {
                    let Some(obj) = stored else { continue };
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    self.refresh_in_background(obj.clone(), conditional, &parts, &route, now);
                    return object_response(
                        obj,
                        &parts,
                        None,
                        None,
                        CacheStatus::StaleWhileRevalidate,
                        now,
                    );
                }
                Decision::OnlyIfCached => return gateway_timeout(),
                Decision::Revalidate { conditional } => {
                    let Some(obj) = stored else { continue };
                    revalidate = Some((obj, conditional));
                }
                Decision::Miss => {}
                // Only syncs are told these.
                Decision::KeepUnvalidated | Decision::CheckDigest => {}
            }
            let client_range = self.range_to_fetch(&parts.headers);
            let engine = self.clone();
            let key = route.key.clone();
            let (outcome, changed) = match revalidate {
                Some((obj, conditional)) => {
                    // A new body after a request with our validators is a
                    // refresh; without any, the request was a plain fetch.
                    let changed = if conditional.is_empty() {
                        CacheStatus::Miss
                    } else {
                        CacheStatus::Refreshed
                    };
                    let target = self.target(&parts.headers, &route);
                    let route = route.clone();
                    let headers = parts.headers.clone();
                    (
                        self.collapse(&key, seen, async move {
                            engine
                                .revalidate(obj, conditional, headers, target, route, now)
                                .await
                        })
                        .await,
                        changed,
                    )
                }
                None => {
                    let target = self.target(&parts.headers, &route);
                    let route = route.clone();
                    let headers = parts.headers.clone();
                    (
                        self.collapse(&key, seen, async move {
                            engine
                                .fetch_miss(headers, target, route, client_range)
                                .await
                        })
                        .await,
                        CacheStatus::Miss,
                    )
                }
            };
            let Some(Collapsed { outcome, led }) = outcome else {
                continue;
            };
            // The decisions were made at `now`; what the origin sent arrived
            // later, and the `Age` this response carries is counted to when
            // it is sent (a response that arrived with Age 7200 must not go
            // out with 7199).
            let sent_at = self.clock.now();
            // What this client's own request brought back is its own.
            let shared_with_me = |head: &StoredHead| led || may_share(head);
            match outcome {
                Outcome::Fill(fill) => {
                    // The response turned out to vary: serve it only to
                    // clients that select the same variant.
                    if fill.object.key() != &route.key
                        && &self.select_variant(route.clone(), &parts.headers).key
                            != fill.object.key()
                    {
                        continue;
                    }
                    if !shared_with_me(&fill.object.head()) {
                        return self.pass_own(parts, &route).await;
                    }
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    return self.serve_fill(fill, &parts, changed, sent_at);
                }
                Outcome::Refreshed(obj) | Outcome::Stale(obj) if !shared_with_me(&obj.head()) => {
                    return self.pass_own(parts, &route).await;
                }
                Outcome::Refreshed(obj) => {
                    self.stats.revalidated.fetch_add(1, Ordering::Relaxed);
                    self.store.touch(&obj);
                    return object_response(
                        obj,
                        &parts,
                        None,
                        None,
                        CacheStatus::Revalidated,
                        sent_at,
                    );
                }
                Outcome::Stale(obj) => {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    let mut resp = object_response(
                        obj,
                        &parts,
                        None,
                        None,
                        CacheStatus::StaleOnError,
                        sent_at,
                    );
                    resp.headers_mut().insert(
                        header::WARNING,
                        HeaderValue::from_static("111 outpost \"Revalidation Failed\""),
                    );
                    return resp;
                }
                Outcome::Passthrough(status, _) if digest_bound => {
                    tracing::warn!(key = %route.key, %status, "the origin's answer for a digest-bound file cannot be stored and checked: 502");
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return marked(
                        error_response(
                            StatusCode::BAD_GATEWAY,
                            "pre-positioned file: the origin's answer could not be checked against the manifest",
                        ),
                        CacheStatus::OriginFailed,
                    );
                }
                Outcome::Passthrough(_, slot) => {
                    // Only the client whose headers were sent may see this
                    // answer: it may be private to that client, or carry
                    // its cookies. Every other waiter asks for itself.
                    let taken = if led { lock(&slot).take() } else { None };
                    return match taken {
                        Some(resp) => {
                            self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
                            passthrough_response(resp, &self.fills.shaper)
                        }
                        None => self.pass_own(parts, &route).await,
                    };
                }
                Outcome::Refused(refusal) => {
                    return refused_destination(&refusal);
                }
                Outcome::Failed(failure) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let (message, verdict) = match failure.side {
                        FailedSide::Origin => ("origin unavailable", CacheStatus::OriginFailed),
                        FailedSide::Disk => {
                            ("the edge could not store the response", CacheStatus::Edge)
                        }
                    };
                    return marked(
                        error_response(StatusCode::BAD_GATEWAY, &format!("{message}: {failure}")),
                        verdict,
                    );
                }
                Outcome::Busy => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let mut resp = error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "the edge is already fetching {} objects (fill.max_fills); try again shortly",
                            self.config.fill.max_fills
                        ),
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return marked(resp, CacheStatus::Edge);
                }
            }
        }
        marked(
            error_response(StatusCode::BAD_GATEWAY, "could not obtain the object"),
            CacheStatus::OriginFailed,
        )
    }

    /// The stored copy of a digest-bound URL, when it is complete and has
    /// the manifest's digest: it answers every request, fresh or not, with
    /// or without `no-cache`. The manifest vouches for it, and a refresh
    /// from a mirror that has changed the file would only replace a good
    /// copy with one that fails its check; the channel's next sync is what
    /// brings a new version.
    pub(super) fn checked_copy(
        &self,
        parts: &request::Parts,
        route: &Route,
        now: SystemTime,
    ) -> Option<Response<EdgeBody>> {
        let route = self.select_variant(route.clone(), &parts.headers);
        let expected = self.store.expected_digest(&route.key)?;
        let obj = self.store.get(&route.key).ok().flatten()?;
        if !obj.is_complete() || self.store.digest(&route.key).ok().flatten()? != expected {
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        self.store.touch(&obj);
        let status = hit_status(&obj);
        Some(object_response(obj, parts, None, None, status, now))
    }

    /// The single range to request upstream for a range miss, if the policy
    /// says to fetch ranges at once.
    pub(super) fn range_to_fetch(&self, headers: &HeaderMap) -> Option<ByteRange> {
        if self.config.fill.range_miss != RangeMissPolicy::Fetch {
            return None;
        }
        let value = headers.get(header::RANGE)?.to_str().ok()?;
        let specs = parse_range_header(value).ok()?;
        // Only a single explicit range is worth a partial fetch; suffixes
        // and multiple ranges take the whole object.
        match specs.as_slice() {
            [spec @ RangeSpec::FromTo { .. }] => {
                let (start, end) = spec.known_start()?;
                Some(ByteRange::new(start, end.unwrap_or(u64::MAX)))
            }
            _ => None,
        }
    }
}
