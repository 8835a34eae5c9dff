//! The one cache lookup: what a request does with what is stored for its
//! key, what is being filled, and the time.
//!
//! [`decide`] is sans-io. The engine gathers the facts (the running fill,
//! the stored object, the request) and acts on the [`Decision`]; client
//! GETs and pre-positioning syncs both come through here, so the two can
//! no longer disagree about when a copy is usable. Nothing here reads a
//! clock, a socket or the disk: every rule is a unit test.
//!
//! Invariant: a decision to reuse a stored copy without asking the origin
//! (`Hit`, `FetchRest` for a client, `StaleWhileRevalidate`) is only made
//! when the copy may be shared with this request and is fresh at `now`
//! (or within its stale-while-revalidate window), or is a complete 2xx
//! copy a channel vouches for at `now` ([`crate::sync_fresh`]).

use std::time::SystemTime;

use http::{HeaderMap, header, request};
use outpost_http::cache_control;
use outpost_http::policy::BeforeRequest;
use outpost_store::{Phase, StoredHead};

use crate::sync_fresh::FreshUntil;

/// The fill running for the key, if any.
#[derive(Clone, Copy)]
pub(crate) struct Running<'a> {
    pub head: &'a StoredHead,
    /// Its object is complete (the fill is about to leave the map).
    pub complete: bool,
    /// Every byte is on disk; the fill is only recording the object.
    pub fully_present: bool,
}

/// The object stored under the key.
#[derive(Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub head: &'a StoredHead,
    pub phase: &'a Phase,
}

/// Who asks.
pub(crate) enum Asker<'a> {
    /// A client's GET.
    Client(ClientRequest<'a>),
    /// A pre-positioning sync: it wants the current version stored whole,
    /// whatever the stored copy's freshness.
    Sync {
        /// The manifest gives the body's SHA-256.
        digest_expected: bool,
    },
}

pub(crate) struct ClientRequest<'a> {
    pub headers: &'a HeaderMap,
    /// The request carries credentials (and is not for a digest-bound
    /// file): only responses the origin made shareable answer it.
    pub authorized: bool,
    /// The request as the policy library reads it for a stored head (whose
    /// `Vary` names the fields compared). Built only off the plain-hit path.
    pub policy_request: &'a dyn Fn(&StoredHead) -> request::Parts,
    /// The targeted cache-control fields (RFC 9213) that speak to the edge
    /// for this route: set when the edge is the origin's CDN.
    pub targeted: Option<&'a outpost_http::policy::TargetedFields>,
    /// A channel vouches for the stored copy until then (`revalidate =
    /// "sync"`), see [`crate::sync_fresh`].
    pub sync_fresh: Option<FreshUntil>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Share the running fill: a client streams from it, a sync makes it
    /// bring the whole object and waits.
    JoinFill,
    /// The running fill has every byte and is recording its object, which
    /// is not fresh for this request: wait for the record, then look again
    /// (a request arriving now came after the response).
    AwaitRecord,
    /// The copy may not answer this request (credentials): send the
    /// client's own request, and store nothing.
    PassOwn,
    /// Serve the complete stored copy.
    Hit,
    /// The stored copy is partial (a range fill, a fill cut short by a
    /// restart): serve what is there and fetch the rest.
    FetchRest,
    /// Serve the stale copy now and refresh it in the background (RFC 5861).
    StaleWhileRevalidate { conditional: HeaderMap },
    /// Ask the origin whether the stored copy is current, with these
    /// conditional headers.
    Revalidate { conditional: HeaderMap },
    /// A sync finds a copy without validators: there is no way to ask
    /// whether it changed, so it is kept until a client revalidates it.
    KeepUnvalidated,
    /// A sync finds a complete copy of a file whose digest the manifest
    /// gives: compare digests (a match needs no request at all; a mismatch
    /// is fetched again unconditionally, since a 304 would keep it).
    CheckDigest,
    /// Nothing usable is stored and the client forbids asking the origin
    /// (`only-if-cached`): 504.
    OnlyIfCached,
    /// Fetch from the origin.
    Miss,
}

pub(crate) fn decide(
    stored: Option<Stored<'_>>,
    running: Option<Running<'_>>,
    asker: &Asker<'_>,
    now: SystemTime,
) -> Decision {
    match asker {
        Asker::Client(request) => for_client(stored, running, request, now),
        Asker::Sync { digest_expected } => for_sync(stored, running, *digest_expected),
    }
}

fn for_client(
    stored: Option<Stored<'_>>,
    running: Option<Running<'_>>,
    request: &ClientRequest<'_>,
    now: SystemTime,
) -> Decision {
    let may_share =
        |head: &StoredHead| !request.authorized || explicitly_shared(head, request.targeted);
    // A fill whose object just completed is about to leave the map: its
    // object is judged as the stored copy it now is.
    if let Some(fill) = running.filter(|f| !f.complete) {
        if !may_share(fill.head) {
            return Decision::PassOwn;
        }
        // A request that arrives while the response streams shares it
        // (collapsed forwarding). Once every byte is in, a request is
        // judged by freshness like any later one (a response with no
        // lifetime is not reused).
        if fill.fully_present && !fresh(fill.head, request, now) {
            return Decision::AwaitRecord;
        }
        return Decision::JoinFill;
    }
    let only_if_cached = cache_control::has(request.headers, "only-if-cached");
    let Some(stored) = stored else {
        return miss(only_if_cached);
    };
    let head = stored.head;
    if !may_share(head) {
        return Decision::PassOwn;
    }
    let complete = *stored.phase == Phase::Complete;
    // A pre-positioned file is fresh until its channel's grant ends,
    // whatever the origin's or the client's headers say (a PC's Ctrl-F5
    // included): the channel's sync is what asks the origin.
    if complete
        && head.status.is_success()
        && request.sync_fresh.is_some_and(|until| until.covers(now))
    {
        return Decision::Hit;
    }
    // The common hit: a plain request for a stored response that does not
    // vary. RFC 9111 then reduces to "is it fresh?", with no date parsing.
    let plain = !request.headers.contains_key(header::CACHE_CONTROL)
        && !request.headers.contains_key(header::PRAGMA)
        && !head.headers.contains_key(header::VARY);
    if plain && complete && head.is_fresh(now) {
        return Decision::Hit;
    }
    let policy_request = (request.policy_request)(head);
    match head.policy.before_request(&policy_request, now) {
        BeforeRequest::Fresh(_) if complete => Decision::Hit,
        BeforeRequest::Fresh(_) if *stored.phase == Phase::Filling => Decision::FetchRest,
        BeforeRequest::Stale {
            request: conditional,
            matches: true,
        } if complete => {
            let directives = match request.targeted {
                Some(targeted) => targeted.view(&head.headers),
                None => std::borrow::Cow::Borrowed(&head.headers),
            };
            if cache_control::stale_while_revalidate_allows(&directives, head.staleness(now))
                && !demands_validation(request.headers)
            {
                return Decision::StaleWhileRevalidate {
                    conditional: conditional.headers,
                };
            }
            if only_if_cached {
                return Decision::OnlyIfCached;
            }
            Decision::Revalidate {
                conditional: conditional.headers,
            }
        }
        _ => miss(only_if_cached),
    }
}

fn miss(only_if_cached: bool) -> Decision {
    if only_if_cached {
        // RFC 9111 section 5.2.1.7: nothing usable is stored, and the
        // client forbids asking the origin.
        Decision::OnlyIfCached
    } else {
        Decision::Miss
    }
}

fn fresh(head: &StoredHead, request: &ClientRequest<'_>, now: SystemTime) -> bool {
    let policy_request = (request.policy_request)(head);
    matches!(
        head.policy.before_request(&policy_request, now),
        BeforeRequest::Fresh(_)
    )
}

fn for_sync(
    stored: Option<Stored<'_>>,
    running: Option<Running<'_>>,
    digest_expected: bool,
) -> Decision {
    // Someone's fill runs (a client's range, perhaps): it is made to bring
    // the whole object, and the sync waits for it.
    if running.is_some() {
        return Decision::JoinFill;
    }
    let Some(stored) = stored else {
        return Decision::Miss;
    };
    match stored.phase {
        // A stored error (a 503 the origin gave a lifetime) is not the
        // package: ask for the package.
        Phase::Complete if !stored.head.status.is_success() => Decision::Miss,
        Phase::Complete if digest_expected => Decision::CheckDigest,
        Phase::Complete => {
            let conditional = sync_conditional(stored.head);
            if conditional.is_empty() {
                Decision::KeepUnvalidated
            } else {
                Decision::Revalidate { conditional }
            }
        }
        Phase::Filling => Decision::FetchRest,
        Phase::Failed(_) => Decision::Miss,
    }
}

/// The conditional headers a sync asks with: the stored validators.
pub(crate) fn sync_conditional(head: &StoredHead) -> HeaderMap {
    let mut conditional = HeaderMap::new();
    if let Some(etag) = head.etag() {
        conditional.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = head.last_modified() {
        conditional.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
    conditional
}

/// Whether the origin made a response shareable with requests that carry
/// `Authorization` (RFC 9111 section 3.5), as the edge reads its
/// directives: through the targeted fields (RFC 9213) when the edge is the
/// origin's CDN, so that `Cache-Control: public` meant for browsers does
/// not share what `CDN-Cache-Control` does not.
pub(crate) fn explicitly_shared(
    head: &StoredHead,
    targeted: Option<&outpost_http::policy::TargetedFields>,
) -> bool {
    let directives = match targeted {
        Some(targeted) => targeted.view(&head.headers),
        None => std::borrow::Cow::Borrowed(&head.headers),
    };
    cache_control::has(&directives, "public")
        || cache_control::has(&directives, "must-revalidate")
        || cache_control::seconds(&directives, "s-maxage").is_some()
}

/// The client wants the origin asked (no-cache, max-age=0, Pragma).
fn demands_validation(request: &HeaderMap) -> bool {
    cache_control::has(request, "no-cache")
        || cache_control::seconds(request, "max-age") == Some(0)
        || request
            .get(header::PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request, Response, StatusCode};
    use std::time::Duration;

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn plain_request(headers: &HeaderMap) -> request::Parts {
        let (mut parts, ()) = Request::builder()
            .uri("http://origin/pkg")
            .body(())
            .unwrap()
            .into_parts();
        parts.headers = headers.clone();
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("origin"));
        parts
    }

    /// A head for a response received at `at(0)` with these headers.
    fn head(status: u16, fields: &[(&str, &str)]) -> StoredHead {
        let mut res = Response::builder().status(status);
        for (name, value) in fields {
            res = res.header(*name, *value);
        }
        let (res, ()) = res.body(()).unwrap().into_parts();
        let policy =
            outpost_http::policy::policy_for(&plain_request(&HeaderMap::new()), &res, at(0));
        StoredHead::new(StatusCode::from_u16(status).unwrap(), res.headers, policy)
    }

    fn client(headers: &HeaderMap, now: u64, stored: Option<(&StoredHead, Phase)>) -> Decision {
        client_with(headers, false, now, stored, None)
    }

    fn client_with(
        headers: &HeaderMap,
        authorized: bool,
        now: u64,
        stored: Option<(&StoredHead, Phase)>,
        running: Option<Running<'_>>,
    ) -> Decision {
        client_vouched(headers, authorized, now, stored, running, None)
    }

    fn client_vouched(
        headers: &HeaderMap,
        authorized: bool,
        now: u64,
        stored: Option<(&StoredHead, Phase)>,
        running: Option<Running<'_>>,
        sync_fresh: Option<FreshUntil>,
    ) -> Decision {
        let headers_for_policy = headers.clone();
        let policy_request = move |_: &StoredHead| plain_request(&headers_for_policy);
        let asker = Asker::Client(ClientRequest {
            headers,
            authorized,
            policy_request: &policy_request,
            targeted: None,
            sync_fresh,
        });
        let stored = stored.as_ref().map(|(head, phase)| Stored { head, phase });
        decide(stored, running, &asker, at(now))
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_fresh_complete_copy_is_a_hit_and_a_stale_one_is_revalidated() {
        let stored = head(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let none = HeaderMap::new();
        assert_eq!(
            client(&none, 59, Some((&stored, Phase::Complete))),
            Decision::Hit
        );
        match client(&none, 61, Some((&stored, Phase::Complete))) {
            Decision::Revalidate { conditional } => {
                assert_eq!(conditional.get(header::IF_NONE_MATCH).unwrap(), "\"v1\"");
            }
            other => panic!("stale: {other:?}"),
        }
    }

    #[test]
    fn the_request_now_decides_not_the_instant_the_head_was_made() {
        // Made long after its response arrived (a restart): judged by the
        // request's now alone.
        let stored = head(200, &[("cache-control", "max-age=60")]);
        let none = HeaderMap::new();
        assert!(
            matches!(
                client(&none, 600, Some((&stored, Phase::Complete))),
                Decision::Revalidate { .. }
            ),
            "stale at the request's now: the origin is asked"
        );
        assert_eq!(
            client(&none, 30, Some((&stored, Phase::Complete))),
            Decision::Hit
        );
    }

    #[test]
    fn a_fresh_partial_copy_fetches_the_rest() {
        let stored = head(200, &[("cache-control", "max-age=60")]);
        let none = HeaderMap::new();
        assert_eq!(
            client(&none, 1, Some((&stored, Phase::Filling))),
            Decision::FetchRest
        );
        assert_eq!(
            client(&none, 61, Some((&stored, Phase::Filling))),
            Decision::Miss
        );
    }

    #[test]
    fn stale_while_revalidate_serves_within_its_window_unless_the_client_insists() {
        let stored = head(
            200,
            &[
                ("cache-control", "max-age=60, stale-while-revalidate=30"),
                ("etag", "\"v1\""),
            ],
        );
        let none = HeaderMap::new();
        assert!(matches!(
            client(&none, 80, Some((&stored, Phase::Complete))),
            Decision::StaleWhileRevalidate { .. }
        ));
        assert!(matches!(
            client(&none, 100, Some((&stored, Phase::Complete))),
            Decision::Revalidate { .. }
        ));
        let insists = headers(&[("cache-control", "no-cache")]);
        assert!(matches!(
            client(&insists, 80, Some((&stored, Phase::Complete))),
            Decision::Revalidate { .. }
        ));
    }

    #[test]
    fn only_if_cached_never_asks_the_origin() {
        let cached_only = headers(&[("cache-control", "only-if-cached")]);
        assert_eq!(client(&cached_only, 0, None), Decision::OnlyIfCached);
        let stored = head(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        assert_eq!(
            client(&cached_only, 61, Some((&stored, Phase::Complete))),
            Decision::OnlyIfCached
        );
        assert_eq!(
            client(&cached_only, 1, Some((&stored, Phase::Complete))),
            Decision::Hit
        );
    }

    #[test]
    fn credentials_share_only_what_the_origin_shares() {
        let private = head(200, &[("cache-control", "max-age=60")]);
        let public = head(200, &[("cache-control", "public, max-age=60")]);
        let none = HeaderMap::new();
        assert_eq!(
            client_with(&none, true, 1, Some((&private, Phase::Complete)), None),
            Decision::PassOwn
        );
        assert_eq!(
            client_with(&none, true, 1, Some((&public, Phase::Complete)), None),
            Decision::Hit
        );
        let running = Running {
            head: &private,
            complete: false,
            fully_present: false,
        };
        assert_eq!(
            client_with(&none, true, 1, None, Some(running)),
            Decision::PassOwn
        );
    }

    #[test]
    fn a_running_fill_is_joined_until_it_only_records_a_response_not_fresh() {
        let fresh = head(200, &[("cache-control", "max-age=60")]);
        let no_lifetime = head(200, &[("cache-control", "no-cache")]);
        let none = HeaderMap::new();
        let streaming = |head| Running {
            head,
            complete: false,
            fully_present: false,
        };
        let recording = |head| Running {
            head,
            complete: false,
            fully_present: true,
        };
        assert_eq!(
            client_with(&none, false, 1, None, Some(streaming(&no_lifetime))),
            Decision::JoinFill
        );
        assert_eq!(
            client_with(&none, false, 1, None, Some(recording(&fresh))),
            Decision::JoinFill
        );
        assert_eq!(
            client_with(&none, false, 1, None, Some(recording(&no_lifetime))),
            Decision::AwaitRecord
        );
        let done = Running {
            head: &fresh,
            complete: true,
            fully_present: true,
        };
        assert_eq!(
            client_with(&none, false, 1, Some((&fresh, Phase::Complete)), Some(done)),
            Decision::Hit,
            "a fill whose object completed is judged as the stored copy"
        );
    }

    fn sync(
        digest_expected: bool,
        stored: Option<(&StoredHead, Phase)>,
        running: bool,
    ) -> Decision {
        let fresh = head(200, &[]);
        let running = running.then_some(Running {
            head: &fresh,
            complete: false,
            fully_present: false,
        });
        let stored = stored.as_ref().map(|(head, phase)| Stored { head, phase });
        decide(stored, running, &Asker::Sync { digest_expected }, at(0))
    }

    #[test]
    fn a_sync_checks_every_complete_copy_with_the_origin_whatever_its_freshness() {
        let fresh = head(200, &[("cache-control", "max-age=600"), ("etag", "\"v1\"")]);
        assert!(matches!(
            sync(false, Some((&fresh, Phase::Complete)), false),
            Decision::Revalidate { .. }
        ));
        assert_eq!(
            sync(true, Some((&fresh, Phase::Complete)), false),
            Decision::CheckDigest
        );
        let no_validators = head(200, &[("cache-control", "max-age=600")]);
        assert_eq!(
            sync(false, Some((&no_validators, Phase::Complete)), false),
            Decision::KeepUnvalidated
        );
        let error = head(503, &[("cache-control", "max-age=600"), ("etag", "\"e\"")]);
        assert_eq!(
            sync(false, Some((&error, Phase::Complete)), false),
            Decision::Miss
        );
        assert_eq!(
            sync(false, Some((&fresh, Phase::Filling)), false),
            Decision::FetchRest
        );
        assert_eq!(
            sync(false, Some((&fresh, Phase::Complete)), true),
            Decision::JoinFill
        );
        assert_eq!(sync(false, None, false), Decision::Miss);
    }

    /// A channel's grant (`revalidate = "sync"`) makes a stale copy a hit,
    /// even for a PC that asks for validation, until the grant ends; it
    /// never makes a partial copy or a stored error a hit.
    #[test]
    fn a_channel_grant_makes_a_stale_copy_a_hit_until_it_ends() {
        let stale = head(200, &[("cache-control", "no-cache"), ("etag", "\"v1\"")]);
        let stored = Some((&stale, Phase::Complete));
        let mut no_cache = HeaderMap::new();
        no_cache.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let until = FreshUntil::At(at(100));
        for headers in [HeaderMap::new(), no_cache] {
            assert_eq!(
                client_vouched(&headers, false, 99, stored.clone(), None, Some(until)),
                Decision::Hit
            );
            assert!(matches!(
                client_vouched(&headers, false, 100, stored.clone(), None, Some(until)),
                Decision::Revalidate { .. }
            ));
            assert_eq!(
                client_vouched(
                    &headers,
                    false,
                    1 << 30,
                    stored.clone(),
                    None,
                    Some(FreshUntil::NextSync)
                ),
                Decision::Hit
            );
        }
        assert!(matches!(
            client_vouched(
                &HeaderMap::new(),
                false,
                1,
                Some((&stale, Phase::Filling)),
                None,
                Some(FreshUntil::NextSync)
            ),
            Decision::Miss
        ));
        let error = head(404, &[("cache-control", "no-cache"), ("etag", "\"e\"")]);
        assert!(matches!(
            client_vouched(
                &HeaderMap::new(),
                false,
                1,
                Some((&error, Phase::Complete)),
                None,
                Some(FreshUntil::NextSync)
            ),
            Decision::Revalidate { .. }
        ));
    }
}
