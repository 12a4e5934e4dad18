//! Which node announces each LoadBalancer address. Pure: no sockets, no clocks; the
//! pool and allocation are the model's (`model::address_pool`), the glue that puts an
//! address on an interface and announces it is `announce`.
//!
//! Who announces: every node that can (alive, runs the data plane, has an address in the
//! LAN subnet the address belongs to) computes the same answer from gossip membership by
//! rendezvous hashing (highest `sha256(address, node)` wins), as MetalLB's L2 mode does with
//! its memberlist. No election round and no extra state: when the announcer dies, gossip
//! marks it down and the next-highest node takes the address over; when it comes back it
//! takes it back. Spreading addresses over nodes falls out of the hash.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// A node that may announce: its name and its address on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub address: Ipv4Addr,
}

/// The node that announces `ip`, among the alive `candidates` whose address lies in
/// `lan` (the subnet, as `(network, prefix)`, of the interface that holds `ip` on the
/// asking node). None when no candidate is on that segment.
pub fn announcer<'a>(
    ip: Ipv4Addr,
    lan: (Ipv4Addr, u8),
    candidates: &[Candidate<'a>],
) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| in_subnet(c.address, lan))
        .max_by_key(|c| (score(ip, c.name), c.name))
        .map(|c| c.name)
}

/// The addresses of `ips` this node (`me`) announces. `lan_of` gives, for an address, the
/// subnet of this node's interface that holds it (None: this node is not on that segment
/// and announces nothing for it).
pub fn mine(
    me: &str,
    ips: &BTreeSet<Ipv4Addr>,
    lan_of: impl Fn(Ipv4Addr) -> Option<(Ipv4Addr, u8)>,
    candidates: &[Candidate<'_>],
) -> BTreeSet<Ipv4Addr> {
    ips.iter()
        .copied()
        .filter(|&ip| lan_of(ip).and_then(|lan| announcer(ip, lan, candidates)) == Some(me))
        .collect()
}

pub fn in_subnet(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn score(ip: Ipv4Addr, node: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ip.octets());
    h.update(node.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_picks_the_same_announcer_and_a_dead_one_is_replaced() {
        let lan = (Ipv4Addr::new(192, 168, 1, 0), 24);
        let nodes = ["n1", "n2", "n3"];
        let all: Vec<Candidate> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Candidate {
                name: n,
                address: Ipv4Addr::new(192, 168, 1, 10 + i as u8),
            })
            .collect();
        let ip = Ipv4Addr::new(192, 168, 1, 240);
        let first = announcer(ip, lan, &all).unwrap();
        // Order of the candidate list does not matter.
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(announcer(ip, lan, &rev), Some(first));
        // The announcer dies: another takes over; it comes back: it takes the address back.
        let rest: Vec<Candidate> = all.iter().filter(|c| c.name != first).cloned().collect();
        let second = announcer(ip, lan, &rest).unwrap();
        assert_ne!(second, first);
        assert_eq!(announcer(ip, lan, &all), Some(first));
        // A node on another segment never announces a LAN address.
        let away = vec![Candidate {
            name: "far",
            address: Ipv4Addr::new(10, 9, 0, 2),
        }];
        assert_eq!(announcer(ip, lan, &away), None);
    }

    #[test]
    fn addresses_spread_over_nodes() {
        let lan = (Ipv4Addr::new(192, 168, 1, 0), 24);
        let names: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
        let all: Vec<Candidate> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Candidate {
                name: n,
                address: Ipv4Addr::new(192, 168, 1, 10 + i as u8),
            })
            .collect();
        let ips: BTreeSet<Ipv4Addr> = (1..=30)
            .map(|i| Ipv4Addr::new(192, 168, 1, 200 + i))
            .collect();
        let mut total = 0;
        for n in &names {
            let m = mine(n, &ips, |_| Some(lan), &all);
            assert!(!m.is_empty(), "{n} announces none of 30 addresses");
            total += m.len();
        }
        assert_eq!(total, ips.len(), "each address has exactly one announcer");
        assert!(mine("node-0", &ips, |_| None, &all).is_empty());
    }
}
