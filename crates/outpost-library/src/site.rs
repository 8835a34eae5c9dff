//! A copy of the library listener's seam (`outpost_proxy::local`, issue 14's
//! shared contract) until the listener lands; replaced by a re-export then.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type LocalBody = UnsyncBoxBody<Bytes, std::io::Error>;

pub trait LocalSite: Send + Sync + 'static {
    fn handle(
        &self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = LocalAnswer> + Send>>;
}

pub enum LocalAnswer {
    Stored {
        url: http::Uri,
        headers: http::HeaderMap,
    },
    Response(http::Response<LocalBody>),
}

pub fn full(data: impl Into<Bytes>) -> LocalBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
