//! `Service` (a stable virtual address and ports in front of the ready instances its
//! selector matches, the core/v1 shape) and `Endpoints` (the addresses behind one Service,
//! written by the endpoints controller on the leader).
//!
//! Allocation is pure too: [`allocate`] fills `spec.clusterIP` from the service CIDR and
//! `spec.ports[].nodePort` from the node port range, keeping what an update's old object
//! held, and [`check_unique`] refuses an address or node port another Service holds. The
//! API runs both before proposing a write; the Raft apply runs `check_unique` again, so two
//! concurrent creates cannot both keep one address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::quantity::IntOrString;
use super::{invalid, validate_label_map, ModelError, Subnet};

/// Most ports one Service may list.
pub const MAX_SERVICE_PORTS: usize = 100;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    /// Accepted by the parser only to be refused by name (no DNS CNAME records yet).
    ExternalName,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    /// Refused by validation: not supported by the data plane.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub port: i64,
    /// A number, or the name of a container port; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i64>,
    /// Accepted (core/v1 has it) and not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn target(&self) -> IntOrString {
        self.target_port
            .clone()
            .unwrap_or(IntOrString::Int(self.port))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ServiceType>,
    /// An address of the service CIDR, `None` (headless), or unset (allocated).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(
        default,
        rename = "clusterIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_ips: Option<Vec<String>>,
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
    #[serde(
        default,
        rename = "externalIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
}

/// `status.loadBalancer.ingress[].ip` (for the LoadBalancer announcer) and the warnings
/// the endpoints controller found (fields not acted on, an unresolved targetPort name, a
/// selector that matches nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default)]
    pub load_balancer: LoadBalancerStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<super::instance::StatusWarning>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    pub ip: String,
}

impl ServiceSpec {
    pub fn service_type(&self) -> ServiceType {
        self.kind.unwrap_or_default()
    }

    /// `clusterIP: None`.
    pub fn headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }

    /// The allocated virtual address (None while unallocated or headless).
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.cluster_ip.as_deref().and_then(|s| s.parse().ok())
    }

    /// The LoadBalancer address, once allocated (LoadBalancer Services only).
    pub fn lb_ip(&self) -> Option<Ipv4Addr> {
        if self.service_type() != ServiceType::LoadBalancer {
            return None;
        }
        self.load_balancer_ip
            .as_deref()
            .and_then(|s| s.parse().ok())
    }

    /// NodePort and LoadBalancer Services open a port on every node.
    pub fn wants_node_ports(&self) -> bool {
        matches!(
            self.service_type(),
            ServiceType::NodePort | ServiceType::LoadBalancer
        )
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.service_type() == ServiceType::ExternalName || self.external_name.is_some() {
            return Err(invalid(
                "spec.type",
                "ExternalName Services are not supported; use ClusterIP, NodePort or LoadBalancer",
            ));
        }
        if let Some(sel) = &self.selector {
            validate_label_map("spec.selector", sel)?;
        }
        match self.cluster_ip.as_deref() {
            None | Some("") | Some("None") => {}
            Some(ip) if ip.parse::<Ipv4Addr>().is_ok() => {}
            Some(ip) => {
                return Err(invalid(
                    "spec.clusterIP",
                    format!("\"{ip}\" is not an IPv4 address or None (headless)"),
                ))
            }
        }
        if self.headless() && self.wants_node_ports() {
            return Err(invalid(
                "spec.clusterIP",
                format!(
                    "None (headless) cannot be used with type {:?}: a headless Service has no virtual address to forward node ports to",
                    self.service_type()
                ),
            ));
        }
        if let (Some(ips), Some(ip)) = (&self.cluster_ips, &self.cluster_ip) {
            if ips.first() != Some(ip) {
                return Err(invalid(
                    "spec.clusterIPs[0]",
                    format!("must equal spec.clusterIP \"{ip}\""),
                ));
            }
        }
        if let Some(ip) = &self.load_balancer_ip {
            if ip.parse::<Ipv4Addr>().is_err() {
                return Err(invalid(
                    "spec.loadBalancerIP",
                    format!("\"{ip}\" is not an IPv4 address"),
                ));
            }
        }
        if let Some(a) = self.session_affinity.as_deref() {
            one_of("spec.sessionAffinity", a, &["None", "ClientIP"])?;
        }
        if let Some(p) = self.external_traffic_policy.as_deref() {
            one_of("spec.externalTrafficPolicy", p, &["Cluster", "Local"])?;
        }
        if let Some(p) = self.internal_traffic_policy.as_deref() {
            one_of("spec.internalTrafficPolicy", p, &["Cluster", "Local"])?;
        }
        self.validate_ports()
    }

    fn validate_ports(&self) -> Result<(), ModelError> {
        if self.ports.is_empty() && !self.headless() {
            return Err(invalid(
                "spec.ports",
                "at least one port is required (only a headless Service may have none)",
            ));
        }
        if self.ports.len() > MAX_SERVICE_PORTS {
            return Err(invalid(
                "spec.ports",
                format!(
                    "at most {MAX_SERVICE_PORTS} ports, got {}",
                    self.ports.len()
                ),
            ));
        }
        let mut names = BTreeSet::new();
        let mut ports = BTreeSet::new();
        let mut node_ports = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            match &p.name {
                Some(n) => {
                    validate_port_name(&format!("{path}.name"), n)?;
                    if !names.insert(n.as_str()) {
                        return Err(invalid(
                            &format!("{path}.name"),
                            format!("duplicate port name \"{n}\""),
                        ));
                    }
                }
                None if self.ports.len() > 1 => {
                    return Err(invalid(
                        &format!("{path}.name"),
                        "is required when a Service has more than one port",
                    ))
                }
                None => {}
            }
            if p.protocol() == Protocol::Sctp {
                return Err(invalid(
                    &format!("{path}.protocol"),
                    "SCTP is not supported; use TCP or UDP",
                ));
            }
            port_range(&format!("{path}.port"), p.port)?;
            if !ports.insert((p.port, p.protocol())) {
                return Err(invalid(
                    &format!("{path}.port"),
                    format!("duplicate port {}/{}", p.port, p.protocol().as_str()),
                ));
            }
            match &p.target_port {
                Some(IntOrString::Int(t)) => port_range(&format!("{path}.targetPort"), *t)?,
                Some(IntOrString::Str(s)) => validate_port_name(&format!("{path}.targetPort"), s)?,
                None => {}
            }
            if let Some(np) = p.node_port {
                if !self.wants_node_ports() {
                    return Err(invalid(
                        &format!("{path}.nodePort"),
                        format!(
                            "may only be set on NodePort or LoadBalancer Services, not {:?}",
                            self.service_type()
                        ),
                    ));
                }
                port_range(&format!("{path}.nodePort"), np)?;
                if !node_ports.insert((np, p.protocol())) {
                    return Err(invalid(
                        &format!("{path}.nodePort"),
                        format!("duplicate node port {np}/{}", p.protocol().as_str()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Fields accepted and stored but not acted on: said in `describe` (and the status).
    pub fn ignored_fields(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut say = |field: &str, why: &str| out.push((field.to_string(), why.to_string()));
        if self.service_type() == ServiceType::LoadBalancer && self.lb_ip().is_none() {
            say(
                "spec.type",
                "LoadBalancer: pending, no address: no [network] loadbalancer_pool is configured; the Service is reachable on its cluster IP and node ports",
            );
        }
        if self.load_balancer_ip.is_some() && self.service_type() != ServiceType::LoadBalancer {
            say(
                "spec.loadBalancerIP",
                "not acted on: the Service is not of type LoadBalancer",
            );
        }
        if self.session_affinity.as_deref() == Some("ClientIP") {
            say(
                "spec.sessionAffinity",
                "ClientIP is not acted on: connections are balanced at random",
            );
        }
        if self.external_traffic_policy.as_deref() == Some("Local") {
            say(
                "spec.externalTrafficPolicy",
                "Local is not acted on: node ports forward to endpoints on every node",
            );
        }
        if self.internal_traffic_policy.as_deref() == Some("Local") {
            say(
                "spec.internalTrafficPolicy",
                "Local is not acted on: every endpoint is used",
            );
        }
        if self.external_ips.as_ref().is_some_and(|v| !v.is_empty()) {
            say("spec.externalIPs", "not acted on");
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.app_protocol.is_some() {
                say(&format!("spec.ports[{i}].appProtocol"), "not acted on");
            }
        }
        out
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ModelError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("\"{value}\" is not one of {}", allowed.join(", ")),
        ))
    }
}

fn port_range(field: &str, port: i64) -> Result<(), ModelError> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between 1 and 65535, got {port}"),
        ))
    }
}

/// IANA service name syntax (RFC 6335), as Kubernetes checks port names: at most 15
/// lowercase letters, digits and '-', at least one letter, no leading, trailing or double
/// '-'.
pub fn validate_port_name(field: &str, name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "\"{name}\" is not a valid port name: 1-15 lowercase letters, digits and '-', with at least one letter, no leading, trailing or double '-'"
            ),
        ))
    }
}

/// The service network of the cluster: where cluster IPs, node ports and LoadBalancer
/// addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cidr: Subnet,
    /// Inclusive.
    pub node_ports: (u16, u16),
    /// `[network] loadbalancer_pool`; empty: LoadBalancer Services stay pending.
    pub lb_pool: super::address_pool::AddressPool,
}

/// What other Services hold: cluster IPs and (node port, protocol), each with the holder
/// (`namespace/name`).
#[derive(Clone, Debug, Default)]
pub struct Taken {
    pub ips: BTreeMap<Ipv4Addr, String>,
    /// LoadBalancer addresses (`spec.loadBalancerIP`).
    pub lb_ips: BTreeMap<Ipv4Addr, String>,
    pub node_ports: BTreeMap<(i64, Protocol), String>,
}

impl Taken {
    /// Adds what `spec` (of the Service `holder`) holds.
    pub fn add(&mut self, holder: &str, spec: &ServiceSpec) {
        if let Some(ip) = spec.vip() {
            self.ips.insert(ip, holder.to_string());
        }
        if let Some(ip) = spec.lb_ip() {
            self.lb_ips.insert(ip, holder.to_string());
        }
        for p in &spec.ports {
            if let Some(np) = p.node_port {
                self.node_ports
                    .insert((np, p.protocol()), holder.to_string());
            }
        }
    }
}

/// Refuses an address or node port of `spec` that another Service in `taken` holds,
/// naming the field and the holder. Deterministic: the Raft apply runs it.
pub fn check_unique(spec: &ServiceSpec, taken: &Taken) -> Result<(), ModelError> {
    if let Some(ip) = spec.vip() {
        if let Some(holder) = taken.ips.get(&ip) {
            return Err(invalid(
                "spec.clusterIP",
                format!("{ip} is already allocated to Service {holder}"),
            ));
        }
    }
    if let Some(ip) = spec.lb_ip() {
        if let Some(holder) = taken.lb_ips.get(&ip) {
            return Err(invalid(
                "spec.loadBalancerIP",
                format!("{ip} is already allocated to Service {holder}"),
            ));
        }
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if let Some(np) = p.node_port {
            if let Some(holder) = taken.node_ports.get(&(np, p.protocol())) {
                return Err(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    format!(
                        "port {np}/{} is already allocated to Service {holder}",
                        p.protocol().as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Carries over an update's allocated clusterIP and node ports (refusing a changed
/// clusterIP: it is immutable, as in Kubernetes).
pub fn keep_allocated(spec: &mut ServiceSpec, old: &ServiceSpec) -> Result<(), ModelError> {
    if spec.cluster_ip.as_deref() == Some("") {
        spec.cluster_ip = None;
    }
    match (&spec.cluster_ip, &old.cluster_ip) {
        (None, Some(ip)) => spec.cluster_ip = Some(ip.clone()),
        (Some(new), Some(ip)) if new != ip => {
            return Err(invalid(
                "spec.clusterIP",
                format!("is immutable: it is {ip}, the update asks for {new}"),
            ))
        }
        _ => {}
    }
    if spec.cluster_ips.is_none() {
        spec.cluster_ips = old.cluster_ips.clone();
    }
    if spec.service_type() == ServiceType::LoadBalancer && spec.load_balancer_ip.is_none() {
        spec.load_balancer_ip = old.load_balancer_ip.clone();
    }
    if spec.wants_node_ports() {
        for p in spec.ports.iter_mut().filter(|p| p.node_port.is_none()) {
            p.node_port = old
                .ports
                .iter()
                .find(|o| o.port == p.port && o.protocol() == p.protocol())
                .and_then(|o| o.node_port);
        }
    }
    Ok(())
}

/// `lo..hi` starting at `lo + start % (hi - lo)` and wrapping around.
fn rotated(lo: u64, hi: u64, start: u64) -> impl Iterator<Item = u64> {
    let n = hi.saturating_sub(lo);
    let off = if n == 0 { 0 } else { start % n };
    (0..n).map(move |i| lo + (off + i) % n)
}

/// Fills what the server allocates: `spec.clusterIP` (the first free address of the
/// service CIDR from `start` on, wrapping, skipping network, first and broadcast
/// addresses) and, for NodePort and LoadBalancer Services, each port's `nodePort` (the
/// first free one of the range from `start` on). `start` 0 gives the lowest; the API
/// passes a random one, as Kubernetes allocates at random, so concurrent creates seldom
/// pick the same value (the apply refuses the later of two that do). A
/// given address outside the CIDR, a given node port outside the range, anything taken
/// and an exhausted range are refused naming the field. `old`: the stored object on an
/// update (its values are kept).
pub fn allocate(
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    taken: &Taken,
    ranges: &ServiceRanges,
    start: u64,
) -> Result<(), ModelError> {
    if spec.cluster_ip.as_deref() == Some("") {
        spec.cluster_ip = None;
    }
    if let Some(old) = old {
        keep_allocated(spec, old)?;
    }
    if let Some(ip) = spec.vip() {
        if !ranges.cidr.contains(ip) {
            return Err(invalid(
                "spec.clusterIP",
                format!("{ip} is not in the service CIDR {}", ranges.cidr),
            ));
        }
    }
    let (lo, hi) = ranges.node_ports;
    for (i, p) in spec.ports.iter().enumerate() {
        if let Some(np) = p.node_port {
            if !(lo as i64..=hi as i64).contains(&np) {
                return Err(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    format!("{np} is not in the node port range {lo}-{hi}"),
                ));
            }
        }
    }
    check_unique(spec, taken)?;
    if !spec.headless() && spec.vip().is_none() {
        let used: BTreeSet<Ipv4Addr> = taken.ips.keys().copied().collect();
        let base = u32::from(ranges.cidr.base) as u64;
        let size = 1u64 << (32 - ranges.cidr.prefix);
        let ip = rotated(2, size - 1, start)
            .map(|i| Ipv4Addr::from((base + i) as u32))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                invalid(
                    "spec.clusterIP",
                    format!(
                        "the service CIDR {} is exhausted ({} Services hold its addresses)",
                        ranges.cidr,
                        used.len()
                    ),
                )
            })?;
        spec.cluster_ip = Some(ip.to_string());
        if spec.cluster_ips.is_some() {
            spec.cluster_ips = Some(vec![ip.to_string()]);
        }
    }
    allocate_lb_ip(spec, taken, &ranges.lb_pool)?;
    if spec.wants_node_ports() {
        let mut used: BTreeSet<(i64, Protocol)> = taken.node_ports.keys().copied().collect();
        used.extend(
            spec.ports
                .iter()
                .filter_map(|p| Some((p.node_port?, p.protocol()))),
        );
        for i in 0..spec.ports.len() {
            if spec.ports[i].node_port.is_some() {
                continue;
            }
            let proto = spec.ports[i].protocol();
            let free = rotated(lo as u64, hi as u64 + 1, start)
                .map(|n| n as i64)
                .find(|n| !used.contains(&(*n, proto)));
            let Some(np) = free else {
                return Err(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    format!(
                        "the node port range {lo}-{hi} is exhausted for {}",
                        proto.as_str()
                    ),
                ));
            };
            used.insert((np, proto));
            spec.ports[i].node_port = Some(np);
        }
    }
    Ok(())
}

/// A LoadBalancer Service's address (`spec.loadBalancerIP`, filled from the pool when the
/// user gave none, as the cluster IP is): one the user gave must lie in the pool; none
/// left is refused. Without a pool the Service stays pending (a status warning says so).
fn allocate_lb_ip(
    spec: &mut ServiceSpec,
    taken: &Taken,
    pool: &super::address_pool::AddressPool,
) -> Result<(), ModelError> {
    if spec.service_type() != ServiceType::LoadBalancer || pool.is_empty() {
        return Ok(());
    }
    let requested = match spec.load_balancer_ip.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
            invalid(
                "spec.loadBalancerIP",
                format!("\"{s}\" is not an IPv4 address"),
            )
        })?),
    };
    let ip = pool.allocate(requested, &taken.lb_ips)?;
    spec.load_balancer_ip = Some(ip.to_string());
    Ok(())
}

/// The addresses behind one Service (`omnicloud get endpoints`), core/v1's shape under
/// `spec` (the only writer is the endpoints controller).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointsSpec {
    #[serde(default)]
    pub subsets: Vec<EndpointSubset>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSubset {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointAddress {
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<EndpointTarget>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointTarget {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i64,
    #[serde(default)]
    pub protocol: Protocol,
}

impl EndpointsSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        for (i, s) in self.subsets.iter().enumerate() {
            for (j, a) in s.addresses.iter().chain(&s.not_ready_addresses).enumerate() {
                if a.ip.parse::<Ipv4Addr>().is_err() {
                    return Err(invalid(
                        &format!("spec.subsets[{i}].addresses[{j}].ip"),
                        format!("\"{}\" is not an IPv4 address", a.ip),
                    ));
                }
            }
            for (j, p) in s.ports.iter().enumerate() {
                port_range(&format!("spec.subsets[{i}].ports[{j}].port"), p.port)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
