//! Node subnet leases: every agent or director node gets a /node_prefix block of the cluster CIDR
//! (a `NodeSubnet` named after it), disjoint from every other lease. Leases are never
//! taken back automatically: a node that returns keeps its addresses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::json;

use super::{Draft, World};
use crate::model::{Kind, Spec, Subnet, API_VERSION};
use crate::store::{Command, ObjectKey, PutMode};

/// The next free node subnet of `cidr`, avoiding every leased one.
pub fn next_subnet(cidr: Subnet, prefix: u8, leased: &[Subnet]) -> Option<Subnet> {
    let step = 1u64 << (32 - prefix);
    let size = 1u64 << (32 - cidr.prefix);
    let base = u32::from(cidr.base) as u64;
    (0..size / step)
        .map(|i| Subnet {
            base: Ipv4Addr::from((base + i * step) as u32),
            prefix,
        })
        .find(|s| {
            !leased
                .iter()
                .any(|l| l.contains(s.base) || s.contains(l.base))
        })
}

pub fn plan(world: &World, draft: &mut Draft) {
    let out = &mut draft.commands;
    let Some(cidr) = world.cluster_cidr else {
        return;
    };
    let mut leased: Vec<Subnet> = world
        .subnets
        .iter()
        .filter_map(|s| match &s.spec {
            Some(Spec::NodeSubnet(n)) => Subnet::parse(&n.cidr),
            _ => None,
        })
        .collect();
    let have: BTreeSet<&str> = world
        .subnets
        .iter()
        .map(|s| s.metadata.name.as_str())
        .collect();
    // Agents' containers and directors' VMs get their addresses from it.
    for agent in world
        .nodes
        .iter()
        .filter(|a| a.alive && (a.agent || a.director))
    {
        if have.contains(agent.name.as_str()) {
            continue;
        }
        let Some(subnet) = next_subnet(cidr, world.node_prefix, &leased) else {
            tracing::warn!(node = %agent.name, %cidr, "the cluster CIDR has no free node subnet");
            continue;
        };
        leased.push(subnet);
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": "NodeSubnet",
            "metadata": {"name": agent.name},
            "spec": {"cidr": subnet.to_string()},
        });
        out.push(Command::put(
            ObjectKey::new(Kind::NodeSubnet, "", agent.name.clone()),
            &object,
            PutMode::Create,
            None,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::controllers::NodeView;

    fn agents(names: &[&str]) -> Vec<NodeView> {
        names.iter().map(|n| NodeView::test_agent(n)).collect()
    }

    #[test]
    fn node_subnets_never_overlap() {
        let cidr = Subnet::parse("10.88.0.0/16").unwrap();
        let mut world = World {
            nodes: agents(&["a", "b", "c"]),
            cluster_cidr: Some(cidr),
            node_prefix: 24,
            ..Default::default()
        };
        let mut draft = Draft::default();
        plan(&world, &mut draft);
        for c in draft.commands {
            if let Command::Put { object, .. } = c {
                let v: serde_json::Value = serde_json::from_slice(&object).unwrap();
                world
                    .subnets
                    .push(crate::model::Resource::from_stored(v).unwrap());
            }
        }
        let mut cidrs: Vec<String> = world
            .subnets
            .iter()
            .map(|s| match &s.spec {
                Some(Spec::NodeSubnet(n)) => n.cidr.clone(),
                _ => unreachable!(),
            })
            .collect();
        cidrs.sort();
        assert_eq!(cidrs, ["10.88.0.0/24", "10.88.1.0/24", "10.88.2.0/24"]);
        let leased: Vec<Subnet> = cidrs.iter().map(|c| Subnet::parse(c).unwrap()).collect();
        let tiny = Subnet::parse("10.0.0.0/23").unwrap();
        assert_eq!(
            next_subnet(tiny, 24, &leased[..0]),
            Subnet::parse("10.0.0.0/24")
        );
        let full = [
            Subnet::parse("10.0.0.0/24").unwrap(),
            Subnet::parse("10.0.1.0/24").unwrap(),
        ];
        assert_eq!(next_subnet(tiny, 24, &full), None);
    }
}
