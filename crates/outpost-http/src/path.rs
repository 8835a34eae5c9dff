//! Request paths as origins read them: a reverse site's path prefix holds
//! only if no request can climb out of it with `..`, written plainly or in
//! one of the encodings origins decode.

/// Why a request path cannot be joined to a site's base path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target {0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("request path climbs above the site's root")]
    AboveRoot,
    #[error("path segment {0:?} hides a dot-segment from the edge")]
    HiddenDotSegment(String),
}

/// Whether a path segment means "this folder" or "the parent folder" to an
/// origin: `Some(true)` for a literal `..`, `Some(false)` for `.`, `None`
/// for a name. `Err` for a segment that an origin may read as a dot
/// segment although it is not a literal one: percent-encoded dots
/// (`%2e%2E`, double-encoded `%252e`, IIS's `%u002e`, overlong UTF-8
/// `%c0%ae`), a dot segment behind an encoded slash or a backslash (IIS
/// takes `\` for `/`), or with a path parameter (`..;/`, Tomcat). No
/// client has a reason to send those; the origins that decode them differ
/// too much to normalise them all the same way.
fn dot_segment(segment: &str) -> Result<Option<bool>, PathError> {
    match segment {
        "." => return Ok(Some(false)),
        ".." => return Ok(Some(true)),
        _ => {}
    }
    if !segment.bytes().any(|b| matches!(b, b'%' | b'\\' | b';')) {
        return Ok(None);
    }
    let decoded = decode_for_origins(segment);
    let hidden = decoded
        .split(|b| *b == b'/' || *b == b'\\')
        .map(|piece| piece.split(|b| *b == b';').next().unwrap_or_default())
        .any(|piece| piece == b"." || piece == b"..");
    if hidden {
        return Err(PathError::HiddenDotSegment(segment.to_string()));
    }
    Ok(None)
}

/// A path segment decoded as permissively as any origin might: percent
/// escapes repeatedly (double encoding), `%uXXXX`, and overlong UTF-8 for
/// `.`, `/` and `\`.
fn decode_for_origins(segment: &str) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut bytes = segment.as_bytes().to_vec();
    for _ in 0..4 {
        if !bytes.contains(&b'%') {
            break;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let rest = &bytes[i + 1..];
                if let [b'u' | b'U', a, b, c, d, ..] = rest
                    && let (Some(a), Some(b), Some(c), Some(d)) =
                        (hex(*a), hex(*b), hex(*c), hex(*d))
                {
                    let unit =
                        u32::from(a) << 12 | u32::from(b) << 8 | u32::from(c) << 4 | u32::from(d);
                    match char::from_u32(unit) {
                        Some(ch) => {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        None => out.push(b'?'),
                    }
                    i += 6;
                    continue;
                }
                if let [a, b, ..] = rest
                    && let (Some(a), Some(b)) = (hex(*a), hex(*b))
                {
                    out.push(a << 4 | b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        bytes = out;
    }
    // Overlong forms of '.', '/' and '\\' that lenient decoders accept.
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match &bytes[i..] {
            [0xc0, 0xae, ..] => out.push(b'.'),
            [0xc0, 0xaf, ..] => out.push(b'/'),
            [0xc1, 0x9c, ..] => out.push(b'\\'),
            _ => {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

/// RFC 3986 section 5.2.4 on an origin-form path. A path that climbs above
/// the root, or hides a dot-segment in an encoding (see `dot_segment`), is
/// refused rather than clamped or decoded: no client has a reason to send
/// one.
pub fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    // The common path has nothing to normalise or examine.
    if !path.contains("/.") && !path.bytes().any(|b| matches!(b, b'%' | b'\\' | b';')) {
        return Ok(path.to_string());
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match dot_segment(segment)? {
            Some(parent) => {
                if parent && out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                // `/a/.` and `/a/b/..` name the folder: keep its slash.
                if i == last {
                    out.push("");
                }
            }
            None => out.push(segment),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/a/b/../c/./d").unwrap(), "/a/c/d");
        assert_eq!(remove_dot_segments("/a/b/..").unwrap(), "/a/");
        assert_eq!(
            remove_dot_segments("/pkgs/app.msi").unwrap(),
            "/pkgs/app.msi"
        );
        assert_eq!(remove_dot_segments("/../x"), Err(PathError::AboveRoot));
        assert!(matches!(
            remove_dot_segments("x/y"),
            Err(PathError::NotAbsolute(_))
        ));
    }

    #[test]
    fn encoded_dot_segments_are_refused() {
        for path in [
            "/%2e%2e/x",
            "/%252e%252e/x",
            "/%u002e%u002e/x",
            "/%c0%ae%c0%ae/x",
            "/..;/x",
            "/a%2f..%2fx",
            "/..%5cx",
            "/a\\..\\x",
        ] {
            assert!(
                matches!(
                    remove_dot_segments(path),
                    Err(PathError::HiddenDotSegment(_))
                ),
                "{path}"
            );
        }
        // Encodings that hide no dot-segment are left alone.
        assert_eq!(
            remove_dot_segments("/a%20b/v1.2;x/%41").unwrap(),
            "/a%20b/v1.2;x/%41"
        );
    }
}
