//! Property tests (fuzzing on the stable toolchain) of the Raft transport's
//! payload decoding: whatever bytes a peer (or anyone who reaches the port)
//! puts in a `RaftMessage` or a snapshot's first chunk, `decode` returns a
//! value or an error, never a panic and never an allocation the input did
//! not pay for (postcard reads lengths from the input). Random bytes of
//! small values get deeper into postcard's varints and enum tags than
//! uniform ones. 256 cases per property; `PROPTEST_CASES=N` for more.

use intake_storage::TypeConfig;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use proptest::prelude::*;

use crate::codec::decode;

/// Every payload type the transport decodes, on the receiving side and on
/// the side that reads the answer.
fn decode_all(bytes: &[u8]) {
    let _ = decode::<VoteRequest<TypeConfig>>(bytes);
    let _ = decode::<AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = decode::<TransferLeaderRequest<TypeConfig>>(bytes);
    let _ = decode::<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, u64)>(bytes);
    let _ = decode::<VoteResponse<TypeConfig>>(bytes);
    let _ = decode::<AppendEntriesResponse<TypeConfig>>(bytes);
    let _ = decode::<StreamAppendResult<TypeConfig>>(bytes);
    let _ = decode::<SnapshotResponse<TypeConfig>>(bytes);
    let _ = decode::<intake_core::Command>(bytes);
    // `Propose`: the command a peer asks for, and the reply it reads.
    let _ = crate::propose::accept(3, bytes);
    let _ = decode::<crate::propose::ProposeReply>(bytes);
}

proptest! {
    #[test]
    fn arbitrary_payloads_decode_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        decode_all(&bytes);
    }

    #[test]
    fn small_valued_payloads_decode_or_fail(bytes in prop::collection::vec(0u8..4, 0..256)) {
        decode_all(&bytes);
    }
}
