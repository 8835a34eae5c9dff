//! Passing requests through: the headers sent upstream, responses passed
//! on unstored, and the answer to a refused destination.

use super::*;

/// The client's request headers as sent upstream. Towards its own reverse
/// origins (`surrogate`) the edge announces itself as a surrogate, so that
/// `Surrogate-Control` directives can target it by name.
pub(super) fn upstream_headers(
    client: &HeaderMap,
    for_fill: bool,
    surrogate: bool,
    via: &str,
) -> HeaderMap {
    let mut headers = client.clone();
    if surrogate {
        let ours = format!(
            "{}=\"Surrogate/1.0\"",
            outpost_http::policy::SURROGATE_TOKEN
        );
        let announced = match headers.get("surrogate-capability").map(|v| v.to_str()) {
            Some(Ok(theirs)) if !theirs.trim().is_empty() => format!("{theirs}, {ours}"),
            _ => ours,
        };
        if let Ok(v) = HeaderValue::from_str(&announced) {
            headers.insert("surrogate-capability", v);
        }
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    // The framing of what goes upstream is the edge's: a client's
    // Content-Length on a GET whose body the edge drops would announce
    // bytes that never come, and the origin would read the next request
    // on the pooled connection as that body (request smuggling).
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    if for_fill {
        for name in FILL_CONTROLLED_REQUEST_HEADERS {
            headers.remove(name);
        }
        // A fill is shared by every client: it must not ask the origin for a
        // client's private view, nor carry one client's freshness demands.
        headers.remove(header::CACHE_CONTROL);
        headers.remove(header::PRAGMA);
        headers.remove(header::EXPECT);
        // What variants are keyed by (see outpost_http::vary).
        vary::normalize_request(&mut headers);
    }
    add_via_as(&mut headers, via);
    headers
}

/// An origin response passed to the client as is (minus hop-by-hop
/// headers), its body paced by the WAN shaper's client class.
pub(super) fn passthrough_response(
    resp: Response<Incoming>,
    shaper: &Arc<WanShaper>,
) -> Response<EdgeBody> {
    let (mut parts, body) = resp.into_parts();
    let framing = parts.headers.get(header::CONTENT_LENGTH).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(cl) = framing {
        parts.headers.insert(header::CONTENT_LENGTH, cl);
    }
    add_via(&mut parts.headers);
    if let Some(value) = CacheStatus::Pass.header() {
        parts.headers.insert("x-cache", value);
    }
    marked(
        Response::from_parts(
            parts,
            streamed(crate::wan::ShapedBody::new(body, shaper.clone())),
        ),
        CacheStatus::Pass,
    )
}

/// The answer to a client whose destination the guard refused.
pub(crate) fn refused_destination(refusal: &crate::destination::Refusal) -> Response<EdgeBody> {
    // The detail (what a name resolves to inside) stays in the log.
    tracing::warn!(%refusal, "destination refused: 403");
    let mut resp = marked(
        error_response(
            StatusCode::FORBIDDEN,
            "this destination is not allowed (loopback, link-local or this edge itself)",
        ),
        CacheStatus::Denied,
    );
    // For the library listener, which answers DNS-mode loops otherwise.
    resp.extensions_mut().insert(refusal.clone());
    resp
}

impl Engine {
    /// Forwards a request as is (other methods, uncacheable responses),
    /// its body included with the length the client declared.
    pub async fn forward(&self, req: Request<ReqBody>, route: &Route) -> Response<EdgeBody> {
        let (parts, body) = req.into_parts();
        let length = parts.headers.get(header::CONTENT_LENGTH).cloned();
        self.forward_with_body(parts, body, length, route).await
    }

    /// The client's own request (without a body), sent as is and never
    /// stored: for a client that may not share the response fetched for
    /// another.
    pub(super) async fn pass_own(
        &self,
        parts: request::Parts,
        route: &Route,
    ) -> Response<EdgeBody> {
        self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
        self.forward_with_body(parts, crate::upstream::empty_body(), None, route)
            .await
    }

    pub(super) async fn forward_with_body(
        &self,
        parts: request::Parts,
        body: UpstreamBody,
        length: Option<HeaderValue>,
        route: &Route,
    ) -> Response<EdgeBody> {
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(route.upstream_uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = upstream_headers(&parts.headers, false, route.surrogate, &self.via);
            if let Some(cl) = length {
                h.insert(header::CONTENT_LENGTH, cl);
            }
        }
        let req = match builder.body(body) {
            Ok(r) => r,
            Err(e) => {
                return marked(
                    error_response(StatusCode::BAD_REQUEST, &e.to_string()),
                    CacheStatus::Edge,
                );
            }
        };
        self.fills
            .stats
            .upstream_requests
            .fetch_add(1, Ordering::Relaxed);
        match self.upstream.send(req, route.reach).await {
            Ok(resp) => passthrough_response(resp, &self.fills.shaper),
            Err(UpstreamError::Refused(refusal)) => refused_destination(&refusal),
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(uri = %route.upstream_uri, error = %e, "origin request failed");
                marked(
                    error_response(StatusCode::BAD_GATEWAY, &format!("origin unavailable: {e}")),
                    CacheStatus::OriginFailed,
                )
            }
        }
    }
}
