//! What a hostile or broken client gets: closed connections, not a stuck
//! or crashed manager.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestManager;

fn addr(m: &TestManager) -> String {
    m.url.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes; how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let m = TestManager::start_limited(100, Duration::from_millis(300)).await;
    let mut slow = TcpStream::connect(addr(&m)).await.unwrap();
    slow.write_all(b"GET /api/v1/edges HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("the manager closes a connection whose headers never end");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // And it still serves others.
    let list: outpost_protocol::EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    assert!(list.edges.is_empty());
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let m = TestManager::start_limited(2, Duration::from_secs(10)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr(&m)).await.unwrap());
    }
    // Both held connections are accepted (and counted) before the third.
    let mut probe = held.pop().unwrap();
    probe
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = probe.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    held.push(probe);
    let mut third = TcpStream::connect(addr(&m)).await.unwrap();
    let _ = third
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut third, Duration::from_secs(3))
            .await
            .is_some(),
        "the third connection is closed"
    );
    drop(held);
    // Room again once they are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if m.admin()
            .get::<outpost_protocol::EdgeList>("/api/v1/edges")
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after the held connections closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn garbage_from_an_edge_is_a_400_not_a_crash() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    for body in [
        &b"{"[..],
        b"null",
        b"{\"report\": 5}",
        &[0xff, 0xfe, 0x00][..],
    ] {
        let (status, body) = edge
            .client
            .request(
                Method::POST,
                "/edge/v1/heartbeat",
                Some(body.to_vec().into()),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
    }
    let (status, _) = edge
        .client
        .request(Method::GET, "/edge/v1/wait?config_version=-1", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(edge.heartbeat(vec![]).await.is_ok());
}

#[tokio::test]
async fn an_enrolment_body_over_16_kib_is_refused_unread() {
    let m = TestManager::start_limited(100, Duration::from_secs(10)).await;
    let mut client = TcpStream::connect(addr(&m)).await.unwrap();
    let body = vec![b' '; 64 * 1024];
    let head = format!(
        "POST /edge/v1/enrol HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         outpost-fleet-protocol: 1\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    // The manager may answer before it has read the body: ignore a reset.
    let _ = client.write_all(&body).await;
    let mut buf = [0u8; 64];
    let n = client.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
