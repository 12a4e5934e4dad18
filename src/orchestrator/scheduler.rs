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
//! (from a label -> instances index) and then kept up to date on every placement or
//! eviction, so no placement rescans the placed instances.
//!
//! Differences from Kubernetes worth knowing: spread domains are those of nodes that are
//! alive, schedulable and match the request's node selector, and a domain counts matching
//! instances on all of its nodes; existing instances' own anti-affinity terms are not known
//! here (a [`Placed`] does not carry them), so anti-affinity is one-way.

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
    Preempt { node: String, victims: Vec<String> },
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
    inst_ids: HashMap<String, u32>,
    /// label key -> value -> live instances carrying it; finds the instances a new
    /// selector matches without a scan.
    postings: HashMap<String, HashMap<String, Vec<u32>>>,
    owners: HashMap<String, u32>,
    /// (owner, node) -> instances.
    owner_counts: FxMap<(u32, u32), u32>,
    topos: Vec<Topo>,
    topo_ids: HashMap<String, usize>,
    selectors: Vec<Selector>,
    selector_ids: HashMap<BTreeMap<String, String>, usize>,
    /// A selector is reached through its first pair only, so it is counted once.
    anchors: HashMap<String, HashMap<String, Vec<usize>>>,
    match_all: Vec<usize>,
    /// Per (selector, topology) index: matching instances per domain.
    counts: Vec<Vec<u32>>,
    index_topo: Vec<usize>,
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
    labels: BTreeMap<String, String>,
    cpu: u64,
    memory: u64,
    priority: i64,
}

/// A topology key's domains: per node a domain id or NO_DOMAIN.
#[derive(Clone, Debug)]
struct Topo {
    domain: Vec<u32>,
    domains: usize,
}

#[derive(Clone, Debug)]
struct Selector {
    labels: BTreeMap<String, String>,
    /// The count indexes using this selector (one per topology key).
    indexes: Vec<usize>,
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
            inst_ids: HashMap::with_capacity(placed.len()),
            postings: HashMap::new(),
            owners: HashMap::new(),
            owner_counts: FxMap::default(),
            topos: Vec::new(),
            topo_ids: HashMap::new(),
            selectors: Vec::new(),
            selector_ids: HashMap::new(),
            anchors: HashMap::new(),
            match_all: Vec::new(),
            counts: Vec::new(),
            index_topo: Vec::new(),
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
        self.add(Inst {
            key: p.key.clone(),
            node,
            owner,
            labels: p.labels.clone(),
            cpu: p.cpu_millis,
            memory: p.memory_bytes,
            priority: p.priority,
        });
        true
    }

    /// Forgets an instance (deleted or stopped); false if it is not known.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.inst_ids.get(key) {
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
            let victims = victims
                .into_iter()
                .map(|v| self.remove_id(v).key)
                .collect();
            self.add_request(req, n, prep.owner);
            return Outcome::Preempt {
                node: self.nodes[n as usize].name.clone(),
                victims,
            };
        }
        Outcome::Unschedulable(self.explain(req, &prep, policy))
    }

    fn add_request(&mut self, req: &Request, node: u32, owner: u32) {
        self.add(Inst {
            key: req.key.clone(),
            node,
            owner,
            labels: req.labels.clone(),
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
        *self.owner_counts.entry((inst.owner, inst.node)).or_default() += 1;
        for (k, v) in &inst.labels {
            let values = match self.postings.get_mut(k) {
                Some(values) => values,
                None => self.postings.entry(k.clone()).or_default(),
            };
            match values.get_mut(v) {
                Some(ids) => ids.push(id),
                None => {
                    values.insert(v.clone(), vec![id]);
                }
            }
        }
        self.count(&inst.labels, inst.node, true);
        self.inst_ids.insert(inst.key.clone(), id);
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
        for (k, v) in &inst.labels {
            if let Some(ids) = self.postings.get_mut(k).and_then(|m| m.get_mut(v)) {
                if let Some(i) = ids.iter().position(|&x| x == id) {
                    ids.swap_remove(i);
                }
            }
        }
        self.count(&inst.labels, inst.node, false);
        if self.inst_ids.get(&inst.key) == Some(&id) {
            self.inst_ids.remove(&inst.key);
        }
        inst
    }

    /// Adds (or takes away) an instance with `labels` on `node` to every count index
    /// whose selector it matches.
    fn count(&mut self, labels: &BTreeMap<String, String>, node: u32, up: bool) {
        let Cluster {
            anchors,
            match_all,
            selectors,
            counts,
            index_topo,
            topos,
            ..
        } = self;
        let mut visit = |s: usize| {
            let sel = &selectors[s];
            if !subset(&sel.labels, labels) {
                return;
            }
            for &i in &sel.indexes {
                let d = topos[index_topo[i]].domain[node as usize];
                if d != NO_DOMAIN {
                    let c = &mut counts[i][d as usize];
                    *c = if up { *c + 1 } else { c.saturating_sub(1) };
                }
            }
        };
        for &s in match_all.iter() {
            visit(s);
        }
        for (k, v) in labels {
            if let Some(list) = anchors.get(k).and_then(|m| m.get(v)) {
                for &s in list {
                    visit(s);
                }
            }
        }
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
        self.selectors.push(Selector {
            labels: labels.clone(),
            indexes: Vec::new(),
        });
        self.selector_ids.insert(labels.clone(), s);
        match labels.iter().next() {
            Some((k, v)) => self
                .anchors
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(s),
            None => self.match_all.push(s),
        }
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
        let topo = &self.topos[t];
        let mut counts = vec![0u32; topo.domains];
        for id in self.matching(selector) {
            let node = self.insts[id as usize].as_ref().expect("live").node;
            let d = topo.domain[node as usize];
            if d != NO_DOMAIN {
                counts[d as usize] += 1;
            }
        }
        let i = self.counts.len();
        self.counts.push(counts);
        self.index_topo.push(t);
        self.index_ids.insert((s, t), i);
        self.selectors[s].indexes.push(i);
        (t, i)
    }

    /// Live instances matching `selector`, found through its rarest label pair.
    fn matching(&self, selector: &BTreeMap<String, String>) -> Vec<u32> {
        if selector.is_empty() {
            return (0..self.insts.len() as u32)
                .filter(|&id| self.insts[id as usize].is_some())
                .collect();
        }
        let mut rarest: Option<&Vec<u32>> = None;
        for (k, v) in selector {
            match self.postings.get(k).and_then(|m| m.get(v)) {
                Some(ids) if rarest.is_none_or(|r| ids.len() < r.len()) => rarest = Some(ids),
                Some(_) => {}
                None => return Vec::new(),
            }
        }
        rarest
            .into_iter()
            .flatten()
            .copied()
            .filter(|&id| {
                self.insts[id as usize]
                    .as_ref()
                    .is_some_and(|i| subset(selector, &i.labels))
            })
            .collect()
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
            let better = best.as_ref().is_none_or(|(len, bp, bn, _)| {
                (victims.len(), top, n) < (*len, *bp, *bn)
            });
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
    (u128::from(used) * FULL as u128 / u128::from(cap)).min(FULL as u128) as i64
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
