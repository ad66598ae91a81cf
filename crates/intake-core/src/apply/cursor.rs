//! The two commands that move a single shard-wide record: the delivery
//! cursor (`AdvanceDispatch`) and, in the meta group, the cluster map
//! (`SetClusterMap`). Both are guarded so that a late or repeated proposal
//! is harmless.

use std::borrow::Cow;

use super::{ShardView, Write, WriteSink};
use crate::{ClusterMap, DispatchCursor, DispatchState};

/// Moves the cursor from `from` to `to`, counting `count` tickets
/// delivered, only if the cursor is still at `from` and `to` is ahead: a
/// deposed leader's late proposal is then a no-op. `delivered` never passes
/// `created`. Returns whether it moved and the state after.
pub fn advance_dispatch<V, S>(
    view: &V,
    from: DispatchCursor,
    to: DispatchCursor,
    count: u64,
    sink: &mut S,
) -> Result<(bool, DispatchState), V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    let mut state = view.dispatch()?;
    let moved = state.next == from && to > from;
    if moved {
        state.next = to;
        state.delivered = state.delivered.saturating_add(count).min(state.created);
        sink.write(Write::Dispatch(state))?;
    }
    Ok((moved, state))
}

/// Stores `map`, committed at `log_index`, only if it is newer than the
/// stored one, so a stale proposal (a re-sent bootstrap) is harmless.
/// Returns whether it was stored.
pub fn set_cluster_map<V, S>(
    view: &V,
    log_index: u64,
    map: &ClusterMap,
    sink: &mut S,
) -> Result<bool, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    let newer = view.cluster_map_version()?.is_none_or(|v| v < map.version);
    if newer {
        sink.write(Write::ClusterMap {
            log_index,
            map: Cow::Borrowed(map),
        })?;
    }
    Ok(newer)
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
