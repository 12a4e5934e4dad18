//! Separate test hosts on one machine: a network namespace per host, each with a veth on
//! one bridge (10.77.S.0/24, S unique per TestNet), and partitions made with iptables
//! inside the namespaces. Needs root, `ip` and `iptables`; without them a test skips
//! loudly, and fails instead when OMNICLOUD_REQUIRE_ALL=1 (CI).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TestNet {
    tag: String,
    subnet: u32,
    hosts: usize,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Says loudly that a test skips, or panics when skipping is not allowed.
pub fn require(capability: &str, why: String) {
    if std::env::var("OMNICLOUD_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{capability} is required (OMNICLOUD_REQUIRE_ALL=1): {why}");
    }
    eprintln!("\n!!! SKIPPED: needs {capability}: {why}\n");
}

/// Runs `args` in network namespace `ns` (`nsenter --net`): its stdout; panics (with its
/// stderr) when it fails.
pub fn run_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(args)
        .output()
        .expect("running nsenter");
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Test hosts nodes can run on ([`super::Cluster::start_on`]): host i's network namespace
/// and address. [`TestNet`] (one segment) and [`super::hosts::Hosts`] (two segments, a
/// router and a LAN client) are both.
pub trait Hosting {
    fn ns(&self, i: usize) -> String;
    fn ip(&self, i: usize) -> String;
}

impl Hosting for TestNet {
    fn ns(&self, i: usize) -> String {
        TestNet::ns(self, i)
    }

    fn ip(&self, i: usize) -> String {
        TestNet::ip(self, i)
    }
}

impl TestNet {
    /// `hosts` namespaces on a fresh bridge, or None (skipped) where that is impossible.
    pub fn new(hosts: usize) -> Option<TestNet> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let subnet = (std::process::id() + n * 7) % 200 + 20;
        let net = TestNet {
            tag: format!("oc{}{}", std::process::id() % 10000, n),
            subnet,
            hosts,
        };
        if let Err(e) = net.setup() {
            require("root with ip netns and iptables", e);
            return None;
        }
        Some(net)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, i + 1)
    }

    fn setup(&self) -> Result<(), String> {
        for tool in ["ip", "iptables"] {
            run(&["which", tool]).map_err(|_| format!("{tool} not installed"))?;
        }
        let br = self.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{}.254/24", self.subnet),
            "dev",
            &br,
        ])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for i in 0..self.hosts {
            let ns = self.ns(i);
            let (host_end, ns_end) = (format!("{}h{i}", self.tag), format!("{}v{i}", self.tag));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ])?;
            run(&["ip", "link", "set", &ns_end, "netns", &ns])?;
            run(&["ip", "link", "set", &host_end, "master", &br, "up"])?;
            let addr = format!("{}/24", self.ip(i));
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &ns_end,
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &ns_end, "up",
            ])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Drops all traffic between host `i` and each of `others`, in both directions, using
    /// iptables inside the namespaces (the test process on the bridge still reaches all).
    pub fn cut(&self, side_a: &[usize], side_b: &[usize]) {
        for (mine, theirs) in [(side_a, side_b), (side_b, side_a)] {
            for &i in mine {
                for &j in theirs {
                    let ns = self.ns(i);
                    let peer = self.ip(j);
                    run(&[
                        "ip", "netns", "exec", &ns, "iptables", "-I", "INPUT", "-s", &peer, "-j",
                        "DROP",
                    ])
                    .unwrap();
                    run(&[
                        "ip", "netns", "exec", &ns, "iptables", "-I", "OUTPUT", "-d", &peer, "-j",
                        "DROP",
                    ])
                    .unwrap();
                }
            }
        }
    }

    pub fn heal(&self) {
        for i in 0..self.hosts {
            let ns = self.ns(i);
            run(&["ip", "netns", "exec", &ns, "iptables", "-F", "INPUT"]).unwrap();
            run(&["ip", "netns", "exec", &ns, "iptables", "-F", "OUTPUT"]).unwrap();
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
            let _ = run(&["ip", "link", "del", &format!("{}h{i}", self.tag)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }
}
