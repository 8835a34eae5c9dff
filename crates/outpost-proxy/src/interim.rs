//! Interim (1xx) responses from an origin, on their way to the one client
//! whose request caused the upstream request (RFC 9110 section 15.2).
//!
//! The client connection (`h1`) opens a sink for each HTTP/1.1 request
//! without a body and runs its handler inside [`scope`]; whatever upstream
//! request that handler's task sends (directly, or as the leader of a
//! collapsed miss or revalidation, which carries the sink into its own
//! task) gets a hyper `on_informational` callback that passes `103 Early
//! Hints`, `102 Processing` and the like to the sink. The connection writes
//! them before the final response.
//!
//! Invariants:
//! - 1xx heads are never stored: they pass through a bounded channel and
//!   are gone; a hit, a joiner of someone else's fill and background work
//!   (stale-while-revalidate, range fills, pre-positioning) have no sink,
//!   so they see none;
//! - `100 Continue` and `101 Switching Protocols` are not forwarded: they
//!   answer the edge's own request, not the client's;
//! - a flood of 1xx from an origin costs at most [`QUEUED`] heads of memory;
//!   the rest are dropped.

use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Heads queued for a client before more are dropped.
pub const QUEUED: usize = 16;

/// An interim response to forward: status and end-to-end headers.
#[derive(Debug)]
pub struct InterimHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// Where the current request's interim responses go.
#[derive(Clone, Debug)]
pub struct InterimSink(Arc<Queue>);

/// The heads waiting for the connection to write them. Made for every
/// HTTP/1.1 request without a body and used by almost none, so it costs one
/// small allocation: no buffer until a head arrives (a channel's would be
/// allocated, and zeroed, for each request).
#[derive(Debug, Default)]
pub struct Queue {
    heads: Mutex<VecDeque<InterimHead>>,
    arrived: Notify,
}

/// The connection's end of the queue.
#[derive(Debug)]
pub struct InterimReceiver(Arc<Queue>);

impl InterimReceiver {
    /// The next head, waiting for one.
    pub async fn recv(&mut self) -> Option<InterimHead> {
        loop {
            if let Some(head) = self.try_recv() {
                return Some(head);
            }
            // A head pushed between the check and here leaves a permit.
            self.0.arrived.notified().await;
        }
    }

    /// The next head if one is waiting.
    pub fn try_recv(&mut self) -> Option<InterimHead> {
        let mut heads = self.0.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.pop_front()
    }
}

impl InterimSink {
    /// Queues `head`, dropping it when `QUEUED` already wait (an origin
    /// that floods 1xx gets no more of them through).
    fn push(&self, head: InterimHead) {
        let mut heads = self.0.heads.lock().unwrap_or_else(|e| e.into_inner());
        if heads.len() < QUEUED {
            heads.push_back(head);
            drop(heads);
            self.0.arrived.notify_one();
        }
    }
}

tokio::task_local! {
    static SINK: Option<InterimSink>;
}

/// A sink and the receiving end the connection reads.
pub fn channel() -> (InterimSink, InterimReceiver) {
    let queue = Arc::new(Queue::default());
    (InterimSink(queue.clone()), InterimReceiver(queue))
}

/// Runs `work` with `sink` as the destination of interim responses to the
/// upstream requests it sends.
pub async fn scope<F: Future>(sink: Option<InterimSink>, work: F) -> F::Output {
    SINK.scope(sink, work).await
}

/// The sink of the task running now, to carry into a task it spawns on the
/// client's behalf.
pub fn current() -> Option<InterimSink> {
    SINK.try_with(Clone::clone).ok().flatten()
}

/// Makes `req`'s interim responses reach the current task's sink, if any.
pub fn forward_to_client<B>(req: &mut http::Request<B>) {
    let Some(sink) = current() else {
        return;
    };
    hyper::ext::on_informational(req, move |res| {
        let status = res.status();
        if status == StatusCode::CONTINUE || status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let mut headers = res.headers().clone();
        outpost_http::headers::strip_hop_by_hop(&mut headers);
        // Full queue or a client already gone: an interim response is
        // only a hint, dropping it is allowed.
        sink.push(InterimHead { status, headers });
    });
}

/// The bytes of `head` on an HTTP/1.1 connection.
pub fn encode(head: &InterimHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        head.status
            .canonical_reason()
            .unwrap_or("Informational")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interim_head_is_written_as_http_1_1() {
        let mut headers = HeaderMap::new();
        headers.append("link", "</a.css>; rel=preload".parse().unwrap());
        let head = InterimHead {
            status: StatusCode::from_u16(103).unwrap(),
            headers,
        };
        assert_eq!(
            encode(&head),
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn only_a_task_in_scope_has_a_sink() {
        assert!(current().is_none());
        let (sink, _rx) = channel();
        let inside = scope(Some(sink), async { current().is_some() }).await;
        assert!(inside);
        let spawned = scope(channel().0.into(), async {
            tokio::spawn(async { current().is_some() }).await.unwrap()
        })
        .await;
        assert!(
            !spawned,
            "a spawned task carries the sink only when told to"
        );
    }
}
