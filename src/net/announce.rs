//! Announcing LoadBalancer addresses on the LAN, as MetalLB's L2 mode and kube-vip do: the
//! node chosen by `lb::announcer` puts the address on the interface that holds its LAN
//! subnet (as a /32, labelled `<ifname>:olb` so that it is recognisably ours after a
//! restart) and sends gratuitous ARP so that the LAN's switches and hosts move the address
//! to it at once; a node that stops being the announcer removes it. Packets to the address
//! then reach the node and the Services data plane forwards them to endpoints.
//!
//! Addresses go through netlink (`rtnetlink`), not one `ip` process per change. Gratuitous
//! ARP is a raw Ethernet frame sent on the interface through `pnet_datalink` (an AF_PACKET
//! socket): no crate sends a gratuitous ARP by itself, and the 42-byte frame is written
//! here. Idempotent: `reconcile` converges to the wanted set whatever was left on the
//! interfaces before (a restarted node removes labelled addresses it no longer announces).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::LinkAttribute;

/// The label suffix of the addresses this module puts on interfaces.
pub const LABEL_SUFFIX: &str = ":olb";

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("netlink: {action}")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no interface of this node holds a subnet with {0}")]
    NoInterface(Ipv4Addr),
    #[error("gratuitous ARP for {ip} on {interface}")]
    Arp {
        ip: Ipv4Addr,
        interface: String,
        #[source]
        source: std::io::Error,
    },
}

/// One IPv4 address on an interface, as netlink dumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub index: u32,
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub label: String,
}

impl IfAddr {
    fn ours(&self) -> bool {
        self.label.ends_with(LABEL_SUFFIX)
    }
}

/// Puts and keeps LoadBalancer addresses on this node's interfaces.
pub struct Announcer {
    handle: rtnetlink::Handle,
}

impl Announcer {
    /// Opens the netlink connection (its task runs on the current tokio runtime).
    pub fn new() -> Result<Announcer, AnnounceError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AnnounceError::Socket)?;
        tokio::spawn(conn);
        Ok(Announcer { handle })
    }

    /// Every IPv4 address on this node's interfaces.
    pub async fn addresses(&self) -> Result<Vec<IfAddr>, AnnounceError> {
        let nl = |action: &str| {
            let action = action.to_string();
            move |source| AnnounceError::Netlink { action, source }
        };
        let mut names = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(nl("list links"))? {
            for a in &link.attributes {
                if let LinkAttribute::IfName(n) = a {
                    names.insert(link.header.index, n.clone());
                }
            }
        }
        let mut out = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(nl("list addresses"))? {
            if let Some(a) = if_addr(&msg, &names) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// This node's subnet (network, prefix) on the interface that holds `ip`, leaving out
    /// the /32s this module adds.
    pub fn lan_of(addrs: &[IfAddr], ip: Ipv4Addr) -> Option<(Ipv4Addr, u8)> {
        addrs
            .iter()
            .filter(|a| !a.ours() && a.prefix < 32)
            .find(|a| super::lb::in_subnet(ip, (a.address, a.prefix)))
            .map(|a| (a.address, a.prefix))
    }

    /// Makes the announced addresses exactly `want`: adds (and announces by gratuitous
    /// ARP) the missing ones, removes ours that are not wanted. Returns the addresses
    /// newly taken over.
    pub async fn reconcile(
        &self,
        want: &BTreeSet<Ipv4Addr>,
    ) -> Result<Vec<Ipv4Addr>, AnnounceError> {
        let addrs = self.addresses().await?;
        for a in addrs
            .iter()
            .filter(|a| a.ours() && !want.contains(&a.address))
        {
            self.remove(a).await?;
            tracing::info!(address = %a.address, interface = %a.interface, "no longer announcing");
        }
        let mut taken = Vec::new();
        for &ip in want {
            if addrs.iter().any(|a| a.ours() && a.address == ip) {
                continue;
            }
            let lan = addrs
                .iter()
                .filter(|a| !a.ours() && a.prefix < 32)
                .find(|a| super::lb::in_subnet(ip, (a.address, a.prefix)))
                .ok_or(AnnounceError::NoInterface(ip))?;
            let mut req = self
                .handle
                .address()
                .add(lan.index, IpAddr::V4(ip), 32)
                .replace();
            req.message_mut()
                .attributes
                .push(AddressAttribute::Label(label(&lan.interface)));
            req.execute()
                .await
                .map_err(|source| AnnounceError::Netlink {
                    action: format!("add {ip}/32 to {}", lan.interface),
                    source,
                })?;
            let interface = lan.interface.clone();
            tokio::task::spawn_blocking(move || gratuitous_arp(&interface, ip))
                .await
                .map_err(|e| AnnounceError::Arp {
                    ip,
                    interface: lan.interface.clone(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            tracing::info!(address = %ip, interface = %lan.interface, "announcing a LoadBalancer address");
            taken.push(ip);
        }
        Ok(taken)
    }

    async fn remove(&self, a: &IfAddr) -> Result<(), AnnounceError> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(a.index)
            .set_address_filter(IpAddr::V4(a.address))
            .execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(|source| AnnounceError::Netlink {
                action: format!("find {} on {}", a.address, a.interface),
                source,
            })?
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|source| AnnounceError::Netlink {
                    action: format!("remove {} from {}", a.address, a.interface),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Removes every address this module put on an interface, from a process without a
/// runtime (the fencing watchdog, once the node process is gone: a dead node must stop
/// answering ARP for addresses another node now announces).
pub fn release_all_blocking() -> Result<(), AnnounceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AnnounceError::Socket)?;
    rt.block_on(async {
        Announcer::new()?
            .reconcile(&BTreeSet::new())
            .await
            .map(drop)
    })
}

/// `<ifname>:olb`, cut to the kernel's 15 bytes (the interface name comes first).
fn label(interface: &str) -> String {
    let keep = 15usize
        .saturating_sub(LABEL_SUFFIX.len())
        .min(interface.len());
    format!("{}{LABEL_SUFFIX}", &interface[..keep])
}

fn if_addr(msg: &AddressMessage, names: &BTreeMap<u32, String>) -> Option<IfAddr> {
    let mut address = None;
    let mut label = String::new();
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => address = Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) if address.is_none() => address = Some(*ip),
            AddressAttribute::Label(l) => label = l.clone(),
            _ => {}
        }
    }
    Some(IfAddr {
        index: msg.header.index,
        interface: names.get(&msg.header.index)?.clone(),
        address: address?,
        prefix: msg.header.prefix_len,
        label,
    })
}

/// The gratuitous ARP frame for `ip` from `mac`: a broadcast ARP request whose sender and
/// target address are both `ip` (RFC 5227's announcement), which hosts use to update the
/// neighbour entry they hold for `ip`.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address stays zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends three gratuitous ARPs for `ip` on `interface`, 100 ms apart.
pub fn gratuitous_arp(interface: &str, ip: Ipv4Addr) -> Result<(), AnnounceError> {
    let err = |source: std::io::Error| AnnounceError::Arp {
        ip,
        interface: interface.to_string(),
        source,
    };
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .ok_or_else(|| err(std::io::Error::other("no such interface")))?;
    let mac = iface
        .mac
        .ok_or_else(|| err(std::io::Error::other("the interface has no MAC address")))?
        .octets();
    let frame = garp_frame(mac, ip);
    let mut tx = match pnet_datalink::channel(&iface, Default::default()).map_err(err)? {
        pnet_datalink::Channel::Ethernet(tx, _rx) => tx,
        _ => return Err(err(std::io::Error::other("not an Ethernet interface"))),
    };
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tx.send_to(&frame, None)
            .unwrap_or_else(|| Err(std::io::Error::other("send buffer full")))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_frame_is_an_arp_request_for_itself() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip = Ipv4Addr::new(192, 168, 1, 240);
        let f = garp_frame(mac, ip);
        assert_eq!(&f[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&f[12..14], &[0x08, 0x06], "ARP ethertype");
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &ip.octets(), "sender IP");
        assert_eq!(&f[38..42], &ip.octets(), "target IP is the same address");
    }

    #[test]
    fn labels_fit_the_kernels_limit_and_start_with_the_interface() {
        assert_eq!(label("eth0"), "eth0:olb");
        let l = label("enp0s31f6abcdefg");
        assert!(l.len() <= 15 && l.ends_with(LABEL_SUFFIX), "{l}");
    }
}
