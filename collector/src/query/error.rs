//! Why a read-side call failed: the caller asked for something it cannot have (a message its reader may
//! see), or the store failed (details for the log). `http` turns these into 400 and 503, the CLI into an
//! error message.

use crate::store::reads::ReadError;

/// A failed read-side call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A bad parameter, in words for whoever sent it.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl QueryError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// The message of an [`Invalid`](Self::Invalid), else the whole error.
    pub fn message(&self) -> String {
        match self {
            Self::Invalid(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

impl From<ReadError> for QueryError {
    fn from(e: ReadError) -> Self {
        Self::Store(e.to_string())
    }
}
