//! Cluster DNS benchmark on loopback: queries per second the embedded server answers
//! (UDP, A records of a 1,000-service record set, a tenth of the queries NXDOMAIN) with
//! a fixed number of clients each keeping one query in flight, with p50/p99 latency; and
//! how long a swap of the whole record set takes. The anchor (seed 002): CoreDNS serves
//! about 10,000 queries/s per replica.
//!
//! Run: `cargo bench --bench dns` (5 s of load). Without `--bench` (as
//! `cargo test --all-targets` runs it) a smoke run of 0.3 s.
//! Server and clients share this process's runtime (2 worker threads), so the figure
//! includes the clients' own cost.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use omnicloud::net::dns::{DnsConfig, DnsServer};
use omnicloud::net::dns_records::{build, EndpointRecord, PortRecord, Protocol, ServiceRecord};

const SERVICES: usize = 1000;
const CLIENTS: usize = 16;

fn services(generation: u8) -> Vec<ServiceRecord> {
    (0..SERVICES)
        .map(|i| ServiceRecord {
            name: format!("svc-{i}"),
            namespace: "default".into(),
            cluster_ip: (i % 4 != 0).then(|| Ipv4Addr::new(10, 96, (i / 256) as u8, i as u8)),
            ports: vec![PortRecord {
                name: Some("http".into()),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            endpoints: (0..3)
                .map(|e| EndpointRecord {
                    ip: Ipv4Addr::new(10, 88, generation, (i * 3 + e) as u8),
                    hostname: Some(format!("svc-{i}-{e}")),
                })
                .collect(),
        })
        .collect()
}

/// One client: sequential queries over its own UDP socket until `stop`; latencies.
async fn client(server: SocketAddr, seed: usize, stop: Arc<AtomicBool>) -> (Vec<Duration>, usize) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut lat = Vec::new();
    let mut nx = 0;
    let mut i = seed;
    while !stop.load(Ordering::Relaxed) {
        i = i.wrapping_mul(2_654_435_761).wrapping_add(1) % 1_000_003;
        let name = if i.is_multiple_of(10) {
            format!("missing-{i}.default.svc.cluster.local.")
        } else {
            format!("svc-{}.default.svc.cluster.local.", i % SERVICES)
        };
        let mut m = Message::new(i as u16, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii(&name).unwrap(),
            RecordType::A,
        ));
        let bytes = m.to_vec().unwrap();
        let t0 = Instant::now();
        sock.send(&bytes).await.unwrap();
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await
        else {
            continue; // lost on an overloaded loopback: not counted
        };
        lat.push(t0.elapsed());
        let reply = Message::from_vec(&buf[..n]).unwrap();
        match reply.metadata.response_code {
            ResponseCode::NXDomain => nx += 1,
            ResponseCode::NoError => assert!(!reply.answers.is_empty(), "{name}: no answer"),
            other => panic!("{name}: {other}"),
        }
    }
    (lat, nx)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn run(load: Duration) {
    let domain = "cluster.local";
    let records = build(domain, &services(0), &[]);
    let config = DnsConfig {
        domain: domain.into(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams: vec![],
        allowed: vec![],
    };
    let server = Arc::new(DnsServer::start(&config, records).await.unwrap());
    let at = server.local_addrs()[0];

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(at, c * 7919 + 1, stop.clone())))
        .collect();
    // Swaps of the whole set while the load runs: answers must keep coming.
    let swapper = {
        let server = server.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut swaps = Vec::new();
            let mut generation = 1u8;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let t0 = Instant::now();
                let next = build(domain, &services(generation), &[]);
                server.set_records(&next).unwrap();
                swaps.push(t0.elapsed());
                generation = generation.wrapping_add(1);
            }
            swaps
        })
    };
    let t0 = Instant::now();
    tokio::time::sleep(load).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut nx = 0;
    for t in tasks {
        let (l, n) = t.await.unwrap();
        lat.extend(l);
        nx += n;
    }
    let elapsed = t0.elapsed();
    let mut swaps = swapper.await.unwrap();
    lat.sort();
    swaps.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "dns: {} queries in {:.2} s over UDP with {CLIENTS} clients: {:.0} queries/s \
         (CoreDNS anchor: 10000/s per replica); latency p50 {:.3} ms, p99 {:.3} ms; \
         {nx} NXDOMAIN",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(p(&lat, 0.5)),
        ms(p(&lat, 0.99)),
    );
    if !swaps.is_empty() {
        println!(
            "dns: record set swap ({SERVICES} services, 3 endpoints each, build + zone + swap) \
             under load: p50 {:.2} ms, max {:.2} ms over {} swaps",
            ms(p(&swaps, 0.5)),
            ms(*swaps.last().unwrap()),
            swaps.len()
        );
    }
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(300)
    }));
}
