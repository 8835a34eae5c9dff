//! Serving only what is stored (the site library's downloads): the store's
//! complete copy of a URL as a hit, whatever its freshness, or 404. Nothing
//! here reaches the WAN, so a library page can never be made to fetch.

use super::*;

impl Engine {
    /// Answers `req` (GET or HEAD; Range and conditionals honoured) from
    /// the complete stored copy of `url`, as the cache key a proxy request
    /// for `url` would use; 404 when there is none, 405 for other methods.
    pub async fn serve_stored(
        self: &Arc<Self>,
        req: &request::Parts,
        url: Uri,
    ) -> Response<EdgeBody> {
        if req.method != Method::GET && req.method != Method::HEAD {
            let mut resp = error_response(StatusCode::METHOD_NOT_ALLOWED, "read-only");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return marked(resp, CacheStatus::Edge);
        }
        let not_here = || {
            marked(
                error_response(
                    StatusCode::NOT_FOUND,
                    "no complete copy of this file at the edge",
                ),
                CacheStatus::Edge,
            )
        };
        let Ok(route) = self.route(url, Reach::Configured) else {
            return not_here();
        };
        if let Some(refusal) = self.quarantine_refusal(&route.key) {
            return refusal;
        }
        let route = self.select_variant(route, &req.headers);
        let stored = match self.store.get(&route.key) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(key = %route.key, error = %e, "store lookup failed");
                return marked(
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "store lookup failed"),
                    CacheStatus::Edge,
                );
            }
        };
        match stored {
            Some(obj) if obj.is_complete() && obj.is_fully_present() => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let status = hit_status(&obj);
                object_response(obj, req, None, None, status, self.clock.now())
            }
            _ => not_here(),
        }
    }
}
