//! The cluster autoscaler with real processes: a node with the orchestrator and director
//! roles (no agent), so a Deployment's instances are unschedulable. A ClusterAutoscaler
//! with one node group and a NodeClass then asks the director for worker VMs: each a real
//! `omnicloud __vmm run` process booting the purpose-built test guest as the "worker image"
//! (it is not Linux, so no agent joins: the workers stay booting). The test checks the
//! VirtualMachines (NodeClass size, labels), the VMM processes and their join command
//! line, maxSize, the events and metrics; then, with the Deployment gone, the workers are
//! removed after emptyTime and their processes end. A second test runs a
//! PredictiveBootstrapScaler whose window is open now.
//! Without /dev/kvm, gcc or ld the first test skips loudly (fails under
//! OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::time::{Duration, Instant};

use common::vms::{alive, vmm_processes, KillVmms};
use common::{eventually, TestNode};
use serde_json::Value;

const BRIDGE: &str = "ocabr0";

/// The worker VirtualMachines of the ClusterAutoscaler `main`.
fn workers(node: &TestNode) -> Vec<Value> {
    let (code, v) = node.api().get(
        "/v1/namespaces/default/virtualmachines?labelSelector=omnicloud.io/cluster-autoscaler%3Dmain",
    );
    assert_eq!(code, 200, "{v}");
    let mut list: Vec<Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["metadata"]["labels"]["omnicloud.io/cluster-autoscaler"] == "main")
        .cloned()
        .collect();
    list.sort_by_key(|vm| vm["metadata"]["name"].as_str().unwrap_or("").to_string());
    list
}

fn instance(node: &TestNode, name: &str) -> Value {
    node.api()
        .get(&format!("/v1/namespaces/default/instances/{name}"))
        .1
}

fn history(node: &TestNode) -> Vec<Value> {
    let (ok, out, err) = node.cli(&["scaling", "history", "--output", "json"]);
    assert!(ok, "scaling history: {err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn with_reason<'a>(events: &'a [Value], reason: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["spec"]["reason"] == reason)
        .collect()
}

const SETUP: &str = r#"apiVersion: omnicloud.io/v1
kind: NodeClass
metadata: {name: small}
spec:
  resources: {cpu: 1, memory: 32Mi}
  labels: {node-type: small}
---
apiVersion: omnicloud.io/v1
kind: ClusterAutoscaler
metadata: {name: main}
spec:
  nodeGroups:
  - name: gp
    nodeClass: small
    minSize: 0
    maxSize: 2
    scalingPolicy:
      scaleUp: {decisionTime: 2s}
      scaleDown: {emptyTime: 3s, cooldown: 1s}
"#;

const WEB: &str = r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: busybox
        resources: {requests: {cpu: 800m, memory: 16Mi}}
"#;

#[test]
fn unschedulable_instances_get_worker_vms_within_max_and_empty_workers_go() {
    let Some(guest) = common::guest::elf() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The test guest has no use for an initramfs; the VMM loads this one all the same.
    let initrd = tmp.path().join("initrd.img");
    std::fs::write(&initrd, vec![0u8; 4096]).unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nusage_report_ms = 500\n[autoscaler]\nsync_period_ms = 500\n\
             [network]\ncluster_cidr = \"10.123.0.0/16\"\nbridge = \"{BRIDGE}\"\n\
             [director]\nworker_kernel = \"{}\"\nworker_initrd = \"{}\"\nworker_cmdline = \"omnicloud.hold\"\n",
            guest.display(),
            initrd.display()
        ),
    )
    .unwrap();
    let node = TestNode::start_with(
        "ca1",
        &[
            "--roles",
            "orchestrator,director",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let _cleanup = KillVmms {
        dir: node.dir.clone(),
        links: vec![BRIDGE.to_string()],
    };
    for doc in [SETUP, WEB] {
        let (code, body) = node.api().apply(doc);
        assert_eq!(code, 200, "{body}");
    }

    // No agent: the three instances wait Unschedulable.
    let pending = eventually(Duration::from_secs(15), || {
        let inst = instance(&node, "web-0");
        (inst["status"]["reason"] == "Unschedulable").then_some(inst)
    });
    assert!(
        pending.is_some(),
        "web-0 never unschedulable: {}",
        node.log()
    );

    // After decisionTime: two workers (three 800m instances need three 1-cpu workers;
    // maxSize is 2), each a VirtualMachine of the NodeClass size.
    let made = eventually(Duration::from_secs(60), || {
        let w = workers(&node);
        (w.len() == 2).then_some(w)
    })
    .unwrap_or_else(|| panic!("no two worker VMs: {:?}\n{}", workers(&node), node.log()));
    let names: Vec<&str> = made
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gp-0", "gp-1"]);
    for w in &made {
        assert_eq!(w["spec"]["worker"], true, "{w}");
        assert_eq!(w["spec"]["cpu"]["cores"], 1, "{w}");
        assert_eq!(w["spec"]["memory"]["guest"], "32Mi", "{w}");
        assert_eq!(w["metadata"]["labels"]["omnicloud.io/node-group"], "gp");
        assert_eq!(w["metadata"]["labels"]["omnicloud.io/node-class"], "small");
        assert!(w["metadata"]["annotations"]["omnicloud.io/requested-at"].is_string());
    }

    // Each worker runs as a real VMM process booting the worker image with the join
    // address of this cluster; the guest's node name is the instance name.
    let pids = eventually(Duration::from_secs(60), || {
        let pids: Vec<i64> = ["gp-0-0", "gp-1-0"]
            .iter()
            .filter_map(|n| {
                let i = instance(&node, n);
                (i["status"]["phase"] == "Running").then(|| i["status"]["pid"].as_i64())?
            })
            .collect();
        (pids.len() == 2).then_some(pids)
    })
    .unwrap_or_else(|| {
        panic!(
            "worker VMs not running: {}\n{}\n{}",
            instance(&node, "gp-0-0"),
            instance(&node, "gp-1-0"),
            node.log()
        )
    });
    let running = vmm_processes(&node.dir);
    for pid in &pids {
        assert!(running.contains(pid), "{pid} not among {running:?}");
    }
    for name in ["gp-0-0", "gp-1-0"] {
        let spec_path = node.dir.join(format!("vms/default/{name}/spec.json"));
        let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
        assert_eq!(spec["kernel"], guest.to_str().unwrap());
        assert_eq!(spec["vcpus"], 1);
        assert_eq!(spec["memory_mib"], 32);
        let cmdline = spec["cmdline"].as_str().unwrap();
        for want in [
            format!("omnicloud.name={name}"),
            "omnicloud.roles=agent".to_string(),
            format!("omnicloud.join={}", node.gossip),
            "omnicloud.hold".to_string(),
        ] {
            assert!(cmdline.contains(&want), "{want} not in {cmdline}");
        }
    }

    // maxSize holds while the third instance still waits: never a third worker.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let n = workers(&node).len();
        assert_eq!(n, 2, "maxSize 2 exceeded: {:?}", workers(&node));
        std::thread::sleep(Duration::from_millis(250));
    }

    // Every decision is an event in `scaling history`, with its inputs.
    let events = history(&node);
    let up = with_reason(&events, "TriggeredScaleUp");
    assert!(!up.is_empty(), "{events:?}");
    let msg = up[0]["spec"]["message"].as_str().unwrap();
    assert!(msg.contains("NodeClass small"), "{msg}");
    assert!(msg.contains("decisionTime"), "{msg}");
    assert_eq!(up[0]["spec"]["involvedObject"]["kind"], "ClusterAutoscaler");
    let limited = with_reason(&events, "ScaleUpLimited");
    assert!(
        limited
            .iter()
            .any(|e| e["spec"]["message"].as_str().unwrap().contains("maxSize 2")),
        "{events:?}"
    );
    let api = node.api();
    let provisioned = eventually(Duration::from_secs(10), || {
        api.metric("director_worker_provision_duration_seconds_count")
            .filter(|n| *n >= 2.0)
    });
    assert!(provisioned.is_some(), "two provisions timed");
    eprintln!(
        "worker provisioning (request -> VMM running), total of 2: {:?} s",
        api.metric("director_worker_provision_duration_seconds_sum")
    );
    assert!(
        api.metric("orchestrator_scaling_decisions_count_total{kind=\"ClusterAutoscaler\",reason=\"TriggeredScaleUp\"}")
            .is_some_and(|n| n >= 1.0)
    );

    // Nothing waits any more: after emptyTime both workers go, and their VMMs end.
    let (code, _) = node.api().delete("/v1/namespaces/default/deployments/web");
    assert_eq!(code, 200);
    let gone = eventually(Duration::from_secs(60), || {
        workers(&node).is_empty().then_some(())
    });
    assert!(gone.is_some(), "workers left: {:?}", workers(&node));
    let ended = eventually(Duration::from_secs(30), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(ended.is_some(), "worker VMMs still run: {pids:?}");
    let events = eventually(Duration::from_secs(10), || {
        let events = history(&node);
        (with_reason(&events, "ScaleDownEmpty").len() == 2).then_some(events)
    })
    .unwrap_or_else(|| panic!("two ScaleDownEmpty events: {:?}", history(&node)));
    let down = with_reason(&events, "ScaleDownEmpty");
    assert!(down.iter().all(|e| e["spec"]["message"]
        .as_str()
        .unwrap()
        .contains("emptyTime 3s")));
}

/// A schedule window open now: at its start the Deployment's replicas are set (the old
/// value kept in the status) and an event says so.
#[test]
fn a_schedule_window_sets_the_targets_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "[autoscaler]\nsync_period_ms = 500\n").unwrap();
    let node = TestNode::start_with(
        "sched1",
        &[
            "--roles",
            "orchestrator",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let web = WEB.replace("replicas: 3", "replicas: 1");
    let (code, body) = node.api().apply(&web);
    assert_eq!(code, 200, "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minute = |m: u64| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    let today = now / 60 % 1440;
    let pbs = format!(
        r#"apiVersion: omnicloud.io/v1
kind: PredictiveBootstrapScaler
metadata: {{name: ramp}}
spec:
  schedule:
  - timeStart: "{}"
    timeEnd: "{}"
    description: test window
    bootstrapAction:
      targets: [{{kind: Deployment, name: web, replicas: 4}}]
"#,
        minute(today + 1440 - 2),
        minute(today + 30)
    );
    let (code, body) = node.api().apply(&pbs);
    assert_eq!(code, 200, "{body}");
    let scaled = eventually(Duration::from_secs(20), || {
        let (_, d) = node.api().get("/v1/namespaces/default/deployments/web");
        (d["spec"]["replicas"] == 4).then_some(d)
    });
    assert!(scaled.is_some(), "web not set to 4: {}", node.log());
    // The status is the next write of the same sync.
    let p = eventually(Duration::from_secs(10), || {
        let (_, p) = node.api().get("/v1/predictivebootstrapscalers/ramp");
        p["status"]["active"][0].is_object().then_some(p)
    })
    .unwrap_or_else(|| panic!("no active window in the status: {}", node.log()));
    let active = &p["status"]["active"][0];
    assert_eq!(active["name"], "Deployment/default/web", "{p}");
    assert_eq!(active["saved"], 1, "{p}");
    // Events follow the sync's other writes.
    let msg = eventually(Duration::from_secs(10), || {
        let events = history(&node);
        let set = with_reason(&events, "ScheduledRescale");
        (set.len() == 1).then(|| set[0]["spec"]["message"].as_str().unwrap().to_string())
    })
    .unwrap_or_else(|| panic!("one ScheduledRescale event: {:?}", history(&node)));
    assert!(msg.contains("replicas 1 -> 4"), "{msg}");
    assert!(msg.contains("test window"), "{msg}");
}
