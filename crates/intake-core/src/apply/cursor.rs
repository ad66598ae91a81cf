//! The commands that move a single shard-wide record: the delivery cursor
//! (`AdvanceDispatch`) and, in the meta group, the cluster map
//! (`SetClusterMap`, `AddMember`). Each is guarded so that a late or
//! repeated proposal is harmless.

use std::borrow::Cow;

use super::{ShardView, Write, WriteSink};
use crate::{ClusterMap, DispatchCursor, DispatchState, JoinRefusal, MapChange, MapRefusal};

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
    let newer = view.cluster_map()?.is_none_or(|m| m.version < map.version);
    if newer {
        sink.write(Write::ClusterMap {
            log_index,
            map: Cow::Borrowed(map),
        })?;
    }
    Ok(newer)
}

/// Adds node `id` at `addr` to the committed map (one version on) and
/// answers with the map that holds it, or why it may not join. Deciding
/// here, in log order, is what makes two joins racing for one id or one
/// address end with one member. Before the bootstrap map is committed
/// there is nothing to add to: refused, and the joiner retries.
pub fn add_member<V, S>(
    view: &V,
    log_index: u64,
    id: u64,
    addr: &str,
    sink: &mut S,
) -> Result<Result<ClusterMap, JoinRefusal>, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    next_map(view, log_index, sink, JoinRefusal::NoMap, |m| {
        m.add_member(id, addr)
    })
}

/// Applies one step of a move, a drain or a removal to the committed map
/// ([`ClusterMap::change`]) and answers the map after it, or why not.
pub fn change_map<V, S>(
    view: &V,
    log_index: u64,
    change: &MapChange,
    sink: &mut S,
) -> Result<Result<ClusterMap, MapRefusal>, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    next_map(view, log_index, sink, MapRefusal::NoMap, |m| m.change(change))
}

/// Stores the map `step` makes of the committed one, if it changes it, and
/// answers the map as it stands after (or `step`'s refusal, or `no_map`
/// before the bootstrap map is committed).
fn next_map<V, S, E>(
    view: &V,
    log_index: u64,
    sink: &mut S,
    no_map: E,
    step: impl FnOnce(&ClusterMap) -> Result<Option<ClusterMap>, E>,
) -> Result<Result<ClusterMap, E>, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    let Some(map) = view.cluster_map()? else {
        return Ok(Err(no_map));
    };
    Ok(match step(&map) {
        Ok(Some(next)) => {
            sink.write(Write::ClusterMap {
                log_index,
                map: Cow::Owned(next.clone()),
            })?;
            Ok(next)
        }
        Ok(None) => Ok(map),
        Err(refusal) => Err(refusal),
    })
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
