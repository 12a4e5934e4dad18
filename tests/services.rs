//! Services on one real node, as root with the test images: a 3-replica Deployment of
//! busybox httpd (each replica answers with its instance name) behind a ClusterIP Service,
//! reached by a client instance at `VIP:80` (every replica answers, and a replica reaching
//! its own Service is answered by itself: hairpin); a replica killed with
//! kill -9 leaves the endpoints and no request fails after; a NodePort reached on the
//! node's address from outside the node; a hostPort; bad Services refused naming the field
//! with nothing written; and deleting everything leaves no OMNI chain or rule.
//!
//! The node runs in its own network namespace (a `TestNet` host), so its iptables rules
//! are its own: nothing touches the machine's tables, and the test process stands in for a
//! LAN client on the test bridge. Written for one node; a multi-host version runs the same
//! checks over the routing harness's namespaces.
//! Skips loudly without root, `ip netns`, iptables or the images (fails under
//! OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::TestNet;
use common::{eventually, TestNode};
use serde_json::Value;

/// The test host's node with the images imported; removes its containers on drop (the
/// namespace, and with it every rule and link, goes with the `TestNet`).
struct ServiceNode {
    node: TestNode,
    ns: String,
    ip: String,
}

impl Drop for ServiceNode {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
    }
}

impl ServiceNode {
    fn start(net: &TestNet, layout: &std::path::Path) -> ServiceNode {
        let (ns, ip) = (net.ns(0), net.ip(0));
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            "[network]\ncluster_cidr = \"10.88.0.0/16\"\nbridge = \"omnisvc0\"\nservice_cidr = \"10.96.0.0/24\"\nnode_port_range = \"30000-30100\"\n[agent]\nusage_report_ms = 1000\n",
        )
        .unwrap();
        let node = TestNode::start_opts(
            "svc",
            &[
                "--roles",
                "auto",
                "--bind",
                &ip,
                "--advertise",
                &ip,
                "--config",
                config.path().to_str().unwrap(),
            ],
            true,
            Some(&ns),
        );
        std::mem::forget(config);
        common::images::import(&node.dir, layout);
        ServiceNode { node, ns, ip }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.node.api().get(path)
    }

    fn apply(&self, yaml: &str) -> (u16, Value) {
        self.node.api().apply(yaml)
    }

    fn instances(&self, app: &str) -> Vec<Value> {
        let (_, v) = self.get(&format!(
            "/v1/namespaces/default/instances?labelSelector=app%3D{app}"
        ));
        v["items"].as_array().cloned().unwrap_or_default()
    }

    fn ready(&self, app: &str, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(90), || {
            let ready: Vec<Value> = self
                .instances(app)
                .into_iter()
                .filter(|i| i["status"]["ready"] == true)
                .collect();
            (ready.len() == n).then_some(ready)
        })
        .unwrap_or_else(|| {
            panic!(
                "{app} never had {n} ready instances: {:#}\n{}",
                Value::Array(self.instances(app)),
                self.node.log()
            )
        })
    }

    /// Ready endpoint addresses of Service `name`.
    fn endpoints(&self, name: &str) -> Vec<String> {
        let (_, e) = self.get(&format!("/v1/namespaces/default/endpoints/{name}"));
        e["spec"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(str::to_string))
            .collect()
    }

    fn iptables_save(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables-save"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Lines of the node's iptables that mention our chains.
    fn omni_rules(&self) -> usize {
        self.iptables_save()
            .lines()
            .filter(|l| l.contains("OMNI"))
            .count()
    }

    /// The endpoint addresses the node's rules balance `ns/name:port` over.
    fn balanced_over(&self, id: &str) -> Vec<String> {
        let marker = format!("--comment \"{id} -> ");
        self.iptables_save()
            .lines()
            .filter(|l| l.starts_with("-A OMNI-SVC-"))
            .filter_map(|l| l.split(&marker).nth(1))
            .filter_map(|rest| rest.split(':').next().map(str::to_string))
            .collect()
    }
}

/// The default namespace at the Pod Security level that allows hostPorts.
const PRIVILEGED_DEFAULT: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {pod-security.kubernetes.io/enforce: privileged}}\n";

/// busybox httpd on 8080 answering with the hostname (the instance name).
fn httpd(name: &str, replicas: u32, host_port: Option<u16>) -> String {
    let host_port = host_port.map_or(String::new(), |p| format!(", hostPort: {p}"));
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox:latest
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080{host_port}}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"#
    )
}

const CLIENT: &str = r#"apiVersion: apps/v1
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
      - name: sleep
        image: busybox:latest
        command: [sleep, "3600"]
"#;

fn fetch_from(pid: i64, url: &str) -> Result<String, String> {
    common::http_get_in(pid as u32, url)
}

fn fetch(url: &str) -> Result<String, String> {
    common::http_get(url)
}

#[test]
fn services_balance_follow_readiness_open_node_and_host_ports_and_clean_up() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(net) = TestNet::new(1) else {
        return;
    };
    if Command::new("busybox").arg("true").output().is_err() {
        common::netns::require(
            "busybox on the host",
            "the client fetches with busybox wget".into(),
        );
        return;
    }
    let n = ServiceNode::start(&net, &layout);
    // A hostPort needs the privileged Pod Security level (baseline refuses it).
    let (code, v) = n.apply(&format!(
        "{PRIVILEGED_DEFAULT}---\n{}---\n{}---\n{CLIENT}",
        httpd("web", 3, None),
        httpd("hp", 1, Some(18080))
    ));
    assert_eq!(code, 200, "{v}");
    let (code, v) = n.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: webnp}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 8000, targetPort: 8080}]\n",
    );
    assert_eq!(code, 200, "{v}");
    let (_, web) = n.get("/v1/namespaces/default/services/web");
    let vip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        vip.starts_with("10.96.0."),
        "allocated from the service CIDR: {web}"
    );
    let (_, np) = n.get("/v1/namespaces/default/services/webnp");
    let node_port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=30100).contains(&node_port), "{np}");

    let replicas = n.ready("web", 3);
    let client = n.ready("client", 1);
    let client_pid = client[0]["status"]["pid"].as_i64().unwrap();
    eventually(Duration::from_secs(30), || {
        (n.endpoints("web").len() == 3 && n.balanced_over("default/web:http").len() == 3)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "3 endpoints: {:?}",
            n.get("/v1/namespaces/default/endpoints/web")
        )
    });

    // 60 requests to VIP:80 from the client instance: every one answered, every replica
    // at least once.
    let names: Vec<String> = replicas
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    // The client's own network may come up just after it reports ready.
    let mut last = Err(String::new());
    let first = Instant::now();
    eventually(Duration::from_secs(10), || {
        last = fetch_from(client_pid, &format!("http://{vip}:80/"));
        last.as_ref().ok().cloned()
    })
    .unwrap_or_else(|| {
        let direct = fetch_from(
            client_pid,
            &format!("http://{}:8080/", n.endpoints("web")[0]),
        );
        panic!("the client never reached {vip}:80: {last:?}; directly: {direct:?}")
    });
    eprintln!(
        "the client first reached {vip}:80 after {:?}",
        first.elapsed()
    );
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..60 {
        let body = fetch_from(client_pid, &format!("http://{vip}:80/")).unwrap_or_else(|e| {
            panic!(
                "request {i} to {vip}:80 failed: {e}; the node's rules:\n{}",
                n.iptables_save()
            )
        });
        *seen.entry(body).or_default() += 1;
    }
    eprintln!("answers over 60 requests to {vip}:80: {seen:?}");
    for name in &names {
        assert!(seen.contains_key(name), "{name} never answered: {seen:?}");
    }
    assert_eq!(seen.values().sum::<u32>(), 60);

    // Hairpin: a replica reaching its own Service is sometimes answered by itself.
    let own = &replicas[1];
    let own_name = own["metadata"]["name"].as_str().unwrap();
    let own_pid = own["status"]["pid"].as_i64().unwrap();
    let mut answers = Vec::new();
    let hairpin = (0..60).any(|_| {
        let body = fetch_from(own_pid, &format!("http://{vip}:80/"));
        let mine = body.as_deref() == Ok(own_name);
        answers.push(body);
        mine
    });
    assert!(
        hairpin,
        "{own_name} never answered itself through {vip}: {answers:?}"
    );
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    // kill -9 one replica's container: it leaves the endpoints, and no request fails after.
    let victim = &replicas[0];
    let victim_ip = victim["status"]["ip"].as_str().unwrap().to_string();
    let pid = victim["status"]["pid"].as_i64().unwrap();
    let killed = Instant::now();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // Either a poll sees it out of the endpoints, or it was restarted in place (same IP)
    // and ready again before a poll came: under load the restart can beat the poll.
    let victim_name = victim["metadata"]["name"].as_str().unwrap().to_string();
    let restarted_ready = || {
        n.instances("web").iter().any(|i| {
            i["metadata"]["name"] == victim_name.as_str()
                && i["status"]["restarts"].as_u64().unwrap_or(0) > 0
                && i["status"]["ready"] == true
        })
    };
    let left = eventually(Duration::from_secs(20), || {
        if !n.endpoints("web").contains(&victim_ip) {
            Some(true)
        } else if restarted_ready() {
            Some(false)
        } else {
            None
        }
    })
    .expect("the killed replica neither left the endpoints nor came back ready");
    eprintln!(
        "the killed replica {} after kill -9: {:?}",
        if left {
            "left the endpoints"
        } else {
            "was restarted and ready again before a poll saw it out"
        },
        killed.elapsed()
    );
    // ...and the node's rules (unless it came back meanwhile: restarted and ready again).
    eventually(Duration::from_secs(20), || {
        let over = n.balanced_over("default/web:http");
        (!over.contains(&victim_ip) || n.endpoints("web").contains(&victim_ip)).then_some(())
    })
    .expect("the killed replica leaves the node's rules");
    eprintln!(
        "...and the node's rules {:?} after kill -9",
        killed.elapsed()
    );
    for i in 0..30 {
        fetch_from(client_pid, &format!("http://{vip}:80/"))
            .unwrap_or_else(|e| panic!("request {i} after the endpoint was removed failed: {e}"));
    }

    // NodePort on the node's address: from the client instance and from the LAN side.
    let via_node = format!("http://{}:{node_port}/", n.ip);
    let body = fetch_from(client_pid, &via_node).expect("node port from an instance");
    assert!(body.starts_with("web-"), "{body}");
    let body = eventually(Duration::from_secs(10), || fetch(&via_node).ok())
        .expect("node port from outside the node");
    assert!(body.starts_with("web-"), "{body}");
    // hostPort 18080 on the node's address reaches the hp instance.
    let body = eventually(Duration::from_secs(10), || {
        fetch(&format!("http://{}:18080/", n.ip)).ok()
    })
    .expect("hostPort reachable on the node's address");
    assert!(body.starts_with("hp-"), "{body}");

    // The CLI shows them.
    let (ok, out, err) = n.node.cli(&["get", "services"]);
    assert!(ok, "{err}");
    assert!(out.contains("CLUSTER-IP") && out.contains(&vip), "{out}");
    assert!(out.contains(&format!("8000:{node_port}/TCP")), "{out}");
    let (ok, out, err) = n.node.cli(&["get", "endpoints"]);
    assert!(ok && out.contains(":8080"), "{out}{err}");
    let (ok, out, err) = n.node.cli(&["describe", "service/web"]);
    assert!(
        ok && out.contains("Endpoints:") && out.contains(":8080"),
        "{out}{err}"
    );

    bad_services_are_refused(&n, node_port);
    warnings_and_updates(&n, &vip);
    concurrent_creates_never_share_an_address(&n);

    // Delete everything: no rule of ours is left.
    assert!(n.omni_rules() > 0);
    for path in [
        "/v1/namespaces/default/services/web",
        "/v1/namespaces/default/services/webnp",
        "/v1/namespaces/default/deployments/web",
        "/v1/namespaces/default/deployments/hp",
        "/v1/namespaces/default/deployments/client",
    ] {
        let (code, v) = n.node.api().delete(path);
        assert_eq!(code, 200, "{path}: {v}");
    }
    eventually(Duration::from_secs(60), || {
        (n.omni_rules() == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("OMNI rules left: {}", n.omni_rules()));
    let (_, eps) = n.get("/v1/namespaces/default/endpoints");
    assert_eq!(eps["items"].as_array().map(Vec::len), Some(0), "{eps}");
}

/// Refused naming the field, and nothing written.
fn bad_services_are_refused(n: &ServiceNode, node_port_in_use: i64) {
    for (name, spec, field, says) in [
        (
            "outside",
            "  clusterIP: 10.200.0.5\n  ports: [{port: 80}]\n",
            "spec.clusterIP",
            "not in the service CIDR",
        ),
        (
            "taken",
            &format!("  type: NodePort\n  ports: [{{port: 80, nodePort: {node_port_in_use}}}]\n")
                as &str,
            "spec.ports[0].nodePort",
            "default/webnp",
        ),
        (
            "dup",
            "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
            "spec.ports[1].name",
            "duplicate",
        ),
    ] {
        let yaml = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: web}}\n{spec}");
        let (code, v) = n.apply(&yaml);
        assert_eq!(code, 422, "{name}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field) && msg.contains(says), "{name}: {v}");
        let (code, _) = n.get(&format!("/v1/namespaces/default/services/{name}"));
        assert_eq!(code, 404, "{name} was not written");
    }
}

/// Eight Services created at once all get distinct cluster IPs and node ports; of two
/// asking for one node port at once, exactly one has it; deleting frees what they held.
fn concurrent_creates_never_share_an_address(n: &ServiceNode) {
    let api = n.node.api();
    let created: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let api = &api;
                s.spawn(move || {
                    let yaml = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: race{i}}}\nspec:\n  type: NodePort\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n");
                    let (code, v) = api.send("POST", "/v1/namespaces/default/services", &yaml);
                    assert_eq!(code, 201, "race{i}: {v}");
                    v
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: std::collections::BTreeSet<&str> = created
        .iter()
        .map(|v| v["spec"]["clusterIP"].as_str().unwrap())
        .collect();
    let ports: std::collections::BTreeSet<i64> = created
        .iter()
        .map(|v| v["spec"]["ports"][0]["nodePort"].as_i64().unwrap())
        .collect();
    assert_eq!((ips.len(), ports.len()), (8, 8), "{created:?}");
    for i in 0..8 {
        let (code, v) = api.delete(&format!("/v1/namespaces/default/services/race{i}"));
        assert_eq!(code, 200, "{v}");
    }
    // A node port no Service holds.
    let (_, list) = n.get("/v1/namespaces/default/services");
    let held: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_i64())
        .collect();
    let free = (30000..=30100).find(|p| !held.contains(p)).unwrap();
    let codes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let api = &api;
                s.spawn(move || {
                    let yaml = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: same{i}}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {free}}}]\n");
                    api.send("POST", "/v1/namespaces/default/services", &yaml).0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [201, 422],
        "exactly one holds node port 30099: {codes:?}"
    );
    for name in (0..8)
        .map(|i| format!("race{i}"))
        .chain(["same0".into(), "same1".into()])
    {
        let _ = api.delete(&format!("/v1/namespaces/default/services/{name}"));
    }
    // Freed: node port 30099 can be taken again.
    let (code, v) = n.apply("apiVersion: v1\nkind: Service\nmetadata: {name: again}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30099}]\n");
    assert_eq!(code, 200, "{v}");
    assert_eq!(api.delete("/v1/namespaces/default/services/again").0, 200);
}

/// A node without iptables runs on and says once that it has no Services data plane: one
/// Warning event about the node, once a Service needs the rules.
#[test]
fn without_iptables_the_node_says_it_has_no_service_data_plane() {
    if !omnicloud::config::is_root() {
        common::netns::require("root", "the agent role needs root".into());
        return;
    }
    // A PATH with nothing on it: no iptables (nor anything else the node would run).
    let tools = tempfile::tempdir().unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[network]\ncluster_cidr = \"10.83.0.0/16\"\nbridge = \"ocnosvc0\"\n",
    )
    .unwrap();
    let node = TestNode::start_env(
        "nosvc",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
        &[("PATH", tools.path().to_str().unwrap())],
    );
    let (code, v) = node.api().apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    assert_eq!(code, 200, "{v}");
    let events = |node: &TestNode| -> Vec<Value> {
        let (_, v) = node.api().get("/v1/namespaces/default/events");
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["spec"]["reason"] == "NoServiceDataPlane")
            .cloned()
            .collect()
    };
    let said = eventually(Duration::from_secs(30), || {
        let e = events(&node);
        (!e.is_empty()).then_some(e)
    })
    .unwrap_or_else(|| panic!("no NoServiceDataPlane event; log:\n{}", node.log()));
    let spec = &said[0]["spec"];
    assert_eq!(spec["type"], "Warning");
    assert_eq!(spec["involvedObject"]["kind"], "Node");
    assert!(
        spec["message"]
            .as_str()
            .unwrap()
            .contains("apt-get install iptables"),
        "{spec}"
    );
    // Another Service is another change, not another event.
    let (code, _) = node.api().apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports: [{port: 5432}]\n",
    );
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_secs(2));
    let again = events(&node);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["spec"]["count"], 1, "said once: {again:?}");
}

/// A re-applied manifest keeps the allocated address; fields not acted on and a selector
/// matching nothing are said in `describe`.
fn warnings_and_updates(n: &ServiceNode, vip: &str) {
    let (code, v) = n.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {tier: front}}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n",
    );
    assert_eq!(code, 200, "{v}");
    let (_, web) = n.get("/v1/namespaces/default/services/web");
    assert_eq!(
        web["spec"]["clusterIP"], vip,
        "an update keeps the address: {web}"
    );
    let (code, v) = n.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: lonely}\nspec:\n  selector: {app: nothing}\n  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n",
    );
    assert_eq!(code, 200, "{v}");
    let out = eventually(Duration::from_secs(20), || {
        let (ok, out, _) = n.node.cli(&["describe", "service/lonely"]);
        (ok && out.contains("SelectorMatchesNothing")).then_some(out)
    })
    .expect("describe says the selector matches nothing");
    assert!(
        out.contains("FieldNotActedOn: spec.sessionAffinity"),
        "{out}"
    );
    assert_eq!(
        n.node
            .api()
            .delete("/v1/namespaces/default/services/lonely")
            .0,
        200
    );
}
