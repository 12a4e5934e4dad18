//! The Services data plane as a pure function, the way kube-proxy's iptables mode builds
//! it: committed Services, their Endpoints and this node's hostPorts become one
//! `iptables-restore --noflush` payload over omnicloud-owned chains. Tested without root;
//! `dataplane` applies the payload in one step.
//!
//! Chains (nat table unless said):
//! - `OMNI-SERVICES`, jumped to from PREROUTING and OUTPUT: one rule per cluster IP and
//!   port to its `OMNI-SVC-<hash>`; then, for traffic to any address of this node,
//!   `OMNI-HOSTPORTS` and `OMNI-NODEPORTS`.
//! - `OMNI-SVC-<hash>` (one per service port): masquerade-mark traffic from outside the
//!   cluster CIDR, then pick an endpoint at random: rule i of n jumps with probability
//!   1/(n-i) (`-m statistic --mode random`), so each endpoint gets 1/n.
//! - `OMNI-SEP-<hash>` (one per endpoint): masquerade-mark traffic from this node's own
//!   instance subnet when the endpoint is on it (hairpin, and replies that would otherwise
//!   go straight over the bridge), then DNAT to the endpoint's ip:port.
//! - `OMNI-NODEPORTS`: a node port marks for masquerade and jumps to its service's chain.
//! - `OMNI-HOSTPORTS`: a container's hostPort marks for masquerade and DNATs to it.
//! - `OMNI-MARK-MASQ` sets mark 0x4000; `OMNI-POSTROUTING` (from POSTROUTING)
//!   masquerades marked packets once.
//! - filter `OMNI-FILTER` (from FORWARD and OUTPUT): rejects connections to a service port
//!   without endpoints (instead of letting them time out) and accepts forwarded Service
//!   traffic (marked, or DNATed to and from the cluster CIDR) where the FORWARD policy
//!   drops.
//!
//! A chain that existed and is no longer wanted is flushed and deleted in the same
//! payload. With no Service and no hostPort left, the payload removes every omnicloud
//! chain and the jumps to them: nothing of ours stays in the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::model::service::{EndpointsSpec, Protocol, ServiceSpec};
use crate::model::Subnet;

/// Every chain of ours starts with this.
pub const PREFIX: &str = "OMNI-";
pub const SERVICES: &str = "OMNI-SERVICES";
pub const NODEPORTS: &str = "OMNI-NODEPORTS";
pub const HOSTPORTS: &str = "OMNI-HOSTPORTS";
pub const MARK_MASQ: &str = "OMNI-MARK-MASQ";
pub const POSTROUTING: &str = "OMNI-POSTROUTING";
pub const FILTER: &str = "OMNI-FILTER";
const MASQ_MARK: &str = "0x4000";

/// A Service with its Endpoints, as committed.
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub spec: ServiceSpec,
    pub endpoints: Option<EndpointsSpec>,
}

/// A container port with a hostPort, of an instance on this node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub instance: String,
    pub ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// Everything the rules are computed from.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub services: Vec<ServiceView>,
    pub host_ports: Vec<HostPort>,
    /// The cluster CIDR: traffic to a cluster IP from outside it is masqueraded.
    pub cluster_cidr: Option<Subnet>,
    /// This node's instance subnet (its bridge), if leased.
    pub local_subnet: Option<Subnet>,
}

/// Jump rules from the built-in chains: (table, chain, rule spec after `-A CHAIN`).
pub const JUMPS: [(&str, &str, &str); 5] = [
    (
        "nat",
        "PREROUTING",
        "-m comment --comment \"omnicloud service portals\" -j OMNI-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment \"omnicloud service portals\" -j OMNI-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment \"omnicloud postrouting rules\" -j OMNI-POSTROUTING",
    ),
    (
        "filter",
        "FORWARD",
        "-m comment --comment \"omnicloud service filter\" -j OMNI-FILTER",
    ),
    (
        "filter",
        "OUTPUT",
        "-m comment --comment \"omnicloud service filter\" -j OMNI-FILTER",
    ),
];

/// What of ours is in the kernel now, read from `iptables-save`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// table -> our chains in it.
    pub chains: BTreeMap<String, BTreeSet<String>>,
    /// (table, built-in chain, rule spec as saved) of every rule jumping to a chain of ours.
    pub jumps: BTreeSet<(String, String, String)>,
}

impl Current {
    /// Parses `iptables-save` output.
    pub fn parse(save: &str) -> Current {
        let mut c = Current::default();
        let mut table = String::new();
        for line in save.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split_whitespace().next().unwrap_or_default();
                if name.starts_with(PREFIX) {
                    c.chains
                        .entry(table.clone())
                        .or_default()
                        .insert(name.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                if !chain.starts_with(PREFIX) && spec.contains(&format!("-j {PREFIX}")) {
                    c.jumps
                        .insert((table.clone(), chain.to_string(), spec.to_string()));
                }
            }
        }
        c
    }

    /// Nothing of ours is installed.
    pub fn is_empty(&self) -> bool {
        self.chains.values().all(BTreeSet::is_empty) && self.jumps.is_empty()
    }

    /// Rules of ours (for tests and `iptables-save | grep -c OMNI`-style checks).
    pub fn has(&self, table: &str, chain: &str) -> bool {
        self.chains.get(table).is_some_and(|c| c.contains(chain))
    }
}

/// A stable chain name: `OMNI-SVC-` or `OMNI-SEP-` and 16 hex digits of a hash (iptables
/// allows 28 characters).
fn chain(kind: &str, key: &str) -> String {
    let h = Sha256::digest(key.as_bytes());
    let hex: String = h.iter().take(8).map(|b| format!("{b:02X}")).collect();
    format!("{PREFIX}{kind}-{hex}")
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        _ => "tcp",
    }
}

/// One ready endpoint of a service port.
struct Target {
    ip: Ipv4Addr,
    port: i64,
}

/// The ready endpoints of port `port_name`/`protocol` in `ep`, sorted, deduplicated.
fn targets(ep: Option<&EndpointsSpec>, port_name: &str, protocol: Protocol) -> Vec<Target> {
    let mut out = BTreeSet::new();
    for s in ep.map(|e| e.subsets.as_slice()).unwrap_or_default() {
        let Some(port) = s
            .ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name && p.protocol == protocol)
        else {
            continue;
        };
        for a in &s.addresses {
            if let Ok(ip) = a.ip.parse::<Ipv4Addr>() {
                out.insert((ip, port.port));
            }
        }
    }
    out.into_iter()
        .map(|(ip, port)| Target { ip, port })
        .collect()
}

/// The payload for `iptables-restore --noflush` that makes the kernel hold the rules of
/// `inputs`, given what is there now; None when there is nothing to do (nothing wanted,
/// nothing of ours installed).
pub fn payload(inputs: &Inputs, current: &Current) -> Option<String> {
    let wanted =
        !inputs.services.iter().all(|s| s.spec.vip().is_none()) || !inputs.host_ports.is_empty();
    if !wanted {
        return (!current.is_empty()).then(|| teardown(current));
    }
    let mut nat = Rules::default();
    let mut filter = Rules::default();
    for base in [SERVICES, NODEPORTS, HOSTPORTS, MARK_MASQ, POSTROUTING] {
        nat.chain(base);
    }
    filter.chain(FILTER);
    nat.rule(MARK_MASQ, &format!("-j MARK --or-mark {MASQ_MARK}"));
    nat.rule(
        POSTROUTING,
        &format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
    );
    nat.rule(POSTROUTING, &format!("-j MARK --xor-mark {MASQ_MARK}"));
    nat.rule(
        POSTROUTING,
        "-m comment --comment \"omnicloud service traffic requiring SNAT\" -j MASQUERADE",
    );
    let mut services: Vec<&ServiceView> = inputs.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut node_ports = Vec::new();
    for svc in services {
        service_rules(svc, inputs, &mut nat, &mut filter, &mut node_ports);
    }
    let mut host_ports = inputs.host_ports.clone();
    host_ports.sort();
    for hp in &host_ports {
        let p = proto(hp.protocol);
        let m = format!(
            "-p {p} -m {p} --dport {} -m comment --comment \"hostPort of {}\"",
            hp.host_port, hp.instance
        );
        nat.rule(HOSTPORTS, &format!("{m} -j {MARK_MASQ}"));
        nat.rule(
            HOSTPORTS,
            &format!(
                "{m} -j DNAT --to-destination {}:{}",
                hp.ip, hp.container_port
            ),
        );
    }
    if !host_ports.is_empty() {
        nat.rule(
            SERVICES,
            &format!("-m addrtype --dst-type LOCAL -j {HOSTPORTS}"),
        );
    }
    if !node_ports.is_empty() {
        nat.rule(
            SERVICES,
            &format!(
                "-m comment --comment \"omnicloud node ports; must be last\" -m addrtype --dst-type LOCAL -j {NODEPORTS}"
            ),
        );
    }
    filter.rule(
        FILTER,
        &format!("-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"),
    );
    // Forwarded Service connections (DNATed to an instance and their replies), and only
    // those: other DNATed traffic of the host stays with its own firewall rules.
    if let Some(cidr) = inputs.cluster_cidr {
        for dir in ["-d", "-s"] {
            filter.rule(
                FILTER,
                &format!(
                    "{dir} {cidr} -m conntrack --ctstate DNAT -m comment --comment \"forwarded service traffic\" -j ACCEPT"
                ),
            );
        }
    }
    let mut out = String::new();
    for (table, rules) in [("nat", &nat), ("filter", &filter)] {
        let empty = BTreeSet::new();
        let have = current.chains.get(table).unwrap_or(&empty);
        out.push_str(&rules.render(table, have, current, true));
    }
    Some(out)
}

/// The rules of one Service: cluster IP portals, endpoint chains, node ports.
fn service_rules(
    svc: &ServiceView,
    inputs: &Inputs,
    nat: &mut Rules,
    filter: &mut Rules,
    node_ports: &mut Vec<i64>,
) {
    let Some(vip) = svc.spec.vip() else { return };
    for port in &svc.spec.ports {
        let id = format!("{}/{}:{}", svc.namespace, svc.name, port.name());
        let p = proto(port.protocol());
        let svc_chain = chain("SVC", &format!("{id}/{p}"));
        let targets = targets(svc.endpoints.as_ref(), port.name(), port.protocol());
        let portal = format!("-d {vip}/32 -p {p} -m {p} --dport {}", port.port);
        if targets.is_empty() {
            filter.rule(
                FILTER,
                &format!(
                    "{portal} -m comment --comment \"{id} has no endpoints\" -j REJECT --reject-with icmp-port-unreachable"
                ),
            );
            if let Some(np) = port.node_port {
                filter.rule(
                    FILTER,
                    &format!(
                        "-m addrtype --dst-type LOCAL -p {p} -m {p} --dport {np} -m comment --comment \"{id} has no endpoints\" -j REJECT --reject-with icmp-port-unreachable"
                    ),
                );
            }
            if let Some(lb) = svc.spec.lb_ip() {
                filter.rule(
                    FILTER,
                    &format!(
                        "-d {lb}/32 -p {p} -m {p} --dport {} -m comment --comment \"{id} has no endpoints\" -j REJECT --reject-with icmp-port-unreachable",
                        port.port
                    ),
                );
            }
            continue;
        }
        nat.chain(&svc_chain);
        nat.rule(
            SERVICES,
            &format!("{portal} -m comment --comment \"{id} cluster IP\" -j {svc_chain}"),
        );
        if let Some(cidr) = inputs.cluster_cidr {
            nat.rule(&svc_chain, &format!("! -s {cidr} {portal} -j {MARK_MASQ}"));
        }
        if let Some(lb) = svc.spec.lb_ip() {
            // From the LAN, to the LoadBalancer address the announcing node holds; the
            // reply must come back through it, so the source is masqueraded.
            let m = format!(
                "-d {lb}/32 -p {p} -m {p} --dport {} -m comment --comment \"{id} loadbalancer IP\"",
                port.port
            );
            nat.rule(SERVICES, &format!("{m} -j {MARK_MASQ}"));
            nat.rule(SERVICES, &format!("{m} -j {svc_chain}"));
        }
        if let Some(np) = port.node_port {
            node_ports.push(np);
            let m = format!("-p {p} -m {p} --dport {np} -m comment --comment \"{id} node port\"");
            nat.rule(NODEPORTS, &format!("{m} -j {MARK_MASQ}"));
            nat.rule(NODEPORTS, &format!("{m} -j {svc_chain}"));
        }
        let n = targets.len();
        for (i, t) in targets.iter().enumerate() {
            let sep = chain("SEP", &format!("{id}/{p}/{}:{}", t.ip, t.port));
            nat.chain(&sep);
            let comment = format!("-m comment --comment \"{id} -> {}:{}\"", t.ip, t.port);
            if i + 1 < n {
                let probability = 1.0 / (n - i) as f64;
                nat.rule(
                    &svc_chain,
                    &format!(
                        "{comment} -m statistic --mode random --probability {probability:.10} -j {sep}"
                    ),
                );
            } else {
                nat.rule(&svc_chain, &format!("{comment} -j {sep}"));
            }
            let source = match inputs.local_subnet {
                Some(s) if s.contains(t.ip) => s.to_string(),
                _ => format!("{}/32", t.ip),
            };
            nat.rule(&sep, &format!("-s {source} -j {MARK_MASQ}"));
            nat.rule(
                &sep,
                &format!("-p {p} -m {p} -j DNAT --to-destination {}:{}", t.ip, t.port),
            );
        }
    }
}

/// Flushes and deletes every chain of ours and removes the jumps to them.
fn teardown(current: &Current) -> String {
    let mut out = String::new();
    for table in ["nat", "filter"] {
        out.push_str(&Rules::default().render(
            table,
            current.chains.get(table).unwrap_or(&BTreeSet::new()),
            current,
            false,
        ));
    }
    out
}

/// The chains and rules of one table, in order.
#[derive(Default)]
struct Rules {
    chains: Vec<String>,
    rules: Vec<(String, String)>,
}

impl Rules {
    fn chain(&mut self, name: &str) {
        if !self.chains.iter().any(|c| c == name) {
            self.chains.push(name.to_string());
        }
    }

    fn rule(&mut self, chain: &str, spec: &str) {
        self.rules.push((chain.to_string(), spec.to_string()));
    }

    /// `*table`, every wanted and stale chain declared (which flushes it under
    /// `--noflush`), the rules, the missing jumps (with `jumps`) or the removal of every
    /// jump (without), the stale chains deleted, `COMMIT`.
    fn render(
        &self,
        table: &str,
        have: &BTreeSet<String>,
        current: &Current,
        jumps: bool,
    ) -> String {
        let stale: Vec<&String> = have.iter().filter(|c| !self.chains.contains(c)).collect();
        let mut jump_lines = Vec::new();
        for (t, builtin, spec) in JUMPS.iter().filter(|j| j.0 == table) {
            let present = current
                .jumps
                .iter()
                .any(|(ct, cc, cs)| ct == t && cc == builtin && cs == spec);
            if jumps && !present {
                jump_lines.push(format!("-I {builtin} 1 {spec}"));
            }
        }
        for (t, builtin, spec) in &current.jumps {
            let ours = JUMPS
                .iter()
                .any(|(jt, jc, js)| jt == t && jc == builtin && js == spec);
            if t == table && (!jumps || !ours) {
                jump_lines.push(format!("-D {builtin} {spec}"));
            }
        }
        if self.chains.is_empty() && stale.is_empty() && jump_lines.is_empty() {
            return String::new();
        }
        let mut out = format!("*{table}\n");
        for c in self.chains.iter().chain(stale.iter().copied()) {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for (c, spec) in &self.rules {
            let _ = writeln!(out, "-A {c} {spec}");
        }
        for line in jump_lines {
            let _ = writeln!(out, "{line}");
        }
        for c in stale {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
        out
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
