//! The library's errors; the binary turns them into messages.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    #[error("bad endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what} ({bin}): {source}")]
    Spawn {
        what: String,
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster did not become ready within {seconds} s: {detail}")]
    NotReady { seconds: u64, detail: String },
    #[error("writing the report: {0}")]
    Report(String),
    #[error("{0}")]
    Invalid(String),
}

impl LoadError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LoadError::Io {
            what: what.into(),
            source,
        }
    }
}
