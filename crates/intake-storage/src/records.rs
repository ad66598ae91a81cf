//! Every kind of record a shard's state-machine tree holds, with what a
//! valid one looks like: the one list. A snapshot carries exactly these
//! kinds, in this order; an installed snapshot replaces exactly these; and a
//! snapshot record of no kind listed here is refused. So a kind added here
//! travels everywhere at once, and one left out cannot slip in. The tree's
//! own bookkeeping (`m/state`, `m/snapshot`) is on no list: a snapshot can
//! never overwrite it.

use intake_core::apply::StoredClaim;
use intake_core::incident::{IncidentEntry, IncidentSummary};
use intake_core::{DispatchState, StatusEvent, Ticket, TicketId};
use serde::de::DeserializeOwned;

use crate::incidents::OpenRecord;
use crate::keys;

/// One kind of record: its key prefix, its name in errors, and its check.
pub(crate) struct RecordKind {
    pub prefix: u8,
    pub what: &'static str,
    /// Whether key and value are well formed.
    check: fn(&[u8], &[u8]) -> Result<(), String>,
}

fn decodes<T: DeserializeOwned>(value: &[u8]) -> Result<(), String> {
    postcard::from_bytes::<T>(value)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn key_shape(ok: bool) -> Result<(), String> {
    if ok { Ok(()) } else { Err("malformed key".into()) }
}

pub(crate) const RECORD_KINDS: [RecordKind; 11] = [
    RecordKind {
        prefix: keys::TICKET_PREFIX,
        what: "ticket",
        check: |k, v| key_shape(keys::ticket_key_index(k).is_some()).and_then(|()| decodes::<Ticket>(v)),
    },
    RecordKind {
        prefix: keys::IDEM_PREFIX,
        what: "idempotency",
        check: |_, v| decodes::<TicketId>(v),
    },
    RecordKind {
        prefix: keys::CLAIM_PREFIX,
        what: "key claim",
        check: |_, v| decodes::<StoredClaim>(v),
    },
    RecordKind {
        prefix: keys::AGE_PREFIX,
        what: "age",
        check: |k, v| {
            key_shape(keys::age_key_parts(k).is_some())?;
            std::str::from_utf8(v).map(|_| ()).map_err(|e| e.to_string())
        },
    },
    RecordKind {
        prefix: keys::CLUSTER_PREFIX,
        what: "cluster map",
        check: |k, v| {
            key_shape(k == keys::CLUSTER_KEY)?;
            keys::decode_cluster(v).map(|_| ()).map_err(|e| e.to_string())
        },
    },
    RecordKind {
        prefix: keys::HISTORY_PREFIX,
        what: "status history",
        check: |k, v| key_shape(k.len() == 10).and_then(|()| decodes::<Vec<StatusEvent>>(v)),
    },
    RecordKind {
        prefix: keys::DISPATCH_PREFIX,
        what: "dispatch state",
        check: |k, v| key_shape(k == keys::DISPATCH_KEY).and_then(|()| decodes::<DispatchState>(v)),
    },
    RecordKind {
        prefix: keys::BAND_PREFIX,
        what: "incident band",
        check: |_, v| decodes::<IncidentEntry>(v),
    },
    RecordKind {
        prefix: keys::OPEN_PREFIX,
        what: "open incident",
        check: |k, v| key_shape(k.len() == 10).and_then(|()| decodes::<OpenRecord>(v)),
    },
    RecordKind {
        prefix: keys::MEMBER_PREFIX,
        what: "incident member",
        check: |k, v| key_shape(k.len() == 10).and_then(|()| decodes::<TicketId>(v)),
    },
    RecordKind {
        prefix: keys::SUMMARY_PREFIX,
        what: "incident summary",
        check: |k, v| key_shape(k.len() == 10).and_then(|()| decodes::<IncidentSummary>(v)),
    },
];

/// Whether a record may enter the tree from a snapshot.
pub(crate) fn check(key: &[u8], value: &[u8]) -> Result<(), String> {
    let kind = key
        .first()
        .and_then(|p| RECORD_KINDS.iter().find(|k| k.prefix == *p))
        .ok_or_else(|| "snapshot holds a record of no known kind".to_string())?;
    (kind.check)(key, value).map_err(|e| format!("{} record: {e}", kind.what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct_and_bookkeeping_is_no_kind() {
        for (i, a) in RECORD_KINDS.iter().enumerate() {
            for b in &RECORD_KINDS[i + 1..] {
                assert_ne!(a.prefix, b.prefix, "{} and {}", a.what, b.what);
            }
        }
        for key in [keys::SM_STATE, keys::SM_SNAPSHOT] {
            assert!(check(key, b"").is_err());
        }
    }

    #[test]
    fn a_malformed_key_or_value_is_refused_with_its_kind() {
        let id = postcard::to_stdvec(&TicketId::new(1, 2, 3)).unwrap();
        assert_eq!(check(&keys::idem_key("k"), &id), Ok(()));
        let err = check(b"tshort", &id).unwrap_err();
        assert!(err.starts_with("ticket record"), "{err}");
        let err = check(&keys::history_key(&TicketId::new(1, 2, 3)), &[0xff]).unwrap_err();
        assert!(err.starts_with("status history record"), "{err}");
    }
}
