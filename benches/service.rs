//! Services data plane benchmark with real containers (root): one node in a test network
//! namespace, a busybox httpd instance behind a ClusterIP Service, and a client instance.
//! From the client's network namespace, Apache Bench (`ab`, apache2-utils: a real
//! third-party load tool, one new TCP connection per request) runs the same workload
//! against the Service's cluster IP (DNAT by the node's OMNI-* rules) and straight against
//! the instance's IP, in the same run; the figures are requests/s and p50/p99 latency, and
//! the ratio is cluster IP / direct. Then two reaction times:
//! - Service created -> first connection through its cluster IP answered (apply, the rules
//!   programmed on the node, a new TCP connection every 20 ms until one is answered);
//! - an instance's ready status committed (seen through the API) -> the node's rules
//!   balance over it (`iptables-save`) and -> a new connection to the cluster IP is
//!   answered by it (a Service scaled from 0 to 1 replica, which rejects connections until
//!   then).
//!
//! Run: `cargo bench --bench service` (5 alternating pairs of 600-request `ab` runs per
//! path and concurrency, 5 rounds of each reaction time; about 30 s). Without `--bench`
//! (as `cargo test --all-targets` runs it) a smoke run: 100 requests, one round. Node,
//! containers, `ab` and this process share the machine's cores; the reaction times are
//! polled (API and `iptables-save` a few ms per poll, connections every 20 ms), which
//! bounds their resolution.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::TestNet;
use common::{eventually, TestNode};
use serde_json::Value;

const CONFIG: &str = "[network]\ncluster_cidr = \"10.89.0.0/16\"\nbridge = \"omnibench0\"\n\
                      service_cidr = \"10.97.0.0/24\"\n";

/// busybox httpd on 8080, `replicas` of it.
fn httpd(name: &str, replicas: u32) -> String {
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
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"#
    )
}

fn service(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {app}}}\n  \
         ports: [{{name: http, port: 80, targetPort: http}}]\n"
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
      - {name: sleep, image: busybox:latest, command: [sleep, "3600"]}
"#;

struct Bench {
    node: TestNode,
    ns: String,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
    }
}

impl Bench {
    fn apply(&self, yaml: &str) {
        let (code, body) = self.node.api().apply(yaml);
        assert_eq!(code, 200, "{body}");
    }

    fn ready(&self, app: &str) -> Vec<Value> {
        let (_, v) = self.node.api().get(&format!(
            "/v1/namespaces/default/instances?labelSelector=app%3D{app}"
        ));
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["status"]["ready"] == true)
            .cloned()
            .collect()
    }

    fn wait_ready(&self, app: &str) -> Value {
        eventually(Duration::from_secs(60), || {
            self.ready(app).into_iter().next()
        })
        .unwrap_or_else(|| panic!("{app} never ready:\n{}", self.node.log()))
    }

    fn cluster_ip(&self, name: &str) -> String {
        let (_, s) = self
            .node
            .api()
            .get(&format!("/v1/namespaces/default/services/{name}"));
        s["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_else(|| panic!("no cluster IP: {s}"))
            .to_string()
    }

    /// The endpoint addresses the node's rules balance Service `name`'s port over.
    fn balanced_over(&self, name: &str) -> Vec<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["iptables-save", "-t", "nat"])
            .output()
            .unwrap();
        let marker = format!("--comment \"default/{name}:http -> ");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A OMNI-SVC-"))
            .filter_map(|l| l.split(&marker).nth(1))
            .filter_map(|rest| rest.split(':').next().map(str::to_string))
            .collect()
    }
}

/// Runs `f` on a thread that entered the network namespace of process `pid`.
fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// One HTTP/1.0 request on a new connection, answered with a status line.
fn answered(at: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&at, Duration::from_millis(20)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 12];
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

/// From inside `pid`'s network namespace: the time from `since` until a new connection to
/// `at` is answered (every 20 ms at most), within 30 s.
fn first_answer(pid: u32, at: SocketAddr, since: Instant) -> Duration {
    in_netns(pid, move || {
        while since.elapsed() < Duration::from_secs(30) {
            let t = Instant::now();
            if answered(at) {
                return since.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20).saturating_sub(t.elapsed()));
        }
        panic!("{at} never answered");
    })
}

struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
}

/// `ab -n requests -c concurrency` from `pid`'s network namespace against `url`.
fn ab(pid: u32, url: &str, requests: usize, concurrency: usize) -> Load {
    let csv = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ab", "-q", "-r", "-n", &requests.to_string()])
        .args(["-c", &concurrency.to_string(), "-e"])
        .arg(csv.path())
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ab {url}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in ab's output: {text}"))
    };
    let failed = field("Failed requests:");
    assert_eq!(failed, 0.0, "ab {url}: {text}");
    let table = std::fs::read_to_string(csv.path()).unwrap();
    let pct = |p: &str| -> f64 {
        table
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{p},")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {p}% in ab's table: {table}"))
    };
    Load {
        rps: field("Requests per second:"),
        p50: pct("50"),
        p99: pct("99"),
    }
}

/// The median of each figure over several runs.
fn median(runs: &[Load]) -> Load {
    let mid = |f: fn(&Load) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Load {
        rps: mid(|l| l.rps),
        p50: mid(|l| l.p50),
        p99: mid(|l| l.p99),
    }
}

/// The same ab workload against the instance directly and through the cluster IP at
/// concurrency 1 and 8: `runs` alternating pairs of `requests` each (so that a load
/// change on the machine hits both paths alike), the median of each figure printed.
fn throughput(client: u32, direct: &str, vip: &str, requests: usize, runs: usize) {
    // Warm-up: the first connections through each path (conntrack, ARP, page cache).
    ab(client, direct, 50, 1);
    ab(client, vip, 50, 1);
    for concurrency in [1, 8] {
        let (mut ds, mut vs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            ds.push(ab(client, direct, requests, concurrency));
            vs.push(ab(client, vip, requests, concurrency));
        }
        let (d, v) = (median(&ds), median(&vs));
        println!(
            "service: HTTP GETs, a new connection each, concurrency {concurrency}, median of \
             {runs} runs of {requests}: direct {:.0} req/s p50 {:.3} ms p99 {:.3} ms; cluster IP \
             {:.0} req/s p50 {:.3} ms p99 {:.3} ms; ratio cluster IP / direct: {:.2}x req/s, \
             {:.2}x p50, {:.2}x p99",
            d.rps,
            d.p50,
            d.p99,
            v.rps,
            v.p50,
            v.p99,
            v.rps / d.rps,
            v.p50 / d.p50,
            v.p99 / d.p99,
        );
    }
}

/// Service created -> first connection through its cluster IP answered, `rounds` times.
fn creation_to_connection(b: &Bench, client: u32, rounds: usize) -> Vec<Duration> {
    (0..rounds)
        .map(|r| {
            let name = format!("probe{r}");
            let t0 = Instant::now();
            b.apply(&service(&name, "web"));
            let at: SocketAddr = format!("{}:80", b.cluster_ip(&name)).parse().unwrap();
            let took = first_answer(client, at, t0);
            let (code, body) = b
                .node
                .api()
                .delete(&format!("/v1/namespaces/default/services/{name}"));
            assert_eq!(code, 200, "{body}");
            took
        })
        .collect()
}

/// An instance of `late` (0 -> 1 replica) ready in the API -> (in the node's rules, first
/// connection through the cluster IP answered), `rounds` times.
fn ready_to_dataplane(b: &Bench, client: u32, rounds: usize) -> Vec<(Duration, Duration)> {
    let at: SocketAddr = format!("{}:80", b.cluster_ip("late")).parse().unwrap();
    (0..rounds)
        .map(|_| {
            let t0 = Instant::now();
            b.apply(&httpd("late", 1));
            let answer = std::thread::spawn(move || first_answer(client, at, t0));
            let ready_at = eventually(Duration::from_secs(60), || {
                b.ready("late").first().map(|i| {
                    let ip = i["status"]["ip"].as_str().unwrap().to_string();
                    (t0.elapsed(), ip)
                })
            })
            .expect("late never ready");
            let (ready, ip) = ready_at;
            let rules = eventually(Duration::from_secs(30), || {
                b.balanced_over("late").contains(&ip).then(|| t0.elapsed())
            })
            .expect("the ready instance never reached the node's rules");
            let answered = answer.join().unwrap();
            b.apply(&httpd("late", 0));
            eventually(Duration::from_secs(30), || {
                (b.ready("late").is_empty() && b.balanced_over("late").is_empty()).then_some(())
            })
            .expect("late scaled to 0 left the rules");
            (rules.saturating_sub(ready), answered.saturating_sub(ready))
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (requests, runs, rounds) = if full { (600, 5, 5) } else { (100, 1, 1) };
    let Some(layout) = common::images::layout() else {
        return;
    };
    if Command::new("ab").arg("-V").output().is_err() {
        common::netns::require("ab (apache2-utils)", "the load tool".into());
        return;
    }
    let Some(net) = TestNet::new(1) else {
        return;
    };
    let (ns, ip) = (net.ns(0), net.ip(0));
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), CONFIG).unwrap();
    let node = TestNode::start_opts(
        "svcbench",
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
    common::images::import(&node.dir, &layout);
    let b = Bench { node, ns };
    b.apply(&format!(
        "{}---\n{}---\n{}---\n{}---\n{CLIENT}",
        httpd("web", 1),
        service("web", "web"),
        httpd("late", 0),
        service("late", "late"),
    ));
    let web = b.wait_ready("web");
    let client = b.wait_ready("client")["status"]["pid"].as_u64().unwrap() as u32;
    let web_ip = web["status"]["ip"].as_str().unwrap().to_string();
    let vip = b.cluster_ip("web");
    eventually(Duration::from_secs(30), || {
        (b.balanced_over("web") == [web_ip.clone()]).then_some(())
    })
    .expect("web in the node's rules");
    first_answer(client, format!("{vip}:80").parse().unwrap(), Instant::now());

    throughput(
        client,
        &format!("http://{web_ip}:8080/"),
        &format!("http://{vip}/"),
        requests,
        runs,
    );

    let mut created = creation_to_connection(&b, client, rounds);
    created.sort();
    println!(
        "service: created -> first connection through its cluster IP answered, {rounds} rounds: \
         median {:.0} ms, max {:.0} ms",
        ms(created[created.len() / 2]),
        ms(*created.last().unwrap())
    );

    let reacted = ready_to_dataplane(&b, client, rounds);
    let mut rules: Vec<Duration> = reacted.iter().map(|r| r.0).collect();
    let mut answered: Vec<Duration> = reacted.iter().map(|r| r.1).collect();
    rules.sort();
    answered.sort();
    println!(
        "service: instance ready (committed, seen in the API) -> in the node's rules: median \
         {:.0} ms, max {:.0} ms; -> first connection through the cluster IP answered by it: \
         median {:.0} ms, max {:.0} ms ({rounds} rounds)",
        ms(rules[rules.len() / 2]),
        ms(*rules.last().unwrap()),
        ms(answered[answered.len() / 2]),
        ms(*answered.last().unwrap()),
    );
    println!(
        "service: reproduce with `cargo bench --bench service` (as root, apache2-utils installed)"
    );
}
