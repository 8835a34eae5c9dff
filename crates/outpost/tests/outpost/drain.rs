//! SIGTERM drains: the edge stops accepting at once, lets a download in
//! flight finish, and exits 0; a second signal ends the drain at once.
//! Real processes, a throttled fake origin.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use http_body_util::BodyExt;
use outpost_testkit::{Client, Origin, Resource, content};
use rustix::process::Signal;

use crate::support::Serve;

/// A download that takes about 3 s at the origin's pace.
const LEN: usize = 3 << 20;
const RATE: u64 = 1 << 20;

/// Whether a new TCP connection to `addr` is refused.
async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_and_lets_a_download_finish() {
    let origin = Origin::start().await;
    let body = content(LEN, 7);
    origin.put("/slow.iso", Resource::new(body.clone()).rate(RATE));
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Serve::spawn(&dir.path().join("cache"), &origin.url("/"), &[]);
    let addr = edge.listening();

    let (head, mut incoming) = Client::new(addr)
        .send("GET", "/slow.iso", &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    let download = tokio::spawn(async move {
        let mut got = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            match frame {
                Ok(f) => got.extend_from_slice(&f.into_data().unwrap_or_default()),
                Err(e) => return Err(format!("body cut after {} bytes: {e}", got.len())),
            }
        }
        Ok(got.freeze())
    });

    let signalled = Instant::now();
    edge.signal(Signal::TERM);
    assert!(edge.logged("draining"), "{}", edge.stderr());
    assert!(
        edge.stderr().contains("connections=1"),
        "the drain counts the download: {}",
        edge.stderr()
    );
    assert!(
        refused(addr).await,
        "a new connection was accepted while draining"
    );
    assert!(
        !download.is_finished(),
        "the download ended before the test could check it went on"
    );

    let got = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .expect("the download finishes within the drain")
        .unwrap()
        .expect("the download is whole");
    assert!(got == body, "the client got other bytes than the origin's");
    let status = edge
        .exits_within(Duration::from_secs(10))
        .expect("the edge exits once the download is done");
    assert!(status.success(), "{}", edge.stderr());
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "took longer than the drain period"
    );
    let log = edge.stderr();
    assert!(log.contains("drained"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let origin = Origin::start().await;
    // About 20 s at the origin's pace: far longer than the test waits.
    let body = content(20 << 20, 8);
    origin.put("/slower.iso", Resource::new(body).rate(RATE));
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Serve::spawn(&dir.path().join("cache"), &origin.url("/"), &[]);
    let addr = edge.listening();
    let (head, mut incoming) = Client::new(addr)
        .send("GET", "/slower.iso", &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    let download = tokio::spawn(async move {
        let mut got = 0usize;
        while let Some(Ok(frame)) = incoming.frame().await {
            got += frame.into_data().map_or(0, |d| d.len());
        }
        got
    });

    edge.signal(Signal::TERM);
    assert!(edge.logged("draining"), "{}", edge.stderr());
    let second = Instant::now();
    edge.signal(Signal::TERM);
    let status = edge
        .exits_within(Duration::from_secs(5))
        .expect("the edge stops at the second signal");
    assert!(status.success(), "{}", edge.stderr());
    assert!(second.elapsed() < Duration::from_secs(5));
    assert!(edge.stderr().contains("second signal"), "{}", edge.stderr());
    // The download was cut, not finished.
    let got = tokio::time::timeout(Duration::from_secs(10), download)
        .await
        .expect("the client sees the connection end")
        .unwrap();
    assert!(got < 20 << 20, "the whole body arrived: {got} bytes");
}
