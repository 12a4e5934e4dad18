//! Which routes this node needs to reach every peer's instance subnet: a pure decision from
//! this node (its underlay address, the subnets directly connected to its underlay
//! interface, its own leased subnet) and the peers (name, underlay address, leased subnet).
//!
//! Rules, in order:
//! 1. A peer is skipped when it is this node, has no usable underlay address (loopback,
//!    unspecified, this node's own), or its subnet overlaps this node's subnet or a peer's
//!    that comes earlier by name (the lease controller never makes overlapping leases; a
//!    skipped peer is reported, never half-routed).
//! 2. The path to a peer: `host-gw` when its underlay address lies in a subnet directly
//!    connected to this node's underlay interface (one L2 segment: a route to its subnet via
//!    its underlay address, as flannel's host-gw); otherwise `vxlan` (as flannel's vxlan
//!    backend). `backend = "host-gw"` skips peers off the segment (reported), and
//!    `backend = "vxlan"` sends every peer over the overlay.
//! 3. The overlay: one VXLAN device per node ([`VXLAN_DEVICE`], VNI [`VXLAN_VNI`], UDP
//!    [`VXLAN_PORT`], no learning), present only while some peer uses it. Each node's VTEP
//!    is derived from its lease, so nothing extra is gossiped: address = the first address
//!    of its subnet (`/32` on the device), MAC = `02:0c:` + those four bytes. Per overlay
//!    peer: a route to its subnet via its VTEP address (onlink, on the device), a permanent
//!    neighbour entry VTEP address -> VTEP MAC and an FDB entry VTEP MAC -> underlay
//!    address. Overlay needs this node's own lease (its VTEP); without one, overlay peers
//!    are skipped (reported).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::RoutingBackend;
use crate::model::Subnet;

/// The VXLAN device of the overlay (the only link omnicloud's routing creates).
pub const VXLAN_DEVICE: &str = "omni-vxlan";
/// The VXLAN network identifier every node uses.
pub const VXLAN_VNI: u32 = 1;
/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 + UDP + VXLAN + inner Ethernet headers: the overlay device's MTU is the
/// underlay's minus this.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The route protocol number (`proto 77` in `ip route`) marking every route omnicloud's
/// routing owns; stale ones are found and removed by it.
pub const ROUTE_PROTOCOL: u8 = 77;

/// This node, as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    pub name: String,
    /// The node's advertised (gossip) address.
    pub underlay: Ipv4Addr,
    /// The subnets of the addresses on the interface holding `underlay`.
    pub connected: Vec<Subnet>,
    /// This node's leased instance subnet, once it has one.
    pub subnet: Option<Subnet>,
}

/// Another node: its advertised address and its leased instance subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub underlay: Ipv4Addr,
    pub subnet: Subnet,
}

/// How packets reach one peer subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// Through the underlay interface to the peer's underlay address.
    HostGw { gateway: Ipv4Addr },
    /// Through the VXLAN device to the peer's VTEP address (onlink).
    Vxlan { vtep: Ipv4Addr },
}

/// One route to a peer's subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dest: Subnet,
    pub via: Via,
}

/// A VXLAN tunnel endpoint: the address and MAC on a node's overlay device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vtep {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

impl Vtep {
    /// The VTEP of the node leasing `subnet`.
    pub fn of(subnet: Subnet) -> Vtep {
        let [a, b, c, d] = subnet.base.octets();
        Vtep {
            ip: subnet.base,
            mac: [0x02, 0x0c, a, b, c, d],
        }
    }
}

/// A peer over the overlay: its VTEP and where to send the encapsulated frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OverlayPeer {
    pub vtep: Vtep,
    pub underlay: Ipv4Addr,
}

/// Why a peer gets no route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Its advertised address is loopback, unspecified or this node's.
    NoUnderlay,
    /// Its subnet overlaps this node's or an earlier peer's.
    Overlap(Subnet),
    /// `backend = "host-gw"` and it is not on a directly connected subnet.
    NotOnSegment,
    /// It needs the overlay but this node has no subnet lease (so no VTEP) yet.
    NoLocalVtep,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NoUnderlay => write!(f, "its advertised address is not a routable peer address"),
            Skip::Overlap(s) => write!(f, "its subnet overlaps {s}"),
            Skip::NotOnSegment => write!(
                f,
                "network.backend is \"host-gw\" but it is not on a subnet directly connected to this node (use \"auto\" or \"vxlan\")"
            ),
            Skip::NoLocalVtep => write!(f, "it needs the overlay and this node has no subnet lease yet"),
        }
    }
}

/// Everything this node's routing should hold in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub routes: Vec<PeerRoute>,
    /// This node's VTEP, when the overlay device is needed.
    pub vtep: Option<Vtep>,
    pub overlay: Vec<OverlayPeer>,
    pub skipped: Vec<(String, Skip)>,
}

fn overlaps(a: Subnet, b: Subnet) -> bool {
    a.contains(b.base) || b.contains(a.base)
}

fn routable(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
}

/// The routes, overlay device and entries this node needs (see the module doc's rules).
pub fn plan(backend: RoutingBackend, local: &Local, peers: &[Peer]) -> Plan {
    let mut peers: Vec<&Peer> = peers.iter().filter(|p| p.name != local.name).collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plan = Plan::default();
    let mut taken: Vec<Subnet> = local.subnet.into_iter().collect();
    let mut underlays = BTreeSet::from([local.underlay]);
    for peer in peers {
        let skip = |plan: &mut Plan, why| plan.skipped.push((peer.name.clone(), why));
        if !routable(peer.underlay) || !underlays.insert(peer.underlay) {
            skip(&mut plan, Skip::NoUnderlay);
            continue;
        }
        if let Some(&other) = taken.iter().find(|t| overlaps(**t, peer.subnet)) {
            skip(&mut plan, Skip::Overlap(other));
            continue;
        }
        let on_segment = local.connected.iter().any(|c| c.contains(peer.underlay));
        let direct = match backend {
            RoutingBackend::HostGw if !on_segment => {
                skip(&mut plan, Skip::NotOnSegment);
                continue;
            }
            RoutingBackend::HostGw => true,
            RoutingBackend::Auto => on_segment,
            RoutingBackend::Vxlan => false,
        };
        let via = if direct {
            Via::HostGw {
                gateway: peer.underlay,
            }
        } else {
            let Some(own) = local.subnet else {
                skip(&mut plan, Skip::NoLocalVtep);
                continue;
            };
            plan.vtep = Some(Vtep::of(own));
            let vtep = Vtep::of(peer.subnet);
            plan.overlay.push(OverlayPeer {
                vtep,
                underlay: peer.underlay,
            });
            Via::Vxlan { vtep: vtep.ip }
        };
        taken.push(peer.subnet);
        plan.routes.push(PeerRoute {
            dest: peer.subnet,
            via,
        });
    }
    plan.routes.sort();
    plan.overlay.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn local() -> Local {
        Local {
            name: "a".into(),
            underlay: ip("192.168.1.10"),
            connected: vec![net("192.168.1.0/24")],
            subnet: Some(net("10.88.0.0/24")),
        }
    }

    fn peer(name: &str, underlay: &str, subnet: &str) -> Peer {
        Peer {
            name: name.into(),
            underlay: ip(underlay),
            subnet: net(subnet),
        }
    }

    #[test]
    fn auto_routes_segment_peers_directly_and_the_rest_over_vxlan() {
        let peers = [
            peer("c", "192.168.2.7", "10.88.2.0/24"),
            peer("b", "192.168.1.11", "10.88.1.0/24"),
            peer("a", "192.168.1.10", "10.88.0.0/24"),
        ];
        let p = plan(RoutingBackend::Auto, &local(), &peers);
        assert_eq!(
            p.routes,
            vec![
                PeerRoute {
                    dest: net("10.88.1.0/24"),
                    via: Via::HostGw {
                        gateway: ip("192.168.1.11")
                    }
                },
                PeerRoute {
                    dest: net("10.88.2.0/24"),
                    via: Via::Vxlan {
                        vtep: ip("10.88.2.0")
                    }
                },
            ]
        );
        assert_eq!(p.vtep, Some(Vtep::of(net("10.88.0.0/24"))));
        assert_eq!(p.vtep.unwrap().mac, [2, 0x0c, 10, 88, 0, 0]);
        assert_eq!(
            p.overlay,
            vec![OverlayPeer {
                vtep: Vtep {
                    ip: ip("10.88.2.0"),
                    mac: [2, 0x0c, 10, 88, 2, 0]
                },
                underlay: ip("192.168.2.7")
            }]
        );
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    }

    #[test]
    fn no_overlay_device_while_every_peer_is_on_the_segment() {
        let peers = [peer("b", "192.168.1.11", "10.88.1.0/24")];
        let p = plan(RoutingBackend::Auto, &local(), &peers);
        assert_eq!(p.vtep, None);
        assert!(p.overlay.is_empty());
        assert_eq!(p.routes.len(), 1);
        // No peers at all: nothing.
        assert_eq!(plan(RoutingBackend::Auto, &local(), &[]), Plan::default());
    }

    #[test]
    fn forced_backends() {
        let peers = [
            peer("b", "192.168.1.11", "10.88.1.0/24"),
            peer("c", "192.168.2.7", "10.88.2.0/24"),
        ];
        let vx = plan(RoutingBackend::Vxlan, &local(), &peers);
        assert!(vx.routes.iter().all(|r| matches!(r.via, Via::Vxlan { .. })));
        assert_eq!(vx.overlay.len(), 2);
        let hg = plan(RoutingBackend::HostGw, &local(), &peers);
        assert_eq!(hg.routes.len(), 1);
        assert_eq!(hg.vtep, None);
        assert_eq!(hg.skipped, vec![("c".to_string(), Skip::NotOnSegment)]);
        assert!(Skip::NotOnSegment.to_string().contains("network.backend"));
    }

    #[test]
    fn bad_peers_are_skipped_whole() {
        let peers = [
            peer("b", "127.0.0.1", "10.88.1.0/24"),
            peer("c", "192.168.1.10", "10.88.2.0/24"),
            peer("d", "192.168.1.12", "10.88.0.0/16"),
            peer("e", "192.168.1.13", "10.88.3.0/24"),
            peer("f", "192.168.1.14", "10.88.3.0/25"),
            peer("g", "192.168.1.13", "10.88.4.0/24"),
        ];
        let p = plan(RoutingBackend::Auto, &local(), &peers);
        assert_eq!(p.routes.len(), 1, "{p:?}");
        assert_eq!(p.routes[0].dest, net("10.88.3.0/24"));
        let skipped: Vec<(&str, &Skip)> = p.skipped.iter().map(|(n, s)| (n.as_str(), s)).collect();
        assert_eq!(
            skipped,
            vec![
                ("b", &Skip::NoUnderlay),
                ("c", &Skip::NoUnderlay),
                ("d", &Skip::Overlap(net("10.88.0.0/24"))),
                ("f", &Skip::Overlap(net("10.88.3.0/24"))),
                ("g", &Skip::NoUnderlay),
            ]
        );
    }

    #[test]
    fn overlay_needs_a_local_lease() {
        let mut me = local();
        me.subnet = None;
        let peers = [
            peer("b", "192.168.1.11", "10.88.1.0/24"),
            peer("c", "192.168.2.7", "10.88.2.0/24"),
        ];
        let p = plan(RoutingBackend::Auto, &me, &peers);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.vtep, None);
        assert_eq!(p.skipped, vec![("c".to_string(), Skip::NoLocalVtep)]);
    }

    #[test]
    fn the_plan_does_not_depend_on_peer_order() {
        let mut peers = vec![
            peer("b", "192.168.1.11", "10.88.1.0/24"),
            peer("c", "192.168.2.7", "10.88.2.0/24"),
            peer("d", "192.168.3.7", "10.88.3.0/24"),
        ];
        let first = plan(RoutingBackend::Auto, &local(), &peers);
        peers.reverse();
        assert_eq!(plan(RoutingBackend::Auto, &local(), &peers), first);
    }
}
