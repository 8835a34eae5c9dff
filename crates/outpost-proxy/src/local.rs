//! The seam between the library listener and the site library: what the
//! listener does with a request that is not PAC, Delivery Optimization or
//! DNS mode.
//!
//! The listener owns the socket, the client ACL, request framing and the
//! refusals (absolute-form, CONNECT, bodies over [`MAX_LOCAL_BODY`]); the
//! [`LocalSite`] owns the answer. It cannot make the edge fetch anything
//! over the WAN: its only ways to answer are a locally made response or the
//! store's complete copy of a URL ([`LocalAnswer::Stored`]), which the
//! engine serves as a hit or refuses with 404.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Largest request body the listener reads for a [`LocalSite`] (PROPFIND
/// bodies are a few hundred bytes); a bigger one is answered 413.
pub const MAX_LOCAL_BODY: usize = 64 * 1024;

/// The body of a response a [`LocalSite`] makes.
pub type LocalBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the library listener does with a request that is not PAC, DO or
/// DNS mode. The request's extensions hold the client's
/// [`std::net::SocketAddr`].
pub trait LocalSite: Send + Sync + 'static {
    fn handle(
        &self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = LocalAnswer> + Send>>;
}

/// A [`LocalSite`]'s answer.
pub enum LocalAnswer {
    /// Serve the store's complete copy of this origin URL as the engine
    /// serves a hit for it (Range, conditionals, HEAD, sendfile), adding
    /// `headers`. Never fetched over the WAN: no complete copy -> 404 (the
    /// listener says so in a short text body).
    Stored {
        url: http::Uri,
        headers: http::HeaderMap,
    },
    /// A locally generated response (listing pages, JSON, PROPFIND
    /// multistatus, OPTIONS, 403/405...). The listener writes it with
    /// Content-Length when the body's size hint is exact, chunked
    /// otherwise, and no body for HEAD, 204 and 304.
    Response(http::Response<LocalBody>),
}

/// The stand-in before a site library is wired in: every request is 404.
pub struct NoLocalSite;

impl LocalSite for NoLocalSite {
    fn handle(
        &self,
        _request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = LocalAnswer> + Send>> {
        Box::pin(async {
            let mut resp = http::Response::new(full("nothing is served here\n"));
            *resp.status_mut() = http::StatusCode::NOT_FOUND;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            LocalAnswer::Response(resp)
        })
    }
}

/// A [`LocalBody`] of `data`, whose size hint is exact.
pub fn full(data: impl Into<Bytes>) -> LocalBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
