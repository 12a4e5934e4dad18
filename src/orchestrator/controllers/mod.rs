//! The control loops, on the Raft leader. One pass gathers a [`World`] (objects from the
//! local replica, nodes from gossip, the clock), and the controllers — pure functions of
//! it — return a [`Draft`]: commands, new instances to place, events. The scheduler then
//! places the new and the unplaced instances as one batch, and the loop writes the result
//! one command at a time (each stands alone; a refused one is retried next pass with
//! fresh state).
//!
//! Controllers: `subnets` (node subnet leases), `deployment` (instances, rollouts,
//! rollback), `statefulset`, `virtualmachine` (VM replicas), `vpa` (recommended requests at
//! creation, evictions out of bounds), `nodes` (instances of dead
//! nodes are replaced), `endpoints` (the ready instances behind each Service), `placement` (scheduler glue, preemption), `events` (the Event
//! objects every decision leaves).

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod nodes;
pub mod placement;
pub mod statefulset;
pub mod subnets;
pub mod virtualmachine;
pub mod vpa;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use super::ControlPlane;
use crate::cluster::identity::now_ms;
use crate::cluster::{Gossip, MemberStatus};
use crate::model::instance::{InstanceSpec, InstanceStatus, OwnerRef, OWNER_LABEL};
use crate::model::{Kind, Resource, Role, Spec, Subnet, API_VERSION};
use crate::store::{Command, ObjectKey};
pub use events::EventDraft;

const TICK: Duration = Duration::from_secs(1);
/// Pause before a pass, so a burst of changes costs one pass, not one each.
const SETTLE: Duration = Duration::from_millis(50);

/// A node as the controllers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub alive: bool,
    /// May run instances: the agent role (every node is a Raft member, at least a learner,
    /// so it reads its assignments from its replica of the store).
    pub agent: bool,
    /// May run VM instances: the director role.
    pub director: bool,
    pub labels: std::collections::BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// How long gossip has held it down (0 while alive).
    pub down_for_ms: u64,
}

#[cfg(test)]
impl NodeView {
    /// An alive agent with room for the controllers' tests.
    pub fn test_agent(name: &str) -> NodeView {
        NodeView {
            name: name.into(),
            alive: true,
            agent: true,
            director: false,
            labels: Default::default(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            down_for_ms: 0,
        }
    }
}

/// Applies one pass's writes to the world the way the state machine would (tests).
#[cfg(test)]
pub fn step(world: &mut World) -> Vec<EventDraft> {
    let draft = plan(world);
    for c in draft.commands {
        match c {
            Command::Put { key, object, .. } => {
                let mut v: Value = serde_json::from_slice(&object).unwrap();
                v["metadata"]["resourceVersion"] = json!("1");
                v["metadata"]["uid"] = json!(format!("uid-{}", key.name));
                let r = Resource::from_stored(v).unwrap();
                let Some(list) = world.list_mut(key.kind) else {
                    continue;
                };
                list.retain(|o| o.metadata.name != key.name);
                list.push(r);
            }
            Command::Delete { key, .. } => world
                .instances
                .retain(|o| !(o.kind == key.kind && o.metadata.name == key.name)),
            Command::SetStatus { key, status, .. } => {
                let Some(list) = world.list_mut(key.kind) else {
                    continue;
                };
                if let Some(o) = list.iter_mut().find(|o| o.metadata.name == key.name) {
                    o.status = Some(serde_json::from_slice(&status).unwrap());
                }
            }
            _ => {}
        }
    }
    draft.events
}

/// New instances one workload may have waiting for a node. A controller creates at most
/// this many in a pass, and none while this many of its instances are unplaced, so its
/// work follows what the cluster can place, not the replicas asked for (a stored
/// `replicas: 2147483648` costs no more than 256).
pub const MAX_UNPLACED_PER_WORKLOAD: i64 = 256;

/// How many instances a workload with these instances may create in this pass.
pub fn create_room<'a, 'b: 'a>(mine: impl IntoIterator<Item = &'a InstanceView<'b>>) -> i64 {
    let unplaced = mine.into_iter().filter(|i| i.node().is_none()).count() as i64;
    (MAX_UNPLACED_PER_WORKLOAD - unplaced).max(0)
}

/// An instance with its parsed spec and status.
#[derive(Clone, Debug)]
pub struct InstanceView<'a> {
    pub resource: &'a Resource,
    pub spec: &'a InstanceSpec,
    pub status: InstanceStatus,
}

impl<'a> InstanceView<'a> {
    pub fn of(r: &'a Resource) -> Option<InstanceView<'a>> {
        let Some(Spec::Instance(spec)) = &r.spec else {
            return None;
        };
        let status = r
            .status
            .clone()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        Some(InstanceView {
            resource: r,
            spec,
            status,
        })
    }

    pub fn name(&self) -> &str {
        &self.resource.metadata.name
    }

    pub fn namespace(&self) -> &str {
        self.resource.metadata.namespace.as_deref().unwrap_or("")
    }

    pub fn index(&self) -> i64 {
        self.spec.index.unwrap_or(0)
    }

    pub fn revision(&self) -> &str {
        self.spec.revision.as_deref().unwrap_or("")
    }

    pub fn node(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    pub fn owned_by(&self, kind: Kind, uid: &str) -> bool {
        self.spec
            .owner
            .as_ref()
            .is_some_and(|o| o.kind == kind && o.uid == uid)
    }

    /// Ready, of its own revision, on a node that is alive.
    pub fn ready(&self) -> bool {
        self.status.ready && self.status.revision == self.revision()
    }

    /// Ready for at least `min_ready_secs`.
    pub fn available(&self, now_ms: u64, min_ready_secs: u64) -> bool {
        self.ready()
            && (min_ready_secs == 0
                || now_ms.saturating_sub(parse_ms(&self.status.ready_since))
                    >= min_ready_secs * 1000)
    }
}

/// Everything one pass decides from.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub deployments: Vec<Resource>,
    pub statefulsets: Vec<Resource>,
    pub virtual_machines: Vec<Resource>,
    pub vpas: Vec<Resource>,
    pub instances: Vec<Resource>,
    pub subnets: Vec<Resource>,
    pub priority_classes: Vec<Resource>,
    pub policies: Vec<Resource>,
    pub services: Vec<Resource>,
    pub endpoints: Vec<Resource>,
    pub nodes: Vec<NodeView>,
    pub cluster_cidr: Option<Subnet>,
    pub node_prefix: u8,
    pub now_ms: u64,
}

/// One pass over a world: the world and its instances parsed once.
pub struct Pass<'a> {
    pub world: &'a World,
    pub instances: Vec<InstanceView<'a>>,
}

impl<'a> Pass<'a> {
    pub fn new(world: &'a World) -> Pass<'a> {
        Pass {
            world,
            instances: world
                .instances
                .iter()
                .filter_map(InstanceView::of)
                .collect(),
        }
    }
}

impl World {
    pub fn now_rfc3339(&self) -> String {
        rfc3339_seconds(self.now_ms)
    }

    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }

    #[cfg(test)]
    fn list_mut(&mut self, kind: Kind) -> Option<&mut Vec<Resource>> {
        Some(match kind {
            Kind::Instance => &mut self.instances,
            Kind::Deployment => &mut self.deployments,
            Kind::StatefulSet => &mut self.statefulsets,
            Kind::VirtualMachine => &mut self.virtual_machines,
            Kind::Service => &mut self.services,
            Kind::Endpoints => &mut self.endpoints,
            _ => return None,
        })
    }
}

/// What a pass wants done.
#[derive(Debug, Default)]
pub struct Draft {
    /// Instances that may still be created this minute (ClusterScalingPolicy
    /// scalingRates); None: no limit.
    pub rate_left: Option<i64>,
    pub commands: Vec<Command>,
    pub creates: Vec<NewInstance>,
    pub events: Vec<EventDraft>,
}

/// An instance to create once the scheduler has picked its node.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub key: ObjectKey,
    pub object: Value,
    /// `namespace/Kind/name` of the owning workload.
    pub owner: String,
}

/// An instance of `owner` (a Deployment or StatefulSet) made from `template`.
pub fn new_instance(
    owner: &Resource,
    ns: &str,
    instance_name: &str,
    index: i64,
    revision: &str,
    template: &crate::model::PodTemplate,
) -> NewInstance {
    let spec = InstanceSpec {
        pod: template.spec.clone(),
        ..owned_spec(owner, index, revision)
    };
    owned_instance(owner, ns, instance_name, template.labels(), spec)
}

/// The spec fields every controller-made instance has; the caller adds the pod or VM.
pub fn owned_spec(owner: &Resource, index: i64, revision: &str) -> InstanceSpec {
    InstanceSpec {
        node_name: None,
        owner: Some(OwnerRef {
            kind: owner.kind,
            name: owner.metadata.name.clone(),
            uid: owner.metadata.uid.clone(),
        }),
        index: Some(index),
        revision: Some(revision.to_string()),
        pod: Default::default(),
        vm: None,
    }
}

/// The instance object for `spec`, labelled with `labels` and its owner.
pub fn owned_instance(
    owner: &Resource,
    ns: &str,
    instance_name: &str,
    mut labels: BTreeMap<String, String>,
    spec: InstanceSpec,
) -> NewInstance {
    labels.insert(OWNER_LABEL.into(), owner.metadata.name.clone());
    let object = json!({
        "apiVersion": API_VERSION,
        "kind": "Instance",
        "metadata": {"name": instance_name, "namespace": ns, "labels": labels},
        "spec": spec,
    });
    NewInstance {
        key: ObjectKey::new(crate::model::Kind::Instance, ns, instance_name),
        object,
        owner: format!("{ns}/{}/{}", owner.kind, owner.metadata.name),
    }
}

pub fn key_of(r: &Resource) -> ObjectKey {
    ObjectKey::new(
        r.kind,
        r.metadata.namespace.clone().unwrap_or_default(),
        r.metadata.name.clone(),
    )
}

pub fn version(r: &Resource) -> Option<u64> {
    r.metadata.resource_version.parse().ok()
}

/// The command that writes `status` on `r`; None when `r` already has it.
pub fn status_change(r: &Resource, status: &impl serde::Serialize) -> Option<Command> {
    let status = serde_json::to_value(status).expect("statuses serialize");
    (r.status.as_ref() != Some(&status)).then(|| Command::SetStatus {
        key: key_of(r),
        status: serde_json::to_vec(&status).expect("JSON"),
        uid: Some(r.metadata.uid.clone()),
    })
}

/// Ms since the epoch as RFC 3339 (seconds), the form statuses and events carry.
pub fn rfc3339_seconds(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// RFC 3339 to ms since the epoch; 0 when empty or unreadable.
pub fn parse_ms(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// One pass: every controller, then placement.
pub fn plan(world: &World) -> Draft {
    let pass = Pass::new(world);
    let mut draft = Draft {
        rate_left: rate_left(&pass),
        ..Default::default()
    };
    subnets::plan(world, &mut draft);
    nodes::plan(&pass, &mut draft);
    for d in &world.deployments {
        deployment::plan(&pass, d, &mut draft);
    }
    for s in &world.statefulsets {
        statefulset::plan(&pass, s, &mut draft);
    }
    for vm in &world.virtual_machines {
        virtualmachine::plan(&pass, vm, &mut draft);
    }
    orphans(&pass, &mut draft);
    vpa::plan(&pass, &mut draft);
    endpoints::plan(&pass, &mut draft);
    placement::place(&pass, &mut draft);
    draft
}

/// ClusterScalingPolicy scalingRates: instances created in the last minute count against
/// `normalMaxPerMinute`, or `emergencyMaxPerMinute` while fewer than half of all wanted
/// instances are ready (recovering from a failure).
fn rate_left(pass: &Pass) -> Option<i64> {
    let rates = pass.world.policies.iter().find_map(|p| match &p.spec {
        Some(Spec::ClusterScalingPolicy(s)) => s.scaling_rates.clone(),
        _ => None,
    })?;
    let ready = pass.instances.iter().filter(|i| i.ready()).count();
    let emergency = ready * 2 < pass.instances.len();
    let per_minute = if emergency {
        rates
            .emergency_max_per_minute
            .or(rates.normal_max_per_minute)
    } else {
        rates.normal_max_per_minute
    }?;
    let recent = pass
        .instances
        .iter()
        .filter(|i| {
            let created = parse_ms(&i.resource.metadata.creation_timestamp);
            pass.world.now_ms.saturating_sub(created) < 60_000
        })
        .count() as i64;
    Some((per_minute - recent).max(0))
}

/// Instances whose Deployment, StatefulSet or VirtualMachine is gone.
fn orphans(pass: &Pass, draft: &mut Draft) {
    let world = pass.world;
    let owners: std::collections::BTreeSet<(&str, &str)> = world
        .deployments
        .iter()
        .chain(&world.statefulsets)
        .chain(&world.virtual_machines)
        .map(|d| {
            (
                d.metadata.namespace.as_deref().unwrap_or(""),
                d.metadata.uid.as_str(),
            )
        })
        .collect();
    for i in &pass.instances {
        let Some(owner) = &i.spec.owner else { continue };
        let workload = owner.kind.has_replicas();
        if workload && !owners.contains(&(i.namespace(), owner.uid.as_str())) {
            draft.commands.push(Command::Delete {
                key: key_of(i.resource),
                expected_version: version(i.resource),
            });
        }
    }
}

pub(crate) fn load_all(control: &ControlPlane, kind: Kind) -> Vec<Resource> {
    match control.reader().resources(kind) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, %kind, "reading the store");
            Vec::new()
        }
    }
}

/// The objects of the last pass, reused while the store's revision has not moved (the
/// periodic passes that only watch the clock and gossip cost no parsing).
fn gather(
    control: &ControlPlane,
    nodes: Vec<NodeView>,
    network: &crate::config::NetworkSettings,
    cache: &mut Option<(u64, World)>,
) -> World {
    let revision = control.reader().revision().ok();
    if let (Some(rev), Some((cached_rev, world))) = (revision, cache.as_ref()) {
        if rev == *cached_rev {
            return World {
                nodes,
                now_ms: now_ms(),
                ..world.clone()
            };
        }
    }
    let world = World {
        deployments: load_all(control, Kind::Deployment),
        statefulsets: load_all(control, Kind::StatefulSet),
        virtual_machines: load_all(control, Kind::VirtualMachine),
        vpas: load_all(control, Kind::VerticalPodAutoscaler),
        instances: load_all(control, Kind::Instance),
        subnets: load_all(control, Kind::NodeSubnet),
        priority_classes: load_all(control, Kind::PriorityClass),
        policies: load_all(control, Kind::ClusterScalingPolicy),
        services: load_all(control, Kind::Service),
        endpoints: load_all(control, Kind::Endpoints),
        nodes,
        cluster_cidr: Some(network.cluster_cidr),
        node_prefix: network.node_prefix,
        now_ms: now_ms(),
    };
    if let Some(rev) = revision {
        *cache = Some((rev, world.clone()));
    }
    world
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DecisionLabels {
    pub kind: String,
    pub reason: String,
}

/// The controllers' series in `/metrics` (on the leader).
#[derive(Clone)]
pub struct ControllerMetrics {
    /// Every decision event, by object kind and reason (the seed's name).
    pub decisions: prometheus_client::metrics::family::Family<
        DecisionLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    pub pass_duration: prometheus_client::metrics::histogram::Histogram,
    pub pending: prometheus_client::metrics::gauge::Gauge,
    /// The cluster autoscaler's request of a worker VM to its VMM process running.
    pub worker_provision: prometheus_client::metrics::histogram::Histogram,
}

impl ControllerMetrics {
    pub fn new(registry: &mut prometheus_client::registry::Registry) -> ControllerMetrics {
        let m = ControllerMetrics {
            decisions: Default::default(),
            pass_duration: prometheus_client::metrics::histogram::Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            pending: Default::default(),
            worker_provision: prometheus_client::metrics::histogram::Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
            ]),
        };
        registry.register(
            "orchestrator_scaling_decisions_count",
            "Controller decisions (scaling, placement, rollback, node loss) by kind and reason",
            m.decisions.clone(),
        );
        registry.register(
            "orchestrator_controller_pass_duration_seconds",
            "One pass of every control loop on the leader: gather, plan and schedule",
            m.pass_duration.clone(),
        );
        registry.register(
            "director_worker_provision_duration_seconds",
            "From the cluster autoscaler's request of a worker VM to the leader seeing it Running (its VMM process started by a director)",
            m.worker_provision.clone(),
        );
        registry.register(
            "orchestrator_pending_instances",
            "Instances waiting for a node (unschedulable)",
            m.pending.clone(),
        );
        m
    }

    /// One decision per event, by the involved object's kind and the reason.
    pub fn count(&self, events: &[EventDraft]) {
        for e in events {
            self.decisions
                .get_or_create(&DecisionLabels {
                    kind: e.kind.clone(),
                    reason: e.reason.as_str().into(),
                })
                .inc();
        }
    }
}

pub fn spawn(
    control: ControlPlane,
    gossip: Gossip,
    network: crate::config::NetworkSettings,
    metrics: ControllerMetrics,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = control.subscribe();
        let mut membership = gossip.subscribe();
        let mut recorder = events::Recorder::default();
        let mut cache = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                c = changes.recv() => match c {
                    Err(broadcast::error::RecvError::Closed) => return,
                    // A burst of changes is one pass: drain what is queued.
                    _ => while changes.try_recv().is_ok() {},
                },
                _ = membership.recv() => {}
                _ = stop.changed() => return,
            }
            // A write burst is one pass: let it settle, then drop what queued meanwhile.
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            if !control.is_leader() {
                continue;
            }
            let members = gossip.members().await;
            let nodes = members
                .iter()
                .map(|m| NodeView {
                    name: m.meta.name.clone(),
                    alive: m.status != MemberStatus::Down,
                    agent: m.meta.roles.contains(&Role::Agent),
                    director: m.meta.roles.contains(&Role::Director),
                    labels: m.meta.labels.clone(),
                    cpu_millis: m.meta.cpu_millis,
                    memory_bytes: m.meta.memory_bytes,
                    down_for_ms: if m.status == MemberStatus::Down {
                        now_ms().saturating_sub(m.since_ms)
                    } else {
                        0
                    },
                })
                .collect();
            let started = std::time::Instant::now();
            let world = gather(&control, nodes, &network, &mut cache);
            let draft = plan(&world);
            metrics
                .pass_duration
                .observe(started.elapsed().as_secs_f64());
            let pending = world
                .instances
                .iter()
                .filter_map(InstanceView::of)
                .filter(|i| i.node().is_none())
                .count();
            metrics.pending.set(pending as i64);
            for e in &draft.events {
                metrics
                    .decisions
                    .get_or_create(&DecisionLabels {
                        kind: e.kind.clone(),
                        reason: e.reason.as_str().into(),
                    })
                    .inc();
            }
            let now = world.now_rfc3339();
            let mut commands = draft.commands;
            commands.extend(recorder.commands(draft.events, &now));
            for command in commands {
                match control.write_local(command).await {
                    Ok(r) => {
                        if let Some(e) = r.rejection {
                            tracing::debug!(?e, "controller step refused; retrying next pass");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "controller step not written");
                        break;
                    }
                }
            }
        }
    });
}
