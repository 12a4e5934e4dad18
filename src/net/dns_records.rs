//! What the cluster DNS server answers, as plain data: [`Records`] built by the pure
//! [`build`] from services (with their ready endpoints) and StatefulSet members, and the
//! `/etc/resolv.conf` a container gets ([`resolv_conf`]). No sockets, no store, no hickory:
//! `net::dns` serves a `Records`, the feed (`net::dns_feed`) fills the inputs from
//! committed state.
//!
//! Names follow the Kubernetes DNS specification:
//! - `SERVICE.NS.svc.DOMAIN` A: the cluster IP; for a headless service every ready
//!   endpoint address;
//! - `HOST.SERVICE.NS.svc.DOMAIN` A: a headless service's endpoint with a hostname, and a
//!   StatefulSet member (`db-0.db.default.svc.cluster.local`, the StatefulSet's
//!   `serviceName`);
//! - `_PORT._PROTO.SERVICE.NS.svc.DOMAIN` SRV for every named port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub use crate::model::{is_dns_label as is_label, validate_domain};

/// The default cluster domain (`[network] cluster_domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// TTL of every answer and of the negative answers (the SOA minimum): short, so a client
/// sees a change within seconds.
pub const TTL_SECS: u32 = 5;

/// One service as DNS sees it. The seam for the Service kind: the feed fills one per
/// Service object, `endpoints` from its Endpoints object's ready addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub namespace: String,
    /// The allocated cluster IP; None for a headless service (`clusterIP: None`).
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<PortRecord>,
    /// The ready endpoint addresses (only they are published).
    pub endpoints: Vec<EndpointRecord>,
}

/// A service port; only named ports get SRV records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRecord {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "_tcp",
            Protocol::Udp => "_udp",
        }
    }
}

/// A ready endpoint of a service: its address and, when it has one, its hostname (the
/// instance name of a StatefulSet member behind a headless service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

/// A ready StatefulSet instance whose StatefulSet names a `serviceName`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberRecord {
    /// The instance name (`db-0`).
    pub instance: String,
    /// The StatefulSet's `serviceName` (`db`).
    pub service: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
}

/// An SRV target: `0 <weight> port target`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub port: u16,
    /// A fully qualified name without the trailing dot.
    pub target: String,
}

/// Everything the server answers under the cluster domain. Names are lower case, fully
/// qualified, without the trailing dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    pub a: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    pub srv: BTreeMap<String, BTreeSet<Srv>>,
}

impl Records {
    /// No names yet (the server still answers NXDOMAIN with the SOA for the domain).
    pub fn empty(domain: &str) -> Records {
        Records {
            domain: domain.to_string(),
            ..Records::default()
        }
    }

    /// The addresses of `name` (any case, trailing dot or not).
    pub fn lookup(&self, name: &str) -> Option<&BTreeSet<Ipv4Addr>> {
        self.a
            .get(name.trim_end_matches('.').to_ascii_lowercase().as_str())
    }

    fn add_a(&mut self, name: String, ip: Ipv4Addr) {
        self.a.entry(name).or_default().insert(ip);
    }
}

/// The records for `domain` (already checked by [`validate_domain`]) from `services` and
/// `members`. Names that are not DNS labels (the model validates them, so only hand-made
/// inputs) are left out; an address conflict on one name is a union.
pub fn build(domain: &str, services: &[ServiceRecord], members: &[MemberRecord]) -> Records {
    let mut out = Records::empty(domain);
    for s in services {
        if !is_label(&s.name) || !is_label(&s.namespace) {
            continue;
        }
        let base = format!("{}.{}.svc.{domain}", lower(&s.name), lower(&s.namespace));
        let mut targets = Vec::new();
        match s.cluster_ip {
            Some(ip) => {
                out.add_a(base.clone(), ip);
                targets.push(base.clone());
            }
            None => {
                for e in &s.endpoints {
                    out.add_a(base.clone(), e.ip);
                    // Kubernetes names an endpoint without a hostname by its dashed address.
                    let host = match &e.hostname {
                        Some(h) if is_label(h) => lower(h),
                        _ => e.ip.to_string().replace('.', "-"),
                    };
                    let name = format!("{host}.{base}");
                    out.add_a(name.clone(), e.ip);
                    targets.push(name);
                }
            }
        }
        for p in &s.ports {
            let Some(port_name) = p.name.as_deref().filter(|n| is_label(n)) else {
                continue;
            };
            let srv_name = format!("_{}.{}.{base}", lower(port_name), p.protocol.label());
            let set = out.srv.entry(srv_name).or_default();
            for t in &targets {
                set.insert(Srv {
                    port: p.port,
                    target: t.clone(),
                });
            }
        }
    }
    for m in members {
        if [&m.instance, &m.service, &m.namespace]
            .iter()
            .all(|l| is_label(l))
        {
            let name = format!(
                "{}.{}.{}.svc.{domain}",
                lower(&m.instance),
                lower(&m.service),
                lower(&m.namespace)
            );
            out.add_a(name, m.ip);
        }
    }
    out
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// A container's `/etc/resolv.conf`: the node's DNS server, the namespace's search path
/// and `ndots:5`, so `web` resolves to `web.NS.svc.DOMAIN` as in a Kubernetes pod.
pub fn resolv_conf(nameserver: Ipv4Addr, namespace: &str, domain: &str) -> String {
    format!(
        "# Written by omnicloud: the cluster DNS server on this node.\n\
         nameserver {nameserver}\n\
         search {namespace}.svc.{domain} svc.{domain} {domain}\n\
         options ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn service(
        name: &str,
        cluster_ip: Option<&str>,
        endpoints: &[(&str, Option<&str>)],
    ) -> ServiceRecord {
        ServiceRecord {
            name: name.into(),
            namespace: "default".into(),
            cluster_ip: cluster_ip.map(ip),
            ports: vec![
                PortRecord {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Protocol::Tcp,
                },
                PortRecord {
                    name: None,
                    port: 81,
                    protocol: Protocol::Tcp,
                },
            ],
            endpoints: endpoints
                .iter()
                .map(|(a, h)| EndpointRecord {
                    ip: ip(a),
                    hostname: h.map(str::to_string),
                })
                .collect(),
        }
    }

    #[test]
    fn a_cluster_ip_service_answers_its_vip_only() {
        let r = build(
            "cluster.local",
            &[service("web", Some("10.96.0.10"), &[("10.88.1.2", None)])],
            &[],
        );
        assert_eq!(
            r.lookup("web.default.svc.cluster.local."),
            Some(&[ip("10.96.0.10")].into())
        );
        assert!(
            r.lookup("10-88-1-2.web.default.svc.cluster.local")
                .is_none(),
            "endpoints of a ClusterIP service get no names"
        );
        let srv = &r.srv["_http._tcp.web.default.svc.cluster.local"];
        assert_eq!(
            srv.iter().collect::<Vec<_>>(),
            [&Srv {
                port: 80,
                target: "web.default.svc.cluster.local".into()
            }]
        );
        assert_eq!(r.srv.len(), 1, "the unnamed port has no SRV record");
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints() {
        let r = build(
            "cluster.local",
            &[service(
                "db",
                None,
                &[("10.88.1.2", Some("db-0")), ("10.88.2.2", None)],
            )],
            &[],
        );
        assert_eq!(
            r.lookup("DB.default.svc.cluster.local"),
            Some(&[ip("10.88.1.2"), ip("10.88.2.2")].into())
        );
        assert_eq!(
            r.lookup("db-0.db.default.svc.cluster.local"),
            Some(&[ip("10.88.1.2")].into())
        );
        assert_eq!(
            r.lookup("10-88-2-2.db.default.svc.cluster.local"),
            Some(&[ip("10.88.2.2")].into())
        );
        let srv = &r.srv["_http._tcp.db.default.svc.cluster.local"];
        assert_eq!(srv.len(), 2, "one SRV target per endpoint: {srv:?}");
        let empty = build("cluster.local", &[service("none", None, &[])], &[]);
        assert!(
            empty.lookup("none.default.svc.cluster.local").is_none(),
            "a headless service without ready endpoints has no address"
        );
    }

    #[test]
    fn statefulset_members_get_names_under_their_service() {
        let members = [
            MemberRecord {
                instance: "db-0".into(),
                service: "db".into(),
                namespace: "prod".into(),
                ip: ip("10.88.1.5"),
            },
            MemberRecord {
                instance: "bad_name".into(),
                service: "db".into(),
                namespace: "prod".into(),
                ip: ip("10.88.1.6"),
            },
        ];
        let r = build("example.internal", &[], &members);
        assert_eq!(
            r.lookup("db-0.db.prod.svc.example.internal"),
            Some(&[ip("10.88.1.5")].into())
        );
        assert_eq!(r.a.len(), 1, "a name that is no DNS label is left out");
        assert!(
            r.lookup("db.prod.svc.example.internal").is_none(),
            "no Service object: the service name itself is not made up"
        );
    }

    #[test]
    fn domains_are_validated_and_normalized() {
        assert_eq!(validate_domain("Cluster.Local.").unwrap(), "cluster.local");
        assert_eq!(validate_domain("home").unwrap(), "home");
        for bad in ["", ".", "a..b", "-a.local", "a_b.local", &"a".repeat(64)] {
            assert!(validate_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_domain("x.y_z")
            .unwrap_err()
            .contains("label \"y_z\""));
    }

    #[test]
    fn resolv_conf_searches_the_namespace_first() {
        let text = resolv_conf(ip("10.88.3.1"), "shop", "cluster.local");
        assert!(text.contains("nameserver 10.88.3.1\n"), "{text}");
        assert!(
            text.contains("search shop.svc.cluster.local svc.cluster.local cluster.local\n"),
            "{text}"
        );
        assert!(text.contains("options ndots:5"), "{text}");
    }
}
