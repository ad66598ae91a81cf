//! The storage crate's error, apart from the modules that raise it, so that
//! none of them needs to import the node's storage to name it.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("state-machine store: {0}")]
    Store(#[from] fjall::Error),
    #[error("opening sled: {0}")]
    Open(#[from] intake_disk::SledOpenError),
    #[error("storage io: {0}")]
    Io(#[from] io::Error),
    #[error("stored {what} does not decode: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("value does not encode: {source}")]
    Encode { source: postcard::Error },
    #[error("NodeStorage::open must be called inside a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Log(#[from] crate::raftlog::LogEngineError),
}

/// openraft's storage traits speak `io::Error`.
impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(e) => e,
            StorageError::Decode { .. } | StorageError::Encode { .. } => {
                io::Error::new(io::ErrorKind::InvalidData, e.to_string())
            }
            other => io::Error::other(other.to_string()),
        }
    }
}
