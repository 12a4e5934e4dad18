//! The embedded cluster DNS server (hickory-server), one per agent or director node, on
//! UDP and TCP. It is authoritative for the cluster domain, answering from a
//! [`Records`] set that is swapped atomically ([`DnsServer::set_records`]: the next query
//! sees the new set), with NXDOMAIN and the domain's SOA for unknown names; every other
//! name goes to the node's own resolvers (hickory's forwarder, upstreams parsed from the
//! host's `/etc/resolv.conf` without this server's own addresses).
//!
//! Tasks: hickory's, spawned on the caller's tokio runtime (one per socket, one per TCP
//! connection). Calls nothing else in the crate but the pure `dns_records`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_resolver::config::NameServerConfig;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, Catalog, LookupControlFlow, LookupOptions, ZoneHandler, ZoneType,
};
use hickory_server::Server;

use super::dns_records::{Records, TTL_SECS};

/// Connections that send nothing for this long are closed (TCP).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cluster domain {domain:?}: {message}")]
    Domain { domain: String, message: String },
    #[error("cannot bind the DNS server on {addr} ({protocol})")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the DNS forwarder: {0}")]
    Forwarder(String),
    #[error("building the {domain} zone: {message}")]
    Zone { domain: String, message: String },
}

/// Where and what the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// The cluster domain, as [`super::dns_records::validate_domain`] returns it.
    pub domain: String,
    /// UDP and TCP on each (port 0: one free port, the same for both).
    pub listen: Vec<SocketAddr>,
    /// Where names outside the domain go; none: they are refused.
    pub upstreams: Vec<SocketAddr>,
    /// Who may query (others are refused); empty: anyone. A node allows its cluster CIDR
    /// and loopback, so it is no open resolver for the LAN.
    pub allowed: Vec<ipnet::IpNet>,
}

/// The nameservers of a resolv.conf text, without `exclude` (this server's own addresses:
/// forwarding to itself would loop), on port 53.
pub fn upstreams_from_resolv_conf(text: &str, exclude: &[IpAddr]) -> Vec<SocketAddr> {
    match hickory_resolver::system_conf::parse_resolv_conf(text) {
        Ok((config, _)) => config
            .name_servers()
            .iter()
            .map(|n| n.ip)
            .filter(|ip| !exclude.contains(ip))
            .map(|ip| SocketAddr::new(ip, 53))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The cluster zone: the current in-memory zone, replaced whole on every change.
struct ClusterZone {
    origin: LowerName,
    current: ArcSwap<InMemoryZoneHandler>,
}

#[async_trait::async_trait]
impl ZoneHandler for ClusterZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let zone = self.current.load_full();
        zone.lookup(name, rtype, request_info, lookup_options).await
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (
        LookupControlFlow<AuthLookup>,
        Option<hickory_proto::rr::TSigResponseContext>,
    ) {
        let zone = self.current.load_full();
        zone.search(request, lookup_options).await
    }

    async fn nsec_records(
        &self,
        name: &LowerName,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let zone = self.current.load_full();
        zone.nsec_records(name, lookup_options).await
    }
}

fn name(s: &str) -> Result<Name, String> {
    Name::from_ascii(format!("{s}.")).map_err(|e| format!("{s}: {e}"))
}

/// The hickory zone for `records`: the SOA (serial `serial`, negative TTL [`TTL_SECS`]),
/// one A set per name and one SRV set per named port.
fn zone_from(records: &Records, serial: u32) -> Result<InMemoryZoneHandler, String> {
    let origin = name(&records.domain)?;
    let mut zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        name(&format!("ns.dns.{}", records.domain))?,
        name(&format!("hostmaster.{}", records.domain))?,
        serial,
        30,
        10,
        86_400,
        TTL_SECS,
    );
    let mut upsert = |r: Record| {
        if zone.upsert_mut(r, serial) {
            Ok(())
        } else {
            Err("a record was refused".to_string())
        }
    };
    upsert(Record::from_rdata(origin, TTL_SECS, RData::SOA(soa)))?;
    for (n, ips) in &records.a {
        let owner = name(n)?;
        for ip in ips {
            upsert(Record::from_rdata(
                owner.clone(),
                TTL_SECS,
                RData::A(A(*ip)),
            ))?;
        }
    }
    for (n, targets) in &records.srv {
        let owner = name(n)?;
        for t in targets {
            let srv = SRV::new(0, 100, t.port, name(&t.target)?);
            upsert(Record::from_rdata(owner.clone(), TTL_SECS, RData::SRV(srv)))?;
        }
    }
    Ok(zone)
}

/// A running server. Dropping it leaves the tasks running; call [`DnsServer::shutdown`].
pub struct DnsServer {
    server: Server<Catalog>,
    zone: Arc<ClusterZone>,
    serial: AtomicU32,
    addrs: Vec<SocketAddr>,
}

/// Binds UDP on `addr`, then TCP on the port UDP got (port 0: tried a few times, as the
/// free UDP port may be taken for TCP).
async fn bind_pair(
    addr: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsError> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                protocol: "UDP",
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind {
            addr,
            protocol: "UDP",
            source,
        })?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => {
                last = Some(DnsError::Bind {
                    addr: bound,
                    protocol: "TCP",
                    source,
                })
            }
        }
    }
    Err(last.expect("tried at least once"))
}

impl DnsServer {
    /// Binds every listen address (UDP and TCP) and serves `records` from now on.
    pub async fn start(config: &DnsConfig, records: Records) -> Result<DnsServer, DnsError> {
        let domain_err = |message: String| DnsError::Domain {
            domain: config.domain.clone(),
            message,
        };
        let origin = name(&config.domain).map_err(domain_err)?;
        if records.domain != config.domain {
            return Err(domain_err(format!(
                "the records are for {:?}",
                records.domain
            )));
        }
        let zone = zone_from(&records, 1).map_err(|message| DnsError::Zone {
            domain: config.domain.clone(),
            message,
        })?;
        let zone = Arc::new(ClusterZone {
            origin: LowerName::new(&origin),
            current: ArcSwap::from_pointee(zone),
        });
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        if !config.upstreams.is_empty() {
            catalog.upsert(
                LowerName::new(&Name::root()),
                vec![Arc::new(forwarder(&config.upstreams)?)],
            );
        }
        let mut server = Server::with_access(catalog, [], config.allowed.iter().copied());
        let mut addrs = Vec::new();
        for addr in &config.listen {
            let (udp, tcp) = bind_pair(*addr).await?;
            addrs.push(udp.local_addr().map_err(|source| DnsError::Bind {
                addr: *addr,
                protocol: "UDP",
                source,
            })?);
            server.register_socket(udp);
            server.register_listener(tcp, TCP_TIMEOUT, 64);
        }
        Ok(DnsServer {
            server,
            zone,
            serial: AtomicU32::new(1),
            addrs,
        })
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves `records` from the next query on (the SOA serial moves on). Its domain must
    /// be the server's; a set that cannot be served is refused and the old one stays.
    pub fn set_records(&self, records: &Records) -> Result<(), DnsError> {
        let domain = self.zone.origin.to_string();
        if domain.trim_end_matches('.') != records.domain {
            return Err(DnsError::Domain {
                domain: records.domain.clone(),
                message: format!("this server serves {domain}"),
            });
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let zone = zone_from(records, serial).map_err(|message| DnsError::Zone {
            domain: records.domain.clone(),
            message,
        })?;
        self.zone.current.store(Arc::new(zone));
        Ok(())
    }

    /// Stops accepting queries and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// hickory's forwarding zone for the root, to `upstreams` over UDP then TCP.
fn forwarder(upstreams: &[SocketAddr]) -> Result<ForwardZoneHandler, DnsError> {
    use hickory_resolver::config::{ConnectionConfig, ProtocolConfig};
    let name_servers = upstreams
        .iter()
        .map(|a| {
            let conn = |protocol| {
                let mut c = ConnectionConfig::new(protocol);
                c.port = a.port();
                c
            };
            NameServerConfig::new(
                a.ip(),
                true,
                vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
            )
        })
        .collect();
    let mut builder = ForwardZoneHandler::builder_with_config(
        ForwardConfig {
            name_servers,
            options: None,
        },
        TokioRuntimeProvider::default(),
    );
    // The client already applied its own search list; an answer is cached no longer than
    // upstream says.
    let opts = builder.options_mut();
    opts.ndots = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    builder.build().map_err(DnsError::Forwarder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf_without_this_server() {
        let text = "# generated\nnameserver 10.0.0.53\nnameserver 10.88.3.1\nnameserver ::1\nsearch lan\noptions ndots:2\n";
        let own: IpAddr = "10.88.3.1".parse().unwrap();
        assert_eq!(
            upstreams_from_resolv_conf(text, &[own]),
            vec![
                "10.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(upstreams_from_resolv_conf("search lan\n", &[]).is_empty());
    }

    #[test]
    fn the_zone_holds_every_record_and_the_soa() {
        use super::super::dns_records::{build, MemberRecord};
        let records = build(
            "cluster.local",
            &[],
            &[MemberRecord {
                instance: "db-0".into(),
                service: "db".into(),
                namespace: "default".into(),
                ip: "10.88.1.2".parse().unwrap(),
            }],
        );
        let zone = zone_from(&records, 7).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(zone.serial().await, 7);
            assert_eq!(zone.records().await.len(), 2, "the SOA and one A set");
        });
    }
}
