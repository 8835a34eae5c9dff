//! A miss: one upstream request, and whether and how its response is
//! stored (the object is created with its fill already registered).

use super::*;

/// The end-to-end headers of an origin response, as stored. The framing
/// of a 206 (`Content-Range`) is the edge's to set; on any other status a
/// `Content-Range` is just a field the origin sent, and is kept.
pub(super) fn stored_headers(origin: &HeaderMap, status: StatusCode) -> HeaderMap {
    let mut headers = origin.clone();
    strip_hop_by_hop(&mut headers);
    // Age stays until the policy has read it (RFC 9111 section 4.2.3); the
    // stored head drops it, since the edge computes Age for each response.
    headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::PARTIAL_CONTENT {
        headers.remove(header::CONTENT_RANGE);
    }
    headers
}

/// The `Content-Length` of a message, when it has exactly one valid value.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

impl Engine {
    /// Leader of a miss: one upstream request; store the response if it may
    /// be stored, else hand it over as a passthrough.
    pub(crate) async fn fetch_miss(
        self: Arc<Self>,
        client: HeaderMap,
        target: UpstreamTarget,
        route: Route,
        range: Option<ByteRange>,
    ) -> Outcome {
        if self.fills.active_count() >= self.config.fill.max_fills {
            tracing::warn!(key = %route.key, max = self.config.fill.max_fills, "too many fills running: 503");
            return Outcome::Busy;
        }
        let mut headers = target.headers.clone();
        if let Some(r) = range {
            headers.insert(header::RANGE, r.request_header());
        }
        match self
            .fills
            .get_upstream(&target.uri, headers, target.class, target.reach)
            .await
        {
            Ok(resp) => {
                tracing::trace!(key = %route.key, status = %resp.status(), "origin response head");
                self.store_response(&client, resp, target, &route)
            }
            Err(UpstreamError::Refused(refusal)) => Outcome::Refused(refusal),
            Err(e) => {
                tracing::warn!(key = %route.key, error = %e, "origin fetch failed");
                Outcome::Failed(Failure::origin(e))
            }
        }
    }

    /// Decides whether an origin response (200, or 206 to our range) is
    /// stored; if so creates the object and starts its fill.
    pub(super) fn store_response(
        &self,
        client: &HeaderMap,
        resp: Response<Incoming>,
        target: UpstreamTarget,
        route: &Route,
    ) -> Outcome {
        let status = resp.status();
        let content_range = if status == StatusCode::PARTIAL_CONTENT {
            match resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(ContentRange::parse)
            {
                // A Content-Length that disagrees with the range is a
                // malformed answer: passed on as sent, never stored.
                Some(cr)
                    if cr.complete_len.is_some()
                        && declared_length(resp.headers()).is_none_or(|n| n == cr.range.len()) =>
                {
                    Some(cr)
                }
                _ => return Outcome::passthrough(resp),
            }
        } else {
            None
        };
        // Other statuses are stored when RFC 9111 allows (cacheable by
        // default, or explicit freshness); a 304 is an answer to a
        // conditional, not a response to keep.
        if content_range.is_none()
            && matches!(
                status,
                StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
            )
            || status.is_informational()
        {
            return Outcome::passthrough(resp);
        }
        let (rparts, body) = resp.into_parts();
        // The representation as a whole: a 206 describes a 200 we have not
        // seen yet, so judge and store it as that 200.
        let mut whole: response::Parts = Response::new(()).into_parts().0;
        whole.status = if content_range.is_some() {
            StatusCode::OK
        } else {
            status
        };
        whole.headers = stored_headers(&rparts.headers, rparts.status);
        let len = match content_range {
            Some(cr) => cr.complete_len,
            // RFC 9110 section 15.3.5: a 204 ends at its header section.
            None if status == StatusCode::NO_CONTENT => Some(0),
            None if rparts.headers.contains_key(header::TRANSFER_ENCODING) => None,
            None => rparts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok()),
        };
        if let Some(len) = len {
            whole
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let (policy, judged) = self.policies(client, route, &whole);
        let names = vary::vary_names(&rparts.headers);
        let storable = judged.is_storable()
            && !rparts.headers.contains_key(header::SET_COOKIE)
            && names.is_some();
        if !storable {
            return Outcome::passthrough(Response::from_parts(rparts, body));
        }
        whole.headers.remove(header::CONTENT_LENGTH);
        whole.headers.remove(header::AGE);
        let Some(key) = self.variant_to_store(route, client, names.unwrap_or_default()) else {
            // This URL has as many variants as it may keep: this one is
            // the client's alone.
            return Outcome::passthrough(Response::from_parts(rparts, body));
        };
        let head = StoredHead::new(whole.status, whole.headers, policy);
        let range = match content_range {
            Some(cr) => cr.range,
            None => ByteRange::new(0, len.unwrap_or(u64::MAX)),
        };
        // The fill is registered, with its first range claimed, before any
        // lookup can see the object: every client finds it being fetched and
        // none starts a second fetch of the same bytes.
        let mut body = Some(body);
        let created = self
            .store
            .create_with(&key, head, len, |obj| match body.take() {
                Some(body) => self.fills.attach_started(obj.clone(), target, range, body),
                None => self.fills.attach(obj.clone(), target),
            });
        let fill = match created {
            Ok((_, fill)) => fill,
            Err(e) => {
                tracing::error!(key = %route.key, error = %e, "cannot create object; passing the response through");
                let Some(body) = body else {
                    return Outcome::Failed(Failure::disk(e));
                };
                return Outcome::passthrough(Response::from_parts(rparts, body));
            }
        };
        Outcome::Fill(fill)
    }
}
