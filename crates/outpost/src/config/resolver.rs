//! The bookkeeping of resolving a configuration file: [`Resolver`] reads
//! settings and collects every error with its line and column, and the
//! value checks (`in_range`, `at_least`) that say what is expected. A leaf:
//! the resolution of each table (`resolve`, `channels`) builds on it.

use std::fmt::Display;
use std::ops::Range;

use super::ConfigError;
use super::values::Setting;

/// Collects errors with their positions while a file is resolved.
pub(super) struct Resolver<'t> {
    text: &'t str,
    errors: Vec<(usize, ConfigError)>,
}

impl<'t> Resolver<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Self {
            text,
            errors: Vec::new(),
        }
    }

    /// Whether nothing went wrong so far.
    pub(super) fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every error, in the order of the file (those of no place last).
    pub(super) fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|(at, _)| *at);
        self.errors.into_iter().map(|(_, e)| e).collect()
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// The key assigned on the line of `offset`, when `offset` is in its
    /// value: names the setting in errors the TOML reader gives alone.
    pub(super) fn key_before(&self, offset: usize) -> Option<&'t str> {
        let start = self.text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
        let (key, _) = self.text.get(start..offset)?.split_once('=')?;
        Some(key.trim()).filter(|k| !k.is_empty())
    }

    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    pub(super) fn error_at(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let position = Some(self.position(span.start));
        self.errors.push((
            span.start,
            ConfigError {
                position,
                message: message.into(),
            },
        ));
    }

    /// A problem that is not at one place in the file (the command line).
    pub(super) fn error(&mut self, message: impl Into<String>) {
        self.errors.push((
            usize::MAX,
            ConfigError {
                position: None,
                message: message.into(),
            },
        ));
    }

    /// The value of a setting, or `None` (and an error) when it is bad.
    pub(super) fn get<T: Clone>(&mut self, key: &str, setting: &Option<Setting<T>>) -> Option<T> {
        let setting = setting.as_ref()?;
        match &setting.value {
            Ok(v) => Some(v.clone()),
            Err(e) => {
                self.error_at(&setting.span, format!("{key}: {e}"));
                None
            }
        }
    }

    /// The value of a setting that must also pass `check` (which says what
    /// is expected).
    pub(super) fn checked<T: Clone>(
        &mut self,
        key: &str,
        setting: &Option<Setting<T>>,
        check: impl FnOnce(&T) -> Result<(), String>,
    ) -> Option<T> {
        let value = self.get(key, setting)?;
        match check(&value) {
            Ok(()) => Some(value),
            Err(e) => {
                let span = setting.as_ref().map(|s| s.span.clone()).unwrap_or(0..0);
                self.error_at(&span, format!("{key}: {e}"));
                None
            }
        }
    }

    /// A required setting of the table at `table`.
    pub(super) fn required<T: Clone>(
        &mut self,
        table: &Range<usize>,
        key: &str,
        setting: &Option<Setting<T>>,
    ) -> Option<T> {
        if setting.is_none() {
            self.error_at(table, format!("{key}: missing (this table needs it)"));
        }
        self.get(key, setting)
    }
}

pub(super) fn in_range<T: PartialOrd + Display + Copy>(
    min: T,
    max: T,
) -> impl FnOnce(&T) -> Result<(), String> {
    move |v| {
        if (min..=max).contains(v) {
            Ok(())
        } else {
            Err(format!("must be from {min} to {max}, got {v}"))
        }
    }
}

pub(super) fn at_least<T: PartialOrd + Display + Copy>(
    min: T,
) -> impl FnOnce(&T) -> Result<(), String> {
    move |v| {
        if *v >= min {
            Ok(())
        } else {
            Err(format!("must be at least {min}, got {v}"))
        }
    }
}

/// A list of host names for a `Host` check (`admin.allowed_hosts`,
/// `library.allowed_hosts`): each a bare name, no port, path or user.
pub(super) fn bare_host_names(
    r: &mut Resolver<'_>,
    key: &str,
    setting: &Option<Setting<Vec<String>>>,
) -> Vec<String> {
    let names = r.get(key, setting).unwrap_or_default();
    for host in &names {
        if host.is_empty() || host.contains(['/', ':', ' ', '@']) {
            let span = setting.as_ref().map_or(0..0, |s| s.span.clone());
            r.error_at(&span, format!("{key}: {host:?} must be a bare host name"));
        }
    }
    names
}
