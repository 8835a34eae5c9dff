//! The edge session: the fleet protocol's calls (heartbeat, wait, config)
//! carried on one upgraded connection instead of HTTP requests.
//!
//! Why: every edge holds a long poll all the time, so what a connection
//! costs the manager while it waits is multiplied by the fleet. An
//! HTTP/2 connection keeps about 29 KiB of fixed buffers (h2's 16 KiB write
//! buffer, its 8 KiB read buffer, the HPACK tables) and a task per stream;
//! an upgraded session keeps the TLS state and a small task, and reads a
//! frame into a buffer only while one arrives.
//!
//! The edge opens it with `GET /edge/v1/session` over HTTP/1.1 carrying
//! `Connection: upgrade`, `Upgrade:` [`SESSION_UPGRADE`], its credential
//! and the protocol header; the manager answers `101 Switching Protocols`.
//! A manager (or a proxy in front) that answers anything else has no
//! session: the edge uses the plain HTTP calls.
//!
//! After the 101 both sides send frames: a 14-byte head, big-endian,
//! then the payload:
//!
//! | bytes | edge -> manager | manager -> edge |
//! |---|---|---|
//! | 4 | payload length | payload length |
//! | 8 | call id (the edge's, increasing) | the id of the call it answers |
//! | 2 | [`SessionCall`] | HTTP status, as the HTTP call would answer |
//! | n | the HTTP call's JSON body ([`crate::Heartbeat`], [`WaitArgs`], empty for config) | the HTTP call's JSON answer, or [`crate::ApiError`] |
//!
//! Calls may overlap (a long poll waits while heartbeats are answered);
//! answers come in any order, matched by id. At most one wait is open per
//! session: a second one replaces the first, which is answered with the
//! current reply.
//!
//! Sans-io: [`encode`] builds a frame, [`Head::parse`] reads a head; the
//! adapters own the sockets.

use serde::{Deserialize, Serialize};

/// The `Upgrade` token.
pub const SESSION_UPGRADE: &str = "outpost-fleet/1";
/// The session's path.
pub const SESSION_PATH: &str = "/edge/v1/session";
/// Bytes before a frame's payload.
pub const HEAD_LEN: usize = 14;

/// What an edge asks on a session: the HTTP calls of [`crate::fleet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum SessionCall {
    /// `POST /edge/v1/heartbeat`.
    Heartbeat = 1,
    /// `GET /edge/v1/wait`, its query as [`WaitArgs`] JSON.
    Wait = 2,
    /// `GET /edge/v1/config`.
    Config = 3,
}

impl SessionCall {
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(Self::Heartbeat),
            2 => Some(Self::Wait),
            3 => Some(Self::Config),
            _ => None,
        }
    }
}

/// The long poll's arguments (the HTTP call's query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitArgs {
    pub config_version: u64,
    #[serde(default)]
    pub after_action: u64,
}

/// A frame's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub id: u64,
    /// A [`SessionCall`] from the edge; an HTTP status from the manager.
    pub code: u16,
}

/// A head announcing more than the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub len: u32,
    pub max: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a session frame of {} bytes, over the limit of {}",
            self.len, self.max
        )
    }
}

impl std::error::Error for TooLarge {}

impl Head {
    /// Reads a head; refuses a payload longer than `max` before anything
    /// is allocated for it.
    pub fn parse(bytes: &[u8; HEAD_LEN], max: usize) -> Result<Self, TooLarge> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[4..12]);
        let head = Self {
            len,
            id: u64::from_be_bytes(id),
            code: u16::from_be_bytes([bytes[12], bytes[13]]),
        };
        if len as usize > max {
            return Err(TooLarge { len, max });
        }
        Ok(head)
    }
}

/// One frame: head and payload in one buffer, so it goes out in one write.
/// A payload over 4 GiB cannot be framed (the callers' limits are MiB).
pub fn encode(id: u64, code: u16, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(HEAD_LEN + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&payload[..len as usize]);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back() {
        let frame = encode(7, SessionCall::Wait as u16, br#"{"config_version":3}"#);
        let head: [u8; HEAD_LEN] = frame[..HEAD_LEN].try_into().unwrap();
        let head = Head::parse(&head, 1024).unwrap();
        assert_eq!(
            head,
            Head {
                len: 20,
                id: 7,
                code: 2
            }
        );
        assert_eq!(&frame[HEAD_LEN..], br#"{"config_version":3}"#);
        assert_eq!(SessionCall::from_code(head.code), Some(SessionCall::Wait));
        let args: WaitArgs = serde_json::from_slice(&frame[HEAD_LEN..]).unwrap();
        assert_eq!(args.after_action, 0);
    }

    #[test]
    fn a_head_over_the_limit_is_refused_before_the_payload() {
        let frame = encode(1, 200, &[b'x'; 100]);
        let head: [u8; HEAD_LEN] = frame[..HEAD_LEN].try_into().unwrap();
        assert_eq!(Head::parse(&head, 99), Err(TooLarge { len: 100, max: 99 }));
        let mut huge = head;
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Head::parse(&huge, 8 << 20).is_err());
    }

    #[test]
    fn unknown_calls_are_none() {
        assert_eq!(SessionCall::from_code(0), None);
        assert_eq!(SessionCall::from_code(4), None);
        assert_eq!(SessionCall::from_code(1), Some(SessionCall::Heartbeat));
    }
}
