//! A minimal HTTP/1.1 client for tests: one connection per request, the head
//! and body timed separately.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A received response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From sending the request to receiving the response head.
    pub ttfb: Duration,
    /// Whether the body ended with an error (cut connection).
    pub body_error: Option<String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends requests to one address (an edge).
#[derive(Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// GET `target` (origin-form path or absolute URL) with extra headers.
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.request("GET", target, headers).await
    }

    pub async fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let (head, mut body) = self.send(method, target, headers).await?;
        let mut buf = BytesMut::new();
        let mut body_error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                    }
                }
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(Reply {
            status: head.status,
            headers: head.headers,
            body: buf.freeze(),
            ttfb: head.ttfb,
            body_error,
        })
    }

    /// Sends a request and returns once the head has arrived; the body is
    /// left to the caller (to read slowly, or to drop).
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(Head, hyper::body::Incoming)> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder().method(method).uri(target);
        let mut has_host = false;
        for (n, v) in headers {
            has_host |= n.eq_ignore_ascii_case("host");
            req = req.header(*n, *v);
        }
        if !has_host {
            req = req.header("host", "origin.test");
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let started = Instant::now();
        let resp = sender.send_request(req).await?;
        let ttfb = started.elapsed();
        let (parts, body) = resp.into_parts();
        Ok((
            Head {
                status: parts.status,
                headers: parts.headers,
                ttfb,
            },
            body,
        ))
    }
}

#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub ttfb: Duration,
}
