//! Tree names and key layouts, in one place so the on-disk format is readable
//! at a glance and no two modules disagree about it.
//!
//! Integers in keys are big-endian so that sled's byte order is numeric order:
//! log entries iterate by index and tickets by commit position.

use intake_core::TicketId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ShardId;
use crate::error::StorageError;

/// Node-wide metadata (node id, cluster config) that outlives any shard.
pub const NODE_TREE: &str = "node";

pub fn sm_tree(shard: ShardId) -> String {
    format!("sm.{shard}")
}

/// Keys of the `raft.{shard}` tree of earlier versions (see `migrate.rs`).
pub const VOTE: &[u8] = b"vote";
pub const COMMITTED: &[u8] = b"committed";
pub const PURGED: &[u8] = b"purged";

/// Prefixes and keys of the `sm.{shard}` tree.
pub const TICKET_PREFIX: u8 = b't';
pub const IDEM_PREFIX: u8 = b'k';
/// The cluster map (meta group only): value is the creating log index (8
/// bytes BE) followed by postcard(ClusterMap), so snapshots can filter it by
/// index like every other record.
pub const CLUSTER_PREFIX: u8 = b'c';
pub const CLUSTER_KEY: &[u8] = b"cmap";

pub fn encode_cluster(log_index: u64, map: &intake_core::ClusterMap) -> Result<Vec<u8>, StorageError> {
    let mut v = log_index.to_be_bytes().to_vec();
    v.extend(encode(map)?);
    Ok(v)
}

/// The creating log index and the map of a cluster record.
pub fn decode_cluster(value: &[u8]) -> Result<(u64, intake_core::ClusterMap), StorageError> {
    let bad = |source| StorageError::Decode {
        what: "cluster map",
        source,
    };
    let (head, body) = value
        .split_at_checked(8)
        .ok_or(bad(postcard::Error::DeserializeUnexpectedEnd))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    // Records written before moves existed hold the map's first layout; it
    // never decodes as the new one (its learners would be missing).
    let map = match postcard::from_bytes::<intake_core::ClusterMap>(body) {
        Ok(map) => map,
        Err(_) => postcard::from_bytes::<intake_core::ClusterMapV1>(body)
            .map_err(bad)?
            .into(),
    };
    Ok((u64::from_be_bytes(b), map))
}
/// Applied log id and membership, written in the same batch as each entry's
/// effects so that data and applied index can never disagree.
pub const SM_STATE: &[u8] = b"m/state";
/// Meta of the current snapshot file.
pub const SM_SNAPSHOT: &[u8] = b"m/snapshot";

pub fn ticket_key(id: &TicketId) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = TICKET_PREFIX;
    k[1..9].copy_from_slice(&id.log_index.to_be_bytes());
    k[9] = id.item;
    k
}

/// The log index a ticket key was created at, or `None` for a malformed key.
pub fn ticket_key_index(key: &[u8]) -> Option<u64> {
    if key.len() != 10 || key[0] != TICKET_PREFIX {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[1..9]);
    Some(u64::from_be_bytes(b))
}

/// A ticket's status history: `h`, then the ticket key's position bytes.
/// Kept apart from the ticket so the common record stays small.
pub const HISTORY_PREFIX: u8 = b'h';

pub fn history_key(id: &TicketId) -> [u8; 10] {
    let mut k = ticket_key(id);
    k[0] = HISTORY_PREFIX;
    k
}

/// The shard's replicated delivery state (`DispatchState`).
pub const DISPATCH_PREFIX: u8 = b'd';

// Every kind of record above and below, with its check, is listed once in
// `records.rs`: what snapshots carry and installs replace.

/// Incident grouping (`incidents.rs`): an incident the band index holds, a
/// ticket's incident, an incident's summary; and the band records of
/// earlier versions, converted to `j` records when read.
pub const BAND_PREFIX: u8 = b'i';
pub const OPEN_PREFIX: u8 = b'j';
pub const MEMBER_PREFIX: u8 = b'g';
pub const SUMMARY_PREFIX: u8 = b'I';
pub const DISPATCH_KEY: &[u8] = b"dstate";

/// The first ticket key at or after `cursor` (item 256 is the next entry's
/// first item).
pub fn cursor_key(cursor: intake_core::DispatchCursor) -> [u8; 10] {
    let (index, item) = match u8::try_from(cursor.item) {
        Ok(item) => (cursor.log_index, item),
        Err(_) => (cursor.log_index.saturating_add(1), 0),
    };
    let mut k = [0u8; 10];
    k[0] = TICKET_PREFIX;
    k[1..9].copy_from_slice(&index.to_be_bytes());
    k[9] = item;
    k
}

/// The age index: `a`, accepted_at (sign-flipped BE, so negative times sort
/// first), the ticket's log index and item; the value is the idempotency
/// key. Compaction walks it oldest first.
pub const AGE_PREFIX: u8 = b'a';

fn age_time(accepted_at: i64) -> [u8; 8] {
    ((accepted_at as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn age_key(accepted_at: i64, id: &TicketId) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[0] = AGE_PREFIX;
    k[1..9].copy_from_slice(&age_time(accepted_at));
    k[9..17].copy_from_slice(&id.log_index.to_be_bytes());
    k[17] = id.item;
    k
}

/// The first age key at or after `accepted_at`: compaction's end bound.
pub fn age_bound(accepted_at: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = AGE_PREFIX;
    k[1..9].copy_from_slice(&age_time(accepted_at));
    k
}

/// An age key's accepted_at and ticket position (log index, item), or
/// `None` if malformed.
pub fn age_key_parts(key: &[u8]) -> Option<(i64, u64, u8)> {
    if key.len() != 18 || key[0] != AGE_PREFIX {
        return None;
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&key[1..9]);
    let mut index = [0u8; 8];
    index.copy_from_slice(&key[9..17]);
    let accepted_at = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
    Some((accepted_at, u64::from_be_bytes(index), key[17]))
}

/// A claim on an idempotency key whose home is this shard, for a complaint
/// of another shard: `x` + key, value postcard(StoredClaim).
pub const CLAIM_PREFIX: u8 = b'x';

pub fn claim_key(idempotency_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + idempotency_key.len());
    k.push(CLAIM_PREFIX);
    k.extend_from_slice(idempotency_key.as_bytes());
    k
}

pub fn idem_key(idempotency_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + idempotency_key.len());
    k.push(IDEM_PREFIX);
    k.extend_from_slice(idempotency_key.as_bytes());
    k
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(value).map_err(|source| StorageError::Encode { source })
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|source| StorageError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_records_of_either_layout_decode() {
        let members = (1..=3).map(|i| (i, format!("h:{i}"))).collect();
        let map = intake_core::ClusterMap::bootstrap(&members, 8, 3, &intake_core::DistrictTable::beijing())
            .unwrap();
        let mut old = 7u64.to_be_bytes().to_vec();
        old.extend(postcard::to_stdvec(&map.v1()).unwrap());
        assert_eq!(decode_cluster(&old).unwrap(), (7, map.clone()));
        let mut moving = map.clone();
        moving.draining.insert(2);
        let new = encode_cluster(9, &moving).unwrap();
        assert_eq!(decode_cluster(&new).unwrap(), (9, moving));
    }

    #[test]
    fn ticket_keys_sort_by_commit_order() {
        let a = ticket_key(&TicketId::new(1, 255, 9));
        let b = ticket_key(&TicketId::new(1, 256, 0));
        assert!(a < b);
        assert_eq!(ticket_key_index(&b), Some(256));
        assert_eq!(ticket_key_index(b"tshort"), None);
    }

    #[test]
    fn age_keys_sort_by_time_then_commit_order() {
        let old = age_key(-5, &TicketId::new(1, 900, 0));
        let a = age_key(1_000, &TicketId::new(1, 7, 3));
        let b = age_key(1_000, &TicketId::new(1, 8, 0));
        let c = age_key(2_000, &TicketId::new(1, 2, 0));
        assert!(old < a && a < b && b < c);
        assert!(b.as_slice() < age_bound(1_001).as_slice());
        assert!(c.as_slice() >= age_bound(2_000).as_slice());
        assert_eq!(age_key_parts(&b), Some((1_000, 8, 0)));
        assert_eq!(age_key_parts(&old), Some((-5, 900, 0)));
        assert_eq!(age_key_parts(&age_bound(7)), None);
    }
}
