use super::*;
use crate::model::service::{
    EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceType,
};

fn endpoints(ips: &[String], port: i64, name: &str) -> EndpointsSpec {
    EndpointsSpec {
        subsets: vec![EndpointSubset {
            addresses: ips
                .iter()
                .map(|ip| EndpointAddress {
                    ip: ip.clone(),
                    ..Default::default()
                })
                .collect(),
            not_ready_addresses: Vec::new(),
            ports: vec![EndpointPort {
                name: (!name.is_empty()).then(|| name.to_string()),
                port,
                protocol: Protocol::Tcp,
            }],
        }],
    }
}

fn web(n: usize, node_port: Option<i64>) -> ServiceView {
    let ips: Vec<String> = (0..n)
        // Half on this node's subnet (10.88.0.0/24), half on another node's.
        .map(|i| format!("10.88.{}.{}", i % 2, i / 2 + 2))
        .collect();
    ServiceView {
        namespace: "default".into(),
        name: "web".into(),
        spec: ServiceSpec {
            kind: node_port.map(|_| ServiceType::NodePort),
            cluster_ip: Some("10.96.0.10".into()),
            ports: vec![ServicePort {
                port: 80,
                node_port,
                ..Default::default()
            }],
            ..Default::default()
        },
        endpoints: Some(endpoints(&ips, 8080, "")),
    }
}

fn inputs(services: Vec<ServiceView>) -> Inputs {
    Inputs {
        services,
        host_ports: Vec::new(),
        cluster_cidr: Subnet::parse("10.88.0.0/16"),
        local_subnet: Subnet::parse("10.88.0.0/24"),
    }
}

fn lines<'a>(payload: &'a str, prefix: &str) -> Vec<&'a str> {
    payload.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn a_service_with_100_endpoints_is_one_payload_balanced_evenly() {
    let p = payload(&inputs(vec![web(100, Some(30080))]), &Current::default()).unwrap();
    assert_eq!(
        p.matches("COMMIT").count(),
        2,
        "nat and filter, each one transaction"
    );
    let svc_jumps: Vec<&str> = p
        .lines()
        .filter(|l| l.starts_with("-A OMNI-SVC-") && l.contains("-j OMNI-SEP-"))
        .collect();
    assert_eq!(svc_jumps.len(), 100);
    // Rule i of n is taken with probability 1/(n-i): every endpoint gets 1/n.
    let mut left = 1.0f64;
    for (i, l) in svc_jumps.iter().enumerate() {
        let p = l
            .split("--probability ")
            .nth(1)
            .map(|s| s.split_whitespace().next().unwrap().parse::<f64>().unwrap())
            .unwrap_or(1.0);
        let share = left * p;
        assert!((share - 0.01).abs() < 1e-6, "endpoint {i} gets {share}");
        left -= share;
    }
    assert_eq!(
        lines(&p, "-A OMNI-SEP-")
            .iter()
            .filter(|l| l.contains("DNAT"))
            .count(),
        100
    );
    assert!(p.contains("-j DNAT --to-destination 10.88.0.2:8080"));
    // Endpoints on this node's subnet are masqueraded for traffic from it (hairpin).
    assert!(p.contains("-s 10.88.0.0/24 -j OMNI-MARK-MASQ"));
    assert!(
        p.contains("-s 10.88.1.2/32 -j OMNI-MARK-MASQ"),
        "a remote endpoint: itself"
    );
    assert!(p.contains("-A OMNI-NODEPORTS -p tcp -m tcp --dport 30080"));
    assert!(p.contains("-d 10.96.0.10/32 -p tcp -m tcp --dport 80"));
    for (table, chain, spec) in JUMPS {
        assert!(
            p.contains(&format!("-I {chain} 1 {spec}")),
            "{table} {chain} jump"
        );
    }
}

/// What `iptables-save` would print after `payload` was applied (enough for `Current`).
fn saved(payload: &str) -> String {
    let mut out = String::new();
    for l in payload.lines() {
        if let Some(rest) = l.strip_prefix("-I ") {
            let (chain, spec) = rest.split_once(" 1 ").unwrap();
            out.push_str(&format!("-A {chain} {spec}\n"));
        } else if !l.starts_with("-X") && !l.starts_with("-D") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn reapplying_adds_no_jump_and_stale_chains_are_deleted() {
    let first = payload(&inputs(vec![web(3, None)]), &Current::default()).unwrap();
    let current = Current::parse(&saved(&first));
    assert!(current.has("nat", SERVICES) && current.has("filter", FILTER));
    assert_eq!(current.jumps.len(), JUMPS.len());
    let again = payload(&inputs(vec![web(3, None)]), &current).unwrap();
    assert!(
        lines(&again, "-I ").is_empty(),
        "jumps present are not added twice"
    );
    assert!(lines(&again, "-D ").is_empty());
    assert!(lines(&again, "-X ").is_empty());

    // One endpoint fewer: its chain is declared (flushed) and deleted.
    let fewer = payload(&inputs(vec![web(2, None)]), &current).unwrap();
    let deleted = lines(&fewer, "-X ");
    assert_eq!(deleted.len(), 1, "{fewer}");
    assert!(deleted[0].starts_with("-X OMNI-SEP-"));
    assert!(fewer.contains(&format!(":{} - [0:0]", &deleted[0][3..])));

    // No endpoints: the cluster IP rejects instead of hanging.
    let none = payload(&inputs(vec![web(0, None)]), &current).unwrap();
    assert!(none.contains("has no endpoints\" -j REJECT"));
    assert!(!none.contains("-j OMNI-SEP-"));
}

#[test]
fn nothing_wanted_removes_everything_of_ours() {
    let first = payload(&inputs(vec![web(3, Some(30080))]), &Current::default()).unwrap();
    let current = Current::parse(&saved(&first));
    let gone = payload(&inputs(Vec::new()), &current).unwrap();
    for (_, chain, spec) in JUMPS {
        assert!(gone.contains(&format!("-D {chain} {spec}")), "{gone}");
    }
    let declared = lines(&gone, ":OMNI-").len();
    assert_eq!(
        declared,
        lines(&gone, "-X OMNI-").len(),
        "every chain deleted"
    );
    assert!(lines(&gone, "-A ").is_empty());
    assert_eq!(payload(&inputs(Vec::new()), &Current::default()), None);
    // A headless Service needs no rules either.
    let mut headless = web(3, None);
    headless.spec.cluster_ip = Some("None".into());
    assert_eq!(payload(&inputs(vec![headless]), &Current::default()), None);
}

#[test]
fn host_ports_and_udp() {
    let mut i = inputs(Vec::new());
    i.host_ports.push(HostPort {
        instance: "default/dns-0".into(),
        ip: "10.88.0.5".parse().unwrap(),
        host_port: 5353,
        container_port: 53,
        protocol: Protocol::Udp,
    });
    let p = payload(&i, &Current::default()).unwrap();
    assert!(p.contains(
        "-A OMNI-HOSTPORTS -p udp -m udp --dport 5353 -m comment --comment \"hostPort of default/dns-0\" -j DNAT --to-destination 10.88.0.5:53"
    ));
    assert!(p.contains("-A OMNI-SERVICES -m addrtype --dst-type LOCAL -j OMNI-HOSTPORTS"));
    assert!(
        !p.contains("-j OMNI-NODEPORTS"),
        "no node ports, no jump to them"
    );
}

#[test]
fn current_is_read_from_iptables_save() {
    let save = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:OMNI-SERVICES - [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -m comment --comment \"omnicloud service portals\" -j OMNI-SERVICES\n-A PREROUTING -j DOCKER\nCOMMIT\n*filter\n:OMNI-FILTER - [0:0]\nCOMMIT\n";
    let c = Current::parse(save);
    assert!(c.has("nat", SERVICES) && c.has("filter", FILTER) && !c.has("nat", "DOCKER"));
    assert_eq!(c.jumps.len(), 1);
}

#[test]
fn a_loadbalancer_address_is_a_masqueraded_portal_to_the_same_endpoints() {
    let mut svc = web(3, Some(30080));
    svc.spec.kind = Some(ServiceType::LoadBalancer);
    svc.spec.load_balancer_ip = Some("192.168.1.240".into());
    let p = payload(&inputs(vec![svc.clone()]), &Current::default()).unwrap();
    let portal: Vec<&str> = lines(
        &p,
        "-A OMNI-SERVICES -d 192.168.1.240/32 -p tcp -m tcp --dport 80",
    );
    assert_eq!(portal.len(), 2, "{p}");
    assert!(portal[0].ends_with("-j OMNI-MARK-MASQ"), "{}", portal[0]);
    assert!(portal[1].contains("-j OMNI-SVC-"), "{}", portal[1]);
    // The same chain as the cluster IP's.
    let svc_chain = portal[1].rsplit(' ').next().unwrap();
    assert!(lines(&p, "-A OMNI-SERVICES -d 10.96.0.10/32")
        .iter()
        .any(|l| l.ends_with(svc_chain)));
    // Without endpoints the address refuses at once instead of timing out.
    svc.endpoints = None;
    let p = payload(&inputs(vec![svc]), &Current::default()).unwrap();
    assert!(
        lines(&p, "-A OMNI-FILTER -d 192.168.1.240/32")
            .iter()
            .any(|l| l.contains("REJECT")),
        "{p}"
    );
}
