//! Keeps a node's DNS server fed from committed state: waits for the node network, starts
//! the server on the bridge gateway (port 53) and any configured extra address, and
//! rebuilds its records from the local replica on every relevant change (and every few
//! seconds, in case a change notice was missed).
//!
//! The inputs: ready StatefulSet instances whose StatefulSet names a `serviceName`
//! ([`members`]), and Services with the ready addresses of their Endpoints
//! ([`services`]). One task per node; reads the store, calls `dns` and the pure `dns_records`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::dns::{upstreams_from_resolv_conf, DnsConfig, DnsServer};
use super::dns_records::{
    build, EndpointRecord, MemberRecord, PortRecord, Protocol, Records, ServiceRecord,
};
use crate::model::instance::{InstanceStatus, Phase};
use crate::model::{Kind, Resource, Spec};
use crate::orchestrator::ControlPlane;
use crate::store::StoreReader;
use crate::supervise::NodeNet;

/// A full rebuild this often even without a change notice.
const RESYNC: Duration = Duration::from_secs(5);
/// How long to wait after a change for more to arrive before rebuilding once.
const SETTLE: Duration = Duration::from_millis(100);
/// Between attempts to bind the server when its address is not available.
const RETRY: Duration = Duration::from_secs(5);

/// What `node.rs` hands the feed (from `[network]`).
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub domain: String,
    /// Also listen here (tests, or a node-local address), besides the bridge gateway.
    pub extra_listen: Option<SocketAddr>,
    /// Upstream resolvers; empty: the host's /etc/resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    /// The cluster CIDR: with loopback, who may query.
    pub cluster_cidr: crate::model::Subnet,
}

/// The StatefulSet members DNS names: ready, running instances with an address whose
/// owner StatefulSet (same namespace) has a `serviceName`. Pure over parsed objects.
pub fn members(instances: &[Resource], statefulsets: &[Resource]) -> Vec<MemberRecord> {
    let service_of: BTreeMap<(String, String), String> = statefulsets
        .iter()
        .filter_map(|r| match &r.spec {
            Some(Spec::StatefulSet(s)) => Some((
                (namespace(r), r.metadata.name.clone()),
                s.service_name.clone().filter(|n| !n.is_empty())?,
            )),
            _ => None,
        })
        .collect();
    let mut out: Vec<MemberRecord> = instances
        .iter()
        .filter_map(|r| {
            let Some(Spec::Instance(spec)) = &r.spec else {
                return None;
            };
            let owner = spec
                .owner
                .as_ref()
                .filter(|o| o.kind == Kind::StatefulSet)?;
            let service = service_of.get(&(namespace(r), owner.name.clone()))?;
            let status: InstanceStatus = serde_json::from_value(r.status.clone()?).ok()?;
            if !status.ready || status.phase != Phase::Running {
                return None;
            }
            Some(MemberRecord {
                instance: r.metadata.name.clone(),
                service: service.clone(),
                namespace: namespace(r),
                ip: status.ip.parse().ok()?,
            })
        })
        .collect();
    out.sort();
    out
}

fn namespace(r: &Resource) -> String {
    r.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| crate::store::state_machine::DEFAULT_NAMESPACE.into())
}

/// The services DNS names. The Service kind is not in this tree yet: the merge with it
/// fills one [`ServiceRecord`] per Service object (cluster IP, or None when headless; its
/// ports) with the ready addresses of its Endpoints object, and adds both kinds to
/// [`watched`].
pub fn services(reader: &StoreReader) -> Vec<ServiceRecord> {
    service_records(
        &parsed(reader, Kind::Service),
        &parsed(reader, Kind::Endpoints),
    )
}

/// One record per Service: its cluster IP (None when headless), its ports, and the ready
/// addresses of its Endpoints (same namespace and name). Pure over parsed objects.
pub fn service_records(services: &[Resource], endpoints: &[Resource]) -> Vec<ServiceRecord> {
    let ready: BTreeMap<(String, String), Vec<EndpointRecord>> = endpoints
        .iter()
        .filter_map(|r| match &r.spec {
            Some(Spec::Endpoints(e)) => {
                let mut ips: Vec<EndpointRecord> = e
                    .subsets
                    .iter()
                    .flat_map(|s| &s.addresses)
                    .filter_map(|a| a.ip.parse().ok())
                    .map(|ip| EndpointRecord { ip, hostname: None })
                    .collect();
                ips.sort_by_key(|e| e.ip);
                ips.dedup();
                Some(((namespace(r), r.metadata.name.clone()), ips))
            }
            _ => None,
        })
        .collect();
    services
        .iter()
        .filter_map(|r| {
            let Some(Spec::Service(spec)) = &r.spec else {
                return None;
            };
            let cluster_ip = spec.vip();
            if cluster_ip.is_none() && !spec.headless() {
                return None; // not allocated yet
            }
            let key = (namespace(r), r.metadata.name.clone());
            Some(ServiceRecord {
                name: key.1.clone(),
                namespace: key.0.clone(),
                cluster_ip,
                ports: spec
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some(PortRecord {
                            name: p.name.clone(),
                            port: u16::try_from(p.port).ok()?,
                            protocol: match p.protocol() {
                                crate::model::service::Protocol::Udp => Protocol::Udp,
                                _ => Protocol::Tcp,
                            },
                        })
                    })
                    .collect(),
                endpoints: ready.get(&key).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// Whether a change may change the records: a StatefulSet, or an instance a StatefulSet
/// owns (instances change often, with every usage report; the others name nothing yet).
fn watched(change: &crate::store::Change) -> bool {
    match change.key.kind {
        Kind::StatefulSet | Kind::Service | Kind::Endpoints => true,
        Kind::Instance => serde_json::from_slice::<serde_json::Value>(&change.object)
            .is_ok_and(|o| o["spec"]["owner"]["kind"] == "StatefulSet"),
        _ => false,
    }
}

fn parsed(reader: &StoreReader, kind: Kind) -> Vec<Resource> {
    reader.resources(kind).unwrap_or_default()
}

/// The records for the local replica's current state.
pub fn current(reader: &StoreReader, domain: &str) -> Records {
    let members = members(
        &parsed(reader, Kind::Instance),
        &parsed(reader, Kind::StatefulSet),
    );
    build(domain, &services(reader), &members)
}

/// Waits for the node network, then serves DNS on it until `stop`.
pub async fn serve(
    control: ControlPlane,
    settings: DnsSettings,
    network: NodeNet,
    mut stop: watch::Receiver<bool>,
) {
    let Some(net) = network.wait(&mut stop).await else {
        return;
    };
    let mut listen = vec![SocketAddr::new(IpAddr::V4(net.subnet.gateway()), 53)];
    listen.extend(settings.extra_listen);
    let upstreams = if settings.upstreams.is_empty() {
        let own: Vec<IpAddr> = listen.iter().map(|a| a.ip()).collect();
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let found = upstreams_from_resolv_conf(&text, &own);
        if found.is_empty() {
            tracing::warn!("no nameserver in /etc/resolv.conf besides this node's DNS server: names outside the cluster domain are refused");
        }
        found
    } else {
        settings.upstreams.clone()
    };
    let cidr = settings.cluster_cidr;
    let loopback = ["127.0.0.0/8", "::1/128"].map(|n| n.parse::<ipnet::IpNet>().ok());
    let allowed = std::iter::once(
        ipnet::Ipv4Net::new(cidr.base, cidr.prefix)
            .ok()
            .map(ipnet::IpNet::V4),
    )
    .chain(loopback);
    let config = DnsConfig {
        domain: settings.domain.clone(),
        listen,
        upstreams,
        allowed: allowed.flatten().collect(),
    };
    let mut said = String::new();
    let server = loop {
        let records = current(control.reader(), &settings.domain);
        match DnsServer::start(&config, records).await {
            Ok(s) => break Arc::new(s),
            Err(e) => {
                // Said once per distinct reason (e.g. port 53 held by another server).
                let why = crate::error_chain(&e);
                if why != said {
                    tracing::error!(error = %why, "starting the cluster DNS server; retrying every {RETRY:?}");
                    said = why;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
        }
    };
    tracing::info!(addrs = ?server.local_addrs(), domain = %settings.domain, upstreams = ?config.upstreams, "cluster DNS serving");
    feed(&control, &server, &settings.domain, &mut stop).await;
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }
}

/// Resolves once `stop` is set (the guard `wait_for` returns is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Rebuilds and swaps the records on every watched change until `stop`.
async fn feed(
    control: &ControlPlane,
    server: &DnsServer,
    domain: &str,
    stop: &mut watch::Receiver<bool>,
) {
    let mut changes = control.subscribe();
    let mut last = current(control.reader(), domain);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) if !watched(&c) => continue,
                // Lagged: some were missed; the rebuild below reads everything anyway.
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    tokio::time::sleep(SETTLE).await;
                    while changes.try_recv().is_ok() {}
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(RESYNC) => {}
            _ = stopped(stop) => return,
        }
        let next = current(control.reader(), domain);
        if next != last {
            match server.set_records(&next) {
                Ok(()) => {
                    tracing::debug!(names = next.a.len(), "cluster DNS records updated");
                    last = next;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cluster DNS records kept")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(v: serde_json::Value) -> Resource {
        Resource::from_stored(v).unwrap()
    }

    fn instance(name: &str, owner: &str, status: serde_json::Value) -> Resource {
        resource(serde_json::json!({
            "apiVersion": crate::model::API_VERSION, "kind": "Instance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"owner": {"kind": "StatefulSet", "name": owner},
                     "pod": {"containers": [{"name": "c", "image": "busybox"}]}},
            "status": status,
        }))
    }

    #[test]
    fn services_publish_their_cluster_ip_or_their_ready_endpoints() {
        let svc = |name: &str, ip: &str| {
            resource(serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": ip, "selector": {"app": name},
                         "ports": [{"name": "http", "port": 80}]},
            }))
        };
        let eps = |name: &str, ready: &[&str], not_ready: &[&str]| {
            let a = |ips: &[&str]| {
                ips.iter()
                    .map(|ip| serde_json::json!({"ip": ip}))
                    .collect::<Vec<_>>()
            };
            resource(serde_json::json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"subsets": [{"addresses": a(ready), "notReadyAddresses": a(not_ready),
                                      "ports": [{"name": "http", "port": 8080}]}]},
            }))
        };
        let services = [svc("web", "10.43.0.10"), svc("db", "None")];
        let endpoints = [
            eps("web", &["10.88.0.2"], &[]),
            eps("db", &["10.88.1.3", "10.88.0.4"], &["10.88.0.9"]),
        ];
        let records = service_records(&services, &endpoints);
        assert_eq!(records.len(), 2);
        let web = records.iter().find(|r| r.name == "web").unwrap();
        assert_eq!(web.cluster_ip, Some("10.43.0.10".parse().unwrap()));
        assert_eq!(web.ports[0].name.as_deref(), Some("http"));
        let db = records.iter().find(|r| r.name == "db").unwrap();
        assert_eq!(db.cluster_ip, None, "headless");
        let ips: Vec<String> = db.endpoints.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ips, ["10.88.0.4", "10.88.1.3"], "ready ones only, in order");
    }

    fn statefulset(name: &str, service: Option<&str>) -> Resource {
        let mut spec = serde_json::json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        });
        if let Some(s) = service {
            spec["serviceName"] = s.into();
        }
        resource(serde_json::json!({
            "apiVersion": crate::model::API_VERSION, "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec,
        }))
    }

    #[test]
    fn ready_statefulset_instances_become_members() {
        let ready = serde_json::json!({"phase": "Running", "ready": true, "ip": "10.88.1.2", "restarts": 0});
        let unready = serde_json::json!({"phase": "Running", "ready": false, "ip": "10.88.1.3", "restarts": 0});
        let instances = [
            instance("db-0", "db", ready.clone()),
            instance("db-1", "db", unready),
            instance("cache-0", "cache", ready.clone()),
            instance("orphan-0", "gone", ready),
        ];
        let sets = [
            statefulset("db", Some("db-svc")),
            statefulset("cache", None),
        ];
        let m = members(&instances, &sets);
        assert_eq!(
            m,
            vec![MemberRecord {
                instance: "db-0".into(),
                service: "db-svc".into(),
                namespace: "default".into(),
                ip: "10.88.1.2".parse().unwrap(),
            }],
            "only ready members of a StatefulSet with a serviceName"
        );
    }

    #[test]
    fn only_statefulsets_and_their_instances_rebuild_the_records() {
        use crate::store::{Change, ChangeType, ObjectKey};
        let change = |kind, object: serde_json::Value| Change {
            revision: 1,
            change: ChangeType::Modified,
            key: ObjectKey::new(kind, "default", "x"),
            object: serde_json::to_vec(&object).unwrap(),
        };
        let owned = serde_json::json!({"spec": {"owner": {"kind": "StatefulSet", "name": "db"}}});
        let other = serde_json::json!({"spec": {"owner": {"kind": "Deployment", "name": "web"}}});
        assert!(watched(&change(Kind::Instance, owned)));
        assert!(!watched(&change(Kind::Instance, other.clone())));
        assert!(watched(&change(Kind::StatefulSet, serde_json::json!({}))));
        assert!(!watched(&change(Kind::Deployment, other)));
    }
}
