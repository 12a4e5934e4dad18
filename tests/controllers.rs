//! Controllers with real containers: replicas spread over agents on separate test hosts
//! (network namespaces) and come back after a node is killed; a rollout to a revision
//! that never gets ready stops at maxUnavailable and is rolled back. Root only; skips
//! loudly elsewhere (a failure under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{eventually, netns::TestNet, Cluster, TestNode, BIN, FAST_CLUSTER};
use serde_json::Value;

fn deployment(name: &str, replicas: u32, extra_spec: &str, container: &str) -> String {
    format!(
        r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
{extra_spec}  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
{container}"#
    )
}

const HTTP: &str = r#"      - name: http
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        resources: {requests: {cpu: 50m, memory: 16Mi}}
        readinessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 1}
"#;

fn instances(api: &common::Api, app: &str) -> Vec<Value> {
    let (_, v) = api.get(&format!(
        "/v1/namespaces/default/instances?labelSelector=app%3D{app}"
    ));
    v["items"].as_array().cloned().unwrap_or_default()
}

fn ready_count(api: &common::Api, name: &str) -> i64 {
    let (_, d) = api.get(&format!("/v1/namespaces/default/deployments/{name}"));
    d["status"]["readyReplicas"].as_i64().unwrap_or(0)
}

/// Every container the nodes ran is removed when the test ends, pass or fail.
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.0 {
            common::remove_containers(d);
        }
    }
}

#[test]
fn replicas_spread_over_agents_and_return_after_a_node_is_killed() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(net) = TestNet::new(3) else { return };
    let config = format!("roles = [\"auto\"]\n{FAST_CLUSTER}");
    let mut c = Cluster::start_on(3, &config, Some(&net));
    let _cleanup = Cleanup(c.nodes.iter().map(|n| n.dir.clone()).collect());
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    let api = c.nodes[0].api();
    let (code, body) = api.apply(&deployment("web", 6, "", HTTP));
    assert_eq!(code, 200, "{body}");
    let spread = eventually(Duration::from_secs(90), || {
        (ready_count(&api, "web") == 6).then(|| {
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for i in instances(&api, "web") {
                *per.entry(i["status"]["node"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
            per
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "6 replicas never ready: {:#}",
            Value::Array(instances(&api, "web"))
        )
    });
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{spread:?}"
    );

    // Kill a node that is not the one we talk to; its two replicas move.
    let victim = 2;
    let victim_name = c.nodes[victim].name.clone();
    let stale = common::containers(&c.nodes[victim].dir);
    assert_eq!(stale.len(), 2, "{stale:?}");
    let t = Instant::now();
    c.nodes[victim].kill9();
    let back = eventually(Duration::from_secs(60), || {
        let moved = instances(&api, "web")
            .iter()
            .all(|i| i["status"]["node"] != victim_name.as_str() && i["status"]["ready"] == true);
        (moved && ready_count(&api, "web") == 6).then(|| t.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "replicas not restored: {:#}",
            Value::Array(instances(&api, "web"))
        )
    });
    eprintln!("node kill -> 6/6 ready again on the survivors in {back:?}");
    let (ok, events, _) = c.nodes[0].cli(&["get", "events"]);
    assert!(ok && events.contains("NodeLost"), "{events}");

    // The node returns: its stale containers (the replaced instances) are stopped. It
    // may be given new instances right away; those have new container ids.
    c.nodes[victim].restart();
    eventually(Duration::from_secs(60), || {
        let now = common::containers(&c.nodes[victim].dir);
        (!now.iter().any(|id| stale.contains(id))).then_some(())
    })
    .expect("the returning node removes its stale instances");
    eventually(Duration::from_secs(60), || {
        (ready_count(&api, "web") == 6).then_some(())
    })
    .expect("6 ready with the node back");
    assert_eq!(instances(&api, "web").len(), 6);
}

#[test]
fn a_rollout_that_never_gets_ready_stops_at_max_unavailable_and_rolls_back() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[network]\ncluster_cidr = \"10.81.0.0/16\"\nbridge = \"octctl1\"\n",
    )
    .unwrap();
    let node = TestNode::start_with(
        "rollout",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
    );
    let _cleanup = Cleanup(vec![node.dir.clone()]);
    common::images::import(&node.dir, &layout);
    let api = node.api();
    let strategy = "  progressDeadlineSeconds: 12\n  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n";
    let (code, body) = api.apply(&deployment("roll", 4, strategy, HTTP));
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(60), || {
        (ready_count(&api, "roll") == 4).then_some(())
    })
    .expect("4 ready");

    // busybox serves no /health: the new revision never becomes ready.
    let broken = r#"      - name: http
        image: busybox:latest
        command: [sleep, "600"]
        readinessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 1}
"#;
    let (code, body) = api.apply(&deployment("roll", 4, strategy, broken));
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let list = instances(&api, "roll");
        let ready = list.iter().filter(|i| i["status"]["ready"] == true).count();
        assert!(
            list.len() <= 5,
            "more than replicas + maxSurge: {}",
            list.len()
        );
        assert!(
            ready >= 3,
            "availability fell below replicas - maxUnavailable: {ready}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, out, err) = node.cli(&["rollout", "history", "deployment/roll"]);
    assert!(
        ok && out.contains("busybox:latest") && out.contains("toolbox:latest"),
        "{out}{err}"
    );

    // Past progressDeadlineSeconds: rolled back to the toolbox revision, all ready again.
    let rolled = eventually(Duration::from_secs(60), || {
        let (_, d) = api.get("/v1/namespaces/default/deployments/roll");
        let image = d["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        // One snapshot: the status checked below is the one that counted 4 ready.
        let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
        (image == "toolbox:latest" && ready == 4).then_some(d)
    })
    .expect("rolled back and ready");
    assert_eq!(rolled["status"]["condition"], "Complete", "{rolled}");
    let (ok, described, _) = node.cli(&["describe", "deployment/roll"]);
    assert!(ok && described.contains("RolledBack"), "{described}");
    eventually(Duration::from_secs(30), || {
        instances(&api, "roll")
            .iter()
            .all(|i| i["spec"]["pod"]["containers"][0]["image"] == "toolbox:latest")
            .then_some(())
    })
    .expect("only the good revision remains");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "octctl1"])
        .output();
}

#[test]
fn a_statefulset_starts_in_order_and_keeps_names_and_data_after_its_node_dies() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(net) = TestNet::new(3) else { return };
    let config = format!("roles = [\"auto\"]\n{FAST_CLUSTER}");
    let mut c = Cluster::start_on(3, &config, Some(&net));
    let _cleanup = Cleanup(c.nodes.iter().map(|n| n.dir.clone()).collect());
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    let set = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: busybox:latest
        command: [sh, -c, "echo $HOSTNAME >> /data/log; sleep 1; touch /tmp/ready; exec sleep 600"]
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {resources: {requests: {storage: 1Gi}}}
"#;
    // Talk to node-1 and keep it alive; the replica to lose must live elsewhere.
    let api = c.nodes[0].api();
    assert_eq!(api.apply(set).0, 200);
    let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(90) {
        let list = instances(&api, "db");
        for i in &list {
            let name = i["metadata"]["name"].as_str().unwrap().to_string();
            if let std::collections::btree_map::Entry::Vacant(slot) = first_seen.entry(name.clone())
            {
                // OrderedReady: a new ordinal appears only when the one below is ready.
                let ordinal: usize = name.rsplit('-').next().unwrap().parse().unwrap();
                if ordinal > 0 {
                    let below = list
                        .iter()
                        .find(|o| o["metadata"]["name"] == format!("db-{}", ordinal - 1));
                    assert!(
                        below.is_some_and(|b| b["status"]["ready"] == true),
                        "{name} appeared before db-{} was ready",
                        ordinal - 1
                    );
                }
                slot.insert(Instant::now());
            }
        }
        if list.len() == 3 && list.iter().all(|i| i["status"]["ready"] == true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let names: Vec<&String> = first_seen.keys().collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    assert!(first_seen["db-0"] < first_seen["db-1"] && first_seen["db-1"] < first_seen["db-2"]);

    // Lose the node of a replica that is not on node-1.
    let victim_instance = instances(&api, "db")
        .into_iter()
        .find(|i| i["status"]["node"] != c.nodes[0].name.as_str())
        .expect("a replica on another node");
    let name = victim_instance["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let victim_node = victim_instance["status"]["node"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = c.nodes.iter().position(|n| n.name == victim_node).unwrap();
    std::thread::sleep(Duration::from_secs(5)); // a claim sync period has passed
    c.nodes[victim].kill9();
    let moved = eventually(Duration::from_secs(90), || {
        let v = instances(&api, "db")
            .into_iter()
            .find(|i| i["metadata"]["name"] == name.as_str())?;
        (v["status"]["ready"] == true && v["status"]["node"] != victim_node.as_str()).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "{name} did not come back: {:#}",
            Value::Array(instances(&api, "db"))
        )
    });
    let new_node = moved["status"]["node"].as_str().unwrap();
    let dir = &c.nodes.iter().find(|n| n.name == new_node).unwrap().dir;
    let log = std::fs::read_to_string(dir.join(format!("claims/default/data-{name}/log"))).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [name.as_str(), name.as_str()],
        "the claim came along: the first run's line, then the new one's"
    );
    assert_eq!(instances(&api, "db").len(), 3, "one instance per identity");
}

/// Running containers of `instance` on each node.
fn running(c: &Cluster, instance: &str) -> usize {
    c.nodes
        .iter()
        .map(|n| {
            let out = std::process::Command::new(BIN)
                .args(["__container", "list", "--root"])
                .arg(n.dir.join("containers"))
                .output()
                .unwrap();
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            list.as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    c["status"] == "running"
                        && c["id"]
                            .as_str()
                            .is_some_and(|id| id.starts_with(&format!("default.{instance}.")))
                })
                .count()
        })
        .sum()
}

#[test]
fn a_partitioned_statefulset_replica_is_fenced_before_it_runs_elsewhere() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(net) = TestNet::new(3) else { return };
    let config = format!("roles = [\"auto\"]\n{FAST_CLUSTER}");
    let c = Cluster::start_on(3, &config, Some(&net));
    let _cleanup = Cleanup(c.nodes.iter().map(|n| n.dir.clone()).collect());
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    let set = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: solo}
spec:
  replicas: 1
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox:latest, command: [sleep, "600"]}
"#;
    assert_eq!(c.nodes[0].api().apply(set).0, 200);
    let placed = eventually(Duration::from_secs(60), || {
        let i = instances(&c.nodes[0].api(), "solo").into_iter().next()?;
        (i["status"]["ready"] == true).then(|| i["status"]["node"].as_str().unwrap().to_string())
    })
    .expect("solo-0 ready");
    let x = c.nodes.iter().position(|n| n.name == placed).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != x).collect();
    let api = c.nodes[others[0]].api();

    // Cut the replica's node off. It must stop the replica itself (no leader for 10 s)
    // before the majority starts it elsewhere (after 20 s down); never two at once.
    net.cut(&[x], &others);
    let t = Instant::now();
    let mut fenced_at = None;
    let moved = loop {
        let n = running(&c, "solo-0");
        assert!(n <= 1, "two solo-0 running at once after {:?}", t.elapsed());
        if fenced_at.is_none() && n == 0 {
            fenced_at = Some(t.elapsed());
        }
        let elsewhere = instances(&api, "solo")
            .into_iter()
            .find(|i| i["status"]["ready"] == true && i["status"]["node"] != placed.as_str());
        if let Some(i) = elsewhere {
            break i;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "solo-0 never moved");
        std::thread::sleep(Duration::from_millis(200));
    };
    let fenced_at = fenced_at.expect("the partitioned node stopped its replica first");
    eprintln!(
        "fenced after {fenced_at:?}; running on {} after {:?}",
        moved["status"]["node"],
        t.elapsed()
    );
    assert!(
        fenced_at < Duration::from_secs(20),
        "fenced at {fenced_at:?}"
    );
    net.heal();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running(&c, "solo-0"), 1, "one after the partition heals");
}
