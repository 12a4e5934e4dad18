//! Node lifecycle: when gossip declares an agent down (or it is gone from the
//! membership), the instances a workload placed there are deleted, so their controller
//! makes replacements that the scheduler puts on live nodes. A node that comes back finds
//! its instances gone (or recreated with a new uid elsewhere) and its agent stops the
//! stale containers. Instances pinned by hand (no owner) stay where they were put.
//!
//! A StatefulSet identity must never run twice, and a node gossip calls down may only be
//! cut off: its agent stops StatefulSet instances once it has not reached the Raft leader
//! for `FENCE_AFTER` (`model::instance::FENCE_AFTER`), so their replacement waits for twice that.

use super::{key_of, version, Draft, EventDraft, Pass};
use crate::model::event::EventReason;
use crate::model::Kind;
use crate::store::Command;

const SOURCE: &str = "node-lifecycle";
/// How long a node must be down before its StatefulSet instances are replaced.
pub const STATEFUL_REPLACE_AFTER_MS: u64 =
    2 * crate::model::instance::FENCE_AFTER.as_millis() as u64;

pub fn plan(pass: &Pass, draft: &mut Draft) {
    for i in &pass.instances {
        let (Some(node), Some(owner)) = (i.node(), &i.spec.owner) else {
            continue;
        };
        let view = pass.world.node(node);
        if view.is_some_and(|n| n.alive) {
            continue;
        }
        let down_for = view.map_or(u64::MAX, |n| n.down_for_ms);
        if owner.kind == Kind::StatefulSet && down_for < STATEFUL_REPLACE_AFTER_MS {
            continue;
        }
        draft.commands.push(Command::Delete {
            key: key_of(i.resource),
            expected_version: version(i.resource),
        });
        draft.events.push(EventDraft::warning(
            i.resource,
            EventReason::NodeLost,
            format!(
                "node {node} is down; instance of {} {} will be replaced on a live node",
                owner.kind.as_str().to_lowercase(),
                owner.name
            ),
            SOURCE,
        ));
    }
}
