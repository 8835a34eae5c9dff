//! `GET /edge/v1/session`: an edge's heartbeats, long poll and config
//! fetches on one upgraded connection ([`outpost_protocol::session`]).
//!
//! After the `101` hyper lets go of the connection (its buffers with it)
//! and one small task per edge serves the frames: it reads a frame only
//! when one arrives, into a buffer sized to it, and holds at most one
//! long poll. Every call checks the edge's credential again, so a
//! revocation refuses the next call (403, then the session closes), as the
//! HTTP calls do. A session that carries no frame for the idle timeout
//! (two heartbeats and 5 s) is closed: its edge is gone or cut off.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use outpost_protocol::session::{self, HEAD_LEN, Head, SESSION_UPGRADE, SessionCall, WaitArgs};
use outpost_protocol::{Heartbeat, HeartbeatReply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::EdgeSite;
use super::{AppState, ConnectionGuard, MAX_BODY};
use crate::ManagerError;
use crate::manager::{Held, WaitFor};

pub(super) async fn open(
    State(manager): State<AppState>,
    EdgeSite(site): EdgeSite,
    mut request: Request,
) -> Response {
    let asks = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(SESSION_UPGRADE));
    if !asks || request.version() != http::Version::HTTP_11 {
        return ManagerError::BadRequest(format!(
            "a session needs HTTP/1.1 with Connection: upgrade and Upgrade: {SESSION_UPGRADE}"
        ))
        .into_response();
    }
    // EdgeSite checked it; kept to check it again on every call.
    let Some(credential) = super::auth::bearer_header(request.headers()).map(str::to_string) else {
        return ManagerError::Unauthorized("missing credential".into()).into_response();
    };
    let guard = request.extensions().get::<Arc<ConnectionGuard>>().cloned();
    let upgrade = hyper::upgrade::on(&mut request);
    let tasks = guard.as_ref().map(|g| g.tracker.clone());
    let session = async move {
        match upgrade.await {
            Ok(upgraded) => {
                let idle =
                    super::header_read_timeout_for(Duration::from_millis(manager.heartbeat_ms()));
                serve(manager, site, credential, TokioIo::new(upgraded), idle).await;
            }
            Err(e) => tracing::debug!(%site, "session upgrade failed: {e}"),
        }
        drop(guard);
    };
    match tasks {
        Some(tasks) => drop(tasks.spawn(session)),
        None => drop(tokio::spawn(session)),
    }
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SESSION_UPGRADE));
    response
}

/// A frame as read: its head and payload.
pub(crate) struct Frame {
    pub head: Head,
    pub payload: Vec<u8>,
}

/// Reads one frame, owning the reader so the future can be kept across
/// `select!` rounds and rebuilt after each frame (a half-read frame is
/// never dropped). `Ok(None)`: the peer closed between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    mut reader: R,
    max: usize,
) -> (R, std::io::Result<Option<Frame>>) {
    let result = async {
        let mut head = [0u8; HEAD_LEN];
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let head = Head::parse(&head, max).map_err(std::io::Error::other)?;
        // Grown as bytes arrive, not reserved from the announced length.
        let mut payload = Vec::with_capacity((head.len as usize).min(64 * 1024));
        (&mut reader)
            .take(u64::from(head.len))
            .read_to_end(&mut payload)
            .await?;
        if payload.len() != head.len as usize {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Some(Frame { head, payload }))
    }
    .await;
    (reader, result)
}

/// How long one answer may take to write (or the idle timeout, if
/// shorter): a peer that stops reading (its window full) must not hold the
/// session's task, and with it its connection slot, for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers sessions, so a session ending does not unregister its
/// successor.
static SESSION_NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Registers the site's session; a session the site had is ended: an
/// edge holds one (a reconnect after a silent NAT drop replaces the dead
/// one at once), and one credential cannot pile up sessions.
fn register(manager: &AppState, site: &str) -> (u64, tokio_util::sync::CancellationToken) {
    let number = SESSION_NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ended = tokio_util::sync::CancellationToken::new();
    let mut sessions = manager.sessions.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, old)) = sessions.insert(site.to_string(), (number, ended.clone())) {
        old.cancel();
    }
    (number, ended)
}

fn unregister(manager: &AppState, site: &str, number: u64) {
    let mut sessions = manager.sessions.lock().unwrap_or_else(|p| p.into_inner());
    if sessions.get(site).is_some_and(|(n, _)| *n == number) {
        sessions.remove(site);
    }
}

type OpenWait = Pin<Box<dyn Future<Output = crate::error::Result<HeartbeatReply>> + Send>>;

fn answer<T: serde::Serialize>(id: u64, result: crate::error::Result<T>) -> Vec<u8> {
    match result {
        Ok(value) => session::encode(
            id,
            StatusCode::OK.as_u16(),
            &serde_json::to_vec(&value).unwrap_or_default(),
        ),
        Err(e) => refusal(id, &e),
    }
}

fn refusal(id: u64, error: &ManagerError) -> Vec<u8> {
    let (status, body) = super::error_answer(error);
    let body = serde_json::to_vec(&body).unwrap_or_default();
    session::encode(id, status.as_u16(), &body)
}

/// The frames of one session, until the edge closes it, falls silent,
/// is revoked, or the manager stops.
async fn serve<I>(manager: AppState, site: String, credential: String, io: I, idle: Duration)
where
    I: AsyncRead + AsyncWrite + Send + 'static,
{
    let _open = Held::new(&manager.stats.sessions_open);
    let write_timeout = idle.min(WRITE_TIMEOUT);
    let (number, replaced) = register(&manager, &site);
    let (reader, mut writer) = tokio::io::split(io);
    let read = read_frame(reader, MAX_BODY);
    tokio::pin!(read);
    // The open long poll: its call id and its future.
    let mut wait: Option<(u64, OpenWait)> = None;
    let mut last_frame = tokio::time::Instant::now();
    let shutdown = manager.shutdown_token().clone();
    loop {
        let out: Vec<u8> = tokio::select! {
            (reader, frame) = &mut read => {
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%site, "session closed: {e}");
                        break;
                    }
                };
                read.set(read_frame(reader, MAX_BODY));
                last_frame = tokio::time::Instant::now();
                let id = frame.head.id;
                // Revoked or deleted since the last call: refused, closed.
                match manager.authenticate_edge(&credential) {
                    Ok(now) if now == site => {}
                    result => {
                        let e = result.err().unwrap_or_else(|| {
                            ManagerError::Unauthorized("the credential changed site".into())
                        });
                        let _ = tokio::time::timeout(write_timeout, writer.write_all(&refusal(id, &e))).await;
                        break;
                    }
                }
                match SessionCall::from_code(frame.head.code) {
                    Some(SessionCall::Heartbeat) => {
                        match super::json_body::<Heartbeat>(&frame.payload) {
                            Ok(heartbeat) => answer(id, manager.heartbeat(&site, heartbeat)),
                            Err(e) => refusal(id, &e),
                        }
                    }
                    Some(SessionCall::Config) => answer(id, manager.desired_config(&site)),
                    Some(SessionCall::Wait) => match super::json_body::<WaitArgs>(&frame.payload) {
                        Ok(args) => {
                            let m = manager.clone();
                            let s = site.clone();
                            let open: OpenWait = Box::pin(async move {
                                let wait = WaitFor {
                                    config_version: args.config_version,
                                    after_action: args.after_action,
                                };
                                m.wait(&s, wait).await
                            });
                            // One long poll per session: a new one replaces
                            // the old, whose caller is told so.
                            match wait.replace((id, open)) {
                                Some((old, _)) => refusal(
                                    old,
                                    &ManagerError::Conflict("replaced by a newer wait".into()),
                                ),
                                None => continue,
                            }
                        }
                        Err(e) => refusal(id, &e),
                    },
                    None => refusal(
                        id,
                        &ManagerError::BadRequest(format!(
                            "unknown session call {}",
                            frame.head.code
                        )),
                    ),
                }
            }
            reply = async {
                match wait.as_mut() {
                    Some((_, open)) => open.await,
                    None => std::future::pending().await,
                }
            }, if wait.is_some() => {
                let (id, _) = wait.take().expect("the branch runs only with a wait open");
                answer(id, reply)
            }
            () = tokio::time::sleep_until(last_frame + idle) => {
                tracing::debug!(%site, "session idle for {idle:?}: closed");
                break;
            }
            () = shutdown.cancelled(), if wait.is_none() => break,
            () = replaced.cancelled() => {
                tracing::debug!(%site, "session replaced by a newer one from the same edge");
                break;
            }
        };
        match tokio::time::timeout(write_timeout, writer.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!(%site, "session closed: an answer not taken in {write_timeout:?}");
                break;
            }
        }
    }
    unregister(&manager, &site, number);
    let _ = tokio::time::timeout(write_timeout, writer.shutdown()).await;
}
