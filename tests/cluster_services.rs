//! Services across a real cluster: four node hosts (three on one test segment, one behind a
//! router: the overlay path) and a LAN client namespace standing in for a laptop
//! (`common::hosts`). A 3-replica Deployment behind a LoadBalancer Service:
//! - a client instance on the far host resolves `web.default.svc.cluster.local` and the
//!   short name `web` through its generated resolv.conf to the Service's cluster IP, and
//!   60 requests to that address are all answered, every replica at least once;
//! - the LAN client reaches the LoadBalancer address (announced by one node of the segment,
//!   `status.loadBalancer.ingress`) and the node port on every node, the far one included;
//! - kill -9 of the announcing node: another node of the segment takes the address over and
//!   the LAN client reaches it again (the time is printed); the dead node's replicas leave
//!   the endpoints and no request from the client instance fails after;
//! - deleting everything leaves no OMNI rule and no announced address on any host.
//!
//! And a StatefulSet `db` with a headless Service `db` (`clusterIP: None`), db-0 kept off
//! the far host: a client instance there resolves `db-0.db` and
//! `db-0.db.default.svc.cluster.local` to db-0's address and fetches `http://db-0.db:8080/`
//! from it; kill -9 of db-0's node: db-0 runs on another node (after 2 x FENCE_AFTER) and
//! the names give its new address, a fetch by name reaches it, the old address is gone.
//!
//! As root with the test images; skips loudly elsewhere (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::hosts::Hosts;
use common::{eventually, Api, Cluster, FAST_CLUSTER};

const CLUSTER_CIDR: &str = "10.93.0.0/16";

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox:latest
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

/// On the far host, resolving the Service's names in a loop (busybox ping prints the
/// address it resolved even though a cluster IP does not answer ICMP).
fn client(node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {{omnicloud.io/node: {node}}}
      containers:
      - name: c
        image: busybox:latest
        command: [sh, -c, "while true; do nslookup web.default.svc.cluster.local; ping -c1 -W1 web; sleep 1; done"]
"#
    )
}

/// `curl` from the LAN client: the body.
fn from_lan(hosts: &Hosts, url: &str) -> Option<String> {
    let (ok, out, _) = hosts.on_client(&["curl", "-sf", "-m", "2", url]);
    ok.then(|| out.trim().to_string())
}

/// The hosts holding `ip` as an announced (labelled) address.
fn announcers(hosts: &Hosts, ip: &str) -> Vec<usize> {
    (0..hosts.count())
        .filter(|&i| {
            hosts
                .on_host(i, &["ip", "-4", "-o", "addr"])
                .lines()
                .any(|l| l.contains(&format!(" {ip}/32")) && l.contains(":olb"))
        })
        .collect()
}

fn endpoint_ips(api: &Api) -> Vec<String> {
    let (_, ep) = api.get("/v1/namespaces/default/endpoints/web");
    ep["spec"]["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_loadbalancer_service_is_reached_by_name_from_pods_and_from_the_lan_and_fails_over() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(hosts) = Hosts::new(3, 1) else {
        return;
    };
    let lan_base = hosts.lan_subnet().rsplit_once(".0/").unwrap().0.to_string();
    let lb_ip = format!("{lan_base}.240");
    let config = format!(
        "roles = [\"auto\"]\n{FAST_CLUSTER}[network]\ncluster_cidr = \"{CLUSTER_CIDR}\"\nnode_prefix = 24\n\
         loadbalancer_pool = [\"{lb_ip}\"]\ndns_upstreams = [\"127.0.0.1:9\"]\n"
    );
    let mut c = Cluster::start_on(hosts.count(), &config, Some(&hosts));
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    let far = hosts.count() - 1;
    assert!(hosts.is_far(far));
    // The far node is never the announcer (not on the LAN segment) nor killed: the API,
    // and the client instance, live there.
    let api = c.nodes[far].api();
    let (code, body) = api.apply(WEB);
    assert_eq!(code, 200, "{body}");
    let (code, body) = api.apply(&client(&c.nodes[far].name));
    assert_eq!(code, 200, "{body}");

    // The Service: a cluster IP, a node port, the pool's address in its status.
    // The API node is a follower: its replica may not hold the write yet.
    let svc = eventually(Duration::from_secs(10), || {
        let (code, svc) = api.get("/v1/namespaces/default/services/web");
        (code == 200).then_some(svc)
    })
    .expect("the Service web");
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let ingress = eventually(Duration::from_secs(20), || {
        let (_, s) = api.get("/v1/namespaces/default/services/web");
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no status.loadBalancer: {svc}"));
    assert_eq!(ingress, lb_ip);
    let eps = eventually(Duration::from_secs(120), || {
        let ips = endpoint_ips(&api);
        (ips.len() == 3).then_some(ips)
    })
    .unwrap_or_else(|| panic!("web never had 3 ready endpoints: {:?}", endpoint_ips(&api)));

    // DNS from a pod: the full name and the short name both give the cluster IP.
    let client_name = eventually(Duration::from_secs(60), || {
        let (_, list) = api.get("/v1/namespaces/default/instances?labelSelector=app%3Dclient");
        list["items"]
            .as_array()?
            .iter()
            .find(|i| i["status"]["ready"] == true)?["metadata"]["name"]
            .as_str()
            .map(str::to_string)
    })
    .expect("the client instance never ran");
    let resolved = eventually(Duration::from_secs(30), || {
        let (_, logs, _) = c.nodes[far].cli(&["logs", &client_name, "--tail", "40"]);
        (logs.contains(&format!("Address: {vip}")) && logs.contains(&format!("PING web ({vip})")))
            .then_some(())
    });
    let (_, logs, _) = c.nodes[far].cli(&["logs", &client_name, "--tail", "40"]);
    assert!(resolved.is_some(), "web did not resolve to {vip}:\n{logs}");

    // 60 requests from the client instance to the cluster IP: all answered, by every replica.
    let pid = eventually(Duration::from_secs(10), || {
        common::container_pid(&c.nodes[far].dir, &client_name)
    })
    .expect("the client's container");
    let url = format!("http://{vip}/");
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..60 {
        let who =
            common::http_get_in(pid, &url).unwrap_or_else(|e| panic!("request {i} to {url}: {e}"));
        *answered.entry(who).or_default() += 1;
    }
    assert_eq!(
        answered.len(),
        3,
        "every replica answers: {answered:?} ({eps:?})"
    );

    // From the LAN: the LoadBalancer address, and the node port on every node.
    let lb_url = format!("http://{lb_ip}/");
    eventually(Duration::from_secs(30), || from_lan(&hosts, &lb_url))
        .unwrap_or_else(|| panic!("the LAN client cannot reach {lb_url}"));
    for i in 0..hosts.count() {
        let url = format!("http://{}:{node_port}/", hosts.ip(i));
        eventually(Duration::from_secs(20), || from_lan(&hosts, &url))
            .unwrap_or_else(|| panic!("the LAN client cannot reach node port {url}"));
    }

    // kill -9 the announcer: another node of the segment takes the address over.
    let holders = announcers(&hosts, &lb_ip);
    assert_eq!(holders.len(), 1, "one announcer: {holders:?}");
    let first = holders[0];
    assert!(!hosts.is_far(first));
    // The replicas on the node about to die, read before the kill: once it is
    // declared dead its instances are replaced and no longer name it.
    let dead: Vec<String> = {
        let (_, list) = api.get("/v1/namespaces/default/instances?labelSelector=app%3Dweb");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["spec"]["nodeName"] == c.nodes[first].name.as_str())
            .filter_map(|i| i["status"]["ip"].as_str().map(str::to_string))
            .collect()
    };
    eprintln!("node {first} runs the replicas {dead:?} of web");
    let killed_at = Instant::now();
    c.nodes[first].kill9();
    let took = eventually(Duration::from_secs(60), || {
        let now = announcers(&hosts, &lb_ip)
            .into_iter()
            .find(|&a| a != first)?;
        from_lan(&hosts, &lb_url).map(|_| (now, killed_at.elapsed()))
    });
    let (second, took) = took.unwrap_or_else(|| {
        panic!(
            "no other node took {lb_ip} over (held by {:?})",
            announcers(&hosts, &lb_ip)
        )
    });
    eprintln!("node {first} killed: {lb_ip} answered from node {second} after {took:?}");
    // The dead node's replicas leave the endpoints; then no request fails.
    let removed = eventually(Duration::from_secs(60), || {
        let ips = endpoint_ips(&api);
        (!ips.is_empty() && ips.iter().all(|ip| !dead.contains(ip))).then(|| killed_at.elapsed())
    })
    .unwrap_or_else(|| panic!("endpoints still hold {dead:?}: {:?}", endpoint_ips(&api)));
    // ...and the client's node's rules.
    let unprogrammed = eventually(Duration::from_secs(30), || {
        let rules = hosts.on_host(far, &["iptables-save", "-t", "nat"]);
        dead.iter()
            .all(|ip| !rules.contains(&format!("{ip}:")))
            .then(|| killed_at.elapsed())
    })
    .unwrap_or_else(|| panic!("host {far} still forwards to {dead:?}"));
    eprintln!(
        "the killed node's endpoints {dead:?} left the Endpoints after {removed:?}, the client node's rules after {unprogrammed:?}"
    );
    for i in 0..30 {
        common::http_get_in(pid, &url)
            .unwrap_or_else(|e| panic!("request {i} after the kill: {e}"));
    }

    // Delete everything: no rule and no announced address is left on a live host.
    for path in [
        "/v1/namespaces/default/services/web",
        "/v1/namespaces/default/deployments/web",
        "/v1/namespaces/default/deployments/client",
    ] {
        let (code, body) = api.delete(path);
        assert_eq!(code, 200, "{path}: {body}");
    }
    for i in (0..hosts.count()).filter(|&i| i != first) {
        eventually(Duration::from_secs(30), || {
            let rules = hosts.on_host(i, &["iptables-save"]);
            let addrs = hosts.on_host(i, &["ip", "-4", "-o", "addr"]);
            (!rules.contains("OMNI-") && !addrs.contains(":olb")).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "host {i} keeps rules or addresses:\n{}",
                hosts.on_host(i, &["iptables-save"])
            )
        });
    }
}

const DB: &str = r#"apiVersion: apps/v1
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
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: dbclient}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: httpd
        image: busybox:latest
        command: [sh, -c, "mkdir -p /www && ip -4 -o addr | grep -v ' lo ' | awk '{print $4}' | cut -d/ -f1 | head -n1 > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 8080, targetPort: http}]
"#;

/// On host `node`: resolves db-0's full name (`nslookup`), its short name (`ping`, through
/// the search path) and fetches `http://db-0.db:8080/` (db-0 answers with its address;
/// busybox wget's own `-T` crashes, hence `timeout`).
fn db_client(node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: dbclient}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: dbclient}}}}
  template:
    metadata: {{labels: {{app: dbclient}}}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {{omnicloud.io/node: {node}}}
      containers:
      - name: c
        image: busybox:latest
        command: [sh, -c, "while true; do nslookup db-0.db.default.svc.cluster.local; ping -c1 -W1 db-0.db; echo \"BODY $(timeout 3 wget -q -O - http://db-0.db:8080/)\"; sleep 1; done"]
"#
    )
}

/// What the client's recent lines show for `ip`: the full name resolved to it, the short
/// name resolved to it, an answer by name from it.
fn seen(logs: &str, ip: &str) -> [bool; 3] {
    let lines: Vec<&str> = logs.lines().map(str::trim).collect();
    let has = |want: &str| lines.contains(&want);
    [
        has(&format!("Address: {ip}")),
        lines
            .iter()
            .any(|l| l.starts_with(&format!("PING db-0.db ({ip})"))),
        has(&format!("BODY {ip}")),
    ]
}

/// db-0's (IP, node) once it is ready with an address.
fn db0(api: &Api) -> Option<(String, String)> {
    let (code, i) = api.get("/v1/namespaces/default/instances/db-0");
    if code != 200 || i["status"]["ready"] != true {
        return None;
    }
    Some((
        i["status"]["ip"].as_str()?.to_string(),
        i["spec"]["nodeName"].as_str()?.to_string(),
    ))
}

#[test]
fn a_statefulset_member_is_found_by_name_across_hosts_and_followed_when_it_moves() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(hosts) = Hosts::new(3, 1) else {
        return;
    };
    let config = format!(
        "roles = [\"auto\"]\n{FAST_CLUSTER}[network]\ncluster_cidr = \"{CLUSTER_CIDR}\"\nnode_prefix = 24\n\
         dns_upstreams = [\"127.0.0.1:9\"]\n"
    );
    let mut c = Cluster::start_on(hosts.count(), &config, Some(&hosts));
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    // The client and the API on the far host (behind the router: the overlay path), never
    // killed; db-0 is kept off it (required anti-affinity to the client), so it runs on a
    // host of the first segment and moves to another one.
    let far = hosts.count() - 1;
    let api = c.nodes[far].api();
    let (code, body) = api.apply(&db_client(&c.nodes[far].name));
    assert_eq!(code, 200, "{body}");
    let client_name = eventually(Duration::from_secs(60), || {
        let (_, list) = api.get("/v1/namespaces/default/instances?labelSelector=app%3Ddbclient");
        list["items"]
            .as_array()?
            .iter()
            .find(|i| i["status"]["ready"] == true)?["metadata"]["name"]
            .as_str()
            .map(str::to_string)
    })
    .expect("the client instance never ran");
    let (code, body) = api.apply(DB);
    assert_eq!(code, 200, "{body}");
    // The API node is a follower: its replica may not hold the write yet.
    let svc = eventually(Duration::from_secs(10), || {
        let (code, svc) = api.get("/v1/namespaces/default/services/db");
        (code == 200).then_some(svc)
    })
    .expect("the Service db");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless: {svc}");
    let (first_ip, first_node) =
        eventually(Duration::from_secs(90), || db0(&api)).unwrap_or_else(|| {
            panic!(
                "db-0 never ready: {:?}",
                api.get("/v1/namespaces/default/instances/db-0")
            )
        });
    let victim = c
        .nodes
        .iter()
        .position(|n| n.name == first_node)
        .unwrap_or_else(|| panic!("db-0 on an unknown node {first_node}"));
    assert_ne!(victim, far, "db-0 is kept off the client's host");

    let logs = |c: &Cluster| c.nodes[far].cli(&["logs", &client_name, "--tail", "40"]).1;
    eventually(Duration::from_secs(60), || {
        (seen(&logs(&c), &first_ip) == [true; 3]).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "db-0.db never resolved to and answered from {first_ip}:\n{}",
            logs(&c)
        )
    });

    // db-0's node dies: after 2 x FENCE_AFTER db-0 runs on another node, and its name
    // follows it.
    let killed_at = Instant::now();
    c.nodes[victim].kill9();
    let (second_ip, second_node) = eventually(Duration::from_secs(120), || {
        db0(&api).filter(|(_, node)| *node != first_node)
    })
    .unwrap_or_else(|| {
        panic!(
            "db-0 never ran elsewhere: {:?}",
            api.get("/v1/namespaces/default/instances/db-0")
        )
    });
    let moved = killed_at.elapsed();
    assert_ne!(second_ip, first_ip);
    assert_ne!(second_node, c.nodes[far].name);
    // The name gives the new address, and a connection by name reaches it...
    let followed = eventually(Duration::from_secs(60), || {
        (seen(&logs(&c), &second_ip) == [true; 3]).then(|| killed_at.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "db-0.db does not follow db-0 from {first_ip} to {second_ip}:\n{}",
            logs(&c)
        )
    });
    // ...and never the old one again: none of the client's recent lines names it.
    eventually(Duration::from_secs(30), || {
        (seen(&logs(&c), &first_ip) == [false; 3]).then_some(())
    })
    .unwrap_or_else(|| panic!("db-0.db still gives {first_ip}:\n{}", logs(&c)));
    eprintln!(
        "node {victim} killed: db-0 ready on {second_node} ({second_ip}) after {moved:?}, \
         db-0.db resolved to it and answered from it by name after {followed:?}"
    );
}
