//! The kernel side of routing, through netlink (`rtnetlink`): reads what this node's
//! underlay interface is, and makes the kernel hold exactly a [`Plan`]: the overlay device
//! with its VTEP address, its FDB and neighbour entries, and the peer routes. Each `apply`
//! dumps what is there, removes what omnicloud owns and the plan does not hold (routes of
//! protocol [`ROUTE_PROTOCOL`], entries on [`VXLAN_DEVICE`]), and adds what is missing: re-run
//! after a restart it reaches the same state. No decisions here (see `routes`).
//!
//! Runs on the caller's tokio runtime (the connection is a spawned task).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::routes::{
    Plan, Via, Vtep, ROUTE_PROTOCOL, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI,
};
use super::NetError;
use crate::model::Subnet;

/// The interface holding this node's advertised address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub index: u32,
    pub mtu: u32,
    /// The subnets of its IPv4 addresses (peers inside one are on this node's segment).
    pub connected: Vec<Subnet>,
}

/// What one `apply` or `clear` changed (for the log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// One netlink connection.
#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
}

fn failed(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let action = action.into();
    move |source| NetError::Netlink { action, source }
}

/// "No such device" and friends from a lookup by name: the thing is not there.
fn absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| [-libc::ENODEV, -libc::ENOENT, -libc::ESRCH].contains(&c.get())))
}

/// A subnet of any prefix /1../32 (the model's `Subnet::parse` takes node-subnet sizes).
fn connected_subnet(ip: Ipv4Addr, prefix: u8) -> Option<Subnet> {
    (1..=32).contains(&prefix).then(|| Subnet {
        base: Ipv4Addr::from(u32::from(ip) & (u32::MAX << (32 - prefix))),
        prefix,
    })
}

fn addr_v4(m: &AddressMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
            Some(*ip)
        }
        _ => None,
    })
}

fn vxlan_info(link: &LinkMessage) -> Vec<InfoVxlan> {
    link.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn link_mac(link: &LinkMessage) -> Option<Vec<u8>> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.clone()),
        _ => None,
    })
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A route as compared: destination, gateway, output interface.
type RouteKey = (Subnet, Ipv4Addr, u32);

fn route_key(r: &RouteMessage) -> Option<RouteKey> {
    let mut dest = None;
    let mut gateway = None;
    let mut oif = 0;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = *i,
            _ => {}
        }
    }
    let dest = connected_subnet(dest?, r.header.destination_prefix_length)?;
    Some((dest, gateway?, oif))
}

fn owned_route(r: &RouteMessage) -> bool {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(r.header.table as u32);
    r.header.address_family == AddressFamily::Inet
        && table == RouteHeader::RT_TABLE_MAIN as u32
        && u8::from(r.header.protocol) == ROUTE_PROTOCOL
}

fn neighbour_dst(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // FDB (bridge family) entries carry their remote address unparsed.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn neighbour_mac(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

impl Kernel {
    /// Opens a netlink connection (its task runs on the current tokio runtime).
    pub fn connect() -> Result<Kernel, NetError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        tokio::spawn(connection);
        Ok(Kernel { handle })
    }

    /// The interface holding `addr`, or None when no interface has it.
    pub async fn underlay(&self, addr: Ipv4Addr) -> Result<Option<Underlay>, NetError> {
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(failed("list addresses"))?;
        let Some(index) = addrs
            .iter()
            .find(|m| addr_v4(m) == Some(addr))
            .map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let connected = addrs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| connected_subnet(addr_v4(m)?, m.header.prefix_len))
            .collect();
        let link = self.link_by_index(index).await?;
        let mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500);
        Ok(Some(Underlay {
            index,
            mtu,
            connected,
        }))
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkMessage, NetError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        links
            .try_next()
            .await
            .map_err(failed(format!("read link {index}")))?
            .ok_or_else(|| NetError::Gone(format!("link {index}")))
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(failed(format!("read link {name}"))(e)),
        }
    }

    /// Makes the kernel hold exactly `plan` (overlay device, its entries, peer routes).
    pub async fn apply(
        &self,
        plan: &Plan,
        underlay_ip: Ipv4Addr,
        underlay: &Underlay,
    ) -> Result<Changes, NetError> {
        let mut changes = Changes::default();
        let vxlan = match plan.vtep {
            Some(vtep) => Some(
                self.ensure_vxlan(vtep, underlay_ip, underlay, &mut changes)
                    .await?,
            ),
            None => {
                self.remove_vxlan(&mut changes).await?;
                None
            }
        };
        if let Some(index) = vxlan {
            self.sync_overlay_entries(plan, index, &mut changes).await?;
        }
        let want: BTreeSet<RouteKey> = plan
            .routes
            .iter()
            .filter_map(|r| match r.via {
                Via::HostGw { gateway } => Some((r.dest, gateway, underlay.index)),
                Via::Vxlan { vtep } => Some((r.dest, vtep, vxlan?)),
            })
            .collect();
        self.sync_routes(&want, &mut changes).await?;
        Ok(changes)
    }

    /// Removes every route and link omnicloud's routing owns (node stop, uninstall).
    pub async fn clear(&self) -> Result<Changes, NetError> {
        let mut changes = Changes::default();
        self.sync_routes(&BTreeSet::new(), &mut changes).await?;
        self.remove_vxlan(&mut changes).await?;
        Ok(changes)
    }

    /// The overlay device as `vtep` needs it (made again when its VNI, port, local address,
    /// underlay interface or MAC differ), up, with exactly the VTEP address. Its index.
    async fn ensure_vxlan(
        &self,
        vtep: Vtep,
        underlay_ip: Ipv4Addr,
        underlay: &Underlay,
        changes: &mut Changes,
    ) -> Result<u32, NetError> {
        let existing = self.link_by_name(VXLAN_DEVICE).await?;
        let fits = existing.as_ref().is_some_and(|link| {
            let info = vxlan_info(link);
            let has = |i: InfoVxlan| info.contains(&i);
            has(InfoVxlan::Id(VXLAN_VNI))
                && has(InfoVxlan::Port(VXLAN_PORT))
                && has(InfoVxlan::Local(underlay_ip))
                && has(InfoVxlan::Link(underlay.index))
                && has(InfoVxlan::Learning(false))
                && link_mac(link).as_deref() == Some(&vtep.mac[..])
        });
        let link = match existing {
            Some(link) if fits => link,
            other => {
                if let Some(old) = other {
                    self.delete_link(old.header.index, changes).await?;
                }
                let message = LinkVxlan::new(VXLAN_DEVICE, VXLAN_VNI)
                    .dev(underlay.index)
                    .port(VXLAN_PORT)
                    .local(underlay_ip)
                    .learning(false)
                    .mtu(underlay.mtu.saturating_sub(VXLAN_OVERHEAD))
                    .address(vtep.mac.to_vec())
                    .up()
                    .build();
                self.handle
                    .link()
                    .add(message)
                    .execute()
                    .await
                    .map_err(failed(format!("add link {VXLAN_DEVICE}")))?;
                changes.added.push(format!(
                    "link {VXLAN_DEVICE} (vni {VXLAN_VNI}, mac {})",
                    mac_text(&vtep.mac)
                ));
                self.link_by_name(VXLAN_DEVICE)
                    .await?
                    .ok_or_else(|| NetError::Gone(VXLAN_DEVICE.into()))?
            }
        };
        let index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            let up = LinkUnspec::new_with_index(index).up().build();
            self.handle
                .link()
                .set(up)
                .execute()
                .await
                .map_err(failed(format!("set {VXLAN_DEVICE} up")))?;
        }
        self.sync_vtep_address(index, vtep.ip, changes).await?;
        Ok(index)
    }

    async fn sync_vtep_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        changes: &mut Changes,
    ) -> Result<(), NetError> {
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(failed(format!("list addresses of {VXLAN_DEVICE}")))?;
        let mut present = false;
        for m in addrs.into_iter().filter(|m| m.header.index == index) {
            match addr_v4(&m) {
                Some(a) if a == ip && m.header.prefix_len == 32 => present = true,
                Some(a) => {
                    let text = format!("address {a}/{} on {VXLAN_DEVICE}", m.header.prefix_len);
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(failed(format!("remove {text}")))?;
                    changes.removed.push(text);
                }
                None => {}
            }
        }
        if !present {
            self.handle
                .address()
                .add(index, IpAddr::V4(ip), 32)
                .execute()
                .await
                .map_err(failed(format!("add address {ip}/32 to {VXLAN_DEVICE}")))?;
            changes
                .added
                .push(format!("address {ip}/32 on {VXLAN_DEVICE}"));
        }
        Ok(())
    }

    async fn remove_vxlan(&self, changes: &mut Changes) -> Result<(), NetError> {
        if let Some(link) = self.link_by_name(VXLAN_DEVICE).await? {
            self.delete_link(link.header.index, changes).await?;
        }
        Ok(())
    }

    async fn delete_link(&self, index: u32, changes: &mut Changes) -> Result<(), NetError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => {}
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(failed(format!("remove link {VXLAN_DEVICE}"))(e)),
        }
        changes.removed.push(format!("link {VXLAN_DEVICE}"));
        Ok(())
    }

    /// The FDB (VTEP MAC -> underlay address) and neighbour (VTEP address -> VTEP MAC)
    /// entries of the overlay device: exactly the plan's.
    async fn sync_overlay_entries(
        &self,
        plan: &Plan,
        index: u32,
        changes: &mut Changes,
    ) -> Result<(), NetError> {
        let fdb_want: BTreeSet<([u8; 6], Ipv4Addr)> = plan
            .overlay
            .iter()
            .map(|p| (p.vtep.mac, p.underlay))
            .collect();
        let neigh_want: BTreeSet<(Ipv4Addr, [u8; 6])> = plan
            .overlay
            .iter()
            .map(|p| (p.vtep.ip, p.vtep.mac))
            .collect();
        for (family, what) in [
            (AddressFamily::Bridge, "fdb"),
            (AddressFamily::Inet, "neigh"),
        ] {
            let entries: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(failed(format!("list {what} entries")))?;
            let mut have = BTreeSet::new();
            for n in entries.into_iter().filter(|n| n.header.ifindex == index) {
                let (Some(mac), Some(ip)) = (neighbour_mac(&n), neighbour_dst(&n)) else {
                    continue;
                };
                let wanted = match family {
                    AddressFamily::Bridge => fdb_want.contains(&(mac, ip)),
                    _ => neigh_want.contains(&(ip, mac)),
                };
                if wanted && n.header.state == NeighbourState::Permanent {
                    have.insert((mac, ip));
                    continue;
                }
                let text = format!("{what} {} {ip} on {VXLAN_DEVICE}", mac_text(&mac));
                match self.handle.neighbours().del(n).execute().await {
                    Ok(()) => changes.removed.push(text),
                    Err(e) if absent(&e) => {}
                    Err(e) => return Err(failed(format!("remove {text}"))(e)),
                }
            }
            let missing: Vec<([u8; 6], Ipv4Addr)> = match family {
                AddressFamily::Bridge => fdb_want.iter().copied().collect(),
                _ => neigh_want.iter().map(|(ip, mac)| (*mac, *ip)).collect(),
            };
            for (mac, ip) in missing.into_iter().filter(|e| !have.contains(e)) {
                let neighbours = self.handle.neighbours();
                let request = match family {
                    AddressFamily::Bridge => neighbours
                        .add_bridge(index, &mac)
                        .destination(IpAddr::V4(ip))
                        .flags(NeighbourFlags::Own),
                    _ => neighbours
                        .add(index, IpAddr::V4(ip))
                        .link_layer_address(&mac),
                };
                let text = format!("{what} {} {ip} on {VXLAN_DEVICE}", mac_text(&mac));
                request
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(failed(format!("add {text}")))?;
                changes.added.push(text);
            }
        }
        Ok(())
    }

    /// The main table's routes of protocol [`ROUTE_PROTOCOL`]: exactly `want`.
    async fn sync_routes(
        &self,
        want: &BTreeSet<RouteKey>,
        changes: &mut Changes,
    ) -> Result<(), NetError> {
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(failed("list routes"))?;
        let mut have = BTreeSet::new();
        for r in routes.into_iter().filter(owned_route) {
            match route_key(&r) {
                Some(k) if want.contains(&k) => {
                    have.insert(k);
                }
                key => {
                    let text = match key {
                        Some((dest, gw, _)) => format!("route {dest} via {gw}"),
                        None => "a route of omnicloud's protocol".into(),
                    };
                    match self.handle.route().del(r).execute().await {
                        Ok(()) => changes.removed.push(text),
                        Err(e) if absent(&e) => {}
                        Err(e) => return Err(failed(format!("remove {text}"))(e)),
                    }
                }
            }
        }
        for &(dest, gateway, oif) in want.difference(&have) {
            let mut message = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dest.base, dest.prefix)
                .gateway(gateway)
                .output_interface(oif)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
            // Overlay routes point at a VTEP address no subnet of the device covers.
            if gateway == Vtep::of(dest).ip {
                message = message.onlink();
            }
            let text = format!("route {dest} via {gateway}");
            self.handle
                .route()
                .add(message.build())
                .replace()
                .execute()
                .await
                .map_err(failed(format!("add {text}")))?;
            changes.added.push(text);
        }
        Ok(())
    }
}
