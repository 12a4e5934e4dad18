//! LoadBalancer address announcement on a real (test) LAN: two hosts in network
//! namespaces on one bridge, the announcer running inside host 0's namespace, host 1
//! standing in for a laptop on the LAN. The address appears on host 0's interface with our
//! label, gratuitous ARP moves the laptop's neighbour entry to host 0's MAC without the
//! laptop asking, the laptop reaches the address, and releasing it leaves nothing behind.
//! As root with `ip`; skips loudly elsewhere (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

use omnicloud::net::announce::Announcer;

fn sh(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs `f` on a thread that has entered network namespace `ns`, on its own runtime.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on a valid namespace fd only changes this thread's namespace; the
        // thread is ours and ends with this closure.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out = sh(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    out.trim().to_string()
}

#[test]
fn the_announcer_takes_an_address_over_on_the_lan_and_gives_it_back() {
    let Some(net) = common::netns::TestNet::new(2) else {
        return;
    };
    let (node, laptop) = (net.ns(0), net.ns(1));
    let lb: Ipv4Addr = net
        .ip(0)
        .rsplit_once('.')
        .map(|(p, _)| format!("{p}.240"))
        .unwrap()
        .parse()
        .unwrap();
    let node_dev = sh(&node, &["ls", "/sys/class/net"])
        .split_whitespace()
        .find(|d| *d != "lo")
        .expect("the host's veth")
        .to_string();
    let laptop_dev = sh(&laptop, &["ls", "/sys/class/net"])
        .split_whitespace()
        .find(|d| *d != "lo")
        .expect("the laptop's veth")
        .to_string();
    // The laptop believes the address is elsewhere (as after a failover): only the
    // announcement can correct that, since the entry is permanent-looking and fresh.
    let stale = "02:00:00:00:00:99";
    sh(
        &laptop,
        &[
            "ip",
            "neigh",
            "replace",
            &lb.to_string(),
            "lladdr",
            stale,
            "dev",
            &laptop_dev,
            "nud",
            "stale",
        ],
    );

    let want: BTreeSet<Ipv4Addr> = [lb].into();
    let taken = in_netns(&node, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Announcer::new().unwrap();
            let first = a.reconcile(&want).await.unwrap();
            // Idempotent: a second pass (or a restarted node) changes nothing.
            let second = a.reconcile(&want).await.unwrap();
            assert!(second.is_empty(), "second pass took {second:?} again");
            first
        })
    });
    assert_eq!(taken, vec![lb]);
    let addrs = sh(&node, &["ip", "-4", "addr", "show", "dev", &node_dev]);
    assert!(addrs.contains(&format!("{lb}/32")), "{addrs}");
    assert!(
        addrs.contains(&format!("{node_dev}:olb")),
        "labelled as ours: {addrs}"
    );
    assert_eq!(addrs.matches(&format!("{lb}/32")).count(), 1, "{addrs}");

    let neigh = sh(&laptop, &["ip", "neigh", "show", &lb.to_string()]);
    let node_mac = mac_of(&node, &node_dev);
    assert!(
        neigh.contains(&node_mac),
        "gratuitous ARP moved the laptop's entry to the announcer ({node_mac}): {neigh}"
    );
    let ping = sh(
        &laptop,
        &["busybox", "ping", "-c", "1", "-W", "2", &lb.to_string()],
    );
    assert!(ping.contains("1 packets received"), "{ping}");

    // Released: the address goes, the host's own address stays.
    in_netns(&node, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Announcer::new().unwrap();
            a.reconcile(&BTreeSet::new()).await.unwrap();
        })
    });
    let addrs = sh(&node, &["ip", "-4", "addr", "show", "dev", &node_dev]);
    assert!(!addrs.contains(&lb.to_string()), "{addrs}");
    assert!(addrs.contains(&net.ip(0)), "{addrs}");
}

#[test]
fn an_address_outside_every_lan_of_the_node_is_refused_by_name() {
    let Some(net) = common::netns::TestNet::new(1) else {
        return;
    };
    let err = in_netns(&net.ns(0), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Announcer::new().unwrap();
            a.reconcile(&[Ipv4Addr::new(203, 0, 113, 7)].into())
                .await
                .unwrap_err()
                .to_string()
        })
    });
    assert_eq!(
        err,
        "no interface of this node holds a subnet with 203.0.113.7"
    );
}
