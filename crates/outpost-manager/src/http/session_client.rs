//! The edge's side of an edge session ([`outpost_protocol::session`]):
//! one upgraded connection that carries the fleet calls, for the real
//! edge and for `bench/fleet-sim`.
//!
//! [`Client::open_session`] connects, asks for the upgrade and starts one
//! task that writes the calls' frames and hands each answer to its caller
//! by id. When the connection breaks every pending call fails with
//! [`SessionError::Broken`] and [`Session::is_open`] turns false: the
//! caller opens a new one. A manager (or a proxy in front) that does not
//! answer `101` gives [`SessionError::NotOffered`]: use the HTTP calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use outpost_protocol::session::{self, SESSION_PATH, SESSION_UPGRADE, SessionCall};
use outpost_protocol::{FLEET_PROTOCOL, FLEET_PROTOCOL_HEADER};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::client::{Client, Stream};
use super::session::read_frame;

/// The largest answer a session reads (a managed config is a few kB).
pub const MAX_ANSWER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The upgrade was answered with `status`: no session here.
    /// `from_manager`: the answer carries the fleet protocol header, which
    /// the manager puts on every edge answer (a 403 from a proxy in front
    /// is not the manager revoking the edge).
    #[error("the manager offers no session: {status}")]
    NotOffered {
        status: StatusCode,
        body: Bytes,
        from_manager: bool,
    },
    /// No connection (TCP or TLS): the manager is down or unreachable.
    #[error("cannot connect to the manager: {0}")]
    Connect(String),
    #[error("the session with the manager broke: {0}")]
    Broken(String),
    #[error("no answer from the manager within {0:?}")]
    Timeout(Duration),
}

/// An answer as read: its status and JSON body.
type Answer = (u16, Vec<u8>);

/// What the session's task and its handle share.
#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    open: AtomicBool,
    /// Woken when the handle gives up on the session.
    closing: tokio::sync::Notify,
}

impl Shared {
    fn close(&self) {
        self.open.store(false, Ordering::Release);
        self.closing.notify_one();
    }
}

/// An open session. Dropping it closes the connection.
pub struct Session {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects and upgrades to a session, with the client's bearer token
    /// as the edge credential, within the client's timeout.
    pub async fn open_session(&self) -> Result<Session, SessionError> {
        let request = session_request(self.authority.as_str(), self.bearer.as_deref())?;
        let stream = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| SessionError::Connect(format!("no connection within {:?}", self.timeout)))?
            .map_err(SessionError::Connect)?;
        tokio::time::timeout(self.timeout, Self::open_on(stream, request))
            .await
            .map_err(|_| SessionError::Timeout(self.timeout))?
    }

    async fn open_on(
        stream: Stream,
        request: Request<Empty<Bytes>>,
    ) -> Result<Session, SessionError> {
        match stream {
            Stream::Tls(tls) => upgrade(TokioIo::new(tls), request).await,
            Stream::Plain(tcp) => upgrade(TokioIo::new(tcp), request).await,
        }
    }
}

/// The upgrade request, with the edge's credential.
pub fn session_request(
    authority: &str,
    credential: Option<&str>,
) -> Result<Request<Empty<Bytes>>, SessionError> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(SESSION_PATH)
        .header(header::HOST, authority)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, SESSION_UPGRADE)
        .header(FLEET_PROTOCOL_HEADER, FLEET_PROTOCOL.to_string())
        .header(
            header::USER_AGENT,
            concat!("outpost/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = credential {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request
        .body(Empty::<Bytes>::new())
        .map_err(|e| SessionError::Broken(e.to_string()))
}

/// Asks for the upgrade on a connection the caller made (HTTP/1.1: no
/// ALPN `h2`) and starts the session.
pub async fn upgrade<I>(io: I, request: Request<Empty<Bytes>>) -> Result<Session, SessionError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let broken = |e: hyper::Error| SessionError::Broken(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(broken)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut response = sender.send_request(request).await.map_err(broken)?;
    let from_manager = response.headers().contains_key(FLEET_PROTOCOL_HEADER);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(SessionError::NotOffered {
            status,
            body,
            from_manager,
        });
    }
    let upgraded_to_ours = response
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(SESSION_UPGRADE));
    if !upgraded_to_ours {
        return Err(SessionError::Broken(
            "the connection was upgraded to something else than an edge session".into(),
        ));
    }
    let upgraded = hyper::upgrade::on(&mut response).await.map_err(broken)?;
    Ok(Session::start(TokioIo::new(upgraded)))
}

impl Session {
    fn start<I>(io: I) -> Self
    where
        I: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (frames, outgoing) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            open: AtomicBool::new(true),
            ..Shared::default()
        });
        tokio::spawn(run(io, outgoing, shared.clone()));
        Self {
            frames,
            shared,
            next_id: AtomicU64::new(1),
        }
    }

    /// False once the connection broke: open a new session.
    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Acquire)
    }

    /// One call: its answer's status and JSON body, as the HTTP call would
    /// have answered.
    pub async fn call(
        &self,
        call: SessionCall,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), SessionError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        // Removes the entry however this call ends (answered, timed out,
        // or its future dropped by the caller).
        let _entry = PendingEntry {
            shared: &self.shared,
            id,
        };
        // The task may have ended (and emptied the map) just before the
        // insert: then nothing would ever answer.
        if !self.is_open()
            || self
                .frames
                .send(session::encode(id, call as u16, payload))
                .is_err()
        {
            return Err(SessionError::Broken("closed".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((status, body))) => Ok((
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
            )),
            Ok(Err(_)) => Err(SessionError::Broken("the connection closed".into())),
            Err(_) => {
                // A call unanswered in time: the link is not to be trusted
                // (a NAT may have dropped it silently). Start over.
                self.shared.close();
                Err(SessionError::Timeout(timeout))
            }
        }
    }
}

struct PendingEntry<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

/// How long one frame may take to write: a manager that stops reading
/// must not keep a session's task (and socket) alive for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.close();
    }
}

async fn run<I>(io: I, mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(io);
    let read = read_frame(reader, MAX_ANSWER);
    tokio::pin!(read);
    loop {
        tokio::select! {
            (reader, frame) = &mut read => {
                let Ok(Some(frame)) = frame else { break };
                read.set(read_frame(reader, MAX_ANSWER));
                if let Some(tx) = lock(&shared.pending).remove(&frame.head.id) {
                    let _ = tx.send((frame.head.code, frame.payload));
                }
            }
            frame = outgoing.recv() => {
                let Some(frame) = frame else { break };
                match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            () = shared.closing.notified() => {
                if !shared.open.load(Ordering::Acquire) {
                    break;
                }
            }
        }
    }
    shared.open.store(false, Ordering::Release);
    // No frame is queued after this; callers waiting get their error.
    outgoing.close();
    lock(&shared.pending).clear();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
}
