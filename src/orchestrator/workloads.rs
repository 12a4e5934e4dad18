//! The workload loop, on the Raft leader: leases every agent node a subnet of the cluster
//! CIDR (`NodeSubnet`), turns each Deployment into `Instance` objects `<name>-<index>`
//! placed on agent nodes, and rolls their readiness up into the Deployment's status.
//!
//! Placement here is deliberately minimal (the least-loaded alive agent; a changed pod
//! template replaces its instances); the scheduler issue replaces `place` and the
//! replacement policy. `plan` is pure: the loop gathers a [`World`] and applies the
//! commands it returns one by one (each is independent; a refused one is retried on the
//! next pass with fresh state).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};

use super::ControlPlane;
use crate::cluster::{Gossip, MemberStatus};
use crate::container::network::Subnet;
use crate::model::instance::{InstanceSpec, InstanceStatus, OwnerRef, OWNER_LABEL};
use crate::model::{Kind, Resource, Spec, API_VERSION};
use crate::store::{Command, ObjectKey, PutMode};

const TICK: Duration = Duration::from_secs(1);

/// An agent node as the loop sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    pub alive: bool,
}

/// Everything one pass decides from.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub deployments: Vec<Resource>,
    pub instances: Vec<Resource>,
    pub subnets: Vec<Resource>,
    pub agents: Vec<Agent>,
    pub cluster_cidr: Option<Subnet>,
    pub node_prefix: u8,
}

/// The pod template's hash: instances made from another template are replaced.
pub fn template_revision(template: &Value) -> String {
    let digest = Sha256::digest(serde_json::to_vec(template).expect("JSON"));
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

fn version(r: &Resource) -> Option<u64> {
    r.metadata.resource_version.parse().ok()
}

fn key_of(r: &Resource) -> ObjectKey {
    ObjectKey::new(
        r.kind,
        r.metadata.namespace.clone().unwrap_or_default(),
        r.metadata.name.clone(),
    )
}

fn instance_spec(r: &Resource) -> Option<&InstanceSpec> {
    match &r.spec {
        Some(Spec::Instance(s)) => Some(s),
        _ => None,
    }
}

fn instance_status(r: &Resource) -> InstanceStatus {
    r.status
        .clone()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

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

/// The commands that move the cluster one step towards what the Deployments ask for.
pub fn plan(world: &World) -> Vec<Command> {
    let mut out = Vec::new();
    plan_subnets(world, &mut out);
    let mut load: BTreeMap<&str, usize> = world
        .agents
        .iter()
        .filter(|a| a.alive)
        .map(|a| (a.name.as_str(), 0))
        .collect();
    for i in &world.instances {
        if let Some(n) = instance_spec(i).and_then(|s| s.node_name.as_deref()) {
            if let Some(c) = load.get_mut(n) {
                *c += 1;
            }
        }
    }
    let mut owned: BTreeSet<(String, String)> = BTreeSet::new();
    for d in &world.deployments {
        plan_deployment(world, d, &mut load, &mut out);
        owned.insert((
            d.metadata.namespace.clone().unwrap_or_default(),
            d.metadata.uid.clone(),
        ));
    }
    // Instances whose Deployment is gone.
    for i in &world.instances {
        let Some(owner) = instance_spec(i).and_then(|s| s.owner.as_ref()) else {
            continue;
        };
        let ns = i.metadata.namespace.clone().unwrap_or_default();
        if owner.kind == "Deployment" && !owned.contains(&(ns, owner.uid.clone())) {
            out.push(Command::Delete {
                key: key_of(i),
                expected_version: version(i),
            });
        }
    }
    out
}

fn plan_subnets(world: &World, out: &mut Vec<Command>) {
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
    for agent in world.agents.iter().filter(|a| a.alive) {
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

/// The alive agent with the fewest instances (ties: by name).
fn place(load: &mut BTreeMap<&str, usize>) -> Option<String> {
    let (name, count) = load.iter_mut().min_by_key(|(n, c)| (**c, **n))?;
    *count += 1;
    Some(name.to_string())
}

fn plan_deployment<'a>(
    world: &'a World,
    d: &Resource,
    load: &mut BTreeMap<&'a str, usize>,
    out: &mut Vec<Command>,
) {
    let Some(Spec::Deployment(spec)) = &d.spec else {
        return;
    };
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = &d.metadata.name;
    let template = serde_json::to_value(&spec.template).expect("JSON");
    let revision = template_revision(&template);
    let desired = spec.replicas().max(0);
    let mut mine: BTreeMap<i64, &Resource> = BTreeMap::new();
    for i in world
        .instances
        .iter()
        .filter(|i| i.metadata.namespace.as_deref().unwrap_or_default() == ns)
    {
        let Some(s) = instance_spec(i) else { continue };
        let owned = s
            .owner
            .as_ref()
            .is_some_and(|o| o.kind == "Deployment" && o.uid == d.metadata.uid);
        if owned {
            if let Some(index) = s.index {
                mine.insert(index, i);
            }
        }
    }
    let taken: BTreeSet<&str> = world
        .instances
        .iter()
        .filter(|i| i.metadata.namespace.as_deref().unwrap_or_default() == ns)
        .map(|i| i.metadata.name.as_str())
        .collect();
    let (mut current, mut ready, mut updated) = (0i64, 0i64, 0i64);
    for (&index, inst) in &mine {
        let s = instance_spec(inst).expect("filtered above");
        let stale = s.revision.as_deref() != Some(revision.as_str());
        if index >= desired || stale {
            out.push(Command::Delete {
                key: key_of(inst),
                expected_version: version(inst),
            });
            continue;
        }
        current += 1;
        updated += 1;
        let status = instance_status(inst);
        if status.ready && status.revision == revision {
            ready += 1;
        }
        if s.node_name.is_none() {
            if let Some(node) = place(load) {
                let mut v = inst.to_value();
                v["spec"]["nodeName"] = Value::String(node);
                out.push(Command::put(
                    key_of(inst),
                    &v,
                    PutMode::Update,
                    version(inst),
                ));
            }
        }
    }
    for index in 0..desired {
        let instance_name = format!("{name}-{index}");
        if mine.contains_key(&index) || taken.contains(instance_name.as_str()) {
            continue;
        }
        let mut labels = spec.template.labels();
        labels.insert(OWNER_LABEL.into(), name.clone());
        let ispec = InstanceSpec {
            node_name: place(load),
            owner: Some(OwnerRef {
                kind: "Deployment".into(),
                name: name.clone(),
                uid: d.metadata.uid.clone(),
            }),
            index: Some(index),
            revision: Some(revision.clone()),
            pod: spec.template.spec.clone(),
        };
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": "Instance",
            "metadata": {"name": instance_name, "namespace": ns, "labels": labels},
            "spec": ispec,
        });
        out.push(Command::put(
            ObjectKey::new(Kind::Instance, ns.clone(), instance_name),
            &object,
            PutMode::Create,
            None,
        ));
    }
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": current,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "revision": revision,
    });
    if d.status.as_ref() != Some(&status) {
        out.push(Command::SetStatus {
            key: key_of(d),
            status: serde_json::to_vec(&status).expect("JSON"),
        });
    }
}

fn load_all(control: &ControlPlane, kind: Kind) -> Vec<Resource> {
    match control.reader().list(kind, None) {
        Ok((objects, _)) => objects
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .filter_map(|v| Resource::from_stored(v).ok())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, %kind, "reading the store");
            Vec::new()
        }
    }
}

pub fn spawn(
    control: ControlPlane,
    gossip: Gossip,
    network: crate::config::NetworkSettings,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = control.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                c = changes.recv() => match c {
                    Err(broadcast::error::RecvError::Closed) => return,
                    // A burst of changes is one pass: drain what is queued.
                    _ => while changes.try_recv().is_ok() {},
                },
                _ = stop.changed() => return,
            }
            if !control.is_leader() {
                continue;
            }
            let agents = gossip
                .members()
                .await
                .into_iter()
                // An agent reads its assignments from its replica of the store, so only
                // nodes that are Raft members (orchestrator-eligible) get instances.
                .filter(|m| {
                    m.meta.roles.iter().any(|r| r == "agent")
                        && super::membership::orchestrator_eligible(&m.meta.roles)
                })
                .map(|m| Agent {
                    name: m.meta.name.clone(),
                    alive: m.status != MemberStatus::Down,
                })
                .collect();
            let world = World {
                deployments: load_all(&control, Kind::Deployment),
                instances: load_all(&control, Kind::Instance),
                subnets: load_all(&control, Kind::NodeSubnet),
                agents,
                cluster_cidr: Some(network.cluster_cidr),
                node_prefix: network.node_prefix,
            };
            for command in plan(&world) {
                match control.write_local(command).await {
                    Ok(r) => {
                        if let Some(e) = r.rejection {
                            tracing::debug!(?e, "workload step refused; retrying next pass");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "workload step not written");
                        break;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, replicas: i64, image: &str) -> Resource {
        let v = json!({
            "apiVersion": "omnicloud.io/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "resourceVersion": "1"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}},
        });
        Resource::from_stored(v).unwrap()
    }

    /// Applies the planned creates and deletes to the world, as the state machine would.
    fn apply(world: &mut World, commands: Vec<Command>) {
        for c in commands {
            match c {
                Command::Put { key, object, .. } => {
                    let mut v: Value = serde_json::from_slice(&object).unwrap();
                    v["metadata"]["resourceVersion"] = json!("1");
                    let r = Resource::from_stored(v).unwrap();
                    let list = match key.kind {
                        Kind::Instance => &mut world.instances,
                        Kind::NodeSubnet => &mut world.subnets,
                        _ => continue,
                    };
                    list.retain(|o| o.metadata.name != key.name);
                    list.push(r);
                }
                Command::Delete { key, .. } => world
                    .instances
                    .retain(|o| !(o.kind == key.kind && o.metadata.name == key.name)),
                _ => {}
            }
        }
    }

    fn agents(names: &[&str]) -> Vec<Agent> {
        names
            .iter()
            .map(|n| Agent {
                name: n.to_string(),
                alive: true,
            })
            .collect()
    }

    fn names(world: &World) -> Vec<String> {
        let mut v: Vec<String> = world
            .instances
            .iter()
            .map(|i| i.metadata.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replicas_become_indexed_instances_spread_over_agents() {
        let mut world = World {
            deployments: vec![deployment("web", 3, "toolbox")],
            agents: agents(&["a", "b"]),
            ..Default::default()
        };
        let cmds = plan(&world);
        apply(&mut world, cmds);
        assert_eq!(names(&world), ["web-0", "web-1", "web-2"]);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for i in &world.instances {
            let s = instance_spec(i).unwrap();
            *per_node.entry(s.node_name.clone().unwrap()).or_default() += 1;
            assert_eq!(i.metadata.labels[OWNER_LABEL], "web");
            assert_eq!(i.metadata.labels["app"], "web");
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 1]);
        // Converged: a second pass changes only the deployment status.
        let again = plan(&world);
        assert!(
            again.iter().all(|c| matches!(c, Command::SetStatus { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn scaling_down_removes_the_highest_indexes_and_templates_replace() {
        let mut world = World {
            deployments: vec![deployment("web", 4, "toolbox")],
            agents: agents(&["a"]),
            ..Default::default()
        };
        let cmds = plan(&world);
        apply(&mut world, cmds);
        world.deployments = vec![deployment("web", 2, "toolbox")];
        let cmds = plan(&world);
        apply(&mut world, cmds);
        assert_eq!(names(&world), ["web-0", "web-1"]);
        let old_rev = instance_spec(&world.instances[0]).unwrap().revision.clone();
        world.deployments = vec![deployment("web", 2, "busybox")];
        let cmds = plan(&world);
        apply(&mut world, cmds);
        assert!(
            world.instances.is_empty(),
            "stale revisions are removed first"
        );
        let cmds = plan(&world);
        apply(&mut world, cmds);
        assert_eq!(names(&world), ["web-0", "web-1"]);
        assert_ne!(
            instance_spec(&world.instances[0]).unwrap().revision,
            old_rev
        );
    }

    #[test]
    fn orphans_are_deleted_and_unplaced_instances_wait_for_an_agent() {
        let mut world = World {
            deployments: vec![deployment("web", 1, "toolbox")],
            ..Default::default()
        };
        let cmds = plan(&world);
        apply(&mut world, cmds);
        assert_eq!(instance_spec(&world.instances[0]).unwrap().node_name, None);
        world.agents = agents(&["a"]);
        let cmds = plan(&world);
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::Put {
                mode: PutMode::Update,
                ..
            }
        )));
        world.deployments.clear();
        let cmds = plan(&world);
        apply(&mut world, cmds);
        assert!(world.instances.is_empty());
    }

    #[test]
    fn node_subnets_never_overlap() {
        let cidr = Subnet::parse("10.88.0.0/16").unwrap();
        let mut world = World {
            agents: agents(&["a", "b", "c"]),
            cluster_cidr: Some(cidr),
            node_prefix: 24,
            ..Default::default()
        };
        let cmds = plan(&world);
        apply(&mut world, cmds);
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
