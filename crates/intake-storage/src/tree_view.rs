//! One shard's keyspace as the apply rules read it
//! (`intake_core::apply::ShardView`): each read decodes one record of the
//! layout in `keys.rs`.

use std::io;

use intake_core::apply::{AgeRecord, ShardView, StoredClaim};
use intake_core::incident::IncidentSummary;
use intake_core::{DispatchState, StatusEvent, Ticket, TicketId, UnixMillis};

use crate::error::StorageError;
use crate::store::Tree;
use crate::{ShardId, incidents, keys};

/// A borrowed shard tree. Reads see what earlier batches wrote.
#[derive(Clone, Copy)]
pub(crate) struct TreeView<'a> {
    pub tree: &'a Tree,
    pub shard: ShardId,
}

fn get<T: serde::de::DeserializeOwned>(
    tree: &Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StorageError> {
    match tree.get(key)? {
        Some(v) => Ok(Some(keys::decode(what, &v)?)),
        None => Ok(None),
    }
}

impl ShardView for TreeView<'_> {
    type Error = StorageError;

    fn shard(&self) -> u32 {
        self.shard
    }

    fn ticket_of_key(&self, key: &str) -> Result<Option<Ticket>, StorageError> {
        let Some(id) = self.key(key)? else {
            return Ok(None);
        };
        match self.ticket(&id)? {
            Some(t) => Ok(Some(t)),
            None => Err(StorageError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("idempotency key points to missing ticket {id}"),
            ))),
        }
    }

    fn key(&self, key: &str) -> Result<Option<TicketId>, StorageError> {
        get(self.tree, &keys::idem_key(key), "ticket id")
    }

    fn claim(&self, key: &str) -> Result<Option<StoredClaim>, StorageError> {
        get(self.tree, &keys::claim_key(key), "key claim")
    }

    fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StorageError> {
        get(self.tree, &keys::ticket_key(id), "ticket")
    }

    fn history(&self, id: &TicketId) -> Result<Vec<StatusEvent>, StorageError> {
        Ok(get(self.tree, &keys::history_key(id), "status history")?.unwrap_or_default())
    }

    fn dispatch(&self) -> Result<DispatchState, StorageError> {
        Ok(get(self.tree, keys::DISPATCH_KEY, "dispatch state")?.unwrap_or_default())
    }

    fn cluster_map(&self) -> Result<Option<intake_core::ClusterMap>, StorageError> {
        match self.tree.get(keys::CLUSTER_KEY)? {
            Some(v) => Ok(Some(keys::decode_cluster(&v)?.1)),
            None => Ok(None),
        }
    }

    fn incident_summary(&self, incident: &TicketId) -> Result<Option<IncidentSummary>, StorageError> {
        get(self.tree, &incidents::summary_key(incident), "incident summary")
    }

    fn ages_before(&self, before: UnixMillis) -> impl Iterator<Item = Result<AgeRecord, StorageError>> + '_ {
        let start = [keys::AGE_PREFIX];
        let end = keys::age_bound(before);
        let shard = self.shard;
        self.tree
            .range::<&[u8], _>(start.as_slice()..end.as_slice())
            .map(move |kv| {
                let (k, v) = kv?;
                // Apply writes only well-formed age keys and a snapshot
                // with any other is refused (`records.rs`).
                let (accepted_at, log_index, item) = keys::age_key_parts(&k).ok_or_else(|| {
                    StorageError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed age record key",
                    ))
                })?;
                Ok(AgeRecord {
                    accepted_at,
                    ticket: TicketId::new(shard, log_index, item),
                    key: String::from_utf8_lossy(&v).into_owned(),
                })
            })
    }
}
