//! Openraft's messages travel as postcard bytes inside a small protobuf
//! envelope: openraft already defines them with serde, and mapping every type
//! to protobuf by hand would be a second copy of the protocol to keep in step.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding a Raft message failed: {0}")]
    Encode(postcard::Error),
    #[error("decoding a Raft message failed: {0}")]
    Decode(postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(CodecError::Encode)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(CodecError::Decode)
}
