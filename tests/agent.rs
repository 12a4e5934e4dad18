//! The agent with real containers, as root: Deployments become running, reachable,
//! health-checked instances that restart by policy, keep their logs, and survive a kill -9
//! of the node process. Needs root and the test images; skips loudly elsewhere (and fails
//! under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, TestNode, BIN};
use serde_json::Value;

/// One node with containers at a time: they share the host's cgroups and iptables.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A node with the agent role, its own bridge and cluster CIDR, and on drop every
/// container it ran removed (containers outlive their node by design).
struct AgentNode {
    node: TestNode,
    bridge: String,
}

impl AgentNode {
    /// A single-node cluster with the test images imported.
    fn start(tag: u8) -> Option<AgentNode> {
        let layout = common::images::layout()?;
        let a = AgentNode::launch(tag, "agent", "auto", &[]);
        a.import(&layout);
        Some(a)
    }

    /// A node joining `seed`'s cluster with only the agent role (a Raft learner, never a
    /// voter), with an empty image store.
    fn join(tag: u8, name: &str, seed: &AgentNode) -> AgentNode {
        let token = seed.node.dir.join("join.token");
        AgentNode::launch(
            tag,
            name,
            "agent",
            &[
                "--join",
                &seed.node.gossip,
                "--token-file",
                token.to_str().unwrap(),
            ],
        )
    }

    fn launch(tag: u8, name: &str, roles: &str, extra: &[&str]) -> AgentNode {
        Self::launch_with(tag, name, roles, extra, "")
    }

    /// [`AgentNode::launch`] with more node config (TOML sections after the test's own).
    fn launch_with(tag: u8, name: &str, roles: &str, extra: &[&str], more: &str) -> AgentNode {
        let bridge = format!("octest{tag}");
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                // Names outside the cluster domain go to a closed loopback port, never to
                // the host's resolvers.
                "[network]\ncluster_cidr = \"10.{}.0.0/16\"\nbridge = \"{bridge}\"\ndns_upstreams = [\"127.0.0.1:9\"]\n[agent]\nusage_report_ms = 1000\n{more}",
                90 + tag
            ),
        )
        .unwrap();
        let mut args = vec![
            "--roles",
            roles,
            "--config",
            config.path().to_str().unwrap(),
        ];
        args.extend(extra);
        let node = TestNode::start_with(name, &args);
        std::mem::forget(config); // the node reads it again on restart
        AgentNode { node, bridge }
    }

    fn image_cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(BIN)
            .arg("image")
            .args(args)
            .env("OMNICLOUD_DATA_DIR", &self.node.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn import(&self, layout: &std::path::Path) {
        common::images::import(&self.node.dir, layout);
    }

    fn runtime_root(&self) -> PathBuf {
        self.node.dir.join("containers")
    }

    /// Container ids the runtime has under this node's root.
    fn containers(&self) -> Vec<String> {
        common::containers(&self.node.dir)
    }

    fn instance(&self, name: &str) -> Value {
        let (code, v) = self
            .node
            .api()
            .get(&format!("/v1/namespaces/default/instances/{name}"));
        if code == 200 {
            v
        } else {
            Value::Null
        }
    }

    fn instances(&self, owner: &str) -> Vec<Value> {
        let (_, v) = self.node.api().get(&format!(
            "/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3D{owner}"
        ));
        v["items"].as_array().cloned().unwrap_or_default()
    }

    fn ready(&self, deployment: &str) -> i64 {
        let (_, d) = self
            .node
            .api()
            .get(&format!("/v1/namespaces/default/deployments/{deployment}"));
        d["status"]["readyReplicas"].as_i64().unwrap_or(0)
    }

    fn wait_ready(&self, deployment: &str, n: i64, secs: u64) {
        let got = eventually(Duration::from_secs(secs), || {
            (self.ready(deployment) == n).then_some(())
        });
        if got.is_none() {
            panic!(
                "{deployment} never had {n} ready instances; instances: {:#}",
                Value::Array(self.instances(deployment))
            );
        }
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn web(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: http
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        ports: [{{name: http, containerPort: 8080}}]
        resources:
          requests: {{cpu: 100m, memory: 32Mi}}
          limits: {{cpu: "1", memory: 128Mi}}
        readinessProbe:
          httpGet: {{path: /health, port: http}}
          periodSeconds: 1
        livenessProbe:
          httpGet: {{path: /health, port: http}}
          periodSeconds: 1
          failureThreshold: 2
"#
    )
}

fn http_get(ip: &str, path: &str) -> Option<String> {
    ureq::get(&format!("http://{ip}:8080{path}"))
        .timeout(Duration::from_secs(2))
        .call()
        .ok()?
        .into_string()
        .ok()
}

fn pid_alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_deployment_runs_ready_reachable_restarts_and_cleans_up() {
    let _serial = serial();
    let Some(a) = AgentNode::start(1) else { return };
    let (code, body) = a.node.api().apply(&web("web", 3));
    assert_eq!(code, 200, "{body}");
    a.wait_ready("web", 3, 60);
    let (ok, table, _) = a.node.cli(&["get", "deployments"]);
    assert!(ok && table.contains("3/3"), "{table}");

    // Each instance answers on its own address, under its own hostname.
    let mut ips = Vec::new();
    for i in 0..3 {
        let inst = a.instance(&format!("web-{i}"));
        let ip = inst["status"]["ip"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.91."), "{inst}");
        let page = http_get(&ip, "/").expect("instance answers");
        assert!(page.contains(&format!("web-{i}")), "{page}");
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "stable, distinct addresses");
    let (ok, out, _) = a.node.cli(&["get", "instances", "-o", "wide"]);
    assert!(
        ok && out.contains("web-0") && out.contains("Running"),
        "{out}"
    );

    // Killing the container's process: restarted, the exit recorded.
    let before = a.instance("web-0");
    let pid = before["status"]["pid"].as_i64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let after = eventually(Duration::from_secs(30), || {
        let v = a.instance("web-0");
        (v["status"]["restarts"].as_u64() == Some(1) && v["status"]["ready"] == true).then_some(v)
    })
    .expect("web-0 restarted and ready again");
    // Usually the exit is seen first (SIGKILL: 137); on a loaded machine the liveness
    // probe may notice the dead server first. Either way it was restarted once.
    let last = &after["status"]["lastTermination"];
    assert!(
        last["exitCode"] == 137 || last["reason"] == "LivenessProbeFailed",
        "{after}"
    );
    assert_eq!(
        after["status"]["ip"], before["status"]["ip"],
        "the address is kept"
    );
    assert_ne!(after["status"]["pid"], before["status"]["pid"]);

    // A failing liveness check: restarted with the reason recorded.
    let ip1 = a.instance("web-1")["status"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    ureq::post(&format!("http://{ip1}:8080/health/fail"))
        .call()
        .unwrap();
    let v = eventually(Duration::from_secs(30), || {
        let v = a.instance("web-1");
        (v["status"]["restarts"].as_u64() >= Some(1)).then_some(v)
    })
    .expect("web-1 restarted by its liveness probe");
    assert_eq!(
        v["status"]["lastTermination"]["reason"], "LivenessProbeFailed",
        "{v}"
    );

    // Logs from the API and the CLI.
    let (ok, logs, err) = a.node.cli(&["logs", "web-2", "--tail", "5"]);
    assert!(
        ok && logs.contains("workload http listening"),
        "{logs}{err}"
    );
    let (code, _) = a
        .node
        .api()
        .raw_get("/v1/namespaces/default/instances/nope/log");
    assert_eq!(code, 404);

    // Metrics: start latency and usage.
    let starts = a
        .node
        .api()
        .metric("agent_container_start_duration_seconds_count")
        .unwrap();
    assert!(starts >= 5.0, "3 starts and 2 restarts, got {starts}");
    eventually(Duration::from_secs(10), || {
        a.instance("web-2")["status"]["usage"]["memoryBytes"]
            .as_u64()
            .filter(|m| *m > 0)
    })
    .expect("usage is reported");

    let restarts = a
        .node
        .api()
        .metric("agent_container_restarts_total")
        .unwrap();
    assert!(
        restarts >= 2.0,
        "the kill and the liveness restart: {restarts}"
    );

    let (ok, top, err) = a.node.cli(&["top", "instances"]);
    assert!(
        ok && top.contains("web-2") && top.contains("100m"),
        "{top}{err}"
    );
    let (ok, res, err) = a.node.cli(&["debug", "resources"]);
    assert!(
        ok && res.contains("(cluster)") && res.contains("300m"),
        "{res}{err}"
    );
    let (ok, head, err) = a.node.cli(&["scaling-headroom", "deployment/web"]);
    assert!(
        ok && head.contains("headroom for deployment/web"),
        "{head}{err}"
    );
    let (ok, cap, err) = a.node.cli(&["scaling-capacity", "-o", "json"]);
    let cap: Value = serde_json::from_str(&cap).unwrap_or_else(|_| panic!("{cap}{err}"));
    assert!(
        ok && cap["nodes"][0]["freeCpuMillis"].as_u64().is_some(),
        "{cap}"
    );

    // Scale down: the highest indexes go, with their containers.
    let (ok, _, err) = a.node.cli(&["scale", "deployment/web", "--replicas=1"]);
    assert!(ok, "{err}");
    eventually(Duration::from_secs(30), || {
        (a.containers().len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("containers left: {:?}", a.containers()));
    assert!(a.instance("web-2").is_null() && !a.instance("web-0").is_null());

    // Delete: nothing left behind (containers, records, veths).
    let (code, _) = a
        .node
        .api()
        .delete("/v1/namespaces/default/deployments/web");
    assert_eq!(code, 200);
    eventually(Duration::from_secs(30), || {
        a.containers().is_empty().then_some(())
    })
    .expect("every container removed");
    // The veth goes right after the container (the supervisor's last step).
    let links = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", &a.bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually(Duration::from_secs(10), || links().is_empty().then_some(()))
        .unwrap_or_else(|| panic!("veths left on the bridge: {}", links()));
}

#[test]
fn oom_kills_and_bad_specs_are_reported_and_leave_nothing() {
    let _serial = serial();
    let Some(a) = AgentNode::start(2) else { return };
    let manifest = r#"
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: hog}
spec:
  selector: {matchLabels: {app: hog}}
  template:
    metadata: {labels: {app: hog}}
    spec:
      containers:
      - name: hog
        image: busybox
        command: [sh, -c, "tail /dev/zero"]
        resources: {limits: {memory: 32Mi}}
---
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: ghost}
spec:
  selector: {matchLabels: {app: ghost}}
  template:
    metadata: {labels: {app: ghost}}
    spec:
      containers: [{name: c, image: "no-such-image:1"}]
---
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: badcmd}
spec:
  selector: {matchLabels: {app: badcmd}}
  template:
    metadata: {labels: {app: badcmd}}
    spec:
      containers: [{name: c, image: busybox, command: [/no/such/binary]}]
"#;
    let (code, body) = a.node.api().apply(manifest);
    assert_eq!(code, 200, "{body}");
    // Volumes: a hostPath the test reads, an emptyDir that lives with the instance (a
    // hostPath needs the privileged Pod Security level: baseline refuses it).
    let host_dir = tempfile::tempdir().unwrap();
    let volumes = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: default, labels: {{pod-security.kubernetes.io/enforce: privileged}}}}
---
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {{name: vols}}
spec:
  selector: {{matchLabels: {{app: vols}}}}
  template:
    metadata: {{labels: {{app: vols}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        env: [{{name: GREETING, value: hello}}]
        command: [sh, -c, "echo $GREETING > /scratch/x && cat /scratch/x > /host/out && hostname >> /host/out && sleep 600"]
        volumeMounts: [{{name: scratch, mountPath: /scratch}}, {{name: host, mountPath: /host}}]
      volumes:
      - {{name: scratch, emptyDir: {{}}}}
      - {{name: host, hostPath: {{path: {}}}}}
"#,
        host_dir.path().display()
    );
    let (code, body) = a.node.api().apply(&volumes);
    assert_eq!(code, 200, "{body}");
    let written = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(host_dir.path().join("out"))
            .ok()
            .filter(|t| t.lines().count() == 2)
    })
    .expect("the container wrote through its volumes");
    assert_eq!(
        written, "hello\nvols-0\n",
        "env, emptyDir, hostPath and hostname"
    );

    let hog = eventually(Duration::from_secs(60), || {
        let v = a.instance("hog-0");
        let restarted = v["status"]["restarts"].as_u64() >= Some(1);
        (v["status"]["lastTermination"]["reason"] == "OOMKilled" && restarted).then_some(v)
    })
    .expect("the memory limit is enforced, and the instance restarted");
    assert_eq!(hog["status"]["lastTermination"]["exitCode"], 137, "{hog}");

    let ghost = eventually(Duration::from_secs(30), || {
        let v = a.instance("ghost-0");
        (v["status"]["reason"] == "ErrImageNotFound").then_some(v)
    })
    .expect("an unknown image is reported");
    assert!(
        ghost["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-image:1"),
        "{ghost}"
    );
    assert_eq!(ghost["status"]["phase"], "Failed");

    let bad = eventually(Duration::from_secs(30), || {
        let v = a.instance("badcmd-0");
        (v["status"]["reason"] == "ContainerCannotRun").then_some(v)
    })
    .expect("an invalid command is reported");
    assert!(
        bad["status"]["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/binary"),
        "{bad}"
    );
    let (ok, described, _) = a.node.cli(&["describe", "instance/badcmd-0"]);
    assert!(
        ok && described.contains("ContainerCannotRun"),
        "{described}"
    );

    // Neither failed start left a container, bundle, cgroup or veth behind.
    a.node
        .api()
        .delete("/v1/namespaces/default/deployments/vols");
    eventually(Duration::from_secs(30), || {
        (!a.node.dir.join("volumes/default/vols-0").exists()).then_some(())
    })
    .expect("the emptyDir went with its instance");
    let ids = a.containers();
    assert!(
        ids.iter().all(|id| id.starts_with("default.hog-0.")),
        "{ids:?}"
    );
    let bundles: Vec<String> = std::fs::read_dir(a.runtime_root().join("bundles"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        bundles.iter().all(|b| b.starts_with("default.hog-0.")),
        "{bundles:?}"
    );
    for id in [&ghost, &bad].map(|v| v["status"]["containerId"].as_str().unwrap().to_string()) {
        assert!(
            omnicloud::container::runtime::memory_cgroup_dir(&id).is_none(),
            "cgroup of {id} left"
        );
    }
}

#[test]
fn kill9_of_the_node_keeps_containers_and_they_are_readopted() {
    let _serial = serial();
    let Some(mut a) = AgentNode::start(3) else {
        return;
    };
    let (code, body) = a.node.api().apply(&web("keep", 2));
    assert_eq!(code, 200, "{body}");
    a.wait_ready("keep", 2, 60);
    let pid0 = a.instance("keep-0")["status"]["pid"].as_i64().unwrap();
    let pid1 = a.instance("keep-1")["status"]["pid"].as_i64().unwrap();

    a.node.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        pid_alive(pid0) && pid_alive(pid1),
        "containers outlive the node process"
    );
    // One dies while the node is away.
    unsafe { libc::kill(pid1 as i32, libc::SIGKILL) };
    a.node.restart();

    let adopted = eventually(Duration::from_secs(30), || {
        let v = a.instance("keep-0");
        (v["status"]["ready"] == true).then_some(v)
    })
    .expect("keep-0 ready after the restart");
    assert_eq!(
        adopted["status"]["pid"].as_i64(),
        Some(pid0),
        "the same process, adopted"
    );
    assert_eq!(adopted["status"]["restarts"], 0);
    let restarted = eventually(Duration::from_secs(30), || {
        let v = a.instance("keep-1");
        (v["status"]["ready"] == true && v["status"]["restarts"] == 1).then_some(v)
    })
    .expect("keep-1, dead meanwhile, restarted");
    assert_ne!(restarted["status"]["pid"].as_i64(), Some(pid1));
    let ip = adopted["status"]["ip"].as_str().unwrap();
    assert!(
        http_get(ip, "/").is_some(),
        "the adopted instance still serves"
    );
    a.wait_ready("keep", 2, 30);
}

#[test]
fn images_come_from_a_registry_and_from_peers() {
    let _serial = serial();
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(registry) = common::registry::Registry::start("127.0.0.1", "docker-registry") else {
        return;
    };
    // Plain HTTP only where configured, as containerd does.
    let insecure = format!("[registries]\ninsecure = [\"{}\"]\n", registry.addr);
    let seed = AgentNode::launch_with(4, "seed", "auto", &[], &insecure);

    // Push from a scratch store; the seed's own store starts empty and the agent pulls.
    let scratch = tempfile::tempdir().unwrap();
    let client_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(client_config.path(), &insecure).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("image")
            .args(args)
            .env("OMNICLOUD_DATA_DIR", scratch.path())
            .env("OMNICLOUD_CONFIG", client_config.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["import", layout.to_str().unwrap()]);
    let remote = format!("{}/tools/toolbox:1", registry.addr);
    cli(&["push", "toolbox:latest", &remote]);
    let manifest = format!(
        r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {{name: pulled}}
spec:
  selector: {{matchLabels: {{app: pulled}}}}
  template:
    metadata: {{labels: {{app: pulled}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: http
        image: {remote}
        args: [workload, http, --port, "8080"]
"#
    );
    let (code, body) = seed.node.api().apply(&manifest);
    assert_eq!(code, 200, "{body}");
    seed.wait_ready("pulled", 1, 120);
    assert!(
        seed.image_cli(&["ls"]).contains("tools/toolbox:1"),
        "pulled into the store"
    );

    // A second node, with an empty store, fetches toolbox:latest from the seed.
    seed.import(&layout);
    let peer = AgentNode::join(5, "peer", &seed);
    let instance = r#"
apiVersion: omnicloud.io/v1
kind: Instance
metadata: {name: fetched}
spec:
  nodeName: peer
  pod:
    terminationGracePeriodSeconds: 1
    containers:
    - name: http
      image: toolbox:latest
      args: [workload, http, --port, "8080"]
"#;
    let (code, body) = seed.node.api().apply(instance);
    assert_eq!(code, 200, "{body}");
    let v = eventually(Duration::from_secs(120), || {
        let v = seed.instance("fetched");
        (v["status"]["ready"] == true).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "fetched never ran on the peer: {:#}",
            seed.instance("fetched")
        )
    });
    assert_eq!(v["status"]["node"], "peer");
    assert!(
        peer.image_cli(&["ls"]).contains("toolbox:latest"),
        "fetched from the seed"
    );
    let ip = v["status"]["ip"].as_str().unwrap();
    assert!(
        ip.starts_with("10.94."),
        "the peer's subnet comes from the leader's cluster CIDR: {ip}"
    );
    assert!(http_get(ip, "/").is_some());

    // Logs of an instance on the peer, asked of the seed: streamed from the owner.
    let (ok, logs, err) = seed.node.cli(&["logs", "fetched"]);
    assert!(
        ok && logs.contains("workload http listening"),
        "{logs}{err}"
    );
    seed.node
        .api()
        .delete("/v1/namespaces/default/instances/fetched");
    eventually(Duration::from_secs(30), || {
        peer.containers().is_empty().then_some(())
    })
    .expect("the peer removed the deleted instance");
}

/// A node process that dies cannot fence itself: its watchdog ends its StatefulSet
/// containers once the node has been silent for FENCE_AFTER (before the orchestrator may
/// start the identity elsewhere), leaves Deployment containers alone, and a restarted node
/// starts the StatefulSet instance again.
#[test]
fn the_watchdog_fences_statefulset_containers_of_a_killed_node() {
    let _g = serial();
    let Some(mut a) = AgentNode::start(7) else {
        return;
    };
    let sts = r#"apiVersion: omnicloud.io/v1
kind: StatefulSet
metadata: {name: ledger}
spec:
  replicas: 1
  selector: {matchLabels: {app: ledger}}
  template:
    metadata: {labels: {app: ledger}}
    spec:
      containers:
      - {name: c, image: busybox:latest, command: ["sleep", "100000"]}
"#;
    let (code, body) = a.node.api().apply(sts);
    assert_eq!(code, 200, "{body}");
    let (code, body) = a.node.api().apply(&web("keep", 1));
    assert_eq!(code, 200, "{body}");
    a.wait_ready("keep", 1, 60);
    let pid_of = |a: &AgentNode, name: &str| {
        eventually(Duration::from_secs(60), || {
            let i = a.instance(name);
            (i["status"]["ready"] == true)
                .then(|| i["status"]["pid"].as_i64())
                .flatten()
        })
        .unwrap_or_else(|| panic!("{name} never ran: {}", a.instance(name)))
    };
    let ledger = pid_of(&a, "ledger-0");
    let web = pid_of(&a, "keep-0");
    a.node.kill9();
    let fenced = eventually(Duration::from_secs(20), || {
        (!pid_alive(ledger)).then_some(())
    });
    assert!(
        fenced.is_some(),
        "the StatefulSet container outlived the fence"
    );
    assert!(pid_alive(web), "a Deployment container is not fenced");
    let log = std::fs::read_to_string(a.node.dir.join("fence/watchdog.log")).unwrap();
    assert!(
        log.contains("killed StatefulSet container default.ledger-0."),
        "{log}"
    );
    a.node.restart();
    let back = eventually(Duration::from_secs(60), || {
        let i = a.instance("ledger-0");
        (i["status"]["ready"] == true && i["status"]["pid"].as_i64() != Some(ledger)).then_some(i)
    });
    assert!(
        back.is_some(),
        "ledger-0 not started again: {}",
        a.instance("ledger-0")
    );
    assert!(
        pid_alive(web),
        "the Deployment container was adopted, not restarted"
    );
}

/// Cluster DNS from inside a container: a StatefulSet pod `db-0` (serviceName `db`) and a
/// client pod in the same namespace that resolves `db-0.db` through the resolv.conf the
/// agent wrote (nameserver: the node's DNS server on the bridge gateway; search
/// `default.svc.cluster.local ...`), to db-0's address: the short name through the libc
/// resolver (`ping`, which applies the search path), the full name with `nslookup`.
#[test]
fn a_pod_resolves_a_statefulset_member_by_its_short_name() {
    let _g = serial();
    let Some(a) = AgentNode::start(9) else {
        return;
    };
    let db = r#"apiVersion: omnicloud.io/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox:latest, command: ["sleep", "100000"]}
"#;
    let (code, body) = a.node.api().apply(db);
    assert_eq!(code, 200, "{body}");
    let db_ip = eventually(Duration::from_secs(60), || {
        let i = a.instance("db-0");
        (i["status"]["ready"] == true)
            .then(|| i["status"]["ip"].as_str().map(str::to_string))
            .flatten()
    })
    .unwrap_or_else(|| panic!("db-0 never ran: {}", a.instance("db-0")));
    let client = r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: client}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:latest
        command: ["sh", "-c", "cat /etc/resolv.conf; while true; do ping -c1 -W1 db-0.db; nslookup db-0.db.default.svc.cluster.local; sleep 1; done"]
"#;
    let (code, body) = a.node.api().apply(client);
    assert_eq!(code, 200, "{body}");
    let name = eventually(Duration::from_secs(60), || {
        a.instances("client")
            .iter()
            .find(|i| i["status"]["ready"] == true)
            .and_then(|i| i["metadata"]["name"].as_str().map(str::to_string))
    })
    .unwrap_or_else(|| panic!("the client never ran: {:?}", a.instances("client")));
    let answered = eventually(Duration::from_secs(30), || {
        let (_, logs, _) = a.node.cli(&["logs", &name, "--tail", "40"]);
        (logs.contains(&format!("PING db-0.db ({db_ip})"))
            && logs.contains(&format!("Address: {db_ip}")))
        .then_some(logs)
    });
    let (_, logs, err) = a.node.cli(&["logs", &name, "--tail", "40"]);
    let logs =
        answered.unwrap_or_else(|| panic!("db-0.db never resolved to {db_ip}:\n{logs}{err}"));
    assert!(
        logs.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "the generated resolv.conf: {logs}"
    );
}
