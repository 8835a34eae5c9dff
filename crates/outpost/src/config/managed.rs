//! The managed part of an edge's configuration: what a fleet manager may
//! set centrally. The manager hands an edge TOML holding only these keys;
//! the edge lays it over its own file. The manager checks a document with
//! [`check_managed`] before it publishes, so it refuses exactly what the
//! edge would, with `check-config`'s messages.

use super::{ConfigError, ConfigErrors, Overrides, resolve_text};

/// The top-level tables a managed document may hold.
pub const MANAGED_TABLES: [&str; 4] = ["channel", "override", "wan", "server"];
/// The `[server]` keys a managed document may hold.
pub const MANAGED_SERVER_KEYS: [&str; 2] = ["allowed_clients", "allowed_destinations"];

/// Checks a managed document: it sets only managed keys, and every value
/// resolves as it would in the edge's file.
pub fn check_managed(text: &str, source: &str) -> Result<(), ConfigErrors> {
    // A syntax error is reported by the resolver with its position.
    if let Ok(table) = text.parse::<toml::Table>() {
        let mut errors = Vec::new();
        for (key, value) in &table {
            if !MANAGED_TABLES.contains(&key.as_str()) {
                errors.push(not_managed(key));
            } else if key == "channel" {
                // Where the edge writes on its own disk is the edge's
                // business: a manager naming a directory could make it
                // write (and clean) anywhere its user may.
                let tables = value.as_array().into_iter().flatten();
                if tables
                    .filter_map(|t| t.as_table())
                    .any(|t| t.contains_key("export"))
                {
                    errors.push(not_managed("channel.export"));
                }
            } else if key == "server" {
                let keys = value.as_table().into_iter().flat_map(|t| t.keys());
                for server_key in keys {
                    if !MANAGED_SERVER_KEYS.contains(&server_key.as_str()) {
                        errors.push(not_managed(&format!("server.{server_key}")));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors {
                file: source.to_string(),
                errors,
            });
        }
    }
    resolve_text(text, source, &Overrides::default()).map(|_| ())
}

fn not_managed(key: &str) -> ConfigError {
    ConfigError {
        position: None,
        message: format!(
            "{key}: not set centrally: a managed config holds only [[channel]], [[override]], \
             [wan] and server.allowed_clients / server.allowed_destinations; set {key} in the \
             edge's own file"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_managed_tables() {
        let text = r#"
            [server]
            allowed_clients = ["10.0.0.0/8"]
            [wan]
            prepos_rate = "2 Mbit/s"
            [[channel]]
            name = "apps"
            source = "http://origin.example/apps/"
        "#;
        check_managed(text, "t").unwrap();
    }

    #[test]
    fn refuses_local_keys_by_name() {
        let text = "[cache]\nmax_size = \"1G\"\n[server]\nlisten = [\"0.0.0.0:3128\"]\n";
        let err = check_managed(text, "site x").unwrap_err().to_string();
        assert!(err.contains("site x: cache: not set centrally"), "{err}");
        assert!(err.contains("server.listen: not set centrally"), "{err}");
    }

    #[test]
    fn reports_bad_values_like_check_config() {
        let text = "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\nrate = \"fast\"\n";
        let err = check_managed(text, "global").unwrap_err().to_string();
        assert!(err.starts_with("global:4:"), "{err}");
    }
}
