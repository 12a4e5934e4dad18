//! Cross-node routing with real nodes, containers and packets: three node hosts on one test
//! segment and a fourth behind a router namespace (`common::hosts`). An instance on each
//! host reaches an instance on every other host by IP and sees the caller's own instance
//! address (no NAT inside the cluster CIDR); every node reaches every instance. Nodes on
//! the segment route directly (host-gw: `via <peer address>`), the routed host over VXLAN
//! (`omni-vxlan`), read back from each host's kernel. A killed node's routes vanish from
//! the others; a gracefully stopped node leaves nothing; a node restarted after a kill
//! drops the routes it held to a node that has gone since. At the end no omnicloud route,
//! overlay link or VTEP address is left on any host. As root with the test images; skips
//! loudly elsewhere (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::Hosts;
use common::{eventually, Api, Cluster, FAST_CLUSTER};
use serde_json::Value;

/// Apart from the hosts' 10.74.S.0/24 and 10.75.S.0/24.
const CLUSTER_CIDR: &str = "10.93.0.0/16";
const VXLAN: &str = "omni-vxlan";

fn deployment(name: &str, node: &str) -> String {
    format!(
        "apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      nodeSelector: {{omnicloud.io/node: {node}}}\n      containers:\n      - name: http\n        \
         image: toolbox:latest\n        args: [workload, http, --port, \"8080\"]\n        \
         readinessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 1}}\n"
    )
}

/// The ready instance of Deployment `name`, once there is one.
fn ready_instance(api: &Api, name: &str) -> Option<Value> {
    let (_, list) = api.get(&format!(
        "/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3D{name}"
    ));
    list["items"]
        .as_array()?
        .iter()
        .find(|i| i["status"]["ready"] == true)
        .cloned()
}

/// `curl` of `url` from the network namespace at `netns` (a path); the body.
fn fetch(netns: &str, url: &str) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["curl", "-sf", "-m", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The /24 node subnet holding `ip` (node_prefix 24) and its VTEP address.
fn subnet_of(ip: &str) -> (String, String) {
    let base = ip.rsplit_once('.').unwrap().0;
    (format!("{base}.0/24"), format!("{base}.0"))
}

/// Host `i`'s omnicloud routes (`ip route show proto 77`), one per line.
fn routes(hosts: &Hosts, i: usize) -> Vec<String> {
    hosts
        .on_host(i, &["ip", "-4", "route", "show", "proto", "77"])
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.join(" ").replace(" proto 77", "")
        })
        .collect()
}

/// What host `i` should route to each peer in `alive` (by index): host-gw between hosts
/// on the segment (via the peer's address in `underlays`), VXLAN otherwise. Sorted as
/// `ip route` lists them.
fn expected_routes(
    hosts: &Hosts,
    subnets: &[(String, String)],
    underlays: &[String],
    i: usize,
    alive: &[usize],
) -> Vec<String> {
    let mut want: Vec<String> = alive
        .iter()
        .filter(|&&j| j != i)
        .map(|&j| {
            let (subnet, vtep) = &subnets[j];
            if hosts.is_far(i) || hosts.is_far(j) {
                format!("{subnet} via {vtep} dev {VXLAN} onlink")
            } else {
                format!("{subnet} via {} dev {}e0", underlays[j], hosts.ns(i))
            }
        })
        .collect();
    want.sort();
    want
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn has_vxlan(hosts: &Hosts, i: usize) -> bool {
    hosts.exec(&hosts.ns(i), &["ip", "link", "show", VXLAN]).0
}

/// Omnicloud's routes, overlay link and VTEP addresses (10.93.x.0/32) left on host `i`.
fn leftovers(hosts: &Hosts, i: usize) -> Vec<String> {
    let mut left = routes(hosts, i);
    if has_vxlan(hosts, i) {
        left.push(format!("link {VXLAN}"));
    }
    let addrs = hosts.on_host(i, &["ip", "-4", "-o", "addr"]);
    left.extend(
        addrs
            .lines()
            .filter(|l| l.contains(" 10.93.") && l.contains(".0/32"))
            .map(str::to_string),
    );
    left
}

/// What the hosts' kernels say about reaching `ip` (for a failure message).
fn diagnose(hosts: &Hosts, on: &[usize], ip: &str, from: &str) -> String {
    let mut out = String::new();
    let url = format!("http://{ip}:8080/health");
    for args in [
        &["ip", "-4", "addr"][..],
        &["ip", "-4", "route"],
        &["busybox", "ping", "-c", "1", "-W", "1", ip],
        &["curl", "-sS", "-m", "3", &url],
    ] {
        let o = Command::new("nsenter")
            .arg(format!("--net={from}"))
            .args(args)
            .output()
            .unwrap();
        out.push_str(&format!(
            "instance$ {}\n{}{}\n",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    for &i in on {
        for args in [
            &["ip", "route", "get", ip][..],
            &["busybox", "ping", "-c", "1", "-W", "1", ip],
            &["ip", "-4", "route"],
            &["ip", "-4", "addr"],
            &["iptables", "-t", "nat", "-S"],
            &["iptables", "-S"],
            &[
                "sysctl",
                "net.ipv4.ip_forward",
                "net.ipv4.conf.all.rp_filter",
            ],
        ] {
            let (_, o, e) = hosts.exec(&hosts.ns(i), args);
            out.push_str(&format!("host {i}$ {}\n{o}{e}\n", args.join(" ")));
        }
    }
    out
}

fn wait_routes(
    hosts: &Hosts,
    subnets: &[(String, String)],
    underlays: &[String],
    i: usize,
    alive: &[usize],
) -> Duration {
    let t = Instant::now();
    let want = expected_routes(hosts, subnets, underlays, i, alive);
    eventually(Duration::from_secs(30), || {
        (sorted(routes(hosts, i)) == want).then_some(())
    })
    .unwrap_or_else(|| panic!("host {i} routes {:?}, want {want:?}", routes(hosts, i)));
    t.elapsed()
}

#[test]
fn instances_reach_each_other_across_nodes_by_host_gw_and_vxlan() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(hosts) = Hosts::new(3, 1) else {
        return;
    };
    let config = format!(
        "roles = [\"auto\"]\n{FAST_CLUSTER}[network]\ncluster_cidr = \"{CLUSTER_CIDR}\"\nnode_prefix = 24\n"
    );
    let mut c = Cluster::start_on(hosts.count(), &config, Some(&hosts));
    for n in &c.nodes {
        common::images::import(&n.dir, &layout);
    }
    let api = c.nodes[0].api();
    let n = hosts.count();
    // The harness: the LAN client reaches every node, the far one through the router.
    for i in 0..n {
        let url = format!("https://{}:7070/readyz", hosts.ip(i));
        let ca = c.nodes[i].dir.join("tls/ca.crt");
        let ca = ca.to_str().unwrap();
        let (ok, _, err) = hosts.on_client(&["curl", "-sf", "-m", "3", "--cacert", ca, &url]);
        assert!(ok, "the LAN client cannot reach node host {i}: {err}");
    }
    let hops = hosts.on_client(&["ip", "route", "get", &hosts.ip(n - 1)]);
    assert!(hops.1.contains(" via "), "{hops:?}");
    for i in 0..n {
        let (code, body) = api.apply(&deployment(&format!("p{i}"), &c.nodes[i].name));
        assert_eq!(code, 200, "{body}");
    }
    // One ready instance per host: its address, and its container's network namespace.
    let mut ips = Vec::new();
    let mut netns = Vec::new();
    for i in 0..n {
        let inst = eventually(Duration::from_secs(120), || {
            ready_instance(&api, &format!("p{i}"))
        })
        .unwrap_or_else(|| panic!("p{i} never ready on {}", c.nodes[i].name));
        assert_eq!(inst["status"]["node"], c.nodes[i].name.as_str(), "{inst}");
        let ip = inst["status"]["ip"].as_str().unwrap().to_string();
        let name = inst["metadata"]["name"].as_str().unwrap();
        let pid = eventually(Duration::from_secs(10), || {
            common::container_pid(&c.nodes[i].dir, name)
        })
        .unwrap_or_else(|| panic!("no running container for {name}"));
        ips.push(ip);
        netns.push(format!("/proc/{pid}/ns/net"));
    }
    let subnets: Vec<(String, String)> = ips.iter().map(|ip| subnet_of(ip)).collect();
    let all: Vec<usize> = (0..n).collect();
    let mut underlays: Vec<String> = (0..n).map(|i| hosts.ip(i)).collect();

    // The kernel of each host holds host-gw routes to segment peers and VXLAN routes to
    // the routed host (and the overlay link only where some peer needs it).
    for i in 0..n {
        wait_routes(&hosts, &subnets, &underlays, i, &all);
        assert!(has_vxlan(&hosts, i), "host {i} has no {VXLAN}");
        let link = hosts.on_host(i, &["ip", "-d", "link", "show", VXLAN]);
        assert!(
            link.contains("vxlan id 1 ") && link.contains("dstport 4789"),
            "{link}"
        );
        let vtep = &subnets[i].1;
        let addrs = hosts.on_host(i, &["ip", "-4", "addr", "show", "dev", VXLAN]);
        assert!(addrs.contains(&format!("inet {vtep}/32")), "{addrs}");
    }

    // Real packets: every instance reaches every other one and is seen with its own
    // address; every node reaches every instance.
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let url = format!("http://{}:8080/peer", ips[j]);
            let seen = eventually(Duration::from_secs(20), || fetch(&netns[i], &url))
                .unwrap_or_else(|| {
                    panic!(
                        "instance on host {i} cannot reach {url} on host {j}\n{}",
                        diagnose(&hosts, &[i, j], &ips[j], &netns[i])
                    )
                });
            assert_eq!(
                seen, ips[i],
                "host {i} -> host {j}: source address rewritten"
            );
        }
        for (j, ip) in ips.iter().enumerate() {
            let url = format!("http://{ip}:8080/health");
            let body = eventually(Duration::from_secs(20), || {
                fetch(&format!("/run/netns/{}", hosts.ns(i)), &url)
            })
            .unwrap_or_else(|| panic!("node host {i} cannot reach the instance on host {j}"));
            assert_eq!(body, "ok");
        }
    }

    // A node moves to another address: every peer routes its subnet via the new one, and
    // its instance (adopted across the restart) is reached there.
    let moved = 2;
    let status = c.nodes[moved].stop();
    assert!(status.success(), "{status}");
    let new_ip = hosts.add_address(moved);
    let args: Vec<String> = c.nodes[moved]
        .args()
        .into_iter()
        .map(|a| {
            if a == underlays[moved] {
                new_ip.clone()
            } else {
                a
            }
        })
        .collect();
    c.nodes[moved].set_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.nodes[moved].restart();
    underlays[moved] = new_ip;
    for i in 0..n {
        let took = wait_routes(&hosts, &subnets, &underlays, i, &all);
        eprintln!("host {i} routes the moved node's subnet via its new address after {took:?}");
    }
    let url = format!("http://{}:8080/peer", ips[moved]);
    let seen = eventually(Duration::from_secs(20), || fetch(&netns[0], &url))
        .unwrap_or_else(|| panic!("the moved node's instance is not reached"));
    assert_eq!(seen, ips[0]);

    // kill -9 a node on the segment: its routes vanish from every other host.
    c.nodes[1].kill9();
    let alive = [0, 2, 3];
    for &i in &alive {
        let took = wait_routes(&hosts, &subnets, &underlays, i, &alive);
        eprintln!("host {i} dropped the killed node's route in {took:?}");
    }
    // Its own host keeps what it had (nothing ran to remove it).
    assert_eq!(
        sorted(routes(&hosts, 1)),
        expected_routes(&hosts, &subnets, &underlays, 1, &all)
    );

    // Stop the routed node: it leaves nothing behind, and the others drop the overlay.
    let status = c.nodes[3].stop();
    assert!(status.success(), "{status}");
    assert_eq!(leftovers(&hosts, 3), Vec::<String>::new());
    let alive = [0, 2];
    for &i in &alive {
        wait_routes(&hosts, &subnets, &underlays, i, &alive);
        eventually(Duration::from_secs(30), || {
            (!has_vxlan(&hosts, i)).then_some(())
        })
        .unwrap_or_else(|| panic!("host {i} kept {VXLAN} with no overlay peer"));
    }

    // The killed node comes back: it drops its stale route to the stopped node and its
    // overlay link, and routes to the live peers again; they route to it again.
    c.nodes[1].restart();
    let alive = [0, 1, 2];
    for &i in &alive {
        wait_routes(&hosts, &subnets, &underlays, i, &alive);
    }
    eventually(Duration::from_secs(30), || {
        (!has_vxlan(&hosts, 1)).then_some(())
    })
    .expect("the restarted node removed its stale overlay link");

    // Everything deleted, every node stopped: nothing of omnicloud's routing is left.
    for i in 0..n {
        let (code, body) = api.delete(&format!("/v1/namespaces/default/deployments/p{i}"));
        assert!(code < 300, "{body}");
    }
    for &i in &alive {
        let status = c.nodes[i].stop();
        assert!(status.success(), "{status}");
    }
    for i in 0..n {
        assert_eq!(leftovers(&hosts, i), Vec::<String>::new(), "host {i}");
    }
}

/// `backend = "vxlan"` sends even same-segment peers over the overlay, and packets pass; a
/// node configured `host-gw` routes nothing to a peer behind the router and says why in its
/// log, naming the setting.
#[test]
fn forced_backends_vxlan_on_one_segment_and_host_gw_refusing_a_routed_peer() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(hosts) = Hosts::new(2, 1) else {
        return;
    };
    let config = format!(
        "roles = [\"auto\"]\n{FAST_CLUSTER}[network]\ncluster_cidr = \"{CLUSTER_CIDR}\"\nnode_prefix = 24\nbackend = \"vxlan\"\n"
    );
    let mut c = Cluster::start_on(2, &config, Some(&hosts));
    // The third node (behind the router) only allows host-gw.
    let host_gw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_gw.path(), config.replace("\"vxlan\"", "\"host-gw\"")).unwrap();
    let third = c.add_on_host(&hosts, 2);
    let mut args = c.nodes[third].args();
    let at = args.iter().position(|a| a == "--config").unwrap();
    args[at + 1] = host_gw.path().to_str().unwrap().to_string();
    c.nodes[third].stop();
    c.nodes[third].set_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.nodes[third].restart();

    for n in &c.nodes[..2] {
        common::images::import(&n.dir, &layout);
    }
    let api = c.nodes[0].api();
    let mut ips = Vec::new();
    let mut netns = Vec::new();
    for i in 0..2 {
        let (code, body) = api.apply(&deployment(&format!("v{i}"), &c.nodes[i].name));
        assert_eq!(code, 200, "{body}");
    }
    for i in 0..2 {
        let inst = eventually(Duration::from_secs(120), || {
            ready_instance(&api, &format!("v{i}"))
        })
        .unwrap_or_else(|| panic!("v{i} never ready"));
        let name = inst["metadata"]["name"].as_str().unwrap();
        let pid = eventually(Duration::from_secs(10), || {
            common::container_pid(&c.nodes[i].dir, name)
        })
        .unwrap_or_else(|| panic!("no running container for {name}"));
        ips.push(inst["status"]["ip"].as_str().unwrap().to_string());
        netns.push(format!("/proc/{pid}/ns/net"));
    }
    // Same segment, yet over the overlay both ways.
    for (i, j) in [(0, 1), (1, 0)] {
        let (subnet, vtep) = subnet_of(&ips[j]);
        let want = format!("{subnet} via {vtep} dev {VXLAN} onlink");
        eventually(Duration::from_secs(30), || {
            routes(&hosts, i).contains(&want).then_some(())
        })
        .unwrap_or_else(|| panic!("host {i} routes {:?}, want {want}", routes(&hosts, i)));
        let url = format!("http://{}:8080/peer", ips[j]);
        let seen = eventually(Duration::from_secs(20), || fetch(&netns[i], &url))
            .unwrap_or_else(|| panic!("host {i} -> {url} over VXLAN failed"));
        assert_eq!(seen, ips[i]);
    }
    // The host-gw node: no route to the two peers off its segment, and it says why.
    let said = eventually(Duration::from_secs(30), || {
        let log = c.nodes[third].log();
        log.contains("network.backend is \"host-gw\"").then_some(())
    });
    assert!(said.is_some(), "{}", c.nodes[third].log());
    assert_eq!(routes(&hosts, 2), Vec::<String>::new());
    assert!(!has_vxlan(&hosts, 2));
}

/// The kernel glue alone (no node), in a namespace of its own: a plan applied twice changes
/// nothing the second time; a stale route of omnicloud's protocol goes and a foreign route
/// stays; the overlay link goes with its last peer; `clear` (node stop) and `purge`
/// (`uninstall --purge`) leave only foreign routes.
/// The test runs itself again inside the namespace (`nsenter`), so no thread of this
/// process has to switch namespaces.
#[test]
fn the_kernel_glue_is_idempotent_and_removes_only_what_it_owns() {
    const INNER: &str = "OMNICLOUD_GLUE_UNDERLAY";
    if let Ok(me) = std::env::var(INNER) {
        glue_in_this_namespace(me.parse().unwrap());
        return;
    }
    let Some(net) = common::netns::TestNet::new(1) else {
        return;
    };
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.ns(0)))
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_kernel_glue_is_idempotent_and_removes_only_what_it_owns",
            "--nocapture",
        ])
        .env(INNER, net.ip(0))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{stderr}"
    );
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn glue_in_this_namespace(me: std::net::Ipv4Addr) {
    use omnicloud::config::RoutingBackend;
    use omnicloud::model::Subnet;
    use omnicloud::net::netlink::Kernel;
    use omnicloud::net::routes::{self, Local, Peer};

    let next = |k: u8| {
        let [a, b, c, d] = me.octets();
        std::net::Ipv4Addr::new(a, b, c, d + k)
    };
    let net = |s: &str| Subnet::parse(s).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kernel = Kernel::connect().unwrap();
        let underlay = kernel
            .underlay(me)
            .await
            .unwrap()
            .expect("the veth holds it");
        let [a, b, c, _] = me.octets();
        let segment = net(&format!("{a}.{b}.{c}.0/24"));
        assert_eq!(underlay.connected, vec![segment]);
        let local = Local {
            name: "a".into(),
            underlay: me,
            connected: underlay.connected.clone(),
            subnet: Some(net("10.66.0.0/24")),
        };
        let on_segment = Peer {
            name: "b".into(),
            underlay: next(1),
            subnet: net("10.66.1.0/24"),
        };
        // Only programmed, never sent to.
        let routed = Peer {
            name: "c".into(),
            underlay: "10.75.251.7".parse().unwrap(),
            subnet: net("10.66.2.0/24"),
        };
        let both = routes::plan(RoutingBackend::Auto, &local, &[on_segment.clone(), routed]);
        let first = kernel.apply(&both, me, &underlay).await.unwrap();
        assert!(first.removed.is_empty(), "{first:?}");
        assert_eq!(
            first.added.len(),
            6,
            "link, address, fdb, neigh, 2 routes: {first:?}"
        );
        let again = kernel.apply(&both, me, &underlay).await.unwrap();
        assert!(again.is_empty(), "a second apply changed {again:?}");
        let fdb = sh(&["bridge", "fdb", "show", "dev", VXLAN]);
        assert!(fdb.contains("02:0c:0a:42:02:00 dst 10.75.251.7"), "{fdb}");

        // A stale route of ours goes; someone else's route stays.
        let (stale_gw, foreign_gw) = (next(3).to_string(), next(2).to_string());
        sh(&[
            "ip",
            "route",
            "add",
            "10.66.8.0/24",
            "via",
            &stale_gw,
            "proto",
            "77",
        ]);
        sh(&["ip", "route", "add", "10.66.9.0/24", "via", &foreign_gw]);
        let fixed = kernel.apply(&both, me, &underlay).await.unwrap();
        assert_eq!(
            fixed.removed,
            vec![format!("route 10.66.8.0/24 via {stale_gw}")]
        );
        assert!(fixed.added.is_empty(), "{fixed:?}");

        // The routed peer leaves: the overlay link goes with it.
        let one = routes::plan(RoutingBackend::Auto, &local, &[on_segment]);
        let shrunk = kernel.apply(&one, me, &underlay).await.unwrap();
        assert!(
            shrunk.removed.contains(&format!("link {VXLAN}")),
            "{shrunk:?}"
        );
        assert!(!sh(&["ip", "link"]).contains(VXLAN));

        let cleared = kernel.clear().await.unwrap();
        assert_eq!(
            cleared.removed,
            vec![format!("route 10.66.1.0/24 via {}", next(1))]
        );
        assert_eq!(sh(&["ip", "route", "show", "proto", "77"]), "");
        assert!(sh(&["ip", "route"]).contains("10.66.9.0/24"));
        // Again, for `uninstall --purge` below.
        kernel.apply(&both, me, &underlay).await.unwrap();
    });
    drop(runtime);
    // What `uninstall --purge` runs (a killed node's leftovers): nothing of ours remains.
    let purged = omnicloud::net::purge().unwrap();
    assert_eq!(purged.removed.len(), 3, "{purged:?}");
    assert_eq!(sh(&["ip", "route", "show", "proto", "77"]), "");
    assert!(!sh(&["ip", "link"]).contains(VXLAN));
    assert!(!sh(&["ip", "-4", "addr"]).contains("10.66.0.0/32"));
    assert!(sh(&["ip", "route"]).contains("10.66.9.0/24"));
}
