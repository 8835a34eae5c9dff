//! Request heads: parsing with `httparse` and the framing rules that
//! refuse ambiguous requests (request smuggling). Pure, so it can be fuzzed.

use super::*;

/// Parses one request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, the head, its body framing and its length in bytes once it
/// is complete, or the refusal to answer. Pure, so that it can be fuzzed.
pub fn parse_request_head(
    buf: &[u8],
    config: &H1Config,
) -> Result<Option<(http::request::Parts, Framing, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_LIMIT];
    let mut req =
        httparse::Request::new(&mut headers[..config.max_headers.clamp(1, MAX_HEADERS_LIMIT)]);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let (parts, framing) = build_parts(&req)?;
            Ok(Some((parts, framing, n)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= config.max_head_bytes => Err(Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        )),
        Err(_) => Err(Refusal(StatusCode::BAD_REQUEST, "malformed request")),
    }
}

/// Builds the request head and decides its body framing, refusing anything
/// ambiguous.
pub(super) fn build_parts(
    req: &httparse::Request<'_, '_>,
) -> Result<(http::request::Parts, Framing), Refusal> {
    let bad = |why| Refusal(StatusCode::BAD_REQUEST, why);
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let target = req.path.unwrap_or("");
    if target.len() > 16 * 1024 {
        return Err(Refusal(StatusCode::URI_TOO_LONG, "request target too long"));
    }
    let uri: Uri = target.parse().map_err(|_| bad("invalid request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => {
            return Err(Refusal(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "unsupported HTTP version",
            ));
        }
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid header value"))?;
        headers.append(name, value);
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (version == Version::HTTP_11 && hosts == 0) {
        return Err(bad("exactly one Host header is required"));
    }
    let te: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| {
            v.to_str()
                .map(|s| s.to_string())
                .map_err(|_| bad("invalid Transfer-Encoding"))
        })
        .collect::<Result<_, _>>()?;
    let cl: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let framing = if !te.is_empty() {
        if !cl.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        match codings.as_slice() {
            [only] if only == "chunked" => Framing::Chunked,
            list if list.last().map(String::as_str) != Some("chunked") => {
                return Err(bad("chunked is not the final transfer coding"));
            }
            _ => {
                return Err(Refusal(
                    StatusCode::NOT_IMPLEMENTED,
                    "unsupported transfer coding",
                ));
            }
        }
    } else if !cl.is_empty() {
        let mut length: Option<u64> = None;
        for value in cl {
            for part in value
                .to_str()
                .map_err(|_| bad("invalid Content-Length"))?
                .split(',')
            {
                let part = part.trim();
                if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("invalid Content-Length"));
                }
                let n: u64 = part.parse().map_err(|_| bad("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
        match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    } else {
        Framing::None
    };
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| bad("invalid request"))?
        .into_parts();
    Ok((parts, framing))
}
