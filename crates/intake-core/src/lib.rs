//! Intake's domain model, free of I/O and async: what a complaint and a ticket
//! are, how ticket ids read aloud, which districts exist, what is valid, and the
//! commands the Raft state machine applies. Every other crate builds on these.

pub mod apply;
pub mod category;
pub mod cluster_map;
pub mod command;
pub mod complaint;
pub mod dispatch;
pub mod district;
pub mod incident;
pub mod incident_index;
pub mod map_change;
pub mod placement;
pub mod poisson;
pub mod routing;
pub mod status;
pub mod surge;
pub mod ticket_id;
pub mod timestamp;
pub mod validate;

pub use category::{CategoryError, CategoryTable, Priority};
pub use cluster_map::{
    ClusterMap, ClusterMapV1, JoinRefusal, META_GROUP, Move, PlacementError, ShardPlacement,
};
pub use command::{ClaimOutcome, Command, CommandResponse, KeyClaim, StatusOutcome, SubmitOutcome};
pub use complaint::{Complaint, Location, Ticket, TicketStatus};
pub use dispatch::{DispatchCursor, DispatchState};
pub use district::{District, DistrictError, DistrictTable};
pub use map_change::{MapChange, MapRefusal};
pub use routing::{SLOT_COUNT, district_key, key_district, slot_of};
pub use status::{
    MAX_STATUS_HISTORY, StatusError, StatusEvent, StatusUpdate, check_transition, validate_update,
};
pub use surge::{ActiveSurge, DistrictRate, SurgeConfig, SurgeDetector, SurgeEvent, SurgeKind};
pub use ticket_id::{TicketId, TicketIdError};
pub use timestamp::reported_at_millis;
pub use validate::{FieldViolation, Limits, validate_complaint};

/// Milliseconds since the Unix epoch. Clocks only stamp tickets; nothing
/// depends on them being synchronised.
pub type UnixMillis = i64;
