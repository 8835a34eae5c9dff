//! The site library: what the edge's own listener (`[library] listen`)
//! serves at paths that are not PAC, Delivery Optimization or DNS mode.
//! `/` lists the channels, `/CHANNEL/path/file` is a file a channel holds;
//! every folder is a page in HTML or JSON ([`browse`]), every file a
//! download from the store, and the same tree is a read-only WebDAV share
//! (OPTIONS, PROPFIND) for the Windows WebClient, Finder, davfs2 and
//! rclone ([`dav`]).
//!
//! Invariants:
//! - read-only: nothing a client sends changes the store or the channels;
//!   WebDAV writes get 403, other methods 405 with `Allow`;
//! - nothing is fetched over the WAN for the library: a download is the
//!   store's complete copy of the file's origin URL
//!   ([`LocalAnswer::Stored`]), served by the engine as a hit (Range,
//!   conditionals, sendfile), and a file not present is a 404 saying so;
//! - a request path is decoded once and checked by
//!   [`outpost_channel::parse_library_path`] before anything looks at it;
//!   names are looked up in a copy of the channel view, never on disk;
//! - a `PROPFIND` lists one level at most (`Depth: 0` or `1`): a walk of
//!   the whole share per request is refused with 403.

mod browse;
mod dav;
mod method;
mod xml_shape;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use dav_server::{DavHandler, DavMethodSet};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use outpost_channel::{Channels, FileState, LibraryNode, parse_library_path};

pub use outpost_proxy::local::{LocalAnswer, LocalBody, LocalSite};

use crate::dav::{Snapshot, ViewFs};
use crate::method::Action;

/// The site library over an edge's channels.
#[derive(Clone)]
pub struct Library {
    channels: Arc<Channels>,
}

impl Library {
    pub fn new(channels: Arc<Channels>) -> Self {
        Self { channels }
    }

    /// The answer to one request of the library listener.
    pub async fn answer(&self, request: Request<Bytes>) -> LocalAnswer {
        match method::classify(request.method()) {
            Action::NotAllowed => {
                let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "the library is read-only\n");
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(method::ALLOW));
                LocalAnswer::Response(resp)
            }
            Action::Forbidden => LocalAnswer::Response(text(
                StatusCode::FORBIDDEN,
                "the library is a read-only share\n",
            )),
            // The view is read from SQLite and the store's index: off the
            // runtime's workers.
            Action::Read => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.read(&request))
                    .await
                    .unwrap_or_else(|e| LocalAnswer::Response(internal_error(&e)))
            }
            Action::Dav => LocalAnswer::Response(self.dav(request).await),
        }
    }

    fn read(&self, request: &Request<Bytes>) -> LocalAnswer {
        let path = match parse_library_path(request.uri().path()) {
            Ok(path) => path,
            Err(e) => return LocalAnswer::Response(refused(e)),
        };
        let format = Format::of(request);
        let Some((name, rel)) = path.segments.split_first() else {
            let rows: Vec<browse::Row<'_>> = self
                .channels
                .names()
                .into_iter()
                .filter_map(|name| self.channels.library_summary(&name))
                .map(|(folder, source)| browse::Row::Folder {
                    href: browse::href(std::slice::from_ref(&folder.name), true),
                    folder,
                    source: Some(source),
                })
                .collect();
            return LocalAnswer::Response(page(format, &[], &rows));
        };
        let Some(channel) = self.channels.library_channel_under(name, rel) else {
            return LocalAnswer::Response(not_found());
        };
        match channel.lookup(rel) {
            None => LocalAnswer::Response(not_found()),
            Some(LibraryNode::Folder(entries)) => {
                let rows = browse::rows(&path.segments, &entries);
                LocalAnswer::Response(page(format, &path.segments, &rows))
            }
            Some(LibraryNode::File(_)) if path.trailing_slash => LocalAnswer::Response(not_found()),
            Some(LibraryNode::File(file)) if format == Format::Json && wants_details(request) => {
                LocalAnswer::Response(bytes_response(
                    StatusCode::OK,
                    "application/json",
                    browse::file_json_page(&path.segments, file),
                ))
            }
            Some(LibraryNode::File(file)) => {
                let reason = match file.state {
                    FileState::Present => match file.url.parse::<http::Uri>() {
                        Ok(url) => {
                            return LocalAnswer::Stored {
                                url,
                                headers: download_headers(),
                            };
                        }
                        Err(_) => "its origin URL is not valid here".to_string(),
                    },
                    FileState::Syncing { percent } => format!("it is syncing ({percent}% here)"),
                    FileState::Missing => "the edge does not hold it".to_string(),
                    FileState::Quarantined => "it failed its SHA-256 check".to_string(),
                };
                LocalAnswer::Response(text(
                    StatusCode::NOT_FOUND,
                    &format!("not available from this edge: {reason}\n"),
                ))
            }
        }
    }

    async fn dav(&self, request: Request<Bytes>) -> Response<LocalBody> {
        if request.method().as_str() == "PROPFIND"
            && !method::finite_depth(request.headers().get("depth").map(HeaderValue::as_bytes))
        {
            return finite_depth_error();
        }
        match xml_shape::shape(request.body()) {
            xml_shape::Shape::Plain => {}
            xml_shape::Shape::TooDeep => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "the request body nests XML deeper than {} levels\n",
                        xml_shape::MAX_DEPTH
                    ),
                );
            }
            xml_shape::Shape::Declaration => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the request body carries an XML declaration (DOCTYPE or ENTITY)\n",
                );
            }
        }
        // ("OPTIONS *" never gets here: the listener refuses it.)
        let segments = match parse_library_path(request.uri().path()) {
            Ok(path) => path.segments,
            Err(e) => return refused(e),
        };
        let channels = self.channels.clone();
        let snapshot = tokio::task::spawn_blocking(move || match segments.first() {
            None => Snapshot::Root(
                channels
                    .names()
                    .into_iter()
                    .filter_map(|n| channels.library_summary(&n))
                    .map(|(folder, _)| folder)
                    .collect(),
            ),
            Some(name) => match channels.library_channel_under(name, &segments[1..]) {
                Some(channel) => Snapshot::Channel(channel),
                None => Snapshot::Root(Vec::new()),
            },
        })
        .await;
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(e) => return internal_error(&e),
        };
        let mut allowed = DavMethodSet::none();
        allowed.add(dav_server::DavMethod::Options);
        allowed.add(dav_server::DavMethod::PropFind);
        let handler = DavHandler::builder()
            .filesystem(Box::new(ViewFs::new(snapshot)))
            .methods(allowed)
            .build_handler();
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, http_body_util::Full::new(body));
        let is_options = request.method() == Method::OPTIONS;
        let (mut parts, body) = handler.handle(request).await.into_parts();
        // Multistatus bodies are small; whole, they go out with a
        // Content-Length, which the Windows WebClient handles best.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return internal_error(&e),
        };
        let body = quote_etags(mark_files_read_only(body));
        if is_options {
            // Class 1 and 2 is what the Windows WebClient looks for; the
            // handler's "3, sabredav-partialupdate" promise writes this
            // share does not take.
            parts.headers.insert(
                HeaderName::from_static("dav"),
                HeaderValue::from_static("1, 2"),
            );
            parts
                .headers
                .insert(ALLOW, HeaderValue::from_static(method::ALLOW));
        }
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Response::from_parts(parts, outpost_proxy::local::full(body))
    }
}

impl LocalSite for Library {
    fn handle(&self, request: Request<Bytes>) -> Pin<Box<dyn Future<Output = LocalAnswer> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.answer(request).await })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
}

impl Format {
    /// `?format=json|html` wins; else `Accept: application/json` asks for
    /// JSON.
    fn of(request: &Request<Bytes>) -> Self {
        let query = request.uri().query().unwrap_or("");
        for pair in query.split('&') {
            match pair {
                "format=json" => return Format::Json,
                "format=html" => return Format::Html,
                _ => {}
            }
        }
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains("application/json") {
            Format::Json
        } else {
            Format::Html
        }
    }
}

/// A file's details instead of its bytes: only on `?format=json`, so a
/// download tool sending `Accept: application/json` still gets the file.
fn wants_details(request: &Request<Bytes>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"))
}

fn page(format: Format, path: &[String], rows: &[browse::Row<'_>]) -> Response<LocalBody> {
    match format {
        Format::Json => bytes_response(
            StatusCode::OK,
            "application/json",
            browse::listing_json(path, rows),
        ),
        Format::Html => {
            let mut resp = bytes_response(
                StatusCode::OK,
                "text/html; charset=utf-8",
                browse::listing_html(path, rows),
            );
            resp.headers_mut().insert(
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            );
            resp
        }
    }
}

/// Headers added to a download: the bytes are the origin's, but they are
/// served from the edge's own origin, where a hostile HTML or SVG file
/// must not run script or be sniffed into one.
fn download_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<LocalBody> {
    let mut resp = Response::new(outpost_proxy::local::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn text(status: StatusCode, message: &str) -> Response<LocalBody> {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        message.as_bytes().to_vec(),
    )
}

/// dav-server gives every file the Archive attribute alone (0x20); the
/// share's files are read-only (0x01 too), which Explorer shows and Office
/// heeds by opening documents read-only instead of failing to save.
/// Folders keep theirs: on a Windows folder the read-only bit means a
/// customised folder, not a read-only one.
fn mark_files_read_only(body: Bytes) -> Bytes {
    const FILE: &[u8] = b"Win32FileAttributes>00000020<";
    if !body.windows(FILE.len()).any(|w| w == FILE) {
        return body;
    }
    let text = String::from_utf8_lossy(&body).replace(
        "Win32FileAttributes>00000020<",
        "Win32FileAttributes>00000021<",
    );
    Bytes::from(text)
}

/// RFC 4918 section 15.6: `getetag` holds the entity-tag as the `ETag`
/// header does, quotes included; dav-server writes it bare. Quoted, it is
/// byte for byte the download's `ETag`, which clients that remember one
/// to notice a change compare with the other.
fn quote_etags(body: Bytes) -> Bytes {
    const OPEN: &str = "<D:getetag>";
    const CLOSE: &str = "</D:getetag>";
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    if !text.contains(OPEN) {
        return body;
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let value_at = start + OPEN.len();
        let Some(len) = rest[value_at..].find(CLOSE) else {
            break;
        };
        let value = &rest[value_at..value_at + len];
        out.push_str(&rest[..value_at]);
        if value.starts_with('"') || value.starts_with("W/") {
            out.push_str(value);
        } else {
            out.push('"');
            out.push_str(value);
            out.push('"');
        }
        rest = &rest[value_at + len..];
    }
    out.push_str(rest);
    Bytes::from(out)
}

fn internal_error(error: &dyn std::fmt::Display) -> Response<LocalBody> {
    tracing::warn!(error = %error, "library: answer failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

fn not_found() -> Response<LocalBody> {
    text(StatusCode::NOT_FOUND, "no such channel, folder or file\n")
}

fn refused(error: outpost_channel::LibraryPathError) -> Response<LocalBody> {
    text(StatusCode::BAD_REQUEST, &format!("refused path: {error}\n"))
}

/// RFC 4918 section 9.1: a server that does not walk a whole tree answers
/// 403 with the `propfind-finite-depth` precondition.
fn finite_depth_error() -> Response<LocalBody> {
    bytes_response(
        StatusCode::FORBIDDEN,
        "application/xml; charset=utf-8",
        b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n".to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_once() {
        let body = Bytes::from_static(
            b"<D:getetag>v1</D:getetag><x/><D:getetag>\"q\"</D:getetag><D:getetag>W/\"w\"</D:getetag><D:getetag></D:getetag>",
        );
        assert_eq!(
            quote_etags(body),
            Bytes::from_static(
                b"<D:getetag>\"v1\"</D:getetag><x/><D:getetag>\"q\"</D:getetag><D:getetag>W/\"w\"</D:getetag><D:getetag>\"\"</D:getetag>"
            )
        );
        let untouched = Bytes::from_static(b"<D:multistatus/>");
        assert_eq!(quote_etags(untouched.clone()), untouched);
    }
}
