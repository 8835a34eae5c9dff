//! The manager's errors: each says what failed and maps to the HTTP status
//! the automation API answers with.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The caller sent something unusable (bad scope, bad TOML, bad name).
    #[error("{0}")]
    BadRequest(String),
    /// No credential, or one the manager does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// Known caller, refused (revoked edge, edge awaiting approval).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (site already enrolled).
    #[error("{0}")]
    Conflict(String),
    /// A config failed validation: the messages, as `check-config` gives them.
    #[error("{0}")]
    Invalid(String),
    #[error("database {context}: {source}")]
    Db {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl ManagerError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Db { .. } | Self::Io { .. } | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// Adds what the manager was doing to a rusqlite error.
pub(crate) trait DbContext<T> {
    fn db(self, context: &str) -> Result<T, ManagerError>;
}

impl<T> DbContext<T> for Result<T, rusqlite::Error> {
    fn db(self, context: &str) -> Result<T, ManagerError> {
        self.map_err(|source| ManagerError::Db {
            context: context.to_string(),
            source,
        })
    }
}

pub type Result<T, E = ManagerError> = std::result::Result<T, E>;
