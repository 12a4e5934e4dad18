//! API benchmark with real nodes: apply throughput and latency (p50/p99), sequential and
//! with concurrent clients, on one node and on a 3-node cluster (through the leader and
//! through a follower), and a node's idle RSS.
//!
//! Run: `cargo bench --bench api` (release build of the node). Env: `BENCH_WRITES`
//! (default 2000), `BENCH_CLIENTS` (default 8).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{fixture, TestNode};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn run(node: &TestNode, clients: usize, writes: usize, tag: &str) {
    // replicas 0: the API path itself, not the controllers' fan-out into instances.
    let template = fixture("deployment.yaml").replace("replicas: 10", "replicas: 0");
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let api = node.api();
            let template = template.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(writes / clients);
                for i in 0..writes / clients {
                    let body = template.replace("web-frontend", &format!("{tag}-{c}-{i}"));
                    let t = Instant::now();
                    let (status, resp) = api.apply(&body);
                    lat.push(t.elapsed());
                    assert_eq!(status, 200, "{resp}");
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    lat.sort();
    println!(
        "apply, {clients:>2} client(s): {:>6.0} writes/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} writes)",
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.len()
    );
}

/// Server-side view from the `/metrics` histogram: the upper bound of the bucket holding
/// the given quantile of `POST /v1/apply` requests.
fn server_quantile(node: &TestNode, q: f64) -> String {
    let (_, text) = node.api().raw_get("/metrics");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("api_request_duration_seconds_bucket")
                && l.contains("route=\"/v1/apply\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    let le = buckets
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map(|b| b.0)
        .unwrap_or(f64::NAN);
    format!("<= {:.1} ms", le * 1e3)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let writes: usize = std::env::var("BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let node = TestNode::start("bench");
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "idle RSS (fresh node): {:.1} MiB",
        rss_kib(node.pid()) as f64 / 1024.0
    );
    run(&node, 1, writes / 4, "seq");
    run(&node, clients, writes, "par");
    println!(
        "server-side (all applies, /metrics buckets): p50 {}   p99 {}",
        server_quantile(&node, 0.5),
        server_quantile(&node, 0.99)
    );
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "RSS after {} objects: {:.1} MiB",
        writes + writes / 4,
        rss_kib(node.pid()) as f64 / 1024.0
    );
    drop(node);

    // The DESIGN target is for a 3-node cluster: writes through the leader and through a
    // follower (forwarded), each a Raft round trip to a quorum.
    let cluster = common::Cluster::start(3, "");
    let voters = || {
        let (_, st) = cluster.nodes[0].api().get("/v1/cluster/status");
        st["roles"]["orchestrators"]["voters"].as_u64().unwrap_or(0)
    };
    assert!(
        common::eventually(Duration::from_secs(30), || (voters() == 3).then_some(())).is_some()
    );
    let leader = cluster.leader(0).expect("a leader");
    let follower = (leader + 1) % 3;
    println!("3-node cluster:");
    run(&cluster.nodes[leader], 1, writes / 4, "c-leader");
    run(&cluster.nodes[follower], 1, writes / 4, "c-follower");
    run(&cluster.nodes[follower], clients, writes, "c-par");
}
