//! Apply's writes (`intake_core::apply::Write`) mapped onto one store batch,
//! in the record layout of `keys.rs` and `incidents.rs`: the one place
//! where apply's effects become bytes.

use std::io;
use std::sync::Arc;

use intake_core::apply::{Write, WriteSink};
use openraft::alias::{LogIdOf, StoredMembershipOf};

use crate::apply_hook::ApplyHook;
use crate::error::StorageError;
use crate::incidents::{self, OpenRecord};
use crate::store::Batch;
use crate::{TypeConfig, keys};

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;

/// One batch being filled by apply.
pub(crate) struct BatchSink {
    /// Also written by the incident index's load (records of the earlier
    /// layout converted in the batch being applied).
    pub batch: Batch,
    /// The log index apply said the batch ends at ([`Write::Applied`]).
    applied: Option<u64>,
    /// Told of each ticket created (`ApplyHook`).
    hook: Option<Arc<dyn ApplyHook>>,
}

impl BatchSink {
    pub fn new(hook: Option<Arc<dyn ApplyHook>>) -> Self {
        Self {
            batch: Batch::default(),
            applied: None,
            hook,
        }
    }

    /// The batch, ending with the applied state (`last`, the entry apply's
    /// [`Write::Applied`] named, and `membership`) so that data and applied
    /// id never disagree; `None` if apply wrote nothing (an empty run).
    pub fn finish(
        mut self,
        last: Option<&LogId>,
        membership: &Membership,
    ) -> Result<Option<Batch>, StorageError> {
        let Some(index) = self.applied else {
            return Ok(None);
        };
        if last.map(|l| l.index) != Some(index) {
            return Err(StorageError::Io(io::Error::other(format!(
                "apply ended a batch at {index}, storage at {last:?}"
            ))));
        }
        // The same bytes as `AppliedState`, without cloning the membership.
        self.batch
            .insert(keys::SM_STATE, keys::encode(&(last, membership))?);
        Ok(Some(self.batch))
    }
}

impl WriteSink for BatchSink {
    type Error = StorageError;

    fn write(&mut self, write: Write<'_>) -> Result<(), StorageError> {
        let b = &mut self.batch;
        match write {
            Write::Ticket { ticket, created } => {
                b.insert(keys::ticket_key(&ticket.id), keys::encode(&*ticket)?);
                if created && let Some(hook) = &self.hook {
                    hook.created(&ticket);
                }
            }
            Write::Key { key, ticket } => b.insert(keys::idem_key(&key), keys::encode(&ticket)?),
            Write::ForgetKey { key } => b.remove(keys::idem_key(&key)),
            Write::Claim { key, claim } => b.insert(keys::claim_key(&key), keys::encode(&*claim)?),
            Write::ForgetClaim { key } => b.remove(keys::claim_key(&key)),
            Write::Age {
                accepted_at,
                ticket,
                key,
            } => b.insert(keys::age_key(accepted_at, &ticket), key.as_bytes()),
            Write::ForgetAge { accepted_at, ticket } => b.remove(keys::age_key(accepted_at, &ticket)),
            Write::History { ticket, events } => b.insert(keys::history_key(&ticket), keys::encode(&events)?),
            Write::Dispatch(state) => b.insert(keys::DISPATCH_KEY, keys::encode(&state)?),
            Write::ClusterMap { log_index, map } => {
                b.insert(keys::CLUSTER_KEY, keys::encode_cluster(log_index, &map)?)
            }
            Write::OpenIncident {
                district,
                category,
                entry,
            } => {
                let record = OpenRecord {
                    district: &*district,
                    category: &*category,
                    entry,
                };
                b.insert(incidents::open_key(&entry.incident), keys::encode(&record)?)
            }
            Write::CloseIncident { incident } => b.remove(incidents::open_key(&incident)),
            Write::Member { ticket, incident } => {
                b.insert(incidents::member_key(&ticket), keys::encode(&incident)?)
            }
            Write::Summary(s) => b.insert(incidents::summary_key(&s.id), keys::encode(&*s)?),
            Write::Applied { log_index } => self.applied = Some(log_index),
        }
        Ok(())
    }
}
