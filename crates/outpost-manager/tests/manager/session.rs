//! Edge sessions (`/edge/v1/session`): the fleet calls on one upgraded
//! connection, as an edge and as a hostile client would use them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;
use outpost_manager::http::session_client::SessionError;
use outpost_protocol::session::{self, HEAD_LEN, Head, SessionCall, WaitArgs};
use outpost_protocol::{
    ApiError, AppliedConfig, DesiredConfig, EdgeList, EdgeState, Heartbeat, HeartbeatReply,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestManager, channel, eventually, report};

const CALL: Duration = Duration::from_secs(10);

fn heartbeat(applied: u64) -> Vec<u8> {
    serde_json::to_vec(&Heartbeat {
        report: report(vec![channel("apps", 2, 2)]),
        config: AppliedConfig {
            applied_version: applied,
            rejected: None,
        },
        action_results: vec![],
    })
    .unwrap()
}

/// A heartbeat on `session` that the manager answers 200.
async fn heartbeat_ok(session: &outpost_manager::http::session_client::Session) {
    let (status, body) = session
        .call(SessionCall::Heartbeat, &heartbeat(0), CALL)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

/// Waits until the manager counts `n` open sessions.
async fn sessions_open_becomes(m: &TestManager, n: i64) {
    eventually(
        Duration::from_secs(5),
        &format!("{n} sessions open"),
        || async { (m.manager.stats.sessions_open.load(Ordering::Relaxed) == n).then_some(()) },
    )
    .await;
}

fn accepted(m: &TestManager) -> u64 {
    m.manager
        .stats
        .connections_accepted_total
        .load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_session_carries_heartbeats_the_long_poll_and_the_config_on_one_connection() {
    let m = TestManager::start(true, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let session = edge.client.open_session().await.unwrap();
    let connections = accepted(&m);
    assert_eq!(m.manager.stats.sessions_open.load(Ordering::Relaxed), 1);

    let (status, body) = session
        .call(SessionCall::Heartbeat, &heartbeat(0), CALL)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let reply: HeartbeatReply = serde_json::from_slice(&body).unwrap();
    assert!(reply.approved);
    assert_eq!(reply.desired_config_version, 0);
    let list: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    assert_eq!(list.edges[0].state, EdgeState::Up);
    assert_eq!(list.edges[0].disk_used, Some(500));

    // The long poll waits on the session while a heartbeat goes by, and a
    // publish wakes it within two seconds.
    let wait = serde_json::to_vec(&WaitArgs {
        config_version: 0,
        after_action: 0,
    })
    .unwrap();
    let session = std::sync::Arc::new(session);
    let poll = {
        let session = session.clone();
        tokio::spawn(async move {
            let answer = session.call(SessionCall::Wait, &wait, CALL).await;
            (answer, Instant::now())
        })
    };
    eventually(Duration::from_secs(5), "the long poll to open", || async {
        (m.manager.stats.long_polls_open.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    heartbeat_ok(&session).await;
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\n",
    )
    .await;
    let published = Instant::now();
    m.publish().await.unwrap();
    let (answer, answered) = poll.await.unwrap();
    let (status, body) = answer.unwrap();
    assert_eq!(status, StatusCode::OK);
    let reply: HeartbeatReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply.desired_config_version, 1);
    let latency = answered.duration_since(published);
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    let (status, body) = session.call(SessionCall::Config, &[], CALL).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let config: DesiredConfig = serde_json::from_slice(&body).unwrap();
    assert_eq!(config.version, 1);
    assert!(config.toml.contains("http://o/apps/"), "{}", config.toml);

    // Everything above went on the session's connection: the only
    // connections accepted since are the admin client's own.
    let admin_calls = 4; // edges list, scope put, publish, (none more)
    assert!(
        accepted(&m) - connections <= admin_calls,
        "the edge's calls opened connections"
    );
    drop(session);
    sessions_open_becomes(&m, 0).await;
}

#[tokio::test]
async fn a_revoked_edge_is_refused_on_its_open_session_which_then_closes() {
    let m = TestManager::start(false, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let session = edge.client.open_session().await.unwrap();
    heartbeat_ok(&session).await;

    let _: serde_json::Value = m
        .admin()
        .send(http::Method::POST, "/api/v1/edges/oslo/revoke", &())
        .await
        .unwrap();
    let (status, body) = session
        .call(SessionCall::Heartbeat, &heartbeat(0), CALL)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let error: ApiError = serde_json::from_slice(&body).unwrap();
    assert!(
        error.error.starts_with("this edge was revoked at "),
        "{}",
        error.error
    );
    eventually(Duration::from_secs(5), "the session to close", || async {
        (!session.is_open()).then_some(())
    })
    .await;
    // And a new session is refused as the HTTP calls are.
    match edge.client.open_session().await {
        Err(SessionError::NotOffered { status, .. }) => assert_eq!(status, StatusCode::FORBIDDEN),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("a revoked edge opened a session"),
    }
}

/// A raw session over plain TCP: the upgrade by hand, then frames.
async fn raw_session(m: &TestManager, credential: &str) -> tokio::net::TcpStream {
    let addr = m.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /edge/v1/session HTTP/1.1\r\nHost: {addr}\r\nConnection: upgrade\r\nUpgrade: outpost-fleet/1\r\nOutpost-Fleet-Protocol: 1\r\nAuthorization: Bearer {credential}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "closed during the upgrade"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("upgrade: outpost-fleet/1"),
        "{head}"
    );
    tcp
}

async fn read_answer(tcp: &mut tokio::net::TcpStream) -> (Head, Vec<u8>) {
    let mut head = [0u8; HEAD_LEN];
    tokio::time::timeout(CALL, tcp.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .unwrap();
    let head = Head::parse(&head, 1 << 20).unwrap();
    let mut payload = vec![0u8; head.len as usize];
    tcp.read_exact(&mut payload).await.unwrap();
    (head, payload)
}

/// Reads until the manager closes the connection; panics if it does not.
async fn closed_by_peer(tcp: &mut tokio::net::TcpStream) {
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(CALL, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the manager kept the connection open");
}

#[tokio::test]
async fn hostile_frames_are_answered_or_close_their_session_and_nothing_else() {
    let m = TestManager::start(false, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let credential = edge.reply.credential.clone();

    // An unknown call and a body that is not a heartbeat are answered 400
    // by id; the session goes on.
    let mut tcp = raw_session(&m, &credential).await;
    tcp.write_all(&session::encode(7, 99, b"")).await.unwrap();
    let (head, body) = read_answer(&mut tcp).await;
    assert_eq!((head.id, head.code), (7, 400));
    let error: ApiError = serde_json::from_slice(&body).unwrap();
    assert!(
        error.error.contains("unknown session call 99"),
        "{}",
        error.error
    );
    tcp.write_all(&session::encode(
        8,
        SessionCall::Heartbeat as u16,
        b"{\"not\": 1}",
    ))
    .await
    .unwrap();
    let (head, _) = read_answer(&mut tcp).await;
    assert_eq!((head.id, head.code), (8, 400));
    tcp.write_all(&session::encode(
        9,
        SessionCall::Heartbeat as u16,
        &heartbeat(0),
    ))
    .await
    .unwrap();
    let (head, body) = read_answer(&mut tcp).await;
    assert_eq!((head.id, head.code), (9, 200));
    let _: HeartbeatReply = serde_json::from_slice(&body).unwrap();

    // A frame announcing 4 GiB is refused before anything is read for it:
    // the session closes.
    let mut huge = session::encode(10, SessionCall::Heartbeat as u16, b"");
    huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    tcp.write_all(&huge).await.unwrap();
    closed_by_peer(&mut tcp).await;

    // A frame cut short by the peer's close ends only that session.
    let mut tcp = raw_session(&m, &credential).await;
    let frame = session::encode(11, SessionCall::Heartbeat as u16, &heartbeat(0));
    tcp.write_all(&frame[..frame.len() / 2]).await.unwrap();
    drop(tcp);

    // A wrong credential gets no session at all.
    let addr = m.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /edge/v1/session HTTP/1.1\r\nHost: {addr}\r\nConnection: upgrade\r\nUpgrade: outpost-fleet/1\r\nOutpost-Fleet-Protocol: 1\r\nAuthorization: Bearer nope\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");

    // Without the upgrade headers the path is refused.
    let (status, body) = edge
        .client
        .request(http::Method::GET, "/edge/v1/session", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("Upgrade: outpost-fleet/1"));

    // The manager still serves the edge, on a new session.
    let session = edge.client.open_session().await.unwrap();
    heartbeat_ok(&session).await;
    sessions_open_becomes(&m, 1).await;
}

#[tokio::test]
async fn a_second_wait_replaces_the_first_and_shutdown_answers_the_open_one() {
    let mut m = TestManager::start(false, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let mut tcp = raw_session(&m, &edge.reply.credential).await;
    let wait = serde_json::to_vec(&WaitArgs {
        config_version: 0,
        after_action: 0,
    })
    .unwrap();
    tcp.write_all(&session::encode(1, SessionCall::Wait as u16, &wait))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the long poll to open", || async {
        (m.manager.stats.long_polls_open.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    tcp.write_all(&session::encode(2, SessionCall::Wait as u16, &wait))
        .await
        .unwrap();
    let (head, _) = read_answer(&mut tcp).await;
    assert_eq!((head.id, head.code), (1, 409));
    eventually(Duration::from_secs(5), "one long poll open", || async {
        (m.manager.stats.long_polls_open.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    let stopping = Instant::now();
    m.stop().await;
    let (head, body) = read_answer(&mut tcp).await;
    assert_eq!((head.id, head.code), (2, 200));
    let _: HeartbeatReply = serde_json::from_slice(&body).unwrap();
    closed_by_peer(&mut tcp).await;
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_new_session_from_the_same_edge_ends_the_old_one() {
    let m = TestManager::start(true, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let first = edge.client.open_session().await.unwrap();
    heartbeat_ok(&first).await;
    // Another edge's session is not touched.
    let other = m.enrol("bergen").await;
    let bergen = other.client.open_session().await.unwrap();

    let second = edge.client.open_session().await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the first session to end",
        || async { (!first.is_open()).then_some(()) },
    )
    .await;
    assert!(
        first
            .call(SessionCall::Heartbeat, &heartbeat(0), CALL)
            .await
            .is_err()
    );
    for session in [&second, &bergen] {
        let (status, _) = session
            .call(SessionCall::Heartbeat, &heartbeat(0), CALL)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    sessions_open_becomes(&m, 2).await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_loses_its_session_and_its_slot() {
    // Heartbeat 1 s: the session's idle timeout, and so its write
    // deadline, is the floor of 10 s.
    let m = TestManager::start(false, Duration::from_secs(1)).await;
    let edge = m.enrol("oslo").await;
    // A config of about 120 kB, so a few answers fill every buffer.
    let patterns: Vec<String> = (0..3000)
        .map(|i| format!("\"pattern-{i:05}-abcdefghijklmnop/*.msi\""))
        .collect();
    m.put_scope(
        "global",
        &format!(
            "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\ninclude = [{}]\n",
            patterns.join(", ")
        ),
    )
    .await;
    m.publish().await.unwrap();

    let addr: std::net::SocketAddr = m.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /edge/v1/session HTTP/1.1\r\nHost: {addr}\r\nConnection: upgrade\r\nUpgrade: outpost-fleet/1\r\nOutpost-Fleet-Protocol: 1\r\nAuthorization: Bearer {}\r\n\r\n",
        edge.reply.credential
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    sessions_open_becomes(&m, 1).await;
    // 100 config calls, about 12 MB of answers, and nothing read.
    let mut calls = Vec::new();
    for id in 1..=100u64 {
        calls.extend(session::encode(id, SessionCall::Config as u16, b""));
    }
    tcp.write_all(&calls).await.unwrap();
    let stalled = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the stalled session to close",
        || async { (m.manager.stats.sessions_open.load(Ordering::Relaxed) == 0).then_some(()) },
    )
    .await;
    let after = stalled.elapsed();
    assert!(
        after >= Duration::from_secs(5),
        "closed after {after:?}: too early to be the deadline"
    );
    eventually(
        Duration::from_secs(5),
        "its connection slot to be free",
        || async { (m.manager.stats.connections_open.load(Ordering::Relaxed) == 0).then_some(()) },
    )
    .await;
    // The edge itself is not refused: a new session works.
    let session = edge.client.open_session().await.unwrap();
    heartbeat_ok(&session).await;
    drop(tcp);
}
