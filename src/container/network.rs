//! Instance networking on one node: a Linux bridge holding the node's subnet, one veth per
//! instance moved into the instance's network namespace with a stable IP, a default route
//! through the bridge, and NAT for traffic leaving the subnet for outside the cluster CIDR.
//! Instances on a node reach each other (and the node reaches them) by IP.
//!
//! Cross-node routing (`net`) routes the other nodes' subnets (every node has its own subnet
//! of the cluster CIDR, leased by the orchestrator); traffic to the cluster CIDR is not
//! masqueraded, so an instance on another node sees the real source address.
//!
//! Uses `ip`, `nsenter` and `iptables` (iproute2, util-linux, iptables); no threads.
//! Idempotent: `ensure` and `attach` can be re-run after a node restart. Without `iptables`
//! the network comes up [`Degraded::NoOutboundNat`]: instances run, reaching this node and
//! each other but nothing beyond the node.

use std::net::Ipv4Addr;
use std::process::Command;

use super::ContainerError;

/// The node subnet type lives with the resource model (pure data, shared by the
/// orchestrator's leases, the config and this bridge); re-exported here for the agent and
/// the director.
pub use crate::model::Subnet;

fn run(args: &[&str]) -> Result<String, ContainerError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| ContainerError::Network {
            action: args.join(" "),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ContainerError::Network {
            action: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `args` with `script` on stdin (`ip -batch -`).
fn batch(args: &[&str], script: &str) -> Result<(), ContainerError> {
    use std::io::Write;
    let err = |message: String| ContainerError::Network {
        action: format!(
            "{} <<< {}",
            args.join(" "),
            script.trim().replace('\n', "; ")
        ),
        message,
    };
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The node's bridge and subnet.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    pub bridge: String,
    pub subnet: Subnet,
    /// The cluster CIDR: traffic to it keeps its source address (no MASQUERADE).
    pub cluster: Subnet,
    /// What it runs without (instances still start); None when complete.
    pub degraded: Option<Degraded>,
}

/// Something the node's instance network lacks that instances can run without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degraded {
    /// `iptables` is not installed, so there is no MASQUERADE rule: traffic from the
    /// subnet to anything beyond the node is not translated.
    NoOutboundNat,
    /// `iptables-restore` is not installed, so the node has no Services data plane
    /// (cluster IPs, node ports, hostPorts); its instances run without them.
    NoServiceDataPlane,
}

impl Degraded {
    /// CamelCase, as status and event reasons are.
    pub fn reason(self) -> &'static str {
        match self {
            Degraded::NoOutboundNat => "NoOutboundNAT",
            Degraded::NoServiceDataPlane => "NoServiceDataPlane",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Degraded::NoOutboundNat => {
                "no outbound NAT: iptables is not installed on this node (apt-get install iptables), \
                 so instances reach this node and each other but nothing beyond it"
            }
            Degraded::NoServiceDataPlane => {
                "no Services data plane: iptables-restore is not installed on this node (apt-get install iptables), \
                 so Services' cluster IPs, node ports and hostPorts do not work here; instances run without them"
            }
        }
    }
}

/// Interface names are at most 15 bytes: a short stable hash of the instance id.
fn host_veth(id: &str) -> String {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("ocv{:010x}", h & 0xff_ffff_ffff)
}

impl NodeNetwork {
    /// Creates the bridge with the gateway address, turns on forwarding and adds the NAT
    /// rule for traffic leaving the subnet for outside `cluster` (the cluster CIDR). Safe to
    /// call again.
    pub fn ensure(
        bridge: &str,
        subnet: Subnet,
        cluster: Subnet,
    ) -> Result<NodeNetwork, ContainerError> {
        if !succeeds(&["ip", "link", "show", bridge]) {
            run(&["ip", "link", "add", bridge, "type", "bridge"])?;
        }
        let gw = format!("{}/{}", subnet.gateway(), subnet.prefix);
        let addrs = run(&["ip", "-4", "addr", "show", "dev", bridge])?;
        if !addrs.contains(&format!("inet {gw}")) {
            run(&["ip", "addr", "add", &gw, "dev", bridge])?;
        }
        run(&["ip", "link", "set", bridge, "up"])?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| {
            ContainerError::Network {
                action: "enable ip_forward".into(),
                message: e.to_string(),
            }
        })?;
        let cidr = subnet.to_string();
        // The rule of releases before cross-node routing (it masqueraded traffic to other
        // nodes' instances too).
        let _ = run(&[
            "iptables",
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            &cidr,
            "!",
            "-o",
            bridge,
            "-j",
            "MASQUERADE",
        ]);
        let cluster_cidr = cluster.to_string();
        let rule = [
            "-s",
            cidr.as_str(),
            "!",
            "-d",
            cluster_cidr.as_str(),
            "!",
            "-o",
            bridge,
            "-j",
            "MASQUERADE",
        ];
        let check: Vec<&str> = ["iptables", "-t", "nat", "-C", "POSTROUTING"]
            .iter()
            .chain(&rule)
            .copied()
            .collect();
        let checked = Command::new(check[0]).args(&check[1..]).output();
        let degraded = match checked {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Degraded::NoOutboundNat),
            Ok(out) if out.status.success() => None,
            _ => {
                let add: Vec<&str> = ["iptables", "-t", "nat", "-A", "POSTROUTING"]
                    .iter()
                    .chain(&rule)
                    .copied()
                    .collect();
                run(&add)?;
                None
            }
        };
        Ok(NodeNetwork {
            bridge: bridge.to_string(),
            subnet,
            cluster,
            degraded,
        })
    }

    /// Gives the network namespace of `pid` an `eth0` on the bridge with `ip`, and a
    /// default route through the bridge. Returns the host-side interface name.
    pub fn attach(&self, id: &str, pid: i32, ip: Ipv4Addr) -> Result<String, ContainerError> {
        if !self.subnet.contains(ip) || ip == self.subnet.gateway() {
            return Err(ContainerError::Network {
                action: format!("attach {id}"),
                message: format!("{ip} is not an instance address of {}", self.subnet),
            });
        }
        let host = host_veth(id);
        let peer = format!("{host}p");
        // Left by a crash between create and delete: a fresh veth replaces it.
        if std::path::Path::new("/sys/class/net").join(&host).exists() {
            let _ = run(&["ip", "link", "del", &host]);
        }
        // Two processes in all: one `ip -batch` on the host side, one inside the netns.
        // Hairpin on the bridge port: with br_netfilter, a connection from an instance to
        // a Service address that picks the same instance is DNATed while bridged and
        // must go back out the port it came in on.
        let gateway = self.subnet.gateway();
        let outside = format!(
            "link add {host} type veth peer name {peer}\n\
             link set {host} master {bridge} up\n\
             link set {host} type bridge_slave hairpin on\n\
             link set {peer} netns {pid}\n\
             neigh flush to {ip} dev {bridge}\n",
            bridge = self.bridge
        );
        let inside = format!(
            "link set lo up\n\
             link set {peer} name eth0\n\
             addr add {ip}/{prefix} dev eth0\n\
             link set eth0 up\n\
             route add default via {gateway}\n",
            prefix = self.subnet.prefix
        );
        let pid_s = pid.to_string();
        let result = batch(&["ip", "-batch", "-"], &outside).and_then(|_| {
            batch(
                &["nsenter", "-t", &pid_s, "-n", "ip", "-batch", "-"],
                &inside,
            )
        });
        // The address may have belonged to an earlier container (another MAC): the flush
        // above makes the node forget its cached neighbour entry.
        result.inspect_err(|_| {
            let _ = run(&["ip", "link", "del", &host]);
        })?;
        Ok(host)
    }

    /// Removes the instance's veth (its peer goes with it). Missing is fine.
    pub fn detach(&self, id: &str) {
        let _ = run(&["ip", "link", "del", &host_veth(id)]);
    }

    /// Removes the bridge and the NAT rule (tests, uninstall).
    pub fn remove(&self) {
        let cidr = self.subnet.to_string();
        let cluster = self.cluster.to_string();
        let _ = run(&[
            "iptables",
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            &cidr,
            "!",
            "-d",
            &cluster,
            "!",
            "-o",
            &self.bridge,
            "-j",
            "MASQUERADE",
        ]);
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_are_stable() {
        let a = host_veth("default-web-frontend-12");
        assert!(a.len() <= 15, "{a}");
        assert_eq!(a, host_veth("default-web-frontend-12"));
        assert_ne!(a, host_veth("default-web-frontend-13"));
    }
}
