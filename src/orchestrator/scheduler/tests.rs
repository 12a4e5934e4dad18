//! Unit tests: small hand-built clusters, one behaviour each. The helpers are shared with
//! the simulation tests (`sim.rs`).

use std::collections::BTreeMap;

use super::*;

const GIB: u64 = 1 << 30;
pub(super) const HOST: &str = "kubernetes.io/hostname";
pub(super) const ZONE: &str = "topology.kubernetes.io/zone";

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn node(name: &str, cpu: u64, memory_gib: u64, l: &[(&str, &str)]) -> NodeInfo {
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

pub(super) fn req(key: &str, app: &str, cpu: u64, memory_gib: u64) -> Request {
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

pub(super) fn term(app: &str, key: &str) -> Term {
    Term {
        selector: labels(&[("app", app)]),
        topology_key: key.into(),
    }
}

pub(super) fn spread(app: &str, key: &str, max_skew: u32, hard: bool) -> Spread {
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
            "0/4 nodes are available: 2 not alive, 1 unschedulable, 1 insufficient memory.".into()
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
            "0/5 nodes are available: 3 node selector mismatch, 2 anti-affinity conflict.".into()
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
