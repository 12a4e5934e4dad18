//! The scheduler: which node each new workload instance goes to. Pure and deterministic
//! (no I/O, clocks or randomness) so the Raft leader can call it and simulation tests can
//! drive it with thousands of nodes; the same input always gives the same placements.
//!
//! Each request goes through two steps, as in kube-scheduler:
//!
//! 1. **Filters** drop the nodes that cannot take it: not alive or not schedulable, node
//!    selector, cpu/memory left after the policy's reserve and the instances already there,
//!    `max_pods_per_node`, required anti-affinity, hard (`DoNotSchedule`) spread.
//! 2. **Scores** rank the rest in integer arithmetic (weights are the constants below);
//!    ties go to the smaller node name, so no hash or iteration order leaks into results.
//!    `Spread` prefers the least requested node and the fewest instances of the same owner;
//!    `BinPack` the most requested. Soft spread costs in proportion to the skew a placement
//!    would leave; preferred (anti-)affinity adds (subtracts) its weight when the node's
//!    domain holds a matching instance.
//!
//! **Batches.** Requests are placed in order and each decision (evictions included) is
//! applied before the next one is looked at, so replicas of one batch spread against each
//! other and not only against what was placed before the call.
//!
//! **Preemption.** When no node passes the filters, a request may evict instances of
//! strictly lower priority: on every node that passes the non-resource filters, the
//! lowest-priority (then largest) instances are taken until the request fits, and any not
//! actually needed are given back. The node needing the fewest victims wins, then the
//! lowest highest-victim priority. Equal priority never preempts, so two workloads of the
//! same priority cannot evict each other back and forth.
//!
//! **Sampling.** Scoring every node would cost O(nodes) per placement; like
//! kube-scheduler's `percentageOfNodesToScore` we stop after `max(100, 5%)` feasible nodes.
//! With `Spread` the scan starts where the previous one stopped, so consecutive placements
//! look at different parts of the cluster and fill it evenly; with `BinPack` it always
//! starts at the first node, so the same nodes fill up first. A request is declared
//! unplaceable only after a full scan.
//!
//! **State.** [`Cluster`] keeps per-node aggregates (used cpu/memory, instance count, and
//! instances per owner) and, per (topology key, label selector) pair met in a constraint,
//! the number of matching instances in each domain. The pair is indexed lazily on first use
//! and then kept up to date on every placement or eviction, so no placement rescans the
//! placed instances. Replicas share their labels, so label sets are interned: each knows
//! its instances per node and the count indexes it matches, which makes a new index cost
//! O(label sets) and an instance's update O(indexes it matches).
//!
//! **Topology.** As in Kubernetes, a node without the topology-key label is in no domain:
//! it fails a hard spread constraint, scores as breaking a soft one, and never conflicts in
//! (anti-)affinity; for [`HOSTNAME_KEYS`] every node is at least its own domain. A request
//! adds to the skew it is checked against only if it matches the constraint's selector
//! (Kubernetes' selfMatch). Differences: spread domains are those of nodes that are alive,
//! schedulable and match the request's node selector, and a domain counts matching
//! instances on all of its nodes; existing instances' own anti-affinity terms are unknown
//! here (a [`Placed`] does not carry them), so anti-affinity is one-way.
//!
//! Threads: none (called synchronously by the leader's control loop). May call: std only.

use std::collections::BTreeMap;

mod place;
mod state;

pub use state::Cluster;

/// Topology keys that mean "the node itself".
pub const HOSTNAME_KEYS: [&str; 2] = ["kubernetes.io/hostname", "omnicloud.io/node"];

/// Resource scores are fractions of the node in basis points: 0 (empty) ..= FULL.
const FULL: i64 = 10_000;
/// `Spread`: each instance of the same owner already on the node costs a quarter of the
/// resource range (capped at the whole range), so replicas prefer separate nodes even when
/// one node is a little emptier.
const OWNER_PENALTY: i64 = FULL / 4;
/// Soft spread: a placement leaving a skew of `max_skew` costs half the resource range;
/// the cost is proportional to the skew, so balance wins over small load differences.
const SOFT_SPREAD_PENALTY: i64 = FULL / 2;
/// Preferred (anti-)affinity: points per unit of weight. A weight-100 term is worth
/// 2.5 resource ranges: it outweighs load and owner spreading together, so a colocation
/// preference (PreferSameVM) is honoured whenever it is feasible.
const AFFINITY_POINT: i64 = 250;
/// Stop the feasibility scan after max(MIN_SAMPLE, SAMPLE_PERCENT% of nodes) feasible nodes.
const MIN_SAMPLE: usize = 100;
const SAMPLE_PERCENT: usize = 5;
/// A node without a domain for a topology key.
const NO_DOMAIN: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub alive: bool,
    /// Has the agent role and is not cordoned.
    pub schedulable: bool,
    pub labels: BTreeMap<String, String>,
    /// Allocatable capacity.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// `namespace/name` of the instance.
    pub key: String,
    pub node: String,
    /// `namespace/Kind/name` of the owning workload.
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub priority: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// matchLabels: every pair must be present on the other instance.
    pub selector: BTreeMap<String, String>,
    /// A node label key naming the domain (zone, ...), or one of HOSTNAME_KEYS for the node.
    pub topology_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spread {
    /// Values below 1 are treated as 1 (Kubernetes rejects them at validation).
    pub max_skew: u32,
    pub topology_key: String,
    /// whenUnsatisfiable: DoNotSchedule (true) or ScheduleAnyway (false: only a score).
    pub hard: bool,
    pub selector: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub key: String,
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub priority: i64,
    pub node_selector: BTreeMap<String, String>,
    pub spread: Vec<Spread>,
    /// Required anti-affinity: never in a domain holding an instance that matches.
    pub anti_affinity: Vec<Term>,
    /// Preferred affinity (weight 1..=100): prefer domains holding matching instances
    /// (the seed's topologyConstraints colocation PreferSameVM maps here).
    pub affinity_preferred: Vec<(i32, Term)>,
    pub anti_affinity_preferred: Vec<(i32, Term)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    #[default]
    Spread,
    BinPack,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub strategy: Strategy,
    pub max_pods_per_node: Option<u32>,
    /// Kept free on every node (system reserve / ClusterScalingPolicy minimumReservedCapacity).
    pub reserved_cpu_millis: u64,
    pub reserved_memory_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Placed(String),
    /// Fits on `node` only after evicting these lower-priority instances (keys).
    Preempt {
        node: String,
        victims: Vec<String>,
    },
    /// kube-scheduler style: "0/5 nodes are available: 3 insufficient cpu, 2 node selector mismatch."
    Unschedulable(String),
}

/// Places `requests` in order; each decision (including preemption evictions) is applied
/// to the state the next request sees. Same input -> same output.
pub fn schedule(
    nodes: &[NodeInfo],
    placed: &[Placed],
    requests: &[Request],
    policy: &Policy,
) -> Vec<Outcome> {
    let mut cluster = Cluster::new(nodes, placed);
    requests.iter().map(|r| cluster.place(r, policy)).collect()
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
