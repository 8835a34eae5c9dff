//! What the library does with each request method (sans-io).
//!
//! The library is a read-only share. Reads are GET and HEAD (pages and
//! downloads), OPTIONS and PROPFIND (WebDAV discovery and listing). The
//! WebDAV methods that would change the share are refused with 403, as a
//! read-only Apache mod_dav share does: the method exists and the client
//! may send it, the share does not allow it, and clients (the Windows
//! WebClient, davfs2, rclone) report "access denied"/"read-only" rather
//! than "not supported". LOCK is among them: a fake lock would tell
//! Office it may save, and the save would then fail; without the lock it
//! opens documents read-only. Anything else is 405 with `Allow`.

use http::Method;

/// The methods the library answers, for `Allow`.
pub const ALLOW: &str = "GET, HEAD, OPTIONS, PROPFIND";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET or HEAD: a page or a download.
    Read,
    /// OPTIONS or PROPFIND: answered by the WebDAV handler.
    Dav,
    /// A WebDAV write: 403.
    Forbidden,
    /// Not a method of this share: 405.
    NotAllowed,
}

pub fn classify(method: &Method) -> Action {
    match method.as_str() {
        "GET" | "HEAD" => Action::Read,
        "OPTIONS" | "PROPFIND" => Action::Dav,
        "PUT" | "DELETE" | "MKCOL" | "MOVE" | "COPY" | "LOCK" | "UNLOCK" | "PROPPATCH" => {
            Action::Forbidden
        }
        _ => Action::NotAllowed,
    }
}

/// What `Depth` a PROPFIND may have: 0 and 1. RFC 4918 reads a missing
/// header as infinity, which the library refuses (a whole-share walk per
/// request is a way to make the edge do unbounded work).
pub fn finite_depth(depth: Option<&[u8]>) -> bool {
    matches!(depth.map(<[u8]>::trim_ascii), Some(b"0" | b"1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dav_writes_and_the_rest() {
        let m = |s: &str| classify(&Method::from_bytes(s.as_bytes()).unwrap());
        assert_eq!((m("GET"), m("HEAD")), (Action::Read, Action::Read));
        assert_eq!((m("OPTIONS"), m("PROPFIND")), (Action::Dav, Action::Dav));
        for w in [
            "PUT",
            "DELETE",
            "MKCOL",
            "MOVE",
            "COPY",
            "LOCK",
            "UNLOCK",
            "PROPPATCH",
        ] {
            assert_eq!(m(w), Action::Forbidden, "{w}");
        }
        for other in ["POST", "PATCH", "TRACE", "CONNECT", "SEARCH", "get"] {
            assert_eq!(m(other), Action::NotAllowed, "{other}");
        }
    }

    #[test]
    fn only_depth_0_and_1_are_finite() {
        assert!(finite_depth(Some(b"0")));
        assert!(finite_depth(Some(b" 1 ")));
        assert!(!finite_depth(Some(b"infinity")));
        assert!(!finite_depth(Some(b"Infinity")));
        assert!(!finite_depth(Some(b"2")));
        assert!(!finite_depth(None));
    }
}
