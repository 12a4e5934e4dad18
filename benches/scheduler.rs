//! Scheduler throughput: 5,000 simulated nodes in 10 zones, 100,000 instances of 500
//! Deployments (a mix of hard zone spread, soft host spread, node selectors and plain ones)
//! placed in batches of 1,000 into one `Cluster`, as the leader keeps it between passes.
//! Prints placements per second (median of 5 runs) and the cost of rebuilding the state
//! from every placed instance, which `schedule()` pays on each call.
//!
//! Run: `cargo bench --bench scheduler`. Under `cargo test` it is a smoke run (500 nodes,
//! 5,000 instances, one run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use omnicloud::orchestrator::scheduler::{
    Cluster, NodeInfo, Outcome, Placed, Policy, Request, Spread, Strategy,
};

const ZONE: &str = "topology.kubernetes.io/zone";
const HOST: &str = "kubernetes.io/hostname";
const GIB: u64 = 1 << 30;

/// xorshift64: the same cluster and workloads on every run.
struct Rng(u64);

impl Rng {
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn nodes(n: usize, rng: &mut Rng) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let zone = format!("zone-{}", i % 10);
            let name = format!("node-{i:05}");
            let mut l = vec![(ZONE, zone.as_str()), (HOST, name.as_str())];
            if rng.range(0, 9) < 3 {
                l.push(("disk", "ssd"));
            }
            NodeInfo {
                labels: labels(&l),
                name: name.clone(),
                alive: true,
                schedulable: true,
                cpu_millis: rng.range(16, 64) * 1000,
                memory_bytes: rng.range(32, 256) * GIB,
            }
        })
        .collect()
}

/// Deployment after deployment, each with its replicas in order.
fn requests(deployments: usize, replicas: usize, rng: &mut Rng) -> Vec<Request> {
    let mut all = Vec::with_capacity(deployments * replicas);
    for d in 0..deployments {
        let app = format!("web-{d}");
        let selector = labels(&[("app", &app)]);
        let zone_spread = Spread {
            max_skew: 1,
            topology_key: ZONE.into(),
            hard: true,
            selector: selector.clone(),
        };
        let host_spread = Spread {
            max_skew: 1,
            topology_key: HOST.into(),
            hard: false,
            selector: selector.clone(),
        };
        let ssd = labels(&[("disk", "ssd")]);
        let (node_selector, spread) = match d % 10 {
            0..=3 => (BTreeMap::new(), vec![zone_spread]),
            4 | 5 => (BTreeMap::new(), vec![host_spread]),
            6 | 7 => (ssd, vec![]),
            8 => (ssd, vec![zone_spread]),
            _ => (BTreeMap::new(), vec![]),
        };
        let cpu = rng.range(1, 10) * 50;
        let memory = rng.range(1, 8) * (128 << 20);
        for i in 0..replicas {
            all.push(Request {
                key: format!("default/{app}-{i}"),
                owner: format!("default/Deployment/{app}"),
                labels: selector.clone(),
                cpu_millis: cpu,
                memory_bytes: memory,
                node_selector: node_selector.clone(),
                spread: spread.clone(),
                ..Request::default()
            });
        }
    }
    all
}

/// Places every batch into one fresh cluster; returns the time and the final placement.
fn run(nodes: &[NodeInfo], batches: &[&[Request]], policy: &Policy) -> (Duration, Vec<Placed>) {
    let mut cluster = Cluster::new(nodes, &[]);
    let mut outcomes = Vec::new();
    let start = Instant::now();
    for batch in batches {
        for r in *batch {
            outcomes.push(cluster.place(r, policy));
        }
    }
    let elapsed = start.elapsed();
    black_box(&cluster);
    let placed = batches
        .iter()
        .flat_map(|b| b.iter())
        .zip(outcomes)
        .filter_map(|(r, o)| match o {
            Outcome::Placed(node) => Some(Placed {
                key: r.key.clone(),
                node,
                owner: r.owner.clone(),
                labels: r.labels.clone(),
                cpu_millis: r.cpu_millis,
                memory_bytes: r.memory_bytes,
                priority: r.priority,
            }),
            _ => None,
        })
        .collect();
    (elapsed, placed)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (node_count, deployments, replicas, runs) = if smoke {
        (500, 50, 100, 1)
    } else {
        (5000, 500, 200, 5)
    };
    let mut rng = Rng(0x5c4e_d01e);
    let nodes = nodes(node_count, &mut rng);
    let requests = requests(deployments, replicas, &mut rng);
    let batches: Vec<&[Request]> = requests.chunks(1000).collect();
    let policy = Policy {
        strategy: Strategy::Spread,
        max_pods_per_node: Some(110),
        reserved_cpu_millis: 500,
        reserved_memory_bytes: GIB,
    };

    let mut rates = Vec::new();
    let mut placed = Vec::new();
    for _ in 0..runs {
        let (elapsed, p) = run(&nodes, &batches, &policy);
        rates.push(requests.len() as f64 / elapsed.as_secs_f64());
        placed = p;
    }
    assert_eq!(
        placed.len(),
        requests.len(),
        "every instance fits this cluster"
    );
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "scheduler: {node_count} nodes, {} instances: {median:.0} placements/s (median of {runs}), \
         {:.1} us/placement",
        requests.len(),
        1e6 / median
    );

    let start = Instant::now();
    black_box(Cluster::new(&nodes, &placed));
    println!(
        "scheduler: rebuilding the state from {} placed instances (what schedule() does per \
         call): {:.0} ms",
        placed.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
}
