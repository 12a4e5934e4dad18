//! The scheduler's state: [`Cluster`] with its per-node aggregates, interned label sets
//! and the lazily built (selector, topology) count indexes, kept up to date on every
//! placement or eviction.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::{NodeInfo, Placed, Request, HOSTNAME_KEYS, NO_DOMAIN};

/// The scheduler's view of the cluster, updated by every decision. The leader may keep one
/// across batches (feeding it [`Cluster::insert`] and [`Cluster::remove`]) instead of
/// rebuilding it; the node set is fixed, so build a new one when nodes change.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Sorted by name: the index order is the tie-break order.
    pub(super) nodes: Vec<Node>,
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
    pub(super) owner_counts: FxMap<(u32, u32), u32>,
    topos: Vec<Topo>,
    topo_ids: HashMap<String, usize>,
    selectors: Vec<BTreeMap<String, String>>,
    selector_ids: HashMap<BTreeMap<String, String>, usize>,
    /// Per (selector, topology) index: matching instances per domain.
    counts: Vec<Vec<u32>>,
    index_topo: Vec<usize>,
    index_selector: Vec<usize>,
    index_ids: FxMap<(usize, usize), usize>,
    pub(super) filters: Vec<NodeFilter>,
    filter_ids: HashMap<BTreeMap<String, String>, usize>,
    /// Where the next `Spread` scan starts.
    pub(super) offset: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) alive: bool,
    pub(super) schedulable: bool,
    pub(super) cpu: u64,
    pub(super) memory: u64,
    pub(super) used_cpu: u64,
    pub(super) used_memory: u64,
    pub(super) pods: u32,
    pub(super) insts: Vec<u32>,
}

#[derive(Clone, Debug)]
pub(super) struct Inst {
    pub(super) key: String,
    node: u32,
    owner: u32,
    label_set: u32,
    pub(super) cpu: u64,
    pub(super) memory: u64,
    pub(super) priority: i64,
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
pub(super) struct NodeFilter {
    pub(super) eligible: Vec<u32>,
    domains: FxMap<usize, Vec<u32>>,
}

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

    pub(super) fn add_request(&mut self, req: &Request, node: u32, owner: u32) {
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

    pub(super) fn owner_id(&mut self, owner: &str) -> u32 {
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

    pub(super) fn remove_id(&mut self, id: u32) -> Inst {
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
    pub(super) fn index(
        &mut self,
        selector: &BTreeMap<String, String>,
        topology_key: &str,
    ) -> (usize, usize) {
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

    pub(super) fn filter(&mut self, selector: &BTreeMap<String, String>) -> usize {
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
    pub(super) fn spread_min(&mut self, f: usize, t: usize, index: usize) -> i64 {
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

    pub(super) fn domain_count(&self, topo: usize, index: usize, n: u32) -> Option<i64> {
        let d = self.topos[topo].domain[n as usize];
        (d != NO_DOMAIN).then(|| i64::from(self.counts[index][d as usize]))
    }

    pub(super) fn inst(&self, id: u32) -> &Inst {
        self.insts[id as usize].as_ref().expect("live instance")
    }
}

pub(super) fn subset(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// FxHash (as in rustc): the count maps are keyed by small integers, where SipHash's
/// DoS resistance buys nothing and costs most of a lookup.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FxHasher(u64);

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
