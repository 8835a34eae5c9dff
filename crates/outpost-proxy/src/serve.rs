//! Turning a stored or filling object into a response: status and headers
//! from the stored head, client conditionals, ranges (single and multipart),
//! HEAD, and a body that streams from disk as the fill commits bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use outpost_http::range::{RangeError, parse_range_header, resolve_ranges};
use outpost_http::{ByteRange, ContentRange};
use outpost_store::{Availability, Object, StoredHead};

use crate::cache_status::CacheStatus;
use crate::fill::{FillContext, ReaderGuard, UpstreamTarget};

/// A streamed body from elsewhere (the origin, for a passthrough).
pub type StreamedBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The body of a response the edge sends.
pub enum EdgeBody {
    Empty,
    Full(Bytes),
    Stream(StreamedBody),
    /// Bytes of a stored object: the connection sends them from the file
    /// (sendfile) as they become available.
    Object(Box<ObjectStream>),
}

/// Largest piece of a file handed to the connection at once.
const FILE_PIECE: u64 = 4 * 1024 * 1024;

pub fn empty_body() -> EdgeBody {
    EdgeBody::Empty
}

pub fn full_body(data: impl Into<Bytes>) -> EdgeBody {
    EdgeBody::Full(data.into())
}

/// An empty streamed body (a request without one).
pub fn empty_streamed() -> StreamedBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Converts a streamed body as hyper's client produces it.
pub fn streamed<B>(body: B) -> EdgeBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    EdgeBody::Stream(body.map_err(std::io::Error::other).boxed_unsync())
}

/// What the connection sends next of an object body.
pub enum Piece {
    Data(Bytes),
    /// `len` bytes of `file` from `offset`, all present on disk.
    File {
        file: Arc<std::fs::File>,
        offset: u64,
        len: u64,
    },
}

/// A short plain-text response made by the edge itself.
pub fn error_response(status: StatusCode, message: &str) -> Response<EdgeBody> {
    let mut resp = Response::new(full_body(format!("{message}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    outpost_http::headers::add_via(h);
    resp
}

/// Where the bytes of a not yet complete object come from.
#[derive(Clone)]
pub struct FillSource {
    pub ctx: Arc<FillContext>,
    pub target: UpstreamTarget,
}

enum Segment {
    Static(Bytes),
    Range(ByteRange),
}

/// Builds the response to `req` from `obj`. `cache_status` goes into the
/// response's extensions (for the log and the counters) and its `X-Cache`
/// header (for clients).
pub fn object_response(
    obj: Arc<Object>,
    req: &request::Parts,
    source: Option<FillSource>,
    guard: Option<ReaderGuard>,
    cache_status: CacheStatus,
    now: SystemTime,
) -> Response<EdgeBody> {
    let snap = obj.head_and_len();
    let headers = response_headers(&snap.head, now, cache_status);
    let safe = req.method == Method::GET || req.method == Method::HEAD;
    let resp = match client_conditional(&req.headers, &snap.head, safe) {
        Some(status) => precondition_response(status, headers),
        None => representation_response(obj, &snap, req, headers, source, guard, now),
    };
    marked(resp, cache_status)
}

/// Marks a response the engine made with its cache verdict.
pub fn marked(mut resp: Response<EdgeBody>, cache_status: CacheStatus) -> Response<EdgeBody> {
    resp.extensions_mut().insert(cache_status);
    resp
}

/// The answer to a client's precondition on the stored representation: a
/// 304 with the representation's headers, or a bare 412.
fn precondition_response(status: StatusCode, mut headers: HeaderMap) -> Response<EdgeBody> {
    let mut resp = Response::new(empty_body());
    *resp.status_mut() = status;
    if status == StatusCode::NOT_MODIFIED {
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LANGUAGE,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
        ] {
            headers.remove(name);
        }
        *resp.headers_mut() = headers;
    } else {
        outpost_http::headers::add_via(resp.headers_mut());
    }
    resp
}

/// The stored representation, whole, in ranges (206, multipart) or 416.
fn representation_response(
    obj: Arc<Object>,
    snap: &outpost_store::HeadAndLen,
    req: &request::Parts,
    mut headers: HeaderMap,
    source: Option<FillSource>,
    guard: Option<ReaderGuard>,
    now: SystemTime,
) -> Response<EdgeBody> {
    let head = &snap.head;
    let mut status = head.status;
    let mut segments = VecDeque::new();
    let mut content_length = snap.len;
    match snap.len {
        Some(len) => {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let ranges = requested_ranges(&req.headers, head, len, status);
            match ranges {
                Ok(None) => segments.push_back(Segment::Range(ByteRange::new(0, len))),
                Ok(Some(ranges)) if ranges.len() == 1 => {
                    let r = ranges[0];
                    status = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) = HeaderValue::from_str(&ContentRange::header_value(r, len)) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    content_length = Some(r.len());
                    segments.push_back(Segment::Range(r));
                }
                Ok(Some(ranges)) => {
                    status = StatusCode::PARTIAL_CONTENT;
                    let boundary = format!(
                        "outpost-{:016x}{:08x}",
                        obj.id(),
                        now.duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.subsec_nanos())
                            .unwrap_or(0)
                    );
                    let content_type = headers.remove(header::CONTENT_TYPE);
                    headers.remove(header::CONTENT_RANGE);
                    let mut total = 0u64;
                    for r in ranges {
                        let mut part = format!("\r\n--{boundary}\r\n");
                        if let Some(ct) = content_type.as_ref().and_then(|v| v.to_str().ok()) {
                            part.push_str(&format!("Content-Type: {ct}\r\n"));
                        }
                        part.push_str(&format!(
                            "Content-Range: {}\r\n\r\n",
                            ContentRange::header_value(r, len)
                        ));
                        total += part.len() as u64 + r.len();
                        segments.push_back(Segment::Static(Bytes::from(part)));
                        segments.push_back(Segment::Range(r));
                    }
                    let closing = format!("\r\n--{boundary}--\r\n");
                    total += closing.len() as u64;
                    segments.push_back(Segment::Static(Bytes::from(closing)));
                    content_length = Some(total);
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
                    {
                        headers.insert(header::CONTENT_TYPE, v);
                    }
                }
                Err(()) => {
                    let mut resp = error_response(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "requested range not satisfiable",
                    );
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        resp.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return resp;
                }
            }
        }
        // Length unknown until the fill ends (a chunked origin response):
        // stream it whole; ranges are ignored, as RFC 9110 allows.
        None => segments.push_back(Segment::Range(ByteRange::new(0, u64::MAX))),
    }
    if let Some(len) = content_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let whole = matches!(segments.front(), Some(Segment::Range(r)) if r.start == 0 && Some(r.end) == snap.len)
        && segments.len() == 1;
    let body = if req.method == Method::HEAD {
        empty_body()
    } else if let Some(small) = whole.then(|| obj.small_body()).flatten() {
        EdgeBody::Full(small)
    } else {
        object_body(obj, segments, source, guard)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The stored end-to-end headers plus what this hop adds.
fn response_headers(head: &StoredHead, now: SystemTime, cache_status: CacheStatus) -> HeaderMap {
    let mut headers = head.headers.clone();
    // A stored Content-Range is a field the origin sent with a whole
    // response; ranges served from the object set their own.
    for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
        headers.remove(name);
    }
    let age = head.age(now).as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    if !headers.contains_key(header::DATE)
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(now))
    {
        headers.insert(header::DATE, v);
    }
    outpost_http::headers::add_via(&mut headers);
    if let Some(value) = cache_status.header() {
        headers.insert("x-cache", value);
    }
    headers
}

fn etag_matches(list: &str, etag: Option<&HeaderValue>, weak: bool) -> bool {
    let Some(etag) = etag.and_then(|v| v.to_str().ok()) else {
        return list.trim() == "*" && weak;
    };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    list.split(',').any(|candidate| {
        let candidate = candidate.trim();
        if candidate == "*" {
            return true;
        }
        if weak {
            strip(candidate) == strip(etag)
        } else {
            !candidate.starts_with("W/") && !etag.starts_with("W/") && candidate == etag
        }
    })
}

fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// RFC 9110 section 13.2.2 evaluation of the client's preconditions against
/// the stored representation: `Some(304 or 412)` or `None` to proceed.
fn client_conditional(req: &HeaderMap, head: &StoredHead, safe: bool) -> Option<StatusCode> {
    let etag = head.etag();
    let last_modified = || header_date(&head.headers, header::LAST_MODIFIED);
    if let Some(im) = req.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if !etag_matches(im, etag, false) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(ius) = header_date(req, header::IF_UNMODIFIED_SINCE)
        // Ignored when there is no modification date (RFC 9110 13.1.4).
        && last_modified().is_some_and(|lm| lm > ius)
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if etag_matches(inm, etag, true) {
            return Some(if safe {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::PRECONDITION_FAILED
            });
        }
    } else if safe
        && let Some(ims) = header_date(req, header::IF_MODIFIED_SINCE)
        // Without Last-Modified, the stored response's Date stands in for
        // it (RFC 9111 section 4.3.2).
        && let Some(lm) = last_modified().or_else(|| header_date(&head.headers, header::DATE))
        && lm <= ims
    {
        return Some(StatusCode::NOT_MODIFIED);
    }
    None
}

/// The ranges to serve: `Ok(None)` for the whole object, `Err(())` for 416.
fn requested_ranges(
    req: &HeaderMap,
    head: &StoredHead,
    len: u64,
    status: StatusCode,
) -> Result<Option<Vec<ByteRange>>, ()> {
    if status != StatusCode::OK {
        return Ok(None);
    }
    let Some(range) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let matches =
            if if_range.trim_start().starts_with('"') || if_range.trim_start().starts_with("W/") {
                etag_matches(if_range, head.etag(), false)
            } else {
                // A date validator matches only an exactly equal Last-Modified.
                head.last_modified()
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|lm| lm.trim() == if_range.trim())
            };
        if !matches {
            return Ok(None);
        }
    }
    match parse_range_header(range) {
        Ok(specs) => match resolve_ranges(&specs, len) {
            Ok(ranges) => Ok(Some(ranges)),
            Err(RangeError::Unsatisfiable) => Err(()),
            Err(RangeError::Invalid) => Ok(None),
        },
        Err(_) => Ok(None),
    }
}

/// The remaining segments of an object body, and how to get missing bytes.
pub struct ObjectStream {
    obj: Arc<Object>,
    segments: VecDeque<Segment>,
    source: Option<FillSource>,
    /// The rest of the current segment, straight from the origin, once the
    /// store could not keep the object (see [`ObjectStream::from_origin`]).
    direct: Option<StreamedBody>,
    _guard: Option<ReaderGuard>,
}

fn object_body(
    obj: Arc<Object>,
    segments: VecDeque<Segment>,
    source: Option<FillSource>,
    guard: Option<ReaderGuard>,
) -> EdgeBody {
    EdgeBody::Object(Box::new(ObjectStream {
        obj,
        segments,
        source,
        direct: None,
        _guard: guard,
    }))
}

impl ObjectStream {
    /// Whether every byte of the object is on disk (nothing to wait for).
    pub fn is_complete(&self) -> bool {
        self.obj.is_complete()
    }

    /// The next piece to send, waiting (and asking the fill) for bytes that
    /// are not on disk yet. `None` at the end.
    pub async fn next_piece(&mut self) -> std::io::Result<Option<Piece>> {
        loop {
            let Some(segment) = self.segments.front_mut() else {
                return Ok(None);
            };
            let range = match segment {
                Segment::Static(_) => {
                    if let Some(Segment::Static(bytes)) = self.segments.pop_front() {
                        return Ok(Some(Piece::Data(bytes)));
                    }
                    continue;
                }
                Segment::Range(r) => r,
            };
            if range.is_empty() {
                self.segments.pop_front();
                self.direct = None;
                continue;
            }
            if let Some(direct) = self.direct.as_mut() {
                match direct.frame().await {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        let take = (data.len() as u64).min(range.end - range.start) as usize;
                        range.start += take as u64;
                        return Ok(Some(Piece::Data(data.slice(..take))));
                    }
                    Some(Err(e)) => return Err(e),
                    None if range.end == u64::MAX => {
                        self.segments.pop_front();
                        self.direct = None;
                        continue;
                    }
                    None => {
                        return Err(std::io::Error::other(
                            "origin ended before the promised length",
                        ));
                    }
                }
            }
            let failed = |reason: String| (reason, *range);
            let failure = match self.obj.availability(range.start) {
                Availability::Ready(end) if end > range.start => {
                    let len = (end.min(range.end) - range.start).min(FILE_PIECE);
                    let offset = range.start;
                    range.start += len;
                    return Ok(Some(Piece::File {
                        file: self.obj.file(),
                        offset,
                        len,
                    }));
                }
                Availability::Ready(_) => {
                    let wanted = *range;
                    if let Some(src) = &self.source {
                        src.ctx.demand(&self.obj, &src.target, wanted);
                    }
                    match self.obj.wait_available(wanted.start).await {
                        Availability::Failed(reason) => failed(reason),
                        _ => continue,
                    }
                }
                Availability::End => {
                    if range.end != u64::MAX {
                        return Err(std::io::Error::other(
                            "object ended before the promised length",
                        ));
                    }
                    self.segments.pop_front();
                    continue;
                }
                Availability::Failed(reason) => failed(reason),
            };
            let (reason, wanted) = failure;
            let from_origin =
                Self::from_origin(self.obj.clone(), self.source.clone(), wanted, reason);
            self.direct = Some(from_origin.await?);
        }
    }

    /// The bytes of `wanted` from the origin, when the store gave up on the
    /// object for its own reasons (a full or failing disk) while this
    /// client was part way: the download goes on instead of being cut.
    /// Only the same representation will do: the request carries If-Range
    /// with the stored strong validator, and anything but a 206 starting at
    /// the right byte ends the response (as a failure would have).
    async fn from_origin(
        obj: Arc<Object>,
        source: Option<FillSource>,
        wanted: ByteRange,
        reason: String,
    ) -> std::io::Result<StreamedBody> {
        let refuse = || std::io::Error::other(reason.clone());
        let Some(src) = source else {
            return Err(refuse());
        };
        // A body that must pass a digest check is never completed from
        // bytes the edge could not check.
        if !obj.failed_locally() || obj.holds_last_byte() {
            return Err(refuse());
        }
        let Some(validator) = obj.head().if_range_validator() else {
            return Err(refuse());
        };
        let mut req = http::Request::new(crate::upstream::empty_body());
        *req.uri_mut() = src.target.uri.clone();
        *req.headers_mut() = src.target.headers.clone();
        let headers = req.headers_mut();
        headers.insert(header::RANGE, wanted.request_header());
        headers.insert(header::IF_RANGE, validator);
        tracing::warn!(key = %obj.key(), %reason, from = wanted.start, "the store gave up on this object; sending the rest straight from the origin");
        let resp = src
            .ctx
            .upstream
            .send_as(req, src.target.class, src.target.reach)
            .await
            .map_err(|e| std::io::Error::other(format!("{reason}; origin: {e}")))?;
        let starts_right = resp.status() == StatusCode::PARTIAL_CONTENT
            && resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(ContentRange::parse)
                .is_some_and(|cr| cr.range.start == wanted.start);
        if !starts_right {
            return Err(std::io::Error::other(format!(
                "{reason}; the origin no longer serves the same bytes ({})",
                resp.status()
            )));
        }
        let body = crate::wan::ShapedBody::new(resp.into_body(), src.ctx.shaper.clone());
        Ok(body.map_err(std::io::Error::other).boxed_unsync())
    }
}
