//! A look at a request body's XML before any tree parser sees it.
//!
//! dav-server parses PROPFIND bodies with xmltree, whose builder recurses
//! once per level of nesting: a 6 KB body of nested elements overflows a
//! worker thread's stack and the process aborts (a stack overflow is not a
//! panic). Dropping such a tree recurses as well, so the depth is checked
//! here, on the bytes, by a loop that keeps one counter. A real PROPFIND is
//! four levels deep; a declaration (`<!DOCTYPE`, `<!ENTITY`) has no place
//! in one and is refused too.

/// Deeper than any body a WebDAV client sends.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// Nothing that would hurt a recursive parser (it may still be
    /// invalid XML: the parser says so).
    Plain,
    TooDeep,
    Declaration,
}

/// Scans `body`; conservative where it must guess (an unterminated
/// construct ends the scan: the parser rejects it whole).
pub fn shape(body: &[u8]) -> Shape {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(offset) = body[at..].iter().position(|&b| b == b'<') {
        let rest = &body[at + offset + 1..];
        let skip_to = |end: &[u8]| find(rest, end).map(|i| i + end.len());
        let consumed = if rest.starts_with(b"?") {
            skip_to(b"?>")
        } else if rest.starts_with(b"!--") {
            skip_to(b"-->")
        } else if rest.starts_with(b"![CDATA[") {
            skip_to(b"]]>")
        } else if rest.starts_with(b"!") {
            return Shape::Declaration;
        } else if rest.starts_with(b"/") {
            depth = depth.saturating_sub(1);
            skip_to(b">")
        } else {
            match tag_end(rest) {
                Some(end) => {
                    if end == 0 || rest[end - 1] != b'/' {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Shape::TooDeep;
                        }
                    }
                    Some(end + 1)
                }
                None => None,
            }
        };
        match consumed {
            Some(n) => at += offset + 1 + n,
            None => return Shape::Plain,
        }
    }
    Shape::Plain
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `>` that ends a start tag, outside quoted attribute values.
fn tag_end(rest: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in rest.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_windows_and_rclone_send_is_plain() {
        let allprop = br#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
        let named = br#"<?xml version="1.0" encoding="utf-8" ?>
<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:resourcetype/>
<D:getlastmodified/><!-- a comment <a><b> --><x a="<b>" b='>'/></D:prop></D:propfind>"#;
        assert_eq!(shape(allprop), Shape::Plain);
        assert_eq!(shape(named), Shape::Plain);
        assert_eq!(shape(b""), Shape::Plain);
    }

    #[test]
    fn deep_nesting_and_declarations_are_caught() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(shape(deep.as_bytes()), Shape::TooDeep);
        let just = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert_eq!(shape(just.as_bytes()), Shape::Plain);
        // Siblings do not add up.
        assert_eq!(shape("<a></a>".repeat(10_000).as_bytes()), Shape::Plain);
        assert_eq!(shape("<a/>".repeat(10_000).as_bytes()), Shape::Plain);
        let doctype = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
        assert_eq!(shape(doctype), Shape::Declaration);
    }
}
