//! The embedded cluster DNS server on real loopback sockets (UDP and TCP), queried with
//! real DNS messages (hickory-proto's encoder, as any client sends them): service,
//! headless and StatefulSet names, NXDOMAIN with the SOA, SRV, an answer that changes when
//! the records are swapped, and forwarding to an upstream (a second server on loopback
//! standing in for the node's resolver). No outside resolver is ever queried.
//!
//! The real-container test (a StatefulSet pod resolving `db-0.db` through its generated
//! resolv.conf) is in tests/agent.rs, with the other tests that run containers.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use omnicloud::net::dns::{DnsConfig, DnsServer};
use omnicloud::net::dns_records::{
    build, EndpointRecord, MemberRecord, PortRecord, Protocol, Records, ServiceRecord,
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// One query over UDP (or TCP), retried a few times over UDP: the answer message.
async fn query(server: SocketAddr, name: &str, rtype: RecordType, tcp: bool) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let bytes = m.to_vec().unwrap();
    for _ in 0..5 {
        let reply = if tcp {
            tcp_exchange(server, &bytes).await
        } else {
            udp_exchange(server, &bytes).await
        };
        if let Some(r) = reply {
            let answer = Message::from_vec(&r).unwrap();
            assert_eq!(
                answer.metadata.id, m.metadata.id,
                "the reply answers our query"
            );
            return answer;
        }
    }
    panic!("no answer from {server} for {name} {rtype}");
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server).await.ok()?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.ok()?;
    let read = async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .ok()?
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn records(db_ips: &[&str]) -> Records {
    let services = [
        ServiceRecord {
            name: "web".into(),
            namespace: "default".into(),
            cluster_ip: Some(ip("10.96.0.10")),
            ports: vec![PortRecord {
                name: Some("http".into()),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            endpoints: vec![EndpointRecord {
                ip: ip("10.88.1.2"),
                hostname: None,
            }],
        },
        ServiceRecord {
            name: "db".into(),
            namespace: "default".into(),
            cluster_ip: None,
            ports: vec![],
            endpoints: db_ips
                .iter()
                .enumerate()
                .map(|(i, a)| EndpointRecord {
                    ip: ip(a),
                    hostname: Some(format!("db-{i}")),
                })
                .collect(),
        },
    ];
    let members = [MemberRecord {
        instance: "cache-0".into(),
        service: "cache".into(),
        namespace: "shop".into(),
        ip: ip("10.88.2.7"),
    }];
    build("cluster.local", &services, &members)
}

async fn start(domain: &str, records: Records, upstreams: Vec<SocketAddr>) -> DnsServer {
    let config = DnsConfig {
        domain: domain.into(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams,
        allowed: vec![],
    };
    DnsServer::start(&config, records).await.unwrap()
}

#[tokio::test]
async fn answers_cluster_names_over_udp_and_tcp() {
    let server = start(
        "cluster.local",
        records(&["10.88.1.5", "10.88.3.5"]),
        vec![],
    )
    .await;
    let at = server.local_addrs()[0];

    let web = query(at, "web.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(web.metadata.response_code, ResponseCode::NoError);
    assert!(
        web.metadata.authoritative,
        "authoritative for the cluster domain"
    );
    assert_eq!(
        addresses(&web),
        [ip("10.96.0.10")],
        "a ClusterIP service answers its VIP"
    );
    assert!(web.answers.iter().all(|r| r.ttl <= 5), "short TTLs");

    let db = query(at, "db.default.svc.cluster.local.", RecordType::A, true).await;
    assert_eq!(
        addresses(&db),
        [ip("10.88.1.5"), ip("10.88.3.5")],
        "a headless service answers its ready endpoints (over TCP too)"
    );
    let db1 = query(
        at,
        "DB-1.db.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(
        addresses(&db1),
        [ip("10.88.3.5")],
        "names are case-insensitive"
    );
    let member = query(
        at,
        "cache-0.cache.shop.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(
        addresses(&member),
        [ip("10.88.2.7")],
        "a StatefulSet member"
    );

    let srv = query(
        at,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .await;
    let ports: Vec<u16> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [80], "SRV for a named port: {srv:?}");

    let nx = query(at, "nope.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        nx.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA
                && r.name.to_ascii().eq_ignore_ascii_case("cluster.local.")),
        "NXDOMAIN carries the domain's SOA: {nx:?}"
    );
    let outside = query(at, "example.test.", RecordType::A, false).await;
    assert_eq!(
        outside.metadata.response_code,
        ResponseCode::Refused,
        "without upstreams, names outside the cluster domain are refused"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn answers_change_when_the_records_are_swapped() {
    let server = start("cluster.local", records(&["10.88.1.5"]), vec![]).await;
    let at = server.local_addrs()[0];
    let name = "db.default.svc.cluster.local.";
    assert_eq!(
        addresses(&query(at, name, RecordType::A, false).await),
        [ip("10.88.1.5")]
    );
    server.set_records(&records(&["10.88.4.9"])).unwrap();
    assert_eq!(
        addresses(&query(at, name, RecordType::A, false).await),
        [ip("10.88.4.9")],
        "the next query sees the new set"
    );
    server.set_records(&records(&[])).unwrap();
    let gone = query(at, name, RecordType::A, false).await;
    assert_eq!(
        gone.metadata.response_code,
        ResponseCode::NXDomain,
        "no ready endpoint: the name is gone"
    );
    let other = Records::empty("other.local");
    assert!(
        server.set_records(&other).is_err(),
        "a set for another domain is refused"
    );
    assert_eq!(
        addresses(&query(at, "web.default.svc.cluster.local.", RecordType::A, false).await),
        [ip("10.96.0.10")],
        "and the served set stays"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream() {
    // The node's resolver, played by a second server authoritative for example.test.
    let mut upstream_records = Records::empty("example.test");
    upstream_records
        .a
        .insert("www.example.test".into(), [ip("192.0.2.80")].into());
    let upstream = start("example.test", upstream_records, vec![]).await;
    let server = start(
        "cluster.local",
        records(&["10.88.1.5"]),
        upstream.local_addrs().to_vec(),
    )
    .await;
    let at = server.local_addrs()[0];

    let www = query(at, "www.example.test.", RecordType::A, false).await;
    assert_eq!(www.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&www), [ip("192.0.2.80")], "forwarded: {www:?}");
    let tcp = query(at, "www.example.test.", RecordType::A, true).await;
    assert_eq!(
        addresses(&tcp),
        [ip("192.0.2.80")],
        "forwarded over TCP too"
    );
    let nx = query(at, "missing.example.test.", RecordType::A, false).await;
    assert_eq!(
        nx.metadata.response_code,
        ResponseCode::NXDomain,
        "the upstream's NXDOMAIN comes through"
    );
    let local = query(at, "web.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(
        addresses(&local),
        [ip("10.96.0.10")],
        "cluster names are still answered here"
    );
    server.shutdown().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn clients_outside_the_allowed_networks_are_refused() {
    let config = DnsConfig {
        domain: "cluster.local".into(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams: vec![],
        allowed: vec!["10.88.0.0/16".parse().unwrap()],
    };
    let server = DnsServer::start(&config, records(&["10.88.1.5"]))
        .await
        .unwrap();
    let at = server.local_addrs()[0];
    let m = query(at, "web.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "a query from 127.0.0.1 is not from the cluster CIDR"
    );
    assert!(m.answers.is_empty());
    server.shutdown().await;
}
