//! LoadBalancer addresses: the pool a user configures (`[network] loadbalancer_pool`, a few
//! free addresses of the home LAN), allocation from it, and which node announces each
//! address. Pure: no sockets, no clocks; the glue that puts an address on an interface and
//! announces it is `announce`.
//!
//! Who announces: every node that can (alive, runs the data plane, has an address in the
//! LAN subnet the address belongs to) computes the same answer from gossip membership by
//! rendezvous hashing (highest `sha256(address, node)` wins), as MetalLB's L2 mode does with
//! its memberlist. No election round and no extra state: when the announcer dies, gossip
//! marks it down and the next-highest node takes the address over; when it comes back it
//! takes it back. Spreading addresses over nodes falls out of the hash.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// The most addresses a pool may hold (a /16): the allocator walks it.
pub const MAX_POOL_ADDRESSES: u64 = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    #[error("{field}: \"{entry}\" is not an address, a range A-B or a CIDR (expected e.g. 192.168.1.240-192.168.1.250)")]
    BadEntry { field: String, entry: String },
    #[error("{field}: the range \"{entry}\" ends before it starts")]
    Backwards { field: String, entry: String },
    #[error("{field}: the pool holds {count} addresses; at most {MAX_POOL_ADDRESSES}")]
    TooLarge { field: String, count: u64 },
    #[error("spec.loadBalancerIP: {ip} is not in the LoadBalancer pool ({pool}); set [network] loadbalancer_pool to include it")]
    NotInPool { ip: Ipv4Addr, pool: String },
    #[error("spec.loadBalancerIP: {ip} is already taken by service {holder}")]
    InUse { ip: Ipv4Addr, holder: String },
    #[error(
        "type: LoadBalancer: no address left in the pool ({pool}: {size} addresses, all taken)"
    )]
    Exhausted { pool: String, size: u64 },
    #[error("type: LoadBalancer: no LoadBalancer pool is configured; set [network] loadbalancer_pool (e.g. [\"192.168.1.240-192.168.1.250\"]) on the nodes")]
    NoPool,
}

/// Inclusive address ranges, in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<(u32, u32)>,
}

impl Pool {
    /// Parses `[network] loadbalancer_pool` entries: `A.B.C.D`, `A.B.C.D-A.B.C.E` or
    /// `A.B.C.D/N`. A CIDR of /30 or wider leaves out its network and broadcast addresses.
    pub fn parse(field: &str, entries: &[String]) -> Result<Pool, LbError> {
        let mut ranges = Vec::new();
        let mut count: u64 = 0;
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let bad = || LbError::BadEntry {
                field: field.clone(),
                entry: entry.clone(),
            };
            let e = entry.trim();
            let (lo, hi) = if let Some((a, b)) = e.split_once('-') {
                let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
                let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
                (u32::from(a), u32::from(b))
            } else if let Some((a, n)) = e.split_once('/') {
                let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
                let n: u32 = n.parse().map_err(|_| bad())?;
                if n > 32 {
                    return Err(bad());
                }
                let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
                let net = u32::from(a) & mask;
                let last = net | !mask;
                if n <= 30 {
                    (net + 1, last - 1)
                } else {
                    (net, last)
                }
            } else {
                let a: Ipv4Addr = e.parse().map_err(|_| bad())?;
                (u32::from(a), u32::from(a))
            };
            if hi < lo {
                return Err(LbError::Backwards {
                    field,
                    entry: entry.clone(),
                });
            }
            count += u64::from(hi - lo) + 1;
            if count > MAX_POOL_ADDRESSES {
                return Err(LbError::TooLarge { field, count });
            }
            ranges.push((lo, hi));
        }
        Ok(Pool { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&ip))
    }

    pub fn size(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(lo, hi)| u64::from(hi - lo) + 1)
            .sum()
    }

    /// Every address, in pool order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|&(lo, hi)| (lo..=hi).map(Ipv4Addr::from))
    }

    /// The address for a LoadBalancer Service: the one it asked for (`spec.loadBalancerIP`)
    /// when free and in the pool, else the first free one. `taken` maps every address in
    /// use to the service (`namespace/name`) holding it.
    pub fn allocate(
        &self,
        requested: Option<Ipv4Addr>,
        taken: &std::collections::BTreeMap<Ipv4Addr, String>,
    ) -> Result<Ipv4Addr, LbError> {
        if self.is_empty() {
            return Err(LbError::NoPool);
        }
        if let Some(ip) = requested {
            if !self.contains(ip) {
                return Err(LbError::NotInPool {
                    ip,
                    pool: self.to_string(),
                });
            }
            if let Some(holder) = taken.get(&ip) {
                return Err(LbError::InUse {
                    ip,
                    holder: holder.clone(),
                });
            }
            return Ok(ip);
        }
        self.addresses()
            .find(|ip| !taken.contains_key(ip))
            .ok_or_else(|| LbError::Exhausted {
                pool: self.to_string(),
                size: self.size(),
            })
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if lo == hi {
                write!(f, "{}", Ipv4Addr::from(lo))?;
            } else {
                write!(f, "{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi))?;
            }
        }
        Ok(())
    }
}

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
    use std::collections::BTreeMap;

    fn pool(entries: &[&str]) -> Result<Pool, LbError> {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Pool::parse("network.loadbalancer_pool", &v)
    }

    #[test]
    fn pools_parse_addresses_ranges_and_cidrs() {
        let p = pool(&["192.168.1.240-192.168.1.242", "10.0.0.9", "10.1.0.0/30"]).unwrap();
        assert_eq!(p.size(), 3 + 1 + 2);
        assert!(p.contains("192.168.1.241".parse().unwrap()));
        assert!(
            !p.contains("10.1.0.0".parse().unwrap()),
            "network address left out"
        );
        assert!(p.contains("10.1.0.2".parse().unwrap()));
        assert_eq!(
            p.to_string(),
            "192.168.1.240-192.168.1.242, 10.0.0.9, 10.1.0.1-10.1.0.2"
        );
    }

    #[test]
    fn bad_pool_entries_name_the_entry() {
        let e = pool(&["10.0.0.1", "nonsense"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("network.loadbalancer_pool[1]: \"nonsense\" is not an address"),
            "{e}"
        );
        let e = pool(&["10.0.0.9-10.0.0.1"]).unwrap_err();
        assert!(matches!(e, LbError::Backwards { .. }), "{e}");
        let e = pool(&["10.0.0.0/8"]).unwrap_err();
        assert!(matches!(e, LbError::TooLarge { .. }), "{e}");
        assert!(pool(&["10.0.0.1/33"]).is_err());
    }

    #[test]
    fn allocation_takes_the_asked_address_or_the_first_free_one() {
        let p = pool(&["10.0.0.1-10.0.0.2"]).unwrap();
        let mut taken = BTreeMap::new();
        let a = p.allocate(None, &taken).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 1));
        taken.insert(a, "default/web".to_string());
        let e = p.allocate(Some(a), &taken).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.loadBalancerIP: 10.0.0.1 is already taken by service default/web"
        );
        let e = p
            .allocate(Some(Ipv4Addr::new(10, 0, 0, 9)), &taken)
            .unwrap_err();
        assert!(matches!(e, LbError::NotInPool { .. }), "{e}");
        let b = p.allocate(None, &taken).unwrap();
        taken.insert(b, "default/api".to_string());
        let e = p.allocate(None, &taken).unwrap_err();
        assert!(e.to_string().contains("no address left in the pool"), "{e}");
        assert_eq!(
            Pool::default().allocate(None, &taken).unwrap_err(),
            LbError::NoPool
        );
    }

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
