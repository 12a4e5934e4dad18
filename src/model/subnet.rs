//! A parsed IPv4 subnet (`10.88.3.0/24`): the cluster CIDR of the node config, the node
//! subnets the orchestrator leases from it, and the bridge network each node builds on its
//! own. Pure data: parsing, containment, the gateway and free-address allocation.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// A node subnet, e.g. 10.88.3.0/24. The first address is the bridge (gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Option<Subnet> {
        let (ip, prefix) = s.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p))?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let mask = u32::MAX << (32 - prefix);
        Some(Subnet {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.base)
    }

    /// The lowest address not in `used`, skipping network, gateway and broadcast.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let base = u32::from(self.base);
        (2..self.size() - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !used.contains(ip))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_allocation() {
        let s = Subnet::parse("10.88.3.77/24").unwrap();
        assert_eq!(s.to_string(), "10.88.3.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 3, 1));
        let mut used = BTreeSet::new();
        let a = s.allocate(&used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 3, 2));
        used.insert(a);
        assert_eq!(s.allocate(&used), Some(Ipv4Addr::new(10, 88, 3, 3)));
        let tiny = Subnet::parse("10.0.0.0/30").unwrap();
        let used: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 0, 2)].into();
        assert_eq!(
            tiny.allocate(&used),
            None,
            "network, gateway and broadcast are never handed out"
        );
        assert!(Subnet::parse("10.0.0.0/33").is_none() && Subnet::parse("nope/24").is_none());
        assert!(
            s.contains(Ipv4Addr::new(10, 88, 3, 200)) && !s.contains(Ipv4Addr::new(10, 88, 4, 1))
        );
    }
}
