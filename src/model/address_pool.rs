//! The LoadBalancer address pool a user configures (`[network] loadbalancer_pool`: a few
//! free addresses of the home LAN, as ranges, single addresses or CIDRs) and allocation
//! from it. Pure data: the node config parses it, the API allocates from it (into
//! `spec.loadBalancerIP`, beside the cluster IP), the Raft apply keeps addresses unique.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::{invalid, ModelError};

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
pub struct AddressPool {
    ranges: Vec<(u32, u32)>,
}

impl AddressPool {
    /// Parses `[network] loadbalancer_pool` entries: `A.B.C.D`, `A.B.C.D-A.B.C.E` or
    /// `A.B.C.D/N`. A CIDR of /30 or wider leaves out its network and broadcast addresses.
    pub fn parse(field: &str, entries: &[String]) -> Result<AddressPool, ModelError> {
        let mut ranges = Vec::new();
        let mut count: u64 = 0;
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let bad = || {
                invalid(
                    &field,
                    format!("\"{entry}\" is not an address, a range A-B or a CIDR (e.g. 192.168.1.240-192.168.1.250)"),
                )
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
                return Err(invalid(
                    &field,
                    format!("the range \"{entry}\" ends before it starts"),
                ));
            }
            count += u64::from(hi - lo) + 1;
            if count > MAX_POOL_ADDRESSES {
                return Err(invalid(
                    &field,
                    format!("the pool holds {count} addresses; at most {MAX_POOL_ADDRESSES}"),
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(AddressPool { ranges })
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
    /// use to the Service (`namespace/name`) holding it.
    pub fn allocate(
        &self,
        requested: Option<Ipv4Addr>,
        taken: &BTreeMap<Ipv4Addr, String>,
    ) -> Result<Ipv4Addr, ModelError> {
        if let Some(ip) = requested {
            if !self.contains(ip) {
                return Err(invalid(
                    "spec.loadBalancerIP",
                    format!("{ip} is not in the LoadBalancer pool ({self}); widen [network] loadbalancer_pool to include it"),
                ));
            }
            if let Some(holder) = taken.get(&ip) {
                return Err(invalid(
                    "spec.loadBalancerIP",
                    format!("{ip} is already allocated to Service {holder}"),
                ));
            }
            return Ok(ip);
        }
        self.addresses()
            .find(|ip| !taken.contains_key(ip))
            .ok_or_else(|| {
                invalid(
                    "spec.type",
                    format!(
                        "LoadBalancer: the pool is exhausted ({self}: {} addresses, all allocated)",
                        self.size()
                    ),
                )
            })
    }
}

impl fmt::Display for AddressPool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(entries: &[&str]) -> Result<AddressPool, ModelError> {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AddressPool::parse("network.loadbalancer_pool", &v)
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
        assert_eq!(e.field, "network.loadbalancer_pool[1]");
        assert!(
            e.message.starts_with("\"nonsense\" is not an address"),
            "{e}"
        );
        let e = pool(&["10.0.0.9-10.0.0.1"]).unwrap_err();
        assert!(e.message.contains("ends before it starts"), "{e}");
        let e = pool(&["10.0.0.0/8"]).unwrap_err();
        assert!(e.message.contains("at most 65536"), "{e}");
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
            "spec.loadBalancerIP: 10.0.0.1 is already allocated to Service default/web"
        );
        let e = p
            .allocate(Some(Ipv4Addr::new(10, 0, 0, 9)), &taken)
            .unwrap_err();
        assert!(e.message.contains("not in the LoadBalancer pool"), "{e}");
        let b = p.allocate(None, &taken).unwrap();
        taken.insert(b, "default/api".to_string());
        let e = p.allocate(None, &taken).unwrap_err();
        assert_eq!(e.field, "spec.type");
        assert!(e.message.contains("the pool is exhausted"), "{e}");
    }
}
