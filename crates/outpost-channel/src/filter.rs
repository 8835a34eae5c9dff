//! Which files of a source a channel takes: `include` and `exclude` globs
//! on the path below the source folder, with gitignore-like rules an admin
//! already knows:
//!
//! - the path is percent-decoded (`+` stays a `+`: in a path it is not a
//!   space) and matched with a leading `/`: `old/a.msi` is `/old/a.msi`;
//! - `*` and `?` stay within one folder name; `**` spans any number of
//!   folders, none included;
//! - a pattern that does not start with `/` matches at any depth: `*.msi`
//!   is every `.msi`, `old/*` is inside any folder named `old`;
//!   `*/old/*` (a folder, then `old`) also matches a top-level `old`, whose
//!   parent is the source folder itself;
//! - a pattern starting with `/` is anchored at the source folder;
//! - a pattern that matches a folder matches everything below it
//!   (`exclude = ["old"]` or `["old/"]` drops every folder named `old`).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A channel's `include`/`exclude` rules, compiled.
#[derive(Debug, Clone)]
pub struct PathFilter {
    /// `None`: every file is included.
    includes: Option<GlobSet>,
    excludes: GlobSet,
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    let trimmed = pattern.trim_end_matches('/');
    let anchored = if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("**/{trimmed}")
    };
    GlobBuilder::new(&anchored).literal_separator(true).build()
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(glob(p)?);
    }
    set.build()
}

impl PathFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        Ok(Self {
            includes: if include.is_empty() {
                None
            } else {
                Some(glob_set(include)?)
            },
            excludes: glob_set(exclude)?,
        })
    }

    /// Whether `pattern` is a valid include/exclude pattern; the error says
    /// what is wrong with it.
    pub fn check(pattern: &str) -> Result<(), String> {
        if pattern.trim_end_matches('/').is_empty() {
            return Err(format!("pattern {pattern:?} is empty"));
        }
        glob(pattern)
            .map(|_| ())
            .map_err(|e| format!("bad pattern {pattern:?}: {e}"))
    }

    /// Whether the file at `relative` (the URL path below the source
    /// folder, still percent-encoded) is taken.
    pub fn wanted(&self, relative: &str) -> bool {
        let decoded = percent_encoding::percent_decode_str(relative).decode_utf8_lossy();
        let path = format!("/{}", decoded.trim_start_matches('/'));
        // The file itself and each folder it is in: a pattern that matches
        // a folder matches everything below it.
        let mut candidates = vec![path.as_str()];
        candidates.extend(path.match_indices('/').skip(1).map(|(i, _)| &path[..i]));
        let matches = |set: &GlobSet| candidates.iter().any(|c| set.is_match(c));
        self.includes.as_ref().is_none_or(matches) && !matches(&self.excludes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> PathFilter {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PathFilter::new(&owned(include), &owned(exclude)).unwrap()
    }

    #[test]
    fn an_old_folder_is_excluded_at_the_top_and_below() {
        let f = filter(&[], &["*/old/*"]);
        assert!(!f.wanted("old/a.msi"), "top-level old/");
        assert!(!f.wanted("x64/old/a.msi"), "nested old/");
        assert!(!f.wanted("a/b/old/c/d.msi"), "deeper inside old/");
        assert!(f.wanted("a.msi") && f.wanted("older/a.msi") && f.wanted("x/bold/a.msi"));
        for pattern in ["old", "old/", "**/old/**"] {
            let f = filter(&[], &[pattern]);
            assert!(
                !f.wanted("old/a.msi") && !f.wanted("x/old/a.msi"),
                "{pattern}"
            );
            assert!(f.wanted("older/a.msi"), "{pattern}");
        }
    }

    #[test]
    fn patterns_match_at_any_depth_unless_anchored() {
        let f = filter(&["*.msi"], &[]);
        assert!(f.wanted("a.msi") && f.wanted("x/y/a.msi") && !f.wanted("a.exe"));
        let f = filter(&["/tools/*.exe"], &[]);
        assert!(f.wanted("tools/a.exe"));
        assert!(!f.wanted("x/tools/a.exe"), "anchored at the source folder");
        // `*` stays within a folder name; `**` spans folders.
        let f = filter(&["/x*.exe"], &[]);
        assert!(f.wanted("x1.exe") && !f.wanted("x/a.exe"));
        let f = filter(&["/a/**/z.exe"], &[]);
        assert!(f.wanted("a/z.exe") && f.wanted("a/b/c/z.exe") && !f.wanted("b/z.exe"));
    }

    #[test]
    fn paths_are_percent_decoded_and_plus_stays_a_plus() {
        let f = filter(&["*c++*"], &["my file.msi"]);
        assert!(f.wanted("tools/c%2B%2B.exe") && f.wanted("tools/c++.exe"));
        assert!(!f.wanted("tools/c  .exe"));
        assert!(!filter(&[], &["my file.msi"]).wanted("my%20file.msi"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(PathFilter::check("a[").is_err());
        assert!(PathFilter::check("").is_err());
        assert!(PathFilter::check("*.msi").is_ok());
    }
}
