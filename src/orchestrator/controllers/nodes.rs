//! Node lifecycle: when gossip declares an agent down (or it is gone from the
//! membership), the instances a workload placed there are deleted, so their controller
//! makes replacements that the scheduler puts on live nodes. A node that comes back finds
//! its instances gone (or recreated with a new uid elsewhere) and its agent stops the
//! stale containers. Instances pinned by hand (no owner) stay where they were put.

use super::{key_of, version, Draft, EventDraft, Pass};
use crate::store::Command;

const SOURCE: &str = "node-lifecycle";

pub fn plan(pass: &Pass, draft: &mut Draft) {
    for i in &pass.instances {
        let (Some(node), Some(owner)) = (i.node(), &i.spec.owner) else {
            continue;
        };
        let alive = pass.world.node(node).is_some_and(|n| n.alive);
        if alive {
            continue;
        }
        draft.commands.push(Command::Delete {
            key: key_of(i.resource),
            expected_version: version(i.resource),
        });
        draft.events.push(EventDraft::warning(
            i.resource,
            "NodeLost",
            format!(
                "node {node} is down; instance of {} {} will be replaced on a live node",
                owner.kind.to_lowercase(),
                owner.name
            ),
            SOURCE,
        ));
    }
}
