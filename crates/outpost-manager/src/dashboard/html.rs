//! Markup built so that every value is escaped.
//!
//! [`Markup`] grows only from string literals (the `html!` macro's format
//! string, [`Markup::raw`] which takes `&'static str`) and from values that
//! went through [`Esc`]. `Markup` itself is not `Display`, so passing one
//! fragment as a value to `html!` does not compile: nest fragments with
//! [`Markup::push`]. Only positional `{}` arguments are escaped: never use
//! inline captures (`{name}`) in an `html!` format string.

use std::fmt::{self, Display, Write};

/// HTML that is safe to send.
#[derive(Debug, Default, Clone)]
pub struct Markup(String);

impl Markup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusted markup: a literal in the source.
    pub fn raw(&mut self, markup: &'static str) {
        self.0.push_str(markup);
    }

    /// Text, escaped.
    pub fn text(&mut self, text: &str) {
        let _ = write!(self.0, "{}", Esc(text));
    }

    pub fn push(&mut self, other: &Markup) {
        self.0.push_str(&other.0);
    }

    /// Used by `html!` only: the format string is a literal and every
    /// argument is wrapped in [`Esc`].
    #[doc(hidden)]
    pub fn append_format(&mut self, args: fmt::Arguments<'_>) {
        let _ = self.0.write_fmt(args);
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writes `format_args!`-style markup into a [`Markup`], escaping every
/// argument.
macro_rules! html {
    ($out:expr, $fmt:literal $(, $arg:expr)* $(,)?) => {
        $out.append_format(format_args!($fmt $(, $crate::dashboard::html::Esc(&$arg))*))
    };
}
pub(crate) use html;

/// Displays its value with `& < > " '` replaced by entities: safe in text
/// and in quoted attribute values.
pub struct Esc<T>(pub T);

impl<T: Display> Display for Esc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl Write for Escaper<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let mut start = 0;
                for (i, b) in s.bytes().enumerate() {
                    let entity = match b {
                        b'&' => "&amp;",
                        b'<' => "&lt;",
                        b'>' => "&gt;",
                        b'"' => "&quot;",
                        b'\'' => "&#39;",
                        _ => continue,
                    };
                    self.0.write_str(&s[start..i])?;
                    self.0.write_str(entity)?;
                    start = i + 1;
                }
                self.0.write_str(&s[start..])
            }
        }
        write!(Escaper(f), "{}", self.0)
    }
}

/// A path segment for a link (`/sites/{}`): percent-encoded, so a name
/// cannot change the path or leave the attribute.
pub fn path_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A query-string value.
pub fn query_value(value: &str) -> String {
    path_segment(value)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn timestamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// How long ago, for a person: "42 s", "5 min", "3 h", "2 d".
pub fn ago(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Bytes in binary units with one decimal: "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `html!` escapes positional arguments only; an inline capture
    /// (`{name}`) in its format string would go out raw. This keeps every
    /// page module free of them.
    #[test]
    fn no_html_format_string_uses_an_inline_capture() {
        let sources = [
            ("actions.rs", include_str!("actions.rs")),
            ("audit.rs", include_str!("audit.rs")),
            ("config.rs", include_str!("config.rs")),
            ("fleet.rs", include_str!("fleet.rs")),
            ("groups.rs", include_str!("groups.rs")),
            ("layout.rs", include_str!("layout.rs")),
            ("login.rs", include_str!("login.rs")),
            ("pages.rs", include_str!("pages.rs")),
            ("readiness.rs", include_str!("readiness.rs")),
            ("site.rs", include_str!("site.rs")),
            ("tokens.rs", include_str!("tokens.rs")),
        ];
        let mut checked = 0;
        for (name, source) in sources {
            for (at, _) in source.match_indices("html!(") {
                let rest = &source[at..];
                let Some(open) = rest.find('"') else { continue };
                let literal = format_literal(&rest[open + 1..]);
                let bytes = literal.as_bytes();
                for (i, &b) in bytes.iter().enumerate() {
                    let escaped = i > 0 && bytes[i - 1] == b'{';
                    let next = bytes.get(i + 1).copied().unwrap_or(b'}');
                    if b == b'{' && !escaped && next != b'{' && next != b'}' && next != b':' {
                        panic!("{name}: inline capture in html! format string: {literal}");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} html! calls found");
    }

    /// The text of a string literal up to its closing quote.
    fn format_literal(from: &str) -> &str {
        let mut escaped = false;
        for (i, c) in from.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return &from[..i],
                _ => escaped = false,
            }
        }
        from
    }

    #[test]
    fn every_argument_is_escaped_and_literals_are_not() {
        let mut out = Markup::new();
        let site = "<script>alert('x')</script>&\"";
        html!(out, "<td class=\"s\">{}</td>", site);
        assert_eq!(
            out.as_str(),
            "<td class=\"s\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;</td>"
        );
        assert_eq!(path_segment("a/b c<"), "a%2Fb%20c%3C");
    }

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_796_212_800), "2026-12-02 12:00:00 UTC");
        assert_eq!(ago(59), "59 s");
        assert_eq!(ago(7200), "2 h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
