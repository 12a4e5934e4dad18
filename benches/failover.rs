//! Node failure with real containers: 3 agents on separate test hosts (network
//! namespaces), a Deployment of 6 replicas; kill -9 a node and time until all 6 are
//! running and ready again on the survivors (gossip detection + replacement + start),
//! then bring the node back. Default gossip settings (500 ms probes).
//!
//! Run: `cargo bench --bench failover` (10 kills, root). Without `--bench` (as
//! `cargo test --all-targets` runs it) one kill.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{eventually, netns::TestNet, Cluster};
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: fleet}
spec:
  replicas: 6
  selector: {matchLabels: {app: fleet}}
  template:
    metadata: {labels: {app: fleet}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox:latest, command: [sleep, "3600"]}
"#;

fn instances(api: &common::Api) -> Vec<Value> {
    let (_, v) = api.get("/v1/namespaces/default/instances?labelSelector=app%3Dfleet");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn all_ready_off(api: &common::Api, node: &str) -> bool {
    let list = instances(api);
    list.len() == 6
        && list
            .iter()
            .all(|i| i["status"]["ready"] == true && i["status"]["node"] != node)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let kills = if std::env::args().any(|a| a == "--bench") {
        10
    } else {
        1
    };
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(net) = TestNet::new(3) else { return };
    let mut c = Cluster::start_on(3, "roles = [\"auto\"]\n", Some(&net));
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    let api = c.nodes[0].api();
    assert_eq!(api.apply(DEPLOYMENT).0, 200);
    eventually(Duration::from_secs(120), || {
        all_ready_off(&api, "").then_some(())
    })
    .expect("6 ready");
    let mut times = Vec::new();
    for round in 0..kills {
        let victim = 1 + round % 2;
        let name = c.nodes[victim].name.clone();
        let t = Instant::now();
        c.nodes[victim].kill9();
        let took = eventually(Duration::from_secs(120), || {
            all_ready_off(&api, &name).then(|| t.elapsed())
        })
        .expect("replicas restored");
        times.push(took);
        c.nodes[victim].restart();
        eventually(Duration::from_secs(120), || {
            let members = c.members(0);
            let back = members.get(&name).map(String::as_str) == Some("alive");
            (back && common::containers(&c.nodes[victim].dir).is_empty()).then_some(())
        })
        .expect("the node is back and clean");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "node kill -> 6/6 replicas ready on the survivors, {} kills: median {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(*times.last().unwrap())
    );
    for n in &c.nodes {
        common::remove_containers(&n.dir);
    }
}
