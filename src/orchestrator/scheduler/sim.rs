//! Simulation tests: random clusters and workloads, every decision checked against the
//! filters written out naively, and the invariants checked on thousands of nodes.

use std::collections::{BTreeMap, HashMap};

use super::state::subset;
use super::tests::{labels, node, req, spread, term, HOST, ZONE};
use super::*;

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
    let eligible = |n: &NodeInfo| n.alive && n.schedulable && subset(&r.node_selector, &n.labels);
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
            let kept: Vec<&&Placed> = here.iter().filter(|p| p.priority >= r.priority).collect();
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
