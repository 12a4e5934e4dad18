//! Agent benchmark with real containers (root): container start latency through the
//! helper (create with its bridge address -> running, p50/p99), and a Deployment going
//! from 0 to N replicas ready on one node (time to first and to all ready).
//!
//! Run: `cargo bench --bench agent` (N = 100, 50 timed starts). Without `--bench` (as
//! `cargo test --all-targets` runs it) a smoke run: N = 3, 5 starts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{eventually, TestNode, BIN};
use omnicloud::container::network::{NodeNetwork, Subnet};
use omnicloud::container::{helper_command_with, ContainerSpec, Network, RunOutput, Verb};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn helper(root: &std::path::Path, verb: Verb, stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = helper_command_with(std::path::Path::new(BIN), root, &verb)
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sequential starts through the same helper the agent uses, each torn down after.
fn start_latency(layout: &std::path::Path, starts: usize) {
    omnicloud::container::runtime::become_subreaper().unwrap();
    let root = tempfile::tempdir().unwrap();
    let subnet = Subnet::parse("10.87.0.0/24").unwrap();
    let net = NodeNetwork::ensure("ocbench0", subnet, subnet).unwrap();
    let log = root.path().join("c.log");
    let mut lat = Vec::new();
    for i in 0..=starts {
        let id = format!("bench-{i}");
        let mut spec = ContainerSpec::new(&id, layout, "busybox", &log);
        spec.command = Some(vec!["sleep".into(), "60".into()]);
        spec.network = Network::Bridge {
            bridge: net.bridge.clone(),
            address: format!("10.87.0.{}/24", 10 + i % 200),
        };
        let json = serde_json::to_vec(&spec).unwrap();
        let t = Instant::now();
        let out = helper(root.path(), Verb::Run, Some(&json));
        let took = t.elapsed();
        let pid = serde_json::from_slice::<RunOutput>(&out).unwrap().pid;
        // The first start unpacks the image layers; it is reported apart.
        if i == 0 {
            println!(
                "container start, first (unpacks layers): {:.1} ms",
                ms(took)
            );
        } else {
            lat.push(took);
        }
        helper(root.path(), Verb::Delete { id, force: true }, None);
        let _ = omnicloud::container::runtime::try_reap(pid);
    }
    net.remove();
    lat.sort();
    println!(
        "container start (create + bridge address + start), {} runs: p50 {:.1} ms   p99 {:.1} ms",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
}

fn replicas_ready(layout: &std::path::Path, n: usize) {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[network]\ncluster_cidr = \"10.86.0.0/16\"\nnode_prefix = 22\nbridge = \"ocbench1\"\n",
    )
    .unwrap();
    let node = TestNode::start_with(
        "bench",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
    );
    common::images::import(&node.dir, layout);
    let manifest = format!(
        r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {{name: fleet}}
spec:
  replicas: {n}
  selector: {{matchLabels: {{app: fleet}}}}
  template:
    metadata: {{labels: {{app: fleet}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: http
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"#
    );
    let ready = || {
        let (_, d) = node.api().get("/v1/namespaces/default/deployments/fleet");
        d["status"]["readyReplicas"].as_u64().unwrap_or(0) as usize
    };
    let t = Instant::now();
    assert_eq!(node.api().apply(&manifest).0, 200);
    let first = eventually(Duration::from_secs(120), || {
        (ready() >= 1).then(|| t.elapsed())
    })
    .expect("a first replica ready");
    let all = eventually(Duration::from_secs(600), || {
        (ready() == n).then(|| t.elapsed())
    })
    .expect("every replica ready");
    println!(
        "0 -> {n} replicas on one node: first ready {:.2} s, all ready {:.2} s ({:.1} replicas/s)",
        first.as_secs_f64(),
        all.as_secs_f64(),
        n as f64 / all.as_secs_f64()
    );
    node.api()
        .delete("/v1/namespaces/default/deployments/fleet");
    let root = node.dir.join("containers");
    let gone = eventually(Duration::from_secs(120), || {
        let list = helper(&root, Verb::List, None);
        (list.starts_with(b"[]")).then_some(())
    });
    assert!(gone.is_some(), "containers left after the delete");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "ocbench1"])
        .output();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let Some(layout) = common::images::layout() else {
        return;
    };
    start_latency(&layout, if full { 50 } else { 5 });
    replicas_ready(&layout, if full { 100 } else { 3 });
}
