//! The `[network]` section: instance subnets, cross-node routing, Services (cluster IPs,
//! node ports, the LoadBalancer pool) and cluster DNS; parsed and checked by field.

use std::net::IpAddr;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNetwork {
    cluster_cidr: String,
    node_prefix: u8,
    bridge: String,
    backend: String,
    service_cidr: String,
    node_port_range: String,
    loadbalancer_pool: Vec<String>,
    cluster_domain: String,
    dns_upstreams: Vec<String>,
    dns_listen: String,
}

/// Instance networking: the cluster CIDR the leader leases node subnets from, and this
/// node's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    pub cluster_cidr: crate::model::Subnet,
    pub node_prefix: u8,
    pub bridge: String,
    /// Lower case, no trailing dot (`cluster.local`).
    pub cluster_domain: String,
    /// Where the node's DNS server forwards names outside the cluster domain; empty: the
    /// host's /etc/resolv.conf.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// An extra address the node's DNS server listens on (besides the bridge gateway).
    pub dns_listen: Option<std::net::SocketAddr>,
    /// How this node routes to peers' subnets (`net::routes`).
    pub backend: RoutingBackend,
    /// Where Services' cluster IPs and node ports come from.
    pub services: crate::model::service::ServiceRanges,
}

/// `[network] backend`: how nodes reach each other's instance subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingBackend {
    /// host-gw for peers on a directly connected subnet, VXLAN for the rest.
    Auto,
    /// A route per peer subnet via the peer's address; peers off the segment get none.
    HostGw,
    /// Every peer over the VXLAN overlay.
    Vxlan,
}

impl std::str::FromStr for RoutingBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RoutingBackend::Auto),
            "host-gw" => Ok(RoutingBackend::HostGw),
            "vxlan" => Ok(RoutingBackend::Vxlan),
            _ => Err(format!(
                "\"{s}\" is not a backend: expected \"auto\", \"host-gw\" or \"vxlan\""
            )),
        }
    }
}

impl FileNetwork {
    pub(super) fn settings(&self) -> Result<NetworkSettings, ConfigError> {
        let cluster_cidr = crate::model::Subnet::parse(&self.cluster_cidr).ok_or_else(|| {
            invalid(
                "network.cluster_cidr",
                format!(
                    "\"{}\" is not an IPv4 CIDR like 10.88.0.0/16",
                    self.cluster_cidr
                ),
            )
        })?;
        if !(cluster_cidr.prefix..=28).contains(&self.node_prefix) {
            return Err(invalid(
                "network.node_prefix",
                format!(
                    "must be between the cluster prefix /{} and /28, got {}",
                    cluster_cidr.prefix, self.node_prefix
                ),
            ));
        }
        let bridge = &self.bridge;
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "network.bridge",
                format!("\"{bridge}\" is not an interface name (1-15 of letters, digits, - and _)"),
            ));
        }
        let backend = self
            .backend
            .parse()
            .map_err(|why| invalid("network.backend", why))?;
        let cluster_domain = crate::model::validate_domain(&self.cluster_domain)
            .map_err(|m| invalid("network.cluster_domain", m))?;
        let dns_upstreams = self
            .dns_upstreams
            .iter()
            .map(|u| {
                u.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        u.parse::<IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        invalid(
                            "network.dns_upstreams",
                            format!("\"{u}\" is not an IP address or IP:PORT"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dns_listen = match self.dns_listen.as_str() {
            "" => None,
            l => Some(l.parse().map_err(|_| {
                invalid(
                    "network.dns_listen",
                    format!("\"{l}\" is not IP:PORT (port 0 picks a free one)"),
                )
            })?),
        };
        Ok(NetworkSettings {
            cluster_cidr,
            node_prefix: self.node_prefix,
            bridge: self.bridge.clone(),
            cluster_domain,
            dns_upstreams,
            dns_listen,
            backend,
            services: self.service_ranges(cluster_cidr)?,
        })
    }

    /// `service_cidr` (disjoint from the cluster CIDR) and `node_port_range` (`LO-HI`).
    fn service_ranges(
        &self,
        cluster_cidr: crate::model::Subnet,
    ) -> Result<crate::model::service::ServiceRanges, ConfigError> {
        let cidr = crate::model::Subnet::parse(&self.service_cidr).ok_or_else(|| {
            invalid(
                "network.service_cidr",
                format!(
                    "\"{}\" is not an IPv4 CIDR (/8 to /30) like 10.96.0.0/16",
                    self.service_cidr
                ),
            )
        })?;
        if cidr.contains(cluster_cidr.base) || cluster_cidr.contains(cidr.base) {
            return Err(invalid(
                "network.service_cidr",
                format!("{cidr} overlaps the cluster CIDR {cluster_cidr}"),
            ));
        }
        let range = self
            .node_port_range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| *a >= 1 && a <= b);
        let Some(node_ports) = range else {
            return Err(invalid(
                "network.node_port_range",
                format!(
                    "\"{}\" is not a port range LOW-HIGH like 30000-32767",
                    self.node_port_range
                ),
            ));
        };
        let lb_pool = crate::model::address_pool::AddressPool::parse(
            "network.loadbalancer_pool",
            &self.loadbalancer_pool,
        )
        .map_err(|e| invalid(&e.field, e.message))?;
        Ok(crate::model::service::ServiceRanges {
            cidr,
            node_ports,
            lb_pool,
        })
    }
}
