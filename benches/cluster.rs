//! Cluster benchmark with real processes on loopback: time to form 20- and 50-node
//! clusters from one seed, failure detection after kill -9 (median, p99), and leader
//! failover (kill -9 of the leader until a write through a survivor succeeds).
//!
//! Run: `cargo bench --bench cluster`. Env: `BENCH_SIZES` (default "20,50"),
//! `BENCH_KILLS` (default 10). Under `cargo test` it is a 3-node smoke run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{eventually, fixture, TestNode};

fn alive_seen_by(node: &TestNode) -> usize {
    let (_, v) = node.api().get("/v1/nodes");
    v["items"]
        .as_array()
        .map(|a| a.iter().filter(|m| m["status"] == "alive").count())
        .unwrap_or(0)
}

fn status_of(node: &TestNode, name: &str) -> Option<String> {
    let (_, v) = node.api().get("/v1/nodes");
    v["items"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["status"].as_str().unwrap_or("").to_string())
}

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    format!(
        "median {:.0} ms, p99 {:.0} ms, max {:.0} ms (n={})",
        q(0.5),
        q(0.99),
        q(1.0),
        v.len()
    )
}

/// Seed first, then every joiner at once; returns the nodes and the formation time.
fn form(n: usize, config: &std::path::Path) -> (Vec<TestNode>, Duration) {
    let cfg = config.to_str().unwrap();
    let seed = TestNode::start_with("b-1", &["--config", cfg]);
    let token = std::fs::read_to_string(seed.dir.join("join.token"))
        .unwrap()
        .trim()
        .to_string();
    let start = Instant::now();
    let mut nodes = vec![seed];
    for i in 2..=n {
        let args = [
            "--config",
            cfg,
            "--join",
            &nodes[0].gossip,
            "--token",
            &token,
        ];
        nodes.push(TestNode::start_opts(&format!("b-{i}"), &args, false, None));
    }
    let formed = eventually(Duration::from_secs(120), || {
        (alive_seen_by(&nodes[0]) == n
            && alive_seen_by(&nodes[n - 1]) == n
            && alive_seen_by(&nodes[n / 2]) == n)
            .then_some(())
    });
    assert!(formed.is_some(), "{n} nodes did not converge");
    (nodes, start.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if smoke {
        vec![3]
    } else {
        std::env::var("BENCH_SIZES")
            .unwrap_or_else(|_| "20,50".into())
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    let kills: usize = if smoke {
        1
    } else {
        std::env::var("BENCH_KILLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
    };
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "").unwrap();

    for (round, &n) in sizes.iter().enumerate() {
        let (mut nodes, t) = form(n, config.path());
        println!(
            "formation, {n:>2} nodes on loopback: {:.0} ms (all joiners started at once)",
            t.as_secs_f64() * 1e3
        );
        if round > 0 {
            continue;
        }
        // Failure detection: kill -9 a non-seed node, time until the seed holds it down.
        let mut detect = Vec::new();
        for k in 0..kills {
            let victim = 1 + k % (n - 1);
            let name = nodes[victim].name.clone();
            let t = Instant::now();
            nodes[victim].kill9();
            let seen = eventually(Duration::from_secs(60), || {
                (status_of(&nodes[0], &name).as_deref() == Some("down")).then_some(())
            });
            assert!(seen.is_some(), "{name} never seen down");
            detect.push(t.elapsed());
            nodes[victim].restart();
            let back = eventually(Duration::from_secs(60), || {
                (status_of(&nodes[0], &name).as_deref() == Some("alive")).then_some(())
            });
            assert!(back.is_some(), "{name} never came back");
        }
        println!(
            "failure detection after kill -9 ({n} nodes, 500 ms probe): {}",
            quantiles(detect)
        );

        // Leader failover: kill -9 the leader, time until a write through a survivor commits.
        let mut failover = Vec::new();
        let body = fixture("deployment.yaml");
        for k in 0..kills.min(5) {
            let (_, st) = nodes[0].api().get("/v1/cluster/status");
            let leader_name = st["raft"]["leader"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let leader = nodes.iter().position(|n| n.name == leader_name).unwrap();
            let via = (leader + 1) % n;
            let t = Instant::now();
            nodes[leader].kill9();
            let name = format!("failover-{k}");
            let ok = eventually(Duration::from_secs(60), || {
                (nodes[via]
                    .api()
                    .apply(&body.replace("web-frontend", &name))
                    .0
                    == 200)
                    .then_some(())
            });
            assert!(ok.is_some(), "no write succeeded after killing the leader");
            failover.push(t.elapsed());
            nodes[leader].restart();
        }
        println!(
            "leader failover (kill -9 -> write through a survivor commits): {}",
            quantiles(failover)
        );
    }
}
