//! Real hosts for a campaign: one network namespace per node, each with a veth on one
//! bridge (in a switch namespace of its own, so the machine's iptables never see the
//! bridged frames) and one address on 10.77.S.0/24; the chaos process itself has .254 on
//! the bridge to reach every node's API. Faults cut real packets: a partition is iptables
//! DROP rules in the INPUT chains of the namespaces on both sides, latency and loss are
//! tc netem on a node's veth.
//!
//! [`Hosts`] deletes everything it made when dropped (processes left in the namespaces are
//! killed first), whatever ended the run. The decisions (which addresses each side drops)
//! are pure ([`across`], [`bridge`], [`ring`]); the glue runs `ip`, `iptables` and `tc`.

use std::process::Command;

/// The last address byte of the chaos process on the bridge.
const SELF: u8 = 254;

pub struct Hosts {
    tag: String,
    /// 10.77.S.0/24.
    s: u8,
    n: usize,
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

/// The pairs of nodes that must not reach each other so that `side` and the rest are
/// cut apart.
pub fn across(n: usize, side: &[usize]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if side.contains(&a) != side.contains(&b) {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

/// A bridge: `order[0]` sees everyone; the next `(n-1)/2` nodes and the rest see only
/// their own side and the bridge (Jepsen's bridge partition).
pub fn bridge(order: &[usize]) -> Vec<(usize, usize)> {
    let half = 1 + (order.len() - 1) / 2;
    let (left, right) = (&order[1..half], &order[half..]);
    let mut pairs: Vec<(usize, usize)> = left
        .iter()
        .flat_map(|&a| right.iter().map(move |&b| (a.min(b), a.max(b))))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// A ring: each node sees only its two neighbours in `order` (with 5 nodes each sees a
/// majority with itself, and no two see the same one).
pub fn ring(order: &[usize]) -> Vec<(usize, usize)> {
    let n = order.len();
    let mut pairs = Vec::new();
    for p in 0..n {
        for q in p + 1..n {
            let adjacent = q - p == 1 || (p == 0 && q == n - 1);
            if !adjacent {
                let (a, b) = (order[p], order[q]);
                pairs.push((a.min(b), a.max(b)));
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

impl Hosts {
    /// `n` hosts on a free 10.77.S.0/24; an error says what is missing (root, `ip`,
    /// `iptables`, `tc`, `nsenter`).
    pub fn new(n: usize) -> Result<Hosts, String> {
        for tool in ["ip", "nsenter", "iptables", "tc"] {
            run(&["which", tool]).map_err(|_| format!("{tool} is not installed"))?;
        }
        let used = run(&["ip", "-4", "-o", "addr"])?;
        let start = std::process::id() as usize;
        let s = (0..200)
            .map(|k| ((start + k) % 200 + 20) as u8)
            .find(|s| !used.contains(&format!("10.77.{s}.")))
            .ok_or("no free 10.77.S.0/24 on this machine")?;
        let hosts = Hosts {
            tag: format!("ocx{}", std::process::id() % 100000),
            s,
            n,
        };
        // Dropped on an error: what was made so far goes.
        hosts.setup()?;
        Ok(hosts)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.s, i + 1)
    }

    fn switch(&self) -> String {
        format!("{}s", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}e", self.ns(i))
    }

    fn setup(&self) -> Result<(), String> {
        let switch = self.switch();
        let bridge = format!("{}b", self.tag);
        run(&["ip", "netns", "add", &switch])?;
        run(&[
            "ip", "-n", &switch, "link", "add", &bridge, "type", "bridge",
        ])?;
        run(&["ip", "-n", &switch, "link", "set", &bridge, "up"])?;
        let attach = |name: &str, peer: &str| -> Result<(), String> {
            run(&[
                "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
            ])?;
            run(&["ip", "link", "set", peer, "netns", &switch])?;
            run(&[
                "ip", "-n", &switch, "link", "set", peer, "master", &bridge, "up",
            ])?;
            Ok(())
        };
        // The chaos process on the bridge.
        let mine = format!("{}t", self.tag);
        attach(&mine, &format!("{}u", self.tag))?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{}.{SELF}/24", self.s),
            "dev",
            &mine,
        ])?;
        run(&["ip", "link", "set", &mine, "up"])?;
        for i in 0..self.n {
            let ns = self.ns(i);
            run(&["ip", "netns", "add", &ns])?;
            let inside = self.veth(i);
            attach(&inside, &format!("{ns}x"))?;
            run(&["ip", "link", "set", &inside, "netns", &ns])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(i)),
                "dev",
                &inside,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &inside, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn prefix(&self, i: usize) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.ns(i))]
    }

    fn in_ns(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["ip", "netns", "exec"];
        let ns = self.ns(i);
        all.push(&ns);
        all.extend_from_slice(args);
        run(&all)
    }

    /// Cuts every pair apart, both directions (DROP in each one's INPUT chain from the
    /// other's address). The chaos process still reaches every node.
    pub fn cut(&self, pairs: &[(usize, usize)]) -> Result<(), String> {
        for &(a, b) in pairs {
            for (node, from) in [(a, self.ip(b)), (b, self.ip(a))] {
                self.in_ns(
                    node,
                    &["iptables", "-w", "-A", "INPUT", "-s", &from, "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    /// Drops `pct`% of the packets node `i` receives and sends, at random (iptables
    /// statistic; undone by [`Hosts::heal`]).
    pub fn lose(&self, i: usize, pct: u32) -> Result<(), String> {
        let p = format!("{:.2}", f64::from(pct) / 100.0);
        for chain in "INPUT OUTPUT".split_whitespace() {
            self.in_ns(
                i,
                &[
                    "iptables",
                    "-w",
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Removes every partition and loss rule (idempotent).
    pub fn heal(&self) -> Result<(), String> {
        for i in 0..self.n {
            self.in_ns(i, &["iptables", "-w", "-F", "INPUT"])?;
            self.in_ns(i, &["iptables", "-w", "-F", "OUTPUT"])?;
        }
        Ok(())
    }

    /// Whether this kernel has netem (the latency fault): some (Firecracker's guest
    /// kernels, this machine's) are built without sch_netem and cannot load it.
    pub fn has_netem(&self) -> bool {
        let ok = self
            .in_ns(
                0,
                &[
                    "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                ],
            )
            .is_ok();
        let _ = self.in_ns(0, &["tc", "qdisc", "del", "dev", "lo", "root"]);
        ok
    }

    /// Adds `delay` latency (with 20% jitter) and `loss_pct` packet loss to node `i`.
    pub fn slow(&self, i: usize, delay_ms: u32, loss_pct: u32) -> Result<(), String> {
        let (d, j) = (format!("{delay_ms}ms"), format!("{}ms", delay_ms / 5));
        let loss = format!("{loss_pct}%");
        let dev = self.veth(i);
        self.in_ns(
            i,
            &[
                "tc", "qdisc", "replace", "dev", &dev, "root", "netem", "delay", &d, &j, "loss",
                &loss,
            ],
        )?;
        Ok(())
    }

    /// Removes latency and loss from node `i` (idempotent).
    pub fn unslow(&self, i: usize) {
        let dev = self.veth(i);
        let _ = self.in_ns(i, &["tc", "qdisc", "del", "dev", &dev, "root"]);
    }

    /// Namespaces and links of this run that still exist.
    pub fn leftovers(&self) -> Vec<String> {
        let netns = run(&["ip", "netns", "list"]).unwrap_or_default();
        let links = run(&["ip", "-o", "link"]).unwrap_or_default();
        netns
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .chain(links.lines().filter_map(|l| l.split(": ").nth(1)))
            .map(|n| n.split('@').next().unwrap_or(n))
            .filter(|n| n.starts_with(&self.tag))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut all: Vec<String> = (0..self.n).map(|i| self.ns(i)).collect();
        all.push(self.switch());
        for ns in &all {
            let pids = run(&["ip", "netns", "pids", ns]).unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-CONT", pid]);
                let _ = run(&["kill", "-9", pid]);
            }
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &format!("{}t", self.tag)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_the_right_pairs() {
        assert_eq!(across(3, &[0]), vec![(0, 1), (0, 2)]);
        assert_eq!(across(5, &[3, 4]).len(), 6);
        // Bridge 2 sees everyone; {0, 4} and {1, 3} do not see each other.
        let b = bridge(&[2, 0, 4, 1, 3]);
        assert_eq!(b, vec![(0, 1), (0, 3), (1, 4), (3, 4)]);
        assert!(!b.iter().any(|&(x, y)| x == 2 || y == 2));
        // Ring 0-1-2-3-4-0: each node keeps exactly its two neighbours.
        let r = ring(&[0, 1, 2, 3, 4]);
        assert_eq!(r, vec![(0, 2), (0, 3), (1, 3), (1, 4), (2, 4)]);
        for node in 0..5 {
            let cut = r.iter().filter(|&&(x, y)| x == node || y == node).count();
            assert_eq!(cut, 2, "node {node} keeps two neighbours");
        }
    }
}
