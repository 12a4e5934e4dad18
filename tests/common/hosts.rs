//! Several test hosts on two L2 segments, for cluster networking tests: `lan` node hosts
//! (network namespaces with a veth on one test bridge, 10.74.S.0/24), a router namespace
//! joining that segment to a second one (10.75.S.0/24) with `far` more node hosts behind it
//! (not on the first segment: the overlay path), and a "LAN client" namespace on the first
//! segment, standing in for a laptop. The bridges live in a switch namespace of their own
//! (this machine's iptables never see the bridged frames). The test process reaches every
//! host directly (it has .254 on both segments); the hosts reach the other segment only
//! through the router.
//!
//! Nodes run in the hosts with [`super::Cluster::start_on`] (`Some(&hosts)`): node i on host
//! i, bound to its address. [`Hosts::exec`] runs a command in any of the namespaces
//! (`nsenter --net`, so /sys stays the machine's, as containers need).
//!
//! Drop kills every process left in the namespaces, deletes them and both bridges, and
//! checks that nothing with this harness's tag is left (`leftovers`). Needs root, `ip` and
//! `nsenter`; without them a test skips loudly (fails under OMNICLOUD_REQUIRE_ALL=1).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::{require, Hosting};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The router's and the LAN client's last address byte on their segment.
const ROUTER: u8 = 250;
const CLIENT: u8 = 200;
/// The test process's address on both bridges.
const TEST: u8 = 254;

pub struct Hosts {
    tag: String,
    /// The third address byte of both segments: 10.74.S.0/24 (lan) and 10.75.S.0/24 (far).
    s: u8,
    lan: usize,
    far: usize,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A third address byte S whose 10.74.S.0/24 and 10.75.S.0/24 no interface here uses,
/// starting from one picked by `n` (this process's n-th harness).
fn free_segment_byte(n: u32) -> Option<u8> {
    let used = run(&["ip", "-4", "-o", "addr"]).unwrap_or_default();
    let start = std::process::id() + n * 7;
    (0..200)
        .map(|k| ((start + k) % 200 + 20) as u8)
        .find(|s| !used.contains(&format!("10.74.{s}.")) && !used.contains(&format!("10.75.{s}.")))
}

impl Hosting for Hosts {
    fn ns(&self, i: usize) -> String {
        Hosts::ns(self, i)
    }

    fn ip(&self, i: usize) -> String {
        Hosts::ip(self, i)
    }
}

impl Hosts {
    /// `lan` hosts on the first segment and `far` hosts behind the router, or None (after
    /// a loud skip) where that cannot be set up.
    pub fn new(lan: usize, far: usize) -> Option<Hosts> {
        // One number per harness: its tag and its segments differ from every other's.
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let Some(s) = free_segment_byte(n) else {
            require("a free 10.74.S.0/24", "every S is in use".into());
            return None;
        };
        let hosts = Hosts {
            tag: format!("och{}{}", std::process::id() % 10000, n),
            s,
            lan,
            far,
        };
        if let Err(e) = hosts.setup() {
            require("root with ip netns and nsenter", e);
            return None;
        }
        Some(hosts)
    }

    /// Node hosts in all (lan first, then far).
    pub fn count(&self) -> usize {
        self.lan + self.far
    }

    /// Host `i` is behind the router (not on the first segment).
    pub fn is_far(&self, i: usize) -> bool {
        i >= self.lan
    }

    /// The namespace of node host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The address of node host `i`.
    pub fn ip(&self, i: usize) -> String {
        if self.is_far(i) {
            format!("10.75.{}.{}", self.s, i - self.lan + 1)
        } else {
            format!("10.74.{}.{}", self.s, i + 1)
        }
    }

    pub fn router_ns(&self) -> String {
        format!("{}r", self.tag)
    }

    pub fn client_ns(&self) -> String {
        format!("{}c", self.tag)
    }

    /// The LAN client's address (on the first segment).
    pub fn client_ip(&self) -> String {
        format!("10.74.{}.{CLIENT}", self.s)
    }

    /// The first segment, e.g. `10.74.S.0/24` (pick cluster CIDRs apart from both).
    pub fn lan_subnet(&self) -> String {
        format!("10.74.{}.0/24", self.s)
    }

    pub fn far_subnet(&self) -> String {
        format!("10.75.{}.0/24", self.s)
    }

    /// Gives node host `i` a second address on its segment (10.x.S.100+i), for a node that
    /// moves to a new address; returns it.
    pub fn add_address(&self, i: usize) -> String {
        let first = self.ip(i);
        let (base, _) = first.rsplit_once('.').unwrap();
        let second = format!("{base}.{}", 100 + i);
        let dev = format!("{}e0", self.ns(i));
        self.on_host(
            i,
            &["ip", "addr", "add", &format!("{second}/24"), "dev", &dev],
        );
        second
    }

    /// Runs `args` in namespace `ns`: (success, stdout, stderr).
    pub fn exec(&self, ns: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(args)
            .output()
            .expect("running nsenter");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `args` on the LAN client (e.g. `curl` a NodePort or a LoadBalancer address).
    pub fn on_client(&self, args: &[&str]) -> (bool, String, String) {
        self.exec(&self.client_ns(), args)
    }

    /// Runs `args` on node host `i`; its stdout, panicking (with stderr) on failure.
    pub fn on_host(&self, i: usize, args: &[&str]) -> String {
        let (ok, out, err) = self.exec(&self.ns(i), args);
        assert!(ok, "{} on host {i}: {err}", args.join(" "));
        out
    }

    fn lan_bridge(&self) -> String {
        format!("{}bl", self.tag)
    }

    fn far_bridge(&self) -> String {
        format!("{}bf", self.tag)
    }

    /// Gives namespace `ns` a veth (`<ns>e<end>` inside) on `bridge` holding `addr`/24.
    fn plug(&self, ns: &str, end: &str, bridge: &str, addr: &str) -> Result<(), String> {
        let outside = format!("{ns}x{end}");
        let inside = format!("{ns}e{end}");
        run(&[
            "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        run(&["ip", "link", "set", &inside, "netns", ns])?;
        self.attach(&outside, bridge)?;
        let inns = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns];
            all.extend_from_slice(args);
            run(&all)
        };
        inns(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &inside])?;
        inns(&["ip", "link", "set", &inside, "up"])?;
        inns(&["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Moves `link` into the switch namespace, a port of `bridge`.
    fn attach(&self, link: &str, bridge: &str) -> Result<(), String> {
        let switch = self.switch_ns();
        run(&["ip", "link", "set", link, "netns", &switch])?;
        run(&[
            "ip", "netns", "exec", &switch, "ip", "link", "set", link, "master", bridge, "up",
        ])?;
        Ok(())
    }

    /// The namespace holding both bridges. Not the machine's own: with br_netfilter loaded,
    /// frames bridged there would pass the machine's iptables (and any NAT rule of its own).
    fn switch_ns(&self) -> String {
        format!("{}s", self.tag)
    }

    fn setup(&self) -> Result<(), String> {
        for tool in ["ip", "nsenter", "iptables"] {
            run(&["which", tool]).map_err(|_| format!("{tool} not installed"))?;
        }
        let s = self.s;
        let switch = self.switch_ns();
        run(&["ip", "netns", "add", &switch])?;
        for (bridge, net, end) in [(self.lan_bridge(), 74, "l"), (self.far_bridge(), 75, "f")] {
            let insw = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &switch];
                all.extend_from_slice(args);
                run(&all)
            };
            insw(&["ip", "link", "add", &bridge, "type", "bridge"])?;
            insw(&["ip", "link", "set", &bridge, "up"])?;
            // The test process on both segments (its API calls reach every node directly).
            let (mine, port) = (format!("{}t{end}", self.tag), format!("{}u{end}", self.tag));
            run(&[
                "ip", "link", "add", &mine, "type", "veth", "peer", "name", &port,
            ])?;
            self.attach(&port, &bridge)?;
            run(&[
                "ip",
                "addr",
                "add",
                &format!("10.{net}.{s}.{TEST}/24"),
                "dev",
                &mine,
            ])?;
            run(&["ip", "link", "set", &mine, "up"])?;
        }
        let router = self.router_ns();
        run(&["ip", "netns", "add", &router])?;
        self.plug(
            &router,
            "0",
            &self.lan_bridge(),
            &format!("10.74.{s}.{ROUTER}"),
        )?;
        self.plug(
            &router,
            "1",
            &self.far_bridge(),
            &format!("10.75.{s}.{ROUTER}"),
        )?;
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        let client = self.client_ns();
        run(&["ip", "netns", "add", &client])?;
        self.plug(&client, "0", &self.lan_bridge(), &self.client_ip())?;
        for i in 0..self.count() {
            let ns = self.ns(i);
            run(&["ip", "netns", "add", &ns])?;
            let (bridge, via) = if self.is_far(i) {
                (self.far_bridge(), format!("10.75.{s}.{ROUTER}"))
            } else {
                (self.lan_bridge(), format!("10.74.{s}.{ROUTER}"))
            };
            self.plug(&ns, "0", &bridge, &self.ip(i))?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "route", "add", "default", "via", &via,
            ])?;
        }
        // The client reaches the far segment through the router too.
        let via = format!("10.74.{s}.{ROUTER}");
        run(&[
            "ip", "netns", "exec", &client, "ip", "route", "add", "default", "via", &via,
        ])?;
        Ok(())
    }

    fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..self.count()).map(|i| self.ns(i)).collect();
        all.push(self.router_ns());
        all.push(self.client_ns());
        all.push(self.switch_ns());
        all
    }

    /// Namespaces and links of this harness that still exist.
    pub fn leftovers(&self) -> Vec<String> {
        let netns = run(&["ip", "netns", "list"]).unwrap_or_default();
        let links = run(&["ip", "-o", "link"]).unwrap_or_default();
        netns
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.tag))
            .map(|n| format!("netns {n}"))
            .chain(
                links
                    .lines()
                    .filter_map(|l| l.split(": ").nth(1))
                    .map(|n| n.split('@').next().unwrap_or(n))
                    .filter(|n| n.starts_with(&self.tag))
                    .map(|n| format!("link {n}")),
            )
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            // Whatever still runs there (a node, a stray client) keeps the namespace alive.
            let pids = run(&["ip", "netns", "pids", &ns]).unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
            let _ = run(&["ip", "netns", "del", &ns]);
        }
        // Veths and the bridges go with their namespaces once their last process is gone.
        let left = super::eventually(std::time::Duration::from_secs(10), || {
            let left = self.leftovers();
            left.is_empty().then_some(())
        });
        if left.is_none() {
            let left = self.leftovers();
            if std::thread::panicking() {
                eprintln!("test hosts left behind: {left:?}");
            } else {
                panic!("test hosts left behind: {left:?}");
            }
        }
    }
}
