use super::*;
use crate::model::{parse_manifests, Kind, Resource, Spec};

fn parse(yaml: &str) -> Result<Resource, ModelError> {
    parse_manifests(yaml).map(|mut v| v.remove(0))
}

fn svc(body: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n{body}")
}

fn spec_of(r: &Resource) -> ServiceSpec {
    match &r.spec {
        Some(Spec::Service(s)) => s.clone(),
        other => panic!("not a service: {other:?}"),
    }
}

#[test]
fn the_core_v1_shape_parses() {
    let r = parse(&svc(
        "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}\n  sessionAffinity: ClientIP\n  externalTrafficPolicy: Local\n  publishNotReadyAddresses: true\n",
    ))
    .unwrap();
    assert_eq!(r.kind, Kind::Service);
    let s = spec_of(&r);
    assert_eq!(s.service_type(), ServiceType::NodePort);
    assert_eq!(s.ports[0].target(), IntOrString::Str("http".into()));
    assert_eq!(s.ports[1].protocol(), Protocol::Udp);
    let ignored: Vec<String> = s.ignored_fields().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        ignored,
        ["spec.sessionAffinity", "spec.externalTrafficPolicy"],
        "fields accepted but not acted on are said"
    );
    assert_eq!(Kind::parse("svc"), Some(Kind::Service));
    assert_eq!(Kind::parse("endpoints"), Some(Kind::Endpoints));
}

#[test]
fn bad_services_are_refused_naming_the_field() {
    for (body, field) in [
        ("  ports: [{port: 0}]\n", "spec.ports[0].port"),
        (
            "  ports: [{port: 80, targetPort: 70000}]\n",
            "spec.ports[0].targetPort",
        ),
        (
            "  ports: [{port: 80, targetPort: Http_Port}]\n",
            "spec.ports[0].targetPort",
        ),
        (
            "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
            "spec.ports[1].name",
        ),
        (
            "  ports: [{name: a, port: 80}, {port: 81}]\n",
            "spec.ports[1].name",
        ),
        ("  ports: [{name: -web, port: 80}]\n", "spec.ports[0].name"),
        ("  ports: [{name: a--b, port: 80}]\n", "spec.ports[0].name"),
        ("  ports: [{name: '123', port: 80}]\n", "spec.ports[0].name"),
        (
            "  ports: [{port: 80, protocol: SCTP}]\n",
            "spec.ports[0].protocol",
        ),
        (
            "  ports: [{port: 80, protocol: ICMP}]\n",
            "spec.ports[0].protocol",
        ),
        (
            "  type: ExternalName\n  externalName: db.example\n",
            "spec.type",
        ),
        (
            "  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n",
            "spec.clusterIP",
        ),
        (
            "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n",
            "spec.clusterIP",
        ),
        (
            "  ports: [{port: 80, nodePort: 30000}]\n",
            "spec.ports[0].nodePort",
        ),
        ("  ports: []\n", "spec.ports"),
        ("  ports: [{port: 80, portt: 1}]\n", "spec.ports[0]"),
        (
            "  sessionAffinity: Sticky\n  ports: [{port: 80}]\n",
            "spec.sessionAffinity",
        ),
        ("  type: Magic\n  ports: [{port: 80}]\n", "spec.type"),
        (
            "  ports: [{name: a, port: 80}, {name: b, port: 80}]\n",
            "spec.ports[1].port",
        ),
    ] {
        let e = parse(&svc(body)).unwrap_err();
        assert!(
            e.field.starts_with(field),
            "{body}: expected {field}, got {e}"
        );
    }
    // Headless without ports is fine; so is the same port number over TCP and UDP.
    parse(&svc("  clusterIP: None\n  selector: {app: db}\n")).unwrap();
    parse(&svc(
        "  ports: [{name: a, port: 53}, {name: b, port: 53, protocol: UDP}]\n",
    ))
    .unwrap();
}

fn ranges() -> ServiceRanges {
    ServiceRanges {
        lb_pool: Default::default(),
        cidr: Subnet::parse("10.96.0.0/29").unwrap(),
        node_ports: (30000, 30002),
    }
}

fn node_port_spec(ports: &[(i64, Option<i64>)]) -> ServiceSpec {
    ServiceSpec {
        kind: Some(ServiceType::NodePort),
        ports: ports
            .iter()
            .enumerate()
            .map(|(i, (port, np))| ServicePort {
                name: Some(format!("p{i}")),
                port: *port,
                node_port: *np,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn allocation_fills_keeps_and_refuses() {
    let mut taken = Taken::default();
    let mut a = node_port_spec(&[(80, None), (443, None)]);
    allocate(&mut a, None, &taken, &ranges(), 0).unwrap();
    assert_eq!(a.cluster_ip.as_deref(), Some("10.96.0.2"));
    assert_eq!(a.ports[0].node_port, Some(30000));
    assert_eq!(a.ports[1].node_port, Some(30001));
    taken.add("default/a", &a);

    // A given node port in use names the port and its holder.
    let mut b = node_port_spec(&[(80, Some(30001))]);
    let e = allocate(&mut b, None, &taken, &ranges(), 0).unwrap_err();
    assert_eq!(e.field, "spec.ports[0].nodePort");
    assert!(
        e.message.contains("30001") && e.message.contains("default/a"),
        "{e}"
    );
    // Outside the CIDR or the range.
    let mut c = node_port_spec(&[(80, None)]);
    c.cluster_ip = Some("10.97.0.1".into());
    assert_eq!(
        allocate(&mut c, None, &taken, &ranges(), 0)
            .unwrap_err()
            .field,
        "spec.clusterIP"
    );
    let mut d = node_port_spec(&[(80, Some(31000))]);
    assert_eq!(
        allocate(&mut d, None, &taken, &ranges(), 0)
            .unwrap_err()
            .field,
        "spec.ports[0].nodePort"
    );
    // The range exhausted: one left, two asked.
    let mut e2 = node_port_spec(&[(80, None), (81, None)]);
    let e = allocate(&mut e2, None, &taken, &ranges(), 0).unwrap_err();
    assert_eq!(e.field, "spec.ports[1].nodePort");
    assert!(e.message.contains("exhausted"), "{e}");

    // An update keeps what was allocated; a changed clusterIP is refused.
    let mut update = node_port_spec(&[(80, None), (443, None)]);
    let mut others = Taken::default();
    others
        .ips
        .insert("10.96.0.3".parse().unwrap(), "default/x".into());
    allocate(&mut update, Some(&a), &others, &ranges(), 0).unwrap();
    assert_eq!(update.cluster_ip, a.cluster_ip);
    assert_eq!(update.ports[1].node_port, Some(30001));
    let mut moved = node_port_spec(&[(80, None)]);
    moved.cluster_ip = Some("10.96.0.5".into());
    assert_eq!(
        allocate(&mut moved, Some(&a), &others, &ranges(), 0)
            .unwrap_err()
            .field,
        "spec.clusterIP"
    );

    // The CIDR exhausted: a /29 has 5 addresses to give (.2 to .6).
    let mut full = Taken::default();
    for i in 2..7 {
        full.ips
            .insert(Ipv4Addr::new(10, 96, 0, i), format!("default/s{i}"));
    }
    let mut f = ServiceSpec {
        ports: vec![ServicePort {
            port: 80,
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = allocate(&mut f, None, &full, &ranges(), 0).unwrap_err();
    assert_eq!(e.field, "spec.clusterIP");
    assert!(e.message.contains("exhausted"), "{e}");
    // Headless takes no address.
    let mut h = ServiceSpec {
        cluster_ip: Some("None".into()),
        ..Default::default()
    };
    allocate(&mut h, None, &full, &ranges(), 0).unwrap();
    assert_eq!(h.cluster_ip.as_deref(), Some("None"));
}

#[test]
fn endpoints_parse_in_the_core_v1_shape() {
    let r = parse(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets:\n- addresses: [{ip: 10.88.0.2, nodeName: n1}]\n  ports: [{name: http, port: 8080}]\n",
    )
    .unwrap();
    let Some(Spec::Endpoints(e)) = &r.spec else {
        panic!()
    };
    assert_eq!(e.subsets[0].addresses[0].ip, "10.88.0.2");
    assert_eq!(e.subsets[0].ports[0].protocol, Protocol::Tcp);
    let bad = parse(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets:\n- addresses: [{ip: nope}]\n",
    )
    .unwrap_err();
    assert_eq!(bad.field, "spec.subsets[0].addresses[0].ip");
}

#[test]
fn a_start_spreads_allocations_and_wraps() {
    let taken = Taken::default();
    let mut a = node_port_spec(&[(80, None)]);
    allocate(&mut a, None, &taken, &ranges(), 4).unwrap();
    // Addresses .2 to .6 (5 of them): start 4 is .6; node ports 30000-30002: start 4 is 30001.
    assert_eq!(a.cluster_ip.as_deref(), Some("10.96.0.6"));
    assert_eq!(a.ports[0].node_port, Some(30001));
    let mut t = Taken::default();
    t.add("default/a", &a);
    let mut b = node_port_spec(&[(80, None)]);
    allocate(&mut b, None, &t, &ranges(), 4).unwrap();
    assert_eq!(
        b.cluster_ip.as_deref(),
        Some("10.96.0.2"),
        "wraps past the end"
    );
    assert_eq!(b.ports[0].node_port, Some(30002));
}
