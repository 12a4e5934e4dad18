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

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

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

/// The scheduler's view of the cluster, updated by every decision. The leader may keep one
/// across batches (feeding it [`Cluster::insert`] and [`Cluster::remove`]) instead of
/// rebuilding it; the node set is fixed, so build a new one when nodes change.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Sorted by name: the index order is the tie-break order.
    nodes: Vec<Node>,
    node_ids: HashMap<String, u32>,
    /// Slots of removed instances are reused (`free`).
    insts: Vec<Option<Inst>>,
    free: Vec<u32>,
    /// key -> instance, built on the first [`Cluster::remove`] (`schedule` never needs it).
    inst_ids: Option<HashMap<String, u32>>,
    label_sets: Vec<LabelSet>,
    label_set_ids: HashMap<BTreeMap<String, String>, u32>,
    owners: HashMap<String, u32>,
    /// (owner, node) -> instances.
    owner_counts: FxMap<(u32, u32), u32>,
    topos: Vec<Topo>,
    topo_ids: HashMap<String, usize>,
    selectors: Vec<BTreeMap<String, String>>,
    selector_ids: HashMap<BTreeMap<String, String>, usize>,
    /// Per (selector, topology) index: matching instances per domain.
    counts: Vec<Vec<u32>>,
    index_topo: Vec<usize>,
    index_selector: Vec<usize>,
    index_ids: FxMap<(usize, usize), usize>,
    filters: Vec<NodeFilter>,
    filter_ids: HashMap<BTreeMap<String, String>, usize>,
    /// Where the next `Spread` scan starts.
    offset: usize,
}

#[derive(Clone, Debug)]
struct Node {
    name: String,
    labels: BTreeMap<String, String>,
    alive: bool,
    schedulable: bool,
    cpu: u64,
    memory: u64,
    used_cpu: u64,
    used_memory: u64,
    pods: u32,
    insts: Vec<u32>,
}

#[derive(Clone, Debug)]
struct Inst {
    key: String,
    node: u32,
    owner: u32,
    label_set: u32,
    cpu: u64,
    memory: u64,
    priority: i64,
}

#[derive(Clone, Debug)]
struct LabelSet {
    labels: BTreeMap<String, String>,
    /// node -> live instances with exactly these labels.
    members: FxMap<u32, u32>,
    /// The count indexes whose selector these labels match.
    indexes: Vec<usize>,
}

/// A topology key's domains: per node a domain id or NO_DOMAIN.
#[derive(Clone, Debug)]
struct Topo {
    domain: Vec<u32>,
    domains: usize,
}

/// Nodes a node selector leaves eligible (alive, schedulable, matching), and per topology
/// the domains they form: the domains a spread constraint is measured over.
#[derive(Clone, Debug)]
struct NodeFilter {
    eligible: Vec<u32>,
    domains: FxMap<usize, Vec<u32>>,
}

/// A request resolved against the indexes, once per placement.
struct Prep {
    filter: usize,
    owner: u32,
    /// (topology, index)
    anti: Vec<(usize, usize)>,
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
    /// (topology, index, signed points)
    prefer: Vec<(usize, usize, i64)>,
}

struct Constraint {
    topo: usize,
    index: usize,
    max_skew: i64,
    /// 1 when the request matches the constraint's selector itself (Kubernetes' selfMatch).
    own: i64,
    min: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    Pods,
    Resources { cpu: bool, memory: bool },
    AntiAffinity,
    SpreadLabel,
    Skew,
}

/// Failure reasons in the order they are reported.
const REASONS: [&str; 9] = [
    "not alive",
    "unschedulable",
    "node selector mismatch",
    "too many pods",
    "insufficient cpu",
    "insufficient memory",
    "anti-affinity conflict",
    "missing spread topology label",
    "spread skew exceeded",
];

impl Cluster {
    /// Instances on nodes not in `nodes` are ignored.
    pub fn new(nodes: &[NodeInfo], placed: &[Placed]) -> Cluster {
        let mut order: Vec<&NodeInfo> = nodes.iter().collect();
        order.sort_by(|a, b| a.name.cmp(&b.name));
        let mut node_ids = HashMap::with_capacity(order.len());
        let nodes: Vec<Node> = order
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                node_ids.entry(n.name.clone()).or_insert(i as u32);
                Node {
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    alive: n.alive,
                    schedulable: n.schedulable,
                    cpu: n.cpu_millis,
                    memory: n.memory_bytes,
                    used_cpu: 0,
                    used_memory: 0,
                    pods: 0,
                    insts: Vec::new(),
                }
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            node_ids,
            insts: Vec::with_capacity(placed.len()),
            free: Vec::new(),
            inst_ids: None,
            label_sets: Vec::new(),
            label_set_ids: HashMap::new(),
            owners: HashMap::new(),
            owner_counts: FxMap::default(),
            topos: Vec::new(),
            topo_ids: HashMap::new(),
            selectors: Vec::new(),
            selector_ids: HashMap::new(),
            counts: Vec::new(),
            index_topo: Vec::new(),
            index_selector: Vec::new(),
            index_ids: FxMap::default(),
            filters: Vec::new(),
            filter_ids: HashMap::new(),
            offset: 0,
        };
        for p in placed {
            cluster.insert(p);
        }
        cluster
    }

    /// Records an instance placed outside the scheduler; false if its node is unknown.
    pub fn insert(&mut self, p: &Placed) -> bool {
        let Some(&node) = self.node_ids.get(&p.node) else {
            return false;
        };
        let owner = self.owner_id(&p.owner);
        let label_set = self.label_set(&p.labels);
        self.add(Inst {
            key: p.key.clone(),
            node,
            owner,
            label_set,
            cpu: p.cpu_millis,
            memory: p.memory_bytes,
            priority: p.priority,
        });
        true
    }

    /// Forgets an instance (deleted or stopped); false if it is not known.
    pub fn remove(&mut self, key: &str) -> bool {
        let insts = &self.insts;
        let ids = self.inst_ids.get_or_insert_with(|| {
            (0..insts.len() as u32)
                .filter_map(|id| Some((insts[id as usize].as_ref()?.key.clone(), id)))
                .collect()
        });
        match ids.get(key) {
            Some(&id) => {
                self.remove_id(id);
                true
            }
            None => false,
        }
    }

    /// Decides where `req` goes and applies the decision (evictions included).
    pub fn place(&mut self, req: &Request, policy: &Policy) -> Outcome {
        let prep = self.prepare(req);
        if let Some(n) = self.pick(req, &prep, policy) {
            self.add_request(req, n, prep.owner);
            return Outcome::Placed(self.nodes[n as usize].name.clone());
        }
        if let Some((n, victims)) = self.preemption(req, &prep, policy) {
            let victims = victims.into_iter().map(|v| self.remove_id(v).key).collect();
            self.add_request(req, n, prep.owner);
            return Outcome::Preempt {
                node: self.nodes[n as usize].name.clone(),
                victims,
            };
        }
        Outcome::Unschedulable(self.explain(req, &prep, policy))
    }

    fn add_request(&mut self, req: &Request, node: u32, owner: u32) {
        let label_set = self.label_set(&req.labels);
        self.add(Inst {
            key: req.key.clone(),
            node,
            owner,
            label_set,
            cpu: req.cpu_millis,
            memory: req.memory_bytes,
            priority: req.priority,
        });
    }

    fn owner_id(&mut self, owner: &str) -> u32 {
        if let Some(&o) = self.owners.get(owner) {
            return o;
        }
        let o = self.owners.len() as u32;
        self.owners.insert(owner.to_string(), o);
        o
    }

    fn add(&mut self, inst: Inst) {
        let n = inst.node as usize;
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.insts.push(None);
                (self.insts.len() - 1) as u32
            }
        };
        let node = &mut self.nodes[n];
        node.used_cpu = node.used_cpu.saturating_add(inst.cpu);
        node.used_memory = node.used_memory.saturating_add(inst.memory);
        node.pods += 1;
        node.insts.push(id);
        *self
            .owner_counts
            .entry((inst.owner, inst.node))
            .or_default() += 1;
        *self.label_sets[inst.label_set as usize]
            .members
            .entry(inst.node)
            .or_default() += 1;
        self.count(inst.label_set, inst.node, true);
        if let Some(ids) = &mut self.inst_ids {
            ids.insert(inst.key.clone(), id);
        }
        self.insts[id as usize] = Some(inst);
    }

    fn remove_id(&mut self, id: u32) -> Inst {
        let inst = self.insts[id as usize].take().expect("live instance");
        self.free.push(id);
        let node = &mut self.nodes[inst.node as usize];
        node.used_cpu = node.used_cpu.saturating_sub(inst.cpu);
        node.used_memory = node.used_memory.saturating_sub(inst.memory);
        node.pods -= 1;
        if let Some(i) = node.insts.iter().position(|&x| x == id) {
            node.insts.swap_remove(i);
        }
        let key = (inst.owner, inst.node);
        if let Some(c) = self.owner_counts.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.owner_counts.remove(&key);
            }
        }
        let members = &mut self.label_sets[inst.label_set as usize].members;
        if let Some(c) = members.get_mut(&inst.node) {
            *c -= 1;
            if *c == 0 {
                members.remove(&inst.node);
            }
        }
        self.count(inst.label_set, inst.node, false);
        if let Some(ids) = &mut self.inst_ids {
            if ids.get(&inst.key) == Some(&id) {
                ids.remove(&inst.key);
            }
        }
        inst
    }

    /// Adds (or takes away) an instance of `label_set` on `node` in every count index
    /// whose selector it matches.
    fn count(&mut self, label_set: u32, node: u32, up: bool) {
        for &i in &self.label_sets[label_set as usize].indexes {
            let d = self.topos[self.index_topo[i]].domain[node as usize];
            if d != NO_DOMAIN {
                let c = &mut self.counts[i][d as usize];
                *c = if up { *c + 1 } else { c.saturating_sub(1) };
            }
        }
    }

    fn label_set(&mut self, labels: &BTreeMap<String, String>) -> u32 {
        if let Some(&l) = self.label_set_ids.get(labels) {
            return l;
        }
        let indexes = (0..self.counts.len())
            .filter(|&i| subset(&self.selectors[self.index_selector[i]], labels))
            .collect();
        let l = self.label_sets.len() as u32;
        self.label_sets.push(LabelSet {
            labels: labels.clone(),
            members: FxMap::default(),
            indexes,
        });
        self.label_set_ids.insert(labels.clone(), l);
        l
    }

    fn topo(&mut self, key: &str) -> usize {
        if let Some(&t) = self.topo_ids.get(key) {
            return t;
        }
        let host = HOSTNAME_KEYS.contains(&key);
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut next = 0u32;
        let domain = self
            .nodes
            .iter()
            .map(|node| match node.labels.get(key) {
                Some(v) => *ids.entry(v.as_str()).or_insert_with(|| {
                    next += 1;
                    next - 1
                }),
                // Without the label, a node is its own domain only for the hostname keys.
                None if host => {
                    next += 1;
                    next - 1
                }
                None => NO_DOMAIN,
            })
            .collect();
        let t = self.topos.len();
        self.topos.push(Topo {
            domain,
            domains: next as usize,
        });
        self.topo_ids.insert(key.to_string(), t);
        t
    }

    fn selector(&mut self, labels: &BTreeMap<String, String>) -> usize {
        if let Some(&s) = self.selector_ids.get(labels) {
            return s;
        }
        let s = self.selectors.len();
        self.selectors.push(labels.clone());
        self.selector_ids.insert(labels.clone(), s);
        s
    }

    /// The count index of (selector, topology key), built on first use; returns
    /// (topology, index).
    fn index(&mut self, selector: &BTreeMap<String, String>, topology_key: &str) -> (usize, usize) {
        let t = self.topo(topology_key);
        let s = self.selector(selector);
        if let Some(&i) = self.index_ids.get(&(s, t)) {
            return (t, i);
        }
        let i = self.counts.len();
        let topo = &self.topos[t];
        let mut counts = vec![0u32; topo.domains];
        for ls in &mut self.label_sets {
            if !subset(selector, &ls.labels) {
                continue;
            }
            ls.indexes.push(i);
            for (&node, &c) in &ls.members {
                let d = topo.domain[node as usize];
                if d != NO_DOMAIN {
                    counts[d as usize] += c;
                }
            }
        }
        self.counts.push(counts);
        self.index_topo.push(t);
        self.index_selector.push(s);
        self.index_ids.insert((s, t), i);
        (t, i)
    }

    fn filter(&mut self, selector: &BTreeMap<String, String>) -> usize {
        if let Some(&f) = self.filter_ids.get(selector) {
            return f;
        }
        let eligible = (0..self.nodes.len() as u32)
            .filter(|&n| {
                let node = &self.nodes[n as usize];
                node.alive && node.schedulable && subset(selector, &node.labels)
            })
            .collect();
        let f = self.filters.len();
        self.filters.push(NodeFilter {
            eligible,
            domains: FxMap::default(),
        });
        self.filter_ids.insert(selector.clone(), f);
        f
    }

    /// The smallest count over the domains of the filter's eligible nodes.
    fn spread_min(&mut self, f: usize, t: usize, index: usize) -> i64 {
        let topo = &self.topos[t];
        let filter = &mut self.filters[f];
        let domains = filter.domains.entry(t).or_insert_with(|| {
            let mut seen = vec![false; topo.domains];
            let mut list = Vec::new();
            for &n in &filter.eligible {
                let d = topo.domain[n as usize];
                if d != NO_DOMAIN && !seen[d as usize] {
                    seen[d as usize] = true;
                    list.push(d);
                }
            }
            list
        });
        let counts = &self.counts[index];
        domains
            .iter()
            .map(|&d| i64::from(counts[d as usize]))
            .min()
            .unwrap_or(0)
    }

    fn prepare(&mut self, req: &Request) -> Prep {
        let filter = self.filter(&req.node_selector);
        let owner = self.owner_id(&req.owner);
        let anti = req
            .anti_affinity
            .iter()
            .map(|term| self.index(&term.selector, &term.topology_key))
            .collect();
        let mut hard = Vec::new();
        let mut soft = Vec::new();
        for s in &req.spread {
            let (topo, index) = self.index(&s.selector, &s.topology_key);
            let c = Constraint {
                topo,
                index,
                max_skew: i64::from(s.max_skew.max(1)),
                own: i64::from(subset(&s.selector, &req.labels)),
                min: self.spread_min(filter, topo, index),
            };
            if s.hard {
                hard.push(c);
            } else {
                soft.push(c);
            }
        }
        let mut prefer = Vec::new();
        let weighted = req
            .affinity_preferred
            .iter()
            .map(|(w, t)| (i64::from(*w), t))
            .chain(
                req.anti_affinity_preferred
                    .iter()
                    .map(|(w, t)| (-i64::from(*w), t)),
            );
        for (w, term) in weighted {
            let (topo, index) = self.index(&term.selector, &term.topology_key);
            prefer.push((topo, index, w * AFFINITY_POINT));
        }
        Prep {
            filter,
            owner,
            anti,
            hard,
            soft,
            prefer,
        }
    }

    fn domain_count(&self, topo: usize, index: usize, n: u32) -> Option<i64> {
        let d = self.topos[topo].domain[n as usize];
        (d != NO_DOMAIN).then(|| i64::from(self.counts[index][d as usize]))
    }

    fn fits_resources(&self, n: u32, req: &Request, policy: &Policy) -> Result<(), Fail> {
        let node = &self.nodes[n as usize];
        if policy.max_pods_per_node.is_some_and(|max| node.pods >= max) {
            return Err(Fail::Pods);
        }
        let cpu_cap = node.cpu.saturating_sub(policy.reserved_cpu_millis);
        let memory_cap = node.memory.saturating_sub(policy.reserved_memory_bytes);
        let cpu = node.used_cpu.saturating_add(req.cpu_millis) > cpu_cap;
        let memory = node.used_memory.saturating_add(req.memory_bytes) > memory_cap;
        if cpu || memory {
            return Err(Fail::Resources { cpu, memory });
        }
        Ok(())
    }

    fn fits_topology(&self, n: u32, prep: &Prep) -> Result<(), Fail> {
        for &(topo, index) in &prep.anti {
            if self.domain_count(topo, index, n).is_some_and(|c| c > 0) {
                return Err(Fail::AntiAffinity);
            }
        }
        for c in &prep.hard {
            match self.domain_count(c.topo, c.index, n) {
                None => return Err(Fail::SpreadLabel),
                Some(count) if count + c.own - c.min > c.max_skew => return Err(Fail::Skew),
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn score(&self, n: u32, req: &Request, prep: &Prep, policy: &Policy) -> i64 {
        let node = &self.nodes[n as usize];
        let cpu = fraction(
            node.used_cpu.saturating_add(req.cpu_millis),
            node.cpu.saturating_sub(policy.reserved_cpu_millis),
        );
        let memory = fraction(
            node.used_memory.saturating_add(req.memory_bytes),
            node.memory.saturating_sub(policy.reserved_memory_bytes),
        );
        let mut score = match policy.strategy {
            Strategy::Spread => {
                let same = self
                    .owner_counts
                    .get(&(prep.owner, n))
                    .copied()
                    .unwrap_or(0);
                (2 * FULL - cpu - memory) / 2 - (i64::from(same) * OWNER_PENALTY).min(FULL)
            }
            Strategy::BinPack => (cpu + memory) / 2,
        };
        for c in &prep.soft {
            // A node without the key is scored as if it broke the constraint.
            let skew = match self.domain_count(c.topo, c.index, n) {
                Some(count) => count + c.own - c.min,
                None => c.max_skew + 1,
            };
            score -= SOFT_SPREAD_PENALTY * skew / c.max_skew;
        }
        for &(topo, index, points) in &prep.prefer {
            if self.domain_count(topo, index, n).is_some_and(|c| c > 0) {
                score += points;
            }
        }
        score
    }

    /// The best of the first sampled feasible nodes.
    fn pick(&mut self, req: &Request, prep: &Prep, policy: &Policy) -> Option<u32> {
        let eligible = &self.filters[prep.filter].eligible;
        if eligible.is_empty() {
            return None;
        }
        let want = MIN_SAMPLE.max(self.nodes.len() * SAMPLE_PERCENT / 100);
        let start = match policy.strategy {
            Strategy::Spread => self.offset % eligible.len(),
            Strategy::BinPack => 0,
        };
        let (before, after) = eligible.split_at(start);
        let mut best: Option<(i64, u32)> = None;
        let (mut found, mut examined) = (0, 0);
        for &n in after.iter().chain(before) {
            examined += 1;
            if self.fits_resources(n, req, policy).is_err() || self.fits_topology(n, prep).is_err()
            {
                continue;
            }
            let s = self.score(n, req, prep, policy);
            if best.is_none_or(|(bs, bn)| s > bs || (s == bs && n < bn)) {
                best = Some((s, n));
            }
            found += 1;
            if found >= want {
                break;
            }
        }
        self.offset = self.offset.wrapping_add(examined);
        best.map(|(_, n)| n)
    }

    /// The node where evicting the fewest lower-priority instances makes `req` fit, and
    /// those instances in eviction order.
    fn preemption(&self, req: &Request, prep: &Prep, policy: &Policy) -> Option<(u32, Vec<u32>)> {
        // (victims, highest victim priority, node)
        let mut best: Option<(usize, i64, u32, Vec<u32>)> = None;
        for &n in &self.filters[prep.filter].eligible {
            if self.fits_topology(n, prep).is_err() {
                continue;
            }
            let Some(victims) = self.victims(n, req, policy) else {
                continue;
            };
            let top = victims
                .iter()
                .map(|&v| self.inst(v).priority)
                .max()
                .unwrap_or(i64::MIN);
            let better = best
                .as_ref()
                .is_none_or(|(len, bp, bn, _)| (victims.len(), top, n) < (*len, *bp, *bn));
            if better {
                best = Some((victims.len(), top, n, victims));
            }
        }
        best.map(|(_, _, n, victims)| (n, victims))
    }

    fn inst(&self, id: u32) -> &Inst {
        self.insts[id as usize].as_ref().expect("live instance")
    }

    /// Lowest priority first, then largest: taken until `req` fits; then those not needed
    /// (highest priority first) are given back. None if even evicting every lower-priority
    /// instance is not enough.
    fn victims(&self, n: u32, req: &Request, policy: &Policy) -> Option<Vec<u32>> {
        let node = &self.nodes[n as usize];
        let cpu_cap = node.cpu.saturating_sub(policy.reserved_cpu_millis);
        let memory_cap = node.memory.saturating_sub(policy.reserved_memory_bytes);
        let max_pods = policy.max_pods_per_node.unwrap_or(u32::MAX);
        if req.cpu_millis > cpu_cap || req.memory_bytes > memory_cap || max_pods == 0 {
            return None;
        }
        let size = |i: &Inst| fraction(i.cpu, cpu_cap) + fraction(i.memory, memory_cap);
        let mut candidates: Vec<u32> = node
            .insts
            .iter()
            .copied()
            .filter(|&id| self.inst(id).priority < req.priority)
            .collect();
        candidates.sort_by(|&a, &b| {
            let (a, b) = (self.inst(a), self.inst(b));
            (a.priority, -size(a), &a.key).cmp(&(b.priority, -size(b), &b.key))
        });
        let fits = |cpu: u64, memory: u64, pods: u32| {
            cpu.saturating_add(req.cpu_millis) <= cpu_cap
                && memory.saturating_add(req.memory_bytes) <= memory_cap
                && pods < max_pods
        };
        let (mut cpu, mut memory, mut pods) = (node.used_cpu, node.used_memory, node.pods);
        let mut taken = Vec::new();
        for id in candidates {
            if fits(cpu, memory, pods) {
                break;
            }
            let i = self.inst(id);
            cpu = cpu.saturating_sub(i.cpu);
            memory = memory.saturating_sub(i.memory);
            pods -= 1;
            taken.push(id);
        }
        if !fits(cpu, memory, pods) || taken.is_empty() {
            return None;
        }
        for k in (0..taken.len()).rev() {
            let i = self.inst(taken[k]);
            if fits(cpu + i.cpu, memory + i.memory, pods + 1) {
                cpu += i.cpu;
                memory += i.memory;
                pods += 1;
                taken.remove(k);
            }
        }
        Some(taken)
    }

    /// Why no node takes `req`: every node's first failing filter (both resources when
    /// both are short, as kube-scheduler reports them).
    fn explain(&self, req: &Request, prep: &Prep, policy: &Policy) -> String {
        let mut counts = [0usize; REASONS.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            let n = n as u32;
            let reason = if !node.alive {
                0
            } else if !node.schedulable {
                1
            } else if !subset(&req.node_selector, &node.labels) {
                2
            } else {
                match self
                    .fits_resources(n, req, policy)
                    .and_then(|()| self.fits_topology(n, prep))
                {
                    Ok(()) => continue,
                    Err(Fail::Pods) => 3,
                    Err(Fail::Resources { cpu, memory }) => {
                        counts[4] += usize::from(cpu);
                        counts[5] += usize::from(memory);
                        continue;
                    }
                    Err(Fail::AntiAffinity) => 6,
                    Err(Fail::SpreadLabel) => 7,
                    Err(Fail::Skew) => 8,
                }
            };
            counts[reason] += 1;
        }
        let parts: Vec<String> = REASONS
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        if parts.is_empty() {
            format!("0/{} nodes are available.", self.nodes.len())
        } else {
            format!(
                "0/{} nodes are available: {}.",
                self.nodes.len(),
                parts.join(", ")
            )
        }
    }
}

fn subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `used / cap` in basis points, capped at FULL; a node with no capacity counts as full.
fn fraction(used: u64, cap: u64) -> i64 {
    if cap == 0 {
        return FULL;
    }
    let f = match used.checked_mul(FULL as u64) {
        Some(scaled) => scaled / cap,
        // Beyond 1.8 EB: rare enough for the slow 128-bit division.
        None => (u128::from(used) * FULL as u128 / u128::from(cap)) as u64,
    };
    f.min(FULL as u64) as i64
}

/// FxHash (as in rustc): the count maps are keyed by small integers, where SipHash's
/// DoS resistance buys nothing and costs most of a lookup.
#[derive(Clone, Copy, Debug, Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const HOST: &str = "kubernetes.io/hostname";
    const ZONE: &str = "topology.kubernetes.io/zone";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn node(name: &str, cpu: u64, memory_gib: u64, l: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            alive: true,
            schedulable: true,
            labels: labels(l),
            cpu_millis: cpu,
            memory_bytes: memory_gib * GIB,
        }
    }

    fn nodes(n: usize, cpu: u64, memory_gib: u64) -> Vec<NodeInfo> {
        (1..=n)
            .map(|i| node(&format!("n{i}"), cpu, memory_gib, &[]))
            .collect()
    }

    fn req(key: &str, app: &str, cpu: u64, memory_gib: u64) -> Request {
        Request {
            key: format!("default/{key}"),
            owner: format!("default/Deployment/{app}"),
            labels: labels(&[("app", app)]),
            cpu_millis: cpu,
            memory_bytes: memory_gib * GIB,
            ..Request::default()
        }
    }

    fn replicas(app: &str, n: usize, cpu: u64, memory_gib: u64) -> Vec<Request> {
        (0..n)
            .map(|i| req(&format!("{app}-{i}"), app, cpu, memory_gib))
            .collect()
    }

    fn placed(key: &str, node: &str, app: &str, cpu: u64, memory_gib: u64, prio: i64) -> Placed {
        Placed {
            key: format!("default/{key}"),
            node: node.into(),
            owner: format!("default/Deployment/{app}"),
            labels: labels(&[("app", app)]),
            cpu_millis: cpu,
            memory_bytes: memory_gib * GIB,
            priority: prio,
        }
    }

    fn term(app: &str, key: &str) -> Term {
        Term {
            selector: labels(&[("app", app)]),
            topology_key: key.into(),
        }
    }

    fn spread(app: &str, key: &str, max_skew: u32, hard: bool) -> Spread {
        Spread {
            max_skew,
            topology_key: key.into(),
            hard,
            selector: labels(&[("app", app)]),
        }
    }

    fn on(outcomes: &[Outcome]) -> Vec<&str> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Placed(n) => n.as_str(),
                Outcome::Preempt { node, .. } => node.as_str(),
                Outcome::Unschedulable(_) => "-",
            })
            .collect()
    }

    fn tally<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
        let mut m = BTreeMap::new();
        for n in names {
            *m.entry(n).or_insert(0) += 1;
        }
        m
    }

    fn binpack() -> Policy {
        Policy {
            strategy: Strategy::BinPack,
            ..Policy::default()
        }
    }

    #[test]
    fn capacity_counts_placed_instances_and_the_reserve() {
        let ns = nodes(1, 1000, 4);
        let existing = [placed("a", "n1", "a", 600, 1, 0)];
        let r = [req("b", "b", 300, 1)];
        let out = schedule(&ns, &existing, &r, &Policy::default());
        assert_eq!(out, [Outcome::Placed("n1".into())]);
        let reserve = Policy {
            reserved_cpu_millis: 200,
            ..Policy::default()
        };
        let out = schedule(&ns, &existing, &r, &reserve);
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/1 nodes are available: 1 insufficient cpu.".into()
            )]
        );
        let reserve = Policy {
            reserved_memory_bytes: 3 * GIB,
            ..Policy::default()
        };
        let out = schedule(&ns, &existing, &r, &reserve);
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/1 nodes are available: 1 insufficient memory.".into()
            )]
        );
        // The batch sees its own placements: the third 400m no longer fits.
        let out = schedule(&ns, &[], &replicas("c", 3, 400, 1), &Policy::default());
        assert_eq!(on(&out), ["n1", "n1", "-"]);
    }

    #[test]
    fn node_selector_must_match_every_pair() {
        let ns = vec![
            node("a", 4000, 8, &[("disk", "hdd")]),
            node("b", 4000, 8, &[("disk", "ssd"), ("gpu", "no")]),
            node("c", 4000, 8, &[("disk", "ssd"), ("gpu", "yes")]),
        ];
        let mut r = req("x", "x", 100, 1);
        r.node_selector = labels(&[("disk", "ssd"), ("gpu", "yes")]);
        let out = schedule(&ns, &[], &[r.clone(), r.clone()], &Policy::default());
        assert_eq!(on(&out), ["c", "c"]);
        r.node_selector = labels(&[("disk", "nvme")]);
        let out = schedule(&ns, &[], &[r], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/3 nodes are available: 3 node selector mismatch.".into()
            )]
        );
    }

    #[test]
    fn max_pods_per_node_is_a_filter() {
        let policy = Policy {
            strategy: Strategy::BinPack,
            max_pods_per_node: Some(2),
            ..Policy::default()
        };
        let out = schedule(&nodes(2, 4000, 8), &[], &replicas("a", 5, 10, 0), &policy);
        assert_eq!(on(&out), ["n1", "n1", "n2", "n2", "-"]);
        assert_eq!(
            out[4],
            Outcome::Unschedulable("0/2 nodes are available: 2 too many pods.".into())
        );
    }

    #[test]
    fn dead_and_unschedulable_nodes_are_skipped() {
        let mut ns = nodes(4, 4000, 8);
        ns[0].alive = false;
        ns[1].schedulable = false;
        ns[3].memory_bytes = GIB;
        let out = schedule(&ns, &[], &replicas("a", 2, 100, 2), &Policy::default());
        assert_eq!(out[0], Outcome::Placed("n3".into()));
        // Dead and cordoned nodes report that, not their (ample) resources.
        ns[2].alive = false;
        let out = schedule(&ns, &[], &replicas("a", 1, 100, 2), &Policy::default());
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/4 nodes are available: 2 not alive, 1 unschedulable, 1 insufficient memory."
                    .into()
            )]
        );
    }

    #[test]
    fn required_anti_affinity_per_host() {
        let mut r = replicas("db", 4, 100, 1);
        for x in &mut r {
            x.anti_affinity = vec![term("db", HOST)];
        }
        let out = schedule(&nodes(3, 4000, 8), &[], &r, &binpack());
        assert_eq!(on(&out)[..3], ["n1", "n2", "n3"]);
        assert_eq!(
            out[3],
            Outcome::Unschedulable("0/3 nodes are available: 3 anti-affinity conflict.".into())
        );
        // Nodes share a domain when they carry the same hostname label value.
        let ns = vec![
            node("a", 4000, 8, &[(HOST, "h1")]),
            node("b", 4000, 8, &[(HOST, "h1")]),
        ];
        let out = schedule(&ns, &[], &r[..2], &binpack());
        assert_eq!(on(&out), ["a", "-"]);
        // Another workload is not affected.
        let existing = [placed("db-x", "n1", "db", 100, 1, 0)];
        let out = schedule(
            &nodes(1, 4000, 8),
            &existing,
            &[req("w", "web", 1, 0)],
            &binpack(),
        );
        assert_eq!(on(&out), ["n1"]);
    }

    #[test]
    fn required_anti_affinity_per_zone() {
        let ns = vec![
            node("a1", 4000, 8, &[(ZONE, "a")]),
            node("a2", 4000, 8, &[(ZONE, "a")]),
            node("b1", 4000, 8, &[(ZONE, "b")]),
            node("b2", 4000, 8, &[(ZONE, "b")]),
            node("nolabel", 4000, 8, &[]),
        ];
        let mut r = replicas("db", 4, 100, 1);
        for x in &mut r {
            x.anti_affinity = vec![term("db", ZONE)];
        }
        let out = schedule(&ns, &[], &r, &binpack());
        // One per zone; a node without the zone label fails nothing (and is in no domain).
        assert_eq!(on(&out), ["a1", "b1", "nolabel", "nolabel"]);
        let mut r2 = r.clone();
        for x in &mut r2 {
            x.node_selector = labels(&[(ZONE, "a")]);
        }
        let out = schedule(&ns, &[], &r2[..2], &binpack());
        assert_eq!(
            out[1],
            Outcome::Unschedulable(
                "0/5 nodes are available: 3 node selector mismatch, 2 anti-affinity conflict."
                    .into()
            )
        );
    }

    #[test]
    fn hard_spread_across_nodes_is_2_2_2() {
        let mut r = replicas("web", 6, 100, 1);
        for x in &mut r {
            x.spread = vec![spread("web", HOST, 1, true)];
        }
        // BinPack would stack everything on n1; the constraint forces 2/2/2.
        let out = schedule(&nodes(3, 4000, 8), &[], &r, &binpack());
        let t = tally(on(&out));
        assert_eq!(t, BTreeMap::from([("n1", 2), ("n2", 2), ("n3", 2)]));
        // Existing instances count: n1 already holds 2, so the next three go elsewhere first.
        let existing = [
            placed("web-x", "n1", "web", 100, 1, 0),
            placed("web-y", "n1", "web", 100, 1, 0),
        ];
        let out = schedule(&nodes(3, 4000, 8), &existing, &r[..4], &binpack());
        assert_eq!(tally(on(&out)), BTreeMap::from([("n2", 2), ("n3", 2)]));
    }

    #[test]
    fn hard_spread_across_zones() {
        let mut ns = vec![
            node("a1", 4000, 8, &[(ZONE, "a")]),
            node("a2", 4000, 8, &[(ZONE, "a")]),
            node("a3", 4000, 8, &[(ZONE, "a")]),
            node("a4", 4000, 8, &[(ZONE, "a")]),
            node("b1", 4000, 8, &[(ZONE, "b")]),
            node("c1", 4000, 8, &[(ZONE, "c")]),
            node("z-nolabel", 4000, 8, &[]),
        ];
        let mut r = replicas("web", 6, 100, 1);
        for x in &mut r {
            x.spread = vec![spread("web", ZONE, 1, true)];
        }
        let out = schedule(&ns, &[], &r, &Policy::default());
        let zone = |n: &str| n.chars().next().unwrap();
        let zones = tally(on(&out).into_iter().map(|n| &n[..1]));
        assert_eq!(zones, BTreeMap::from([("a", 2), ("b", 2), ("c", 2)]));
        assert!(on(&out).iter().all(|n| zone(n) != 'z'));
        // Zone c full: its count stays 0, so a and b may only get one ahead of it.
        ns[5].cpu_millis = 0;
        let out = schedule(&ns, &[], &r, &Policy::default());
        let got = on(&out);
        assert_eq!(got.iter().filter(|n| **n != "-").count(), 2);
        match &out[5] {
            Outcome::Unschedulable(m) => assert_eq!(
                m,
                "0/7 nodes are available: 1 insufficient cpu, 1 missing spread topology label, \
                 5 spread skew exceeded."
            ),
            o => panic!("{o:?}"),
        }
        // A dead zone is not a domain: b and c alone are balanced.
        ns[5].cpu_millis = 4000;
        for n in &mut ns[..4] {
            n.alive = false;
        }
        let out = schedule(&ns, &[], &r, &Policy::default());
        let zones = tally(on(&out).into_iter().map(|n| &n[..1]));
        assert_eq!(zones, BTreeMap::from([("b", 3), ("c", 3)]));
    }

    #[test]
    fn spread_counts_only_when_the_request_matches_its_selector() {
        // Spreading against another workload: the request itself does not add to the skew.
        let ns = nodes(2, 4000, 8);
        let existing = [placed("db-0", "n1", "db", 100, 1, 0)];
        let mut r = req("w", "web", 100, 1);
        r.spread = vec![spread("db", HOST, 1, true)];
        let out = schedule(&ns, &existing, &[r], &binpack());
        assert_eq!(on(&out), ["n1"]);
    }

    #[test]
    fn soft_spread_is_a_score() {
        let ns = vec![
            node("a1", 8000, 16, &[(ZONE, "a")]),
            node("b1", 8000, 16, &[(ZONE, "b")]),
        ];
        let mut r = replicas("web", 6, 100, 1);
        let out = schedule(&ns, &[], &r, &binpack());
        assert_eq!(tally(on(&out)), BTreeMap::from([("a1", 6)]));
        for x in &mut r {
            x.spread = vec![spread("web", ZONE, 1, false)];
        }
        let out = schedule(&ns, &[], &r, &binpack());
        assert_eq!(on(&out), ["a1", "b1", "a1", "b1", "a1", "b1"]);
        // Never a filter: with b full it all goes to a.
        let existing = [placed("big", "b1", "big", 8000, 1, 0)];
        let out = schedule(&ns, &existing, &r, &binpack());
        assert_eq!(tally(on(&out)), BTreeMap::from([("a1", 6)]));
    }

    #[test]
    fn preferred_affinity_colocates() {
        // PreferSameVM: web prefers the node running cache, though it is the fullest.
        let ns = nodes(5, 8000, 16);
        let existing = [
            placed("cache-0", "n4", "cache", 4000, 8, 0),
            placed("other", "n2", "other", 100, 1, 0),
        ];
        let mut r = replicas("web", 3, 500, 1);
        for x in &mut r {
            x.affinity_preferred = vec![(100, term("cache", HOST))];
        }
        let out = schedule(&ns, &existing, &r, &Policy::default());
        assert_eq!(on(&out), ["n4", "n4", "n4"]);
        // Only a preference: when n4 is full, the next best node.
        let full = [placed("cache-0", "n4", "cache", 8000, 8, 0)];
        let out = schedule(&ns, &full, &r[..1], &Policy::default());
        assert_eq!(on(&out), ["n1"]);
    }

    #[test]
    fn preferred_anti_affinity_avoids() {
        let ns = nodes(2, 8000, 16);
        let existing = [placed("noisy", "n1", "noisy", 100, 1, 0)];
        let mut r = req("w", "web", 100, 1);
        let out = schedule(&ns, &existing, &[r.clone()], &binpack());
        assert_eq!(on(&out), ["n1"]);
        r.anti_affinity_preferred = vec![(50, term("noisy", HOST))];
        let out = schedule(&ns, &existing, &[r], &binpack());
        assert_eq!(on(&out), ["n2"]);
    }

    #[test]
    fn spread_strategy_spreads_and_binpack_packs() {
        let ns = nodes(3, 4000, 8);
        let r = replicas("a", 3, 1000, 1);
        let out = schedule(&ns, &[], &r, &Policy::default());
        assert_eq!(on(&out), ["n1", "n2", "n3"]);
        let out = schedule(&ns, &[], &r, &binpack());
        assert_eq!(on(&out), ["n1", "n1", "n1"]);
        // Spread prefers the emptier node; BinPack the fuller one that still fits.
        let existing = [
            placed("x", "n2", "x", 2000, 1, 0),
            placed("y", "n1", "y", 3500, 1, 0),
        ];
        let out = schedule(&ns, &existing, &r[..1], &Policy::default());
        assert_eq!(on(&out), ["n3"]);
        let out = schedule(&ns, &existing, &r[..1], &binpack());
        assert_eq!(on(&out), ["n2"]);
        // Spread keeps replicas of one owner apart even on slightly fuller nodes.
        let existing = [placed("x", "n1", "x", 300, 1, 0)];
        let mut c = Cluster::new(&ns[..2], &existing);
        assert_eq!(
            c.place(&r[0], &Policy::default()),
            Outcome::Placed("n2".into())
        );
        assert_eq!(
            c.place(&r[1], &Policy::default()),
            Outcome::Placed("n1".into())
        );
    }

    #[test]
    fn preemption_evicts_the_fewest_lowest_priority_instances() {
        let ns = nodes(3, 4000, 16);
        let existing = [
            // n1: four small low-priority instances.
            placed("l1", "n1", "low", 1000, 1, 0),
            placed("l2", "n1", "low", 1000, 1, 0),
            placed("l3", "n1", "low", 1000, 1, 0),
            placed("l4", "n1", "low", 1000, 1, 0),
            // n2: one big low-priority instance and a medium one.
            placed("b1", "n2", "big", 3000, 1, 1),
            placed("m1", "n2", "mid", 1000, 1, 5),
            // n3: full of equal priority.
            placed("e1", "n3", "eq", 4000, 1, 10),
        ];
        let mut r = req("hi", "hi", 2500, 1);
        r.priority = 10;
        let out = schedule(&ns, &existing, &[r.clone()], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Preempt {
                node: "n2".into(),
                victims: vec!["default/b1".into()],
            }]
        );
        // Same count of victims: the node whose highest victim has the lowest priority.
        let mut small = req("hi2", "hi", 1000, 1);
        small.priority = 10;
        let out = schedule(&ns, &existing, &[small], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Preempt {
                node: "n1".into(),
                victims: vec!["default/l1".into()],
            }]
        );
        // Lowest priority first: of m1 (5) and b1 (1), b1 goes, and m1 stays.
        let existing2 = [
            placed("b1", "n1", "big", 2000, 1, 1),
            placed("m1", "n1", "mid", 2000, 1, 5),
        ];
        let mut r2 = req("hi", "hi", 2000, 1);
        r2.priority = 10;
        let out = schedule(
            &ns[..1],
            &existing2,
            &[r2.clone(), r2.clone()],
            &Policy::default(),
        );
        assert_eq!(
            out,
            [
                Outcome::Preempt {
                    node: "n1".into(),
                    victims: vec!["default/b1".into()],
                },
                Outcome::Preempt {
                    node: "n1".into(),
                    victims: vec!["default/m1".into()],
                },
            ]
        );
        // Unneeded victims are given back: s2 and s1 (priority 0) free only 1500, so s3
        // is taken too; then s1 and s2 turn out not to be needed and are spared.
        let existing3 = [
            placed("s1", "n1", "s", 500, 1, 0),
            placed("s2", "n1", "s", 1000, 1, 0),
            placed("s3", "n1", "s", 2500, 1, 1),
        ];
        let out = schedule(&ns[..1], &existing3, &[r.clone()], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Preempt {
                node: "n1".into(),
                victims: vec!["default/s3".into()],
            }]
        );
        // Largest first within a priority: one 1500 instead of 500 + 1000.
        let existing4 = [
            placed("s1", "n1", "s", 500, 1, 0),
            placed("s2", "n1", "s", 1000, 1, 0),
            placed("s3", "n1", "s", 1500, 1, 0),
            placed("s4", "n1", "s", 1000, 1, 3),
        ];
        let mut r4 = req("r4", "hi", 1500, 1);
        r4.priority = 10;
        let out = schedule(&ns[..1], &existing4, &[r4], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Preempt {
                node: "n1".into(),
                victims: vec!["default/s3".into()],
            }]
        );
    }

    #[test]
    fn preemption_never_evicts_equal_or_higher_priority() {
        let ns = nodes(2, 1000, 4);
        let existing = [
            placed("e", "n1", "e", 1000, 1, 5),
            placed("h", "n2", "h", 1000, 1, 9),
        ];
        let mut r = req("r", "r", 500, 1);
        r.priority = 5;
        let out = schedule(&ns, &existing, &[r], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/2 nodes are available: 2 insufficient cpu.".into()
            )]
        );
    }

    #[test]
    fn preemption_respects_the_other_filters() {
        let ns = vec![
            node("a", 1000, 4, &[("disk", "ssd")]),
            node("b", 1000, 4, &[]),
        ];
        let existing = [
            placed("x", "a", "x", 1000, 1, 0),
            placed("y", "b", "y", 1000, 1, 0),
        ];
        let mut r = req("r", "r", 500, 1);
        r.priority = 1;
        r.node_selector = labels(&[("disk", "ssd")]);
        let out = schedule(&ns, &existing, &[r.clone()], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Preempt {
                node: "a".into(),
                victims: vec!["default/x".into()],
            }]
        );
        r.anti_affinity = vec![term("x", HOST)];
        r.node_selector.clear();
        let out = schedule(&ns, &existing, &[r], &Policy::default());
        assert_eq!(on(&out), ["b"]);
        // Too big for the node even when empty: no victims at all.
        let mut huge = req("h", "h", 2000, 1);
        huge.priority = 9;
        let out = schedule(&ns, &existing, &[huge], &Policy::default());
        assert!(matches!(out[0], Outcome::Unschedulable(_)));
    }

    #[test]
    fn unschedulable_reason_text() {
        let mut ns = nodes(5, 1000, 4);
        ns[0].alive = false;
        ns[1].memory_bytes = 0;
        ns[2].cpu_millis = 0;
        ns[3].cpu_millis = 0;
        ns[3].memory_bytes = 0;
        ns[4].labels = labels(&[("disk", "ssd")]);
        let mut r = req("r", "r", 100, 1);
        r.node_selector = labels(&[("disk", "ssd")]);
        let existing = [placed("db", "n5", "db", 1, 0, 0)];
        r.anti_affinity = vec![term("db", HOST)];
        let out = schedule(&ns, &existing, &[r.clone()], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/5 nodes are available: 1 not alive, 3 node selector mismatch, \
                 1 anti-affinity conflict."
                    .into()
            )]
        );
        r.node_selector.clear();
        r.anti_affinity.clear();
        r.spread = vec![spread("r", "rack", 1, true)];
        let out = schedule(&ns, &existing, &[r], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Unschedulable(
                "0/5 nodes are available: 1 not alive, 2 insufficient cpu, \
                 2 insufficient memory, 1 missing spread topology label."
                    .into()
            )]
        );
        let out = schedule(&[], &[], &[req("r", "r", 1, 0)], &Policy::default());
        assert_eq!(
            out,
            [Outcome::Unschedulable("0/0 nodes are available.".into())]
        );
    }

    #[test]
    fn insert_and_remove_keep_the_aggregates() {
        let ns = nodes(1, 1000, 4);
        let mut c = Cluster::new(&ns, &[]);
        assert!(c.insert(&placed("a", "n1", "a", 1000, 1, 0)));
        assert!(!c.insert(&placed("b", "nowhere", "b", 1, 1, 0)));
        let mut r = req("r", "r", 100, 1);
        r.anti_affinity = vec![term("a", HOST)];
        assert!(matches!(
            c.place(&r, &Policy::default()),
            Outcome::Unschedulable(_)
        ));
        assert!(c.remove("default/a"));
        assert!(!c.remove("default/a"));
        assert_eq!(
            c.place(&r, &Policy::default()),
            Outcome::Placed("n1".into())
        );
        // The slot freed by `a` is reused and the count index follows.
        assert!(c.insert(&placed("a2", "n1", "a", 100, 1, 0)));
        assert!(matches!(
            c.place(&r, &Policy::default()),
            Outcome::Unschedulable(_)
        ));
    }

    #[test]
    fn same_input_same_output() {
        let mut rng = XorShift(7);
        let ns = random_nodes(&mut rng, 300, 4);
        let reqs = random_requests(&mut rng, 30, 40, 4);
        let a = schedule(&ns, &[], &reqs, &Policy::default());
        let b = schedule(&ns, &[], &reqs, &Policy::default());
        assert_eq!(a, b);
        // Node order in the input does not matter either.
        let mut reversed = ns.clone();
        reversed.reverse();
        assert_eq!(schedule(&reversed, &[], &reqs, &Policy::default()), a);
    }

    #[test]
    fn sampling_rotates_for_spread_and_starts_at_the_front_for_binpack() {
        let ns = nodes(1000, 4000, 8);
        let reqs: Vec<Request> = (0..1000)
            .map(|i| req(&format!("r{i}"), &format!("a{i}"), 1000, 1))
            .collect();
        let out = schedule(&ns, &[], &reqs, &Policy::default());
        assert_eq!(tally(on(&out)).len(), 1000, "one per node");
        let out = schedule(&ns, &[], &reqs[..40], &binpack());
        assert_eq!(tally(on(&out)).len(), 10, "four per node");
    }

    // ---- simulation ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.below(hi - lo + 1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    fn random_nodes(rng: &mut XorShift, n: usize, zones: u64) -> Vec<NodeInfo> {
        (0..n)
            .map(|i| {
                let mut l = vec![];
                let zone = format!("z{}", rng.below(zones));
                if !rng.chance(2) {
                    l.push((ZONE, zone.as_str()));
                }
                if rng.chance(30) {
                    l.push(("disk", "ssd"));
                }
                let mut node = node(
                    &format!("node-{i:05}"),
                    rng.range(2, 16) * 1000,
                    rng.range(4, 32),
                    &l,
                );
                node.alive = !rng.chance(3);
                node.schedulable = !rng.chance(3);
                node
            })
            .collect()
    }

    /// `deployments` workloads with random sizes and constraints, shuffled together.
    fn random_requests(
        rng: &mut XorShift,
        deployments: usize,
        max_replicas: u64,
        zones: u64,
    ) -> Vec<Request> {
        let mut all = Vec::new();
        for d in 0..deployments {
            let app = format!("dep-{d}");
            let cpu = rng.range(1, 20) * 50;
            let memory = rng.range(1, 16) * (128 << 20);
            let priority = rng.below(4) as i64;
            let kind = rng.below(10);
            let skew = rng.range(1, 2) as u32;
            let zone = format!("z{}", rng.below(zones));
            for i in 0..rng.range(1, max_replicas) {
                let mut r = req(&format!("{app}-{i}"), &app, cpu, 0);
                r.memory_bytes = memory;
                r.priority = priority;
                match kind {
                    0..=2 => r.spread = vec![spread(&app, ZONE, skew, true)],
                    3 | 4 => r.spread = vec![spread(&app, HOST, 1, false)],
                    5 => r.anti_affinity = vec![term(&app, HOST)],
                    6 => r.node_selector = labels(&[("disk", "ssd")]),
                    7 => {
                        r.node_selector = labels(&[(ZONE, &zone)]);
                        r.spread = vec![spread(&app, HOST, skew, true)];
                    }
                    8 => r.anti_affinity = vec![term(&app, ZONE)],
                    _ => {
                        let other = format!("dep-{}", d.saturating_sub(1));
                        r.affinity_preferred = vec![(100, term(&other, HOST))];
                        r.anti_affinity_preferred = vec![(20, term(&app, HOST))];
                    }
                }
                all.push(r);
            }
        }
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i as u64 + 1) as usize);
        }
        all
    }

    fn domain_of(node: &NodeInfo, key: &str) -> Option<String> {
        match node.labels.get(key) {
            Some(v) => Some(v.clone()),
            None if HOSTNAME_KEYS.contains(&key) => Some(format!("\0{}", node.name)),
            None => None,
        }
    }

    /// The filters written out naively from the raw lists: per node, whether `r` may go
    /// there, and whether it could after evicting every lower-priority instance.
    fn brute_force(
        ns: &[NodeInfo],
        state: &[Placed],
        r: &Request,
        policy: &Policy,
    ) -> Vec<(bool, bool)> {
        let by_name: HashMap<&str, &NodeInfo> = ns.iter().map(|n| (n.name.as_str(), n)).collect();
        let matching = |sel: &BTreeMap<String, String>, key: &str| {
            let mut m: HashMap<String, i64> = HashMap::new();
            for p in state.iter().filter(|p| subset(sel, &p.labels)) {
                if let Some(d) = domain_of(by_name[p.node.as_str()], key) {
                    *m.entry(d).or_default() += 1;
                }
            }
            m
        };
        let anti: Vec<_> = r
            .anti_affinity
            .iter()
            .map(|t| (t, matching(&t.selector, &t.topology_key)))
            .collect();
        let eligible =
            |n: &NodeInfo| n.alive && n.schedulable && subset(&r.node_selector, &n.labels);
        let hard: Vec<_> = r
            .spread
            .iter()
            .filter(|s| s.hard)
            .map(|s| {
                let counts = matching(&s.selector, &s.topology_key);
                let min = ns
                    .iter()
                    .filter(|n| eligible(n))
                    .filter_map(|n| domain_of(n, &s.topology_key))
                    .map(|d| counts.get(&d).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0);
                (s, counts, min)
            })
            .collect();
        ns.iter()
            .map(|n| {
                if !eligible(n) {
                    return (false, false);
                }
                for (t, m) in &anti {
                    if domain_of(n, &t.topology_key).is_some_and(|d| m.contains_key(&d)) {
                        return (false, false);
                    }
                }
                for (s, counts, min) in &hard {
                    let Some(d) = domain_of(n, &s.topology_key) else {
                        return (false, false);
                    };
                    let own = i64::from(subset(&s.selector, &r.labels));
                    let c = counts.get(&d).copied().unwrap_or(0);
                    if c + own - min > i64::from(s.max_skew) {
                        return (false, false);
                    }
                }
                let here: Vec<&Placed> = state.iter().filter(|p| p.node == n.name).collect();
                let fit = |list: &[&&Placed]| {
                    let cpu: u64 = list.iter().map(|p| p.cpu_millis).sum();
                    let mem: u64 = list.iter().map(|p| p.memory_bytes).sum();
                    cpu + r.cpu_millis + policy.reserved_cpu_millis <= n.cpu_millis
                        && mem + r.memory_bytes + policy.reserved_memory_bytes <= n.memory_bytes
                        && policy
                            .max_pods_per_node
                            .is_none_or(|m| (list.len() as u32) < m)
                };
                let all: Vec<&&Placed> = here.iter().collect();
                let kept: Vec<&&Placed> =
                    here.iter().filter(|p| p.priority >= r.priority).collect();
                (fit(&all), fit(&kept))
            })
            .collect()
    }

    fn to_placed(r: &Request, node: &str) -> Placed {
        Placed {
            key: r.key.clone(),
            node: node.into(),
            owner: r.owner.clone(),
            labels: r.labels.clone(),
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            priority: r.priority,
        }
    }

    /// Every decision checked against the naive filters on a small, crowded cluster with
    /// mixed priorities.
    #[test]
    fn simulation_small_cluster_matches_brute_force() {
        let mut rng = XorShift(0x5eed_0001);
        let ns = random_nodes(&mut rng, 200, 4);
        let reqs = random_requests(&mut rng, 60, 50, 4);
        let policy = Policy {
            strategy: Strategy::Spread,
            max_pods_per_node: Some(12),
            reserved_cpu_millis: 100,
            reserved_memory_bytes: 256 << 20,
        };
        let mut cluster = Cluster::new(&ns, &[]);
        let mut state: Vec<Placed> = Vec::new();
        let mut outcomes = Vec::new();
        let (mut placed, mut preempted, mut refused) = (0, 0, 0);
        for r in &reqs {
            let out = cluster.place(r, &policy);
            let check = brute_force(&ns, &state, r, &policy);
            let index = |name: &str| ns.iter().position(|n| n.name == name).unwrap();
            match &out {
                Outcome::Placed(node) => {
                    assert!(check[index(node)].0, "{} is not feasible on {node}", r.key);
                    state.push(to_placed(r, node));
                    placed += 1;
                }
                Outcome::Preempt { node, victims } => {
                    assert!(
                        check.iter().all(|c| !c.0),
                        "preempted though a node was free"
                    );
                    assert!(!victims.is_empty());
                    for v in victims {
                        let p = state.iter().find(|p| &p.key == v).expect("victim exists");
                        assert_eq!(&p.node, node);
                        assert!(p.priority < r.priority, "evicted equal or higher priority");
                    }
                    // Minimal: sparing any one victim would not leave room.
                    for spared in victims {
                        let partial: Vec<Placed> = state
                            .iter()
                            .filter(|p| p.key == *spared || !victims.contains(&p.key))
                            .cloned()
                            .collect();
                        assert!(!brute_force(&ns, &partial, r, &policy)[index(node)].0);
                    }
                    state.retain(|p| !victims.contains(&p.key));
                    assert!(brute_force(&ns, &state, r, &policy)[index(node)].0);
                    state.push(to_placed(r, node));
                    preempted += 1;
                }
                Outcome::Unschedulable(why) => {
                    assert!(
                        check.iter().all(|c| !c.0 && !c.1),
                        "{} refused ({why}) though a node was feasible",
                        r.key
                    );
                    refused += 1;
                }
            }
            outcomes.push(out);
        }
        assert!(
            placed > 500 && preempted > 5 && refused > 50,
            "{placed} {preempted} {refused}"
        );
        assert_eq!(schedule(&ns, &[], &reqs, &policy), outcomes);
    }

    /// Thousands of nodes, tens of thousands of requests at one priority (so nothing is
    /// evicted and the constraints must hold in the final state).
    #[test]
    fn simulation_large_cluster_keeps_the_invariants() {
        let mut rng = XorShift(0x5eed_0002);
        let zones = 8;
        let ns = random_nodes(&mut rng, 3000, zones);
        let mut reqs = random_requests(&mut rng, 700, 60, zones);
        for r in &mut reqs {
            r.priority = 0;
        }
        let policy = Policy {
            strategy: Strategy::Spread,
            max_pods_per_node: Some(20),
            reserved_cpu_millis: 250,
            reserved_memory_bytes: 512 << 20,
        };
        let out = schedule(&ns, &[], &reqs, &policy);
        let by_name: HashMap<&str, &NodeInfo> = ns.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut usage: HashMap<&str, (u64, u64, u32)> = HashMap::new();
        let mut final_state: Vec<(&Request, &NodeInfo)> = Vec::new();
        let mut refused = 0;
        for (r, o) in reqs.iter().zip(&out) {
            match o {
                Outcome::Placed(n) => {
                    let node = by_name[n.as_str()];
                    assert!(node.alive && node.schedulable);
                    assert!(
                        subset(&r.node_selector, &node.labels),
                        "selector of {}",
                        r.key
                    );
                    let u = usage.entry(n).or_default();
                    u.0 += r.cpu_millis;
                    u.1 += r.memory_bytes;
                    u.2 += 1;
                    final_state.push((r, node));
                }
                Outcome::Preempt { .. } => panic!("preemption at equal priority"),
                Outcome::Unschedulable(_) => refused += 1,
            }
        }
        assert!(
            final_state.len() > reqs.len() * 3 / 4,
            "{refused} of {} refused",
            reqs.len()
        );
        for (n, (cpu, mem, pods)) in &usage {
            let node = by_name[n];
            assert!(
                cpu + policy.reserved_cpu_millis <= node.cpu_millis,
                "{n} cpu"
            );
            assert!(
                mem + policy.reserved_memory_bytes <= node.memory_bytes,
                "{n} memory"
            );
            assert!(*pods <= 20, "{n} pods");
        }
        let mut by_app: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
        for (r, node) in &final_state {
            by_app
                .entry(r.labels["app"].as_str())
                .or_default()
                .push(node);
        }
        let first: BTreeMap<&str, &Request> =
            reqs.iter().map(|r| (r.labels["app"].as_str(), r)).collect();
        for (app, placed_on) in &by_app {
            let r = first[app];
            for t in &r.anti_affinity {
                let domains: Vec<_> = placed_on
                    .iter()
                    .filter_map(|n| domain_of(n, &t.topology_key))
                    .collect();
                let distinct: std::collections::BTreeSet<_> = domains.iter().collect();
                assert_eq!(
                    distinct.len(),
                    domains.len(),
                    "{app}: anti-affinity violated"
                );
            }
            for s in r.spread.iter().filter(|s| s.hard) {
                let mut counts: BTreeMap<String, u32> = ns
                    .iter()
                    .filter(|n| n.alive && n.schedulable && subset(&r.node_selector, &n.labels))
                    .filter_map(|n| domain_of(n, &s.topology_key))
                    .map(|d| (d, 0))
                    .collect();
                for n in placed_on {
                    *counts
                        .get_mut(&domain_of(n, &s.topology_key).expect("has the key"))
                        .expect("an eligible domain") += 1;
                }
                let max = counts.values().max().unwrap();
                let min = counts.values().min().unwrap();
                assert!(
                    max - min <= s.max_skew,
                    "{app}: skew {max}-{min} > {}",
                    s.max_skew
                );
            }
        }
    }
}
