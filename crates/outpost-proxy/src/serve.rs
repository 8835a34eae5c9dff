//! Turning a stored or filling object into a response: status and headers
//! from the stored head, client conditionals, ranges (single and multipart),
//! HEAD, and a body that streams from disk as the fill commits bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use outpost_http::range::{RangeError, parse_range_header, resolve_ranges};
use outpost_http::{ByteRange, ContentRange};
use outpost_store::{Availability, Object, StoredHead};

use crate::fill::{FillContext, ReaderGuard, UpstreamTarget};

pub type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Largest read handed to the client at once.
const READ_CHUNK: usize = 256 * 1024;

pub fn empty_body() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full_body(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text response made by the edge itself.
pub fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
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

/// Builds the response to `req` from `obj`. `cache_status` goes into
/// `X-Cache` (HIT, MISS, REVALIDATED, STALE).
pub fn object_response(
    obj: Arc<Object>,
    req: &request::Parts,
    source: Option<FillSource>,
    guard: Option<ReaderGuard>,
    cache_status: &'static str,
    now: SystemTime,
) -> Response<ProxyBody> {
    let snap = obj.snapshot();
    let head = &snap.head;
    let mut headers = response_headers(head, now, cache_status);
    if let Some(status) = client_conditional(
        &req.headers,
        head,
        req.method == Method::GET || req.method == Method::HEAD,
    ) {
        let mut resp = Response::new(empty_body());
        *resp.status_mut() = status;
        if status == StatusCode::NOT_MODIFIED {
            for name in [
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::CONTENT_LANGUAGE,
                header::ACCEPT_RANGES,
            ] {
                headers.remove(name);
            }
            *resp.headers_mut() = headers;
        } else {
            outpost_http::headers::add_via(resp.headers_mut());
        }
        return resp;
    }

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
    let body = if req.method == Method::HEAD {
        empty_body()
    } else {
        object_body(obj, segments, source, guard)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The stored end-to-end headers plus what this hop adds.
fn response_headers(head: &StoredHead, now: SystemTime, cache_status: &'static str) -> HeaderMap {
    let mut headers = head.headers.clone();
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONTENT_RANGE,
    ] {
        headers.remove(name);
    }
    let age = head.policy.age(now).as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    if !headers.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
            headers.insert(header::DATE, v);
        }
    }
    outpost_http::headers::add_via(&mut headers);
    headers.insert("x-cache", HeaderValue::from_static(cache_status));
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
    let last_modified = header_date(&head.headers, header::LAST_MODIFIED);
    if let Some(im) = req.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if !etag_matches(im, etag, false) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(ius) = header_date(req, header::IF_UNMODIFIED_SINCE)
        && last_modified.is_none_or(|lm| lm > ius)
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
        && let (Some(ims), Some(lm)) = (header_date(req, header::IF_MODIFIED_SINCE), last_modified)
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

struct BodyState {
    obj: Arc<Object>,
    segments: VecDeque<Segment>,
    source: Option<FillSource>,
    _guard: Option<ReaderGuard>,
}

fn object_body(
    obj: Arc<Object>,
    segments: VecDeque<Segment>,
    source: Option<FillSource>,
    guard: Option<ReaderGuard>,
) -> ProxyBody {
    let state = BodyState {
        obj,
        segments,
        source,
        _guard: guard,
    };
    let s = stream::unfold(state, |mut st| async move {
        match next_chunk(&mut st).await {
            Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), st)),
            Ok(None) => None,
            Err(e) => Some((Err(e), st)),
        }
    });
    StreamBody::new(s).boxed_unsync()
}

async fn next_chunk(st: &mut BodyState) -> std::io::Result<Option<Bytes>> {
    loop {
        let Some(segment) = st.segments.front_mut() else {
            return Ok(None);
        };
        let range = match segment {
            Segment::Static(_) => {
                if let Some(Segment::Static(bytes)) = st.segments.pop_front() {
                    return Ok(Some(bytes));
                }
                continue;
            }
            Segment::Range(r) => r,
        };
        if range.is_empty() {
            st.segments.pop_front();
            continue;
        }
        match st.obj.availability(range.start) {
            Availability::Ready(end) if end > range.start => {
                let n = (end.min(range.end) - range.start).min(READ_CHUNK as u64) as usize;
                let offset = range.start;
                range.start += n as u64;
                let data = st
                    .obj
                    .read(offset, n)
                    .await
                    .map_err(std::io::Error::other)?;
                return Ok(Some(data));
            }
            Availability::Ready(_) => {
                let wanted = *range;
                if let Some(src) = &st.source {
                    src.ctx.demand(&st.obj, &src.target, wanted);
                }
                match st.obj.wait_available(wanted.start).await {
                    Availability::Failed(reason) => return Err(std::io::Error::other(reason)),
                    _ => continue,
                }
            }
            Availability::End => {
                if range.end != u64::MAX {
                    return Err(std::io::Error::other(
                        "object ended before the promised length",
                    ));
                }
                st.segments.pop_front();
            }
            Availability::Failed(reason) => return Err(std::io::Error::other(reason)),
        }
    }
}
