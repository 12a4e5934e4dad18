//! Which nodes vote in Raft: a pure planning function the leader runs on every membership
//! change and tick. Rules (DESIGN "Roles"):
//!
//! - every alive node that is not yet a member becomes a learner (agent-only nodes too:
//!   they read their assignments from their replica of the store), but only
//!   orchestrator-eligible ones are ever promoted;
//! - the voter set grows to the largest odd number <= min(`orchestrators`, alive eligible
//!   nodes), promoting caught-up learners by rank (earliest started, then node id);
//! - a voter that gossip has held down longer than `replace_after` is replaced by the best
//!   learner; without one it stays (removing it would leave an even set);
//! - the voter set is always odd: two voters tolerate no more failures than one, and a
//!   joint change out of an even set needs every one of its members alive;
//! - a learner down longer than `replace_after` is removed from the membership;
//! - a member whose addresses changed (restarted on new ports) gets its entry updated;
//! - alive voters are never demoted because others died (that would lower fault tolerance
//!   for nothing); the set only shrinks below its size when it exceeds `orchestrators`.
//!
//! Every change goes through openraft's joint consensus, so it commits only with a majority
//! of both the old and the new voter set: it can never leave the live voters without quorum.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::store::{NodeId, RaftNode};

#[derive(Clone, Debug)]
pub struct VoterPolicy {
    /// Wanted voters (odd). Fewer when fewer eligible nodes are alive.
    pub orchestrators: usize,
    /// How long a voter may be down before it is replaced.
    pub replace_after: Duration,
}

/// One node as the membership layer sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: NodeId,
    pub node: RaftNode,
    /// Allowed to be an orchestrator (`auto` or an explicit `orchestrator` role).
    pub eligible: bool,
    pub alive: bool,
    /// How long it has been down (zero when alive).
    pub down_for: Duration,
    /// Rank key: earlier start wins.
    pub started_at_ms: u64,
    /// A learner whose log is close enough to the leader's to vote without stalling commits.
    pub caught_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner(NodeId, RaftNode),
    /// New addresses for existing members.
    UpdateNodes(Vec<(NodeId, RaftNode)>),
    RemoveLearners(BTreeSet<NodeId>),
    /// The complete new voter set.
    SetVoters(BTreeSet<NodeId>),
}

/// The largest odd number <= n (0 stays 0).
fn odd_floor(n: usize) -> usize {
    if n == 0 {
        0
    } else if n % 2 == 1 {
        n
    } else {
        n - 1
    }
}

/// The current Raft membership as the leader sees it.
pub struct Membership<'a> {
    pub voters: &'a BTreeSet<NodeId>,
    pub learners: &'a BTreeSet<NodeId>,
    /// Address entries of every member.
    pub nodes: &'a std::collections::BTreeMap<NodeId, RaftNode>,
    pub leader: NodeId,
}

pub fn plan(
    current: &Membership,
    candidates: &[Candidate],
    policy: &VoterPolicy,
) -> Vec<MembershipChange> {
    let (voters, learners, leader) = (current.voters, current.learners, current.leader);
    let mut changes = Vec::new();
    let find = |id: NodeId| candidates.iter().find(|c| c.id == id);

    let moved: Vec<(NodeId, RaftNode)> = candidates
        .iter()
        .filter(|c| c.alive && current.nodes.get(&c.id).is_some_and(|n| n != &c.node))
        .map(|c| (c.id, c.node.clone()))
        .collect();
    if !moved.is_empty() {
        changes.push(MembershipChange::UpdateNodes(moved));
    }
    let dead_learners: BTreeSet<NodeId> = learners
        .iter()
        .copied()
        .filter(|id| find(*id).is_some_and(|c| !c.alive && c.down_for >= policy.replace_after))
        .collect();
    if !dead_learners.is_empty() {
        changes.push(MembershipChange::RemoveLearners(dead_learners));
    }

    for c in candidates {
        if c.alive && !voters.contains(&c.id) && !learners.contains(&c.id) {
            changes.push(MembershipChange::AddLearner(c.id, c.node.clone()));
        }
    }

    // Voters down too long go; a voter gossip does not know at all is kept (gossip may
    // still be converging), and the leader itself always stays.
    let mut next: BTreeSet<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| {
            *id == leader || find(*id).is_none_or(|c| c.alive || c.down_for < policy.replace_after)
        })
        .collect();

    let kept = next.len();
    let alive_eligible = candidates.iter().filter(|c| c.eligible && c.alive).count();
    let target = odd_floor(policy.orchestrators.min(alive_eligible)).max(1);
    let mut added = Vec::new();
    if next.len() < target {
        let mut promotable: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| {
                c.eligible
                    && c.alive
                    && c.caught_up
                    && learners.contains(&c.id)
                    && !next.contains(&c.id)
            })
            .collect();
        promotable.sort_by_key(|c| (c.started_at_ms, c.id));
        for c in promotable.into_iter().take(target - next.len()) {
            next.insert(c.id);
            added.push(c.id);
        }
    }
    // Never move to an even voter set: two voters tolerate no more failures than one, and a
    // joint change out of an even set needs every one of its members. Growth stops at the
    // last odd size; a dead voter with no replacement stays until one exists.
    if next.len().is_multiple_of(2) {
        if next.len() > kept {
            next.remove(&added.pop().expect("grew, so something was added"));
        } else if let Some(dead) = voters.iter().find(|id| !next.contains(id)) {
            next.insert(*dead);
        }
    }
    let cap = odd_floor(policy.orchestrators).max(1);
    if next.len() > cap {
        // Over policy (it was lowered): drop the lowest-ranked non-leader voters, down ones first.
        let mut extra: Vec<NodeId> = next.iter().copied().filter(|id| *id != leader).collect();
        extra.sort_by_key(|id| match find(*id) {
            Some(c) => (
                c.alive,
                std::cmp::Reverse(c.started_at_ms),
                std::cmp::Reverse(c.id),
            ),
            None => (false, std::cmp::Reverse(0), std::cmp::Reverse(*id)),
        });
        for id in extra.into_iter().take(next.len() - cap) {
            next.remove(&id);
        }
    }
    if &next != voters {
        changes.push(MembershipChange::SetVoters(next));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: NodeId, alive: bool, down_secs: u64) -> Candidate {
        Candidate {
            id,
            node: RaftNode {
                name: format!("n{id}"),
                rpc_addr: String::new(),
                api_addr: String::new(),
            },
            eligible: true,
            alive,
            down_for: Duration::from_secs(down_secs),
            started_at_ms: id * 10,
            caught_up: true,
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn plan_for(
        voters: &[NodeId],
        learners: &[NodeId],
        leader: NodeId,
        all: &[Candidate],
    ) -> Vec<MembershipChange> {
        let (v, l) = (set(voters), set(learners));
        let nodes = all.iter().map(|c| (c.id, c.node.clone())).collect();
        plan(
            &Membership {
                voters: &v,
                learners: &l,
                nodes: &nodes,
                leader,
            },
            all,
            &policy(),
        )
    }

    fn policy() -> VoterPolicy {
        VoterPolicy {
            orchestrators: 3,
            replace_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn joiners_become_learners_then_voters_up_to_three() {
        let all: Vec<Candidate> = (1..=5).map(|i| cand(i, true, 0)).collect();
        // Seed alone with 4 new nodes: all become learners first.
        let p = plan_for(&[1], &[], 1, &all);
        assert_eq!(p.len(), 4);
        assert!(p
            .iter()
            .all(|c| matches!(c, MembershipChange::AddLearner(..))));
        // Once learners, the two earliest are promoted.
        let p = plan_for(&[1], &[2, 3, 4, 5], 1, &all);
        assert_eq!(p, vec![MembershipChange::SetVoters(set(&[1, 2, 3]))]);
        // Steady state: nothing to do.
        assert!(plan_for(&[1, 2, 3], &[4, 5], 1, &all).is_empty());
    }

    #[test]
    fn two_nodes_keep_one_voter() {
        let all = vec![cand(1, true, 0), cand(2, true, 0)];
        assert!(plan_for(&[1], &[2], 1, &all).is_empty());
    }

    #[test]
    fn a_voter_down_too_long_is_replaced_by_the_best_learner() {
        let mut all: Vec<Candidate> = (1..=5).map(|i| cand(i, true, 0)).collect();
        all[2] = cand(3, false, 10);
        // Down, but not long enough: kept.
        assert!(plan_for(&[1, 2, 3], &[4, 5], 1, &all).is_empty());
        all[2] = cand(3, false, 31);
        let p = plan_for(&[1, 2, 3], &[4, 5], 1, &all);
        assert_eq!(p, vec![MembershipChange::SetVoters(set(&[1, 2, 4]))]);
    }

    #[test]
    fn a_dead_voter_stays_until_it_can_be_replaced() {
        let all = vec![cand(1, true, 0), cand(2, true, 0), cand(3, false, 60)];
        // Removing it would leave an even set {1, 2}: keep three until a spare exists.
        assert!(plan_for(&[1, 2, 3], &[], 1, &all).is_empty());
        // Two alive voters (from an older version of the plan) are never demoted.
        assert!(plan_for(&[1, 2], &[], 1, &all).is_empty());
        // Five voters, two dead, no spare: down to an odd three.
        let all: Vec<Candidate> = (1..=5)
            .map(|i| cand(i, i <= 3, if i <= 3 { 0 } else { 60 }))
            .collect();
        assert_eq!(
            plan_for(&[1, 2, 3, 4, 5], &[], 1, &all),
            vec![MembershipChange::SetVoters(set(&[1, 2, 3]))]
        );
    }

    #[test]
    fn growth_stops_at_odd_sizes() {
        // Three alive, but only one is a learner yet: stay at one voter, not two.
        let all: Vec<Candidate> = (1..=3).map(|i| cand(i, true, 0)).collect();
        let p = plan_for(&[1], &[2], 1, &all);
        assert_eq!(
            p,
            vec![MembershipChange::AddLearner(3, all[2].node.clone())]
        );
    }

    #[test]
    fn ineligible_nodes_learn_but_never_vote() {
        let mut all: Vec<Candidate> = (1..=3).map(|i| cand(i, true, 0)).collect();
        all[2].eligible = false;
        let p = plan_for(&[1], &[2], 1, &all);
        assert_eq!(
            p,
            vec![MembershipChange::AddLearner(3, all[2].node.clone())]
        );
        let mut four: Vec<Candidate> = (1..=4).map(|i| cand(i, true, 0)).collect();
        four[3].eligible = false;
        let p = plan_for(&[1], &[2, 3, 4], 1, &four);
        assert_eq!(p, vec![MembershipChange::SetVoters(set(&[1, 2, 3]))]);
    }

    #[test]
    fn lagging_and_ineligible_nodes_are_not_promoted() {
        let mut all: Vec<Candidate> = (1..=3).map(|i| cand(i, true, 0)).collect();
        all[1].caught_up = false;
        all[2].eligible = false;
        let p = plan_for(&[1], &[2, 3], 1, &all);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn moved_nodes_are_updated_and_dead_learners_removed() {
        let mut all: Vec<Candidate> = (1..=5).map(|i| cand(i, true, 0)).collect();
        let (v, l) = (set(&[1, 2, 3]), set(&[4, 5]));
        let nodes = all.iter().map(|c| (c.id, c.node.clone())).collect();
        all[3].node.rpc_addr = "127.0.0.1:9999".into();
        all[4] = cand(5, false, 31);
        let p = plan(
            &Membership {
                voters: &v,
                learners: &l,
                nodes: &nodes,
                leader: 1,
            },
            &all,
            &policy(),
        );
        assert_eq!(
            p,
            vec![
                MembershipChange::UpdateNodes(vec![(4, all[3].node.clone())]),
                MembershipChange::RemoveLearners(set(&[5])),
            ]
        );
    }

    #[test]
    fn policy_lowered_shrinks_but_keeps_the_leader() {
        let all: Vec<Candidate> = (1..=5).map(|i| cand(i, true, 0)).collect();
        let p = plan_for(&[1, 2, 3, 4, 5], &[], 5, &all);
        assert_eq!(p, vec![MembershipChange::SetVoters(set(&[1, 2, 5]))]);
    }
}
