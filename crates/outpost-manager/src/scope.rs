//! Scopes of desired config: `global`, `group:G`, `site:S`, and the names
//! they may carry.

use std::fmt;

use crate::ManagerError;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Global,
    Group(String),
    Site(String),
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, ManagerError> {
        let scope = if text == "global" {
            Self::Global
        } else if let Some(group) = text.strip_prefix("group:") {
            check_name("group", group)?;
            Self::Group(group.to_string())
        } else if let Some(site) = text.strip_prefix("site:") {
            check_name("site", site)?;
            Self::Site(site.to_string())
        } else {
            return Err(ManagerError::BadRequest(format!(
                "scope {text:?}: expected \"global\", \"group:NAME\" or \"site:NAME\""
            )));
        };
        Ok(scope)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Group(g) => write!(f, "group:{g}"),
            Self::Site(s) => write!(f, "site:{s}"),
        }
    }
}

/// Site, group and channel names: `[A-Za-z0-9._-]{1,64}`, so they are safe
/// in URLs, file names, metric labels and TOML keys.
pub fn check_name(kind: &str, name: &str) -> Result<(), ManagerError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ManagerError::BadRequest(format!(
            "{kind} name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_three_forms() {
        for text in ["global", "group:east", "site:oslo-1"] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "glob", "group:", "site:a/b", "site:../x"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }
}
