//! Size limits of the submit path that several modules share.

/// Most complaints in one `SubmitBatch` call.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Bytes of complaints per Raft entry; with the entry's framing this stays
/// below `intake_storage::MAX_ENTRY_BYTES`, itself far below sled's blob size.
pub const MAX_ENTRY_COMPLAINT_BYTES: usize = 48 * 1024;
/// Most node-to-node hops a request may take: origin → a replica of the
/// shard → that replica's leader.
pub const MAX_HOPS: u32 = 2;
