//! Glue of the cluster autoscaler on the leader: gathers [`cluster::Inputs`] from the local
//! replica (ClusterAutoscaler, NodeClass, ClusterScalingPolicy, PredictiveBootstrapScaler,
//! VirtualMachine and Instance objects), gossip (alive agents and directors and their
//! capacity) and Raft (the voters: the orchestrators), runs [`cluster::decide`] and writes
//! the outcome: a worker `VirtualMachine` created or deleted, and an Event on the
//! ClusterAutoscaler for every decision.
//!
//! `director_worker_provision_duration_seconds` is observed here, from the request (the
//! VirtualMachine's `omnicloud.io/requested-at` annotation) to the leader seeing its
//! instance Running, which the director reports once the worker's VMM process runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::cluster::{
    self, Action, Decision, Group, Inputs, Limits, Pending, Size, Worker, AUTOSCALER_LABEL,
    NODE_CLASS_LABEL, NODE_GROUP_LABEL, REQUESTED_AT,
};
use crate::cluster::{MemberStatus, MemberView};
use crate::model::capacity::{parse_ratio, NodeGroup};
use crate::model::event::EventReason;
use crate::model::instance::reasons;
use crate::model::instance::{Phase, VM_OVERHEAD_BYTES};
use crate::model::{Kind, Resource, Role, Spec, API_VERSION};
use crate::orchestrator::controllers::{key_of, parse_ms, EventDraft, InstanceView};
use crate::store::state_machine::DEFAULT_NAMESPACE;
use crate::store::{Command, ObjectKey, PutMode};

pub const SOURCE: &str = "cluster-autoscaler";

/// What the leader keeps between syncs.
#[derive(Default)]
pub struct ClusterState {
    pub memory: cluster::Memory,
    /// Worker VM name -> requested at (ms), until its instance is seen Running.
    pub requested: HashMap<String, u64>,
}

/// A worker VM's size: (the NodeClass as a node, what its VM asks of a director, cores).
fn class_size(spec: &crate::model::NodeClassSpec) -> (Size, Size, i64) {
    let cores = spec.resources.cpu.millis().div_ceil(1000).max(1);
    let memory = spec.resources.memory.bytes();
    (
        Size {
            cpu_millis: spec.resources.cpu.millis(),
            memory_bytes: memory,
        },
        Size {
            cpu_millis: cores * 1000,
            memory_bytes: memory + VM_OVERHEAD_BYTES,
        },
        cores as i64,
    )
}

fn has_role(m: &MemberView, role: Role) -> bool {
    m.status != MemberStatus::Down && m.meta.roles.contains(&role)
}

fn size_of(m: &MemberView) -> Size {
    Size {
        cpu_millis: m.meta.cpu_millis,
        memory_bytes: m.meta.memory_bytes,
    }
}

/// What everything placed on `node` requests.
fn used_on(views: &[InstanceView], node: &str) -> Size {
    views
        .iter()
        .filter(|i| i.node() == Some(node))
        .fold(Size::default(), |a, i| {
            let (c, m) = i.spec.requests();
            Size {
                cpu_millis: a.cpu_millis + c,
                memory_bytes: a.memory_bytes + m,
            }
        })
}

fn free(total: Size, used: Size, usable_pct: u64) -> Size {
    Size {
        cpu_millis: (total.cpu_millis * usable_pct / 100).saturating_sub(used.cpu_millis),
        memory_bytes: (total.memory_bytes * usable_pct / 100).saturating_sub(used.memory_bytes),
    }
}

fn memory_text(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// One sync: returns the commands to write and the events (decisions) to record.
///
/// 1. The acting ClusterAutoscaler: the first by name; the others get a warning.
/// 2. What sizes and bounds the workers: NodeClasses, the ClusterScalingPolicy's limits,
///    PredictiveBootstrapScaler windows.
/// 3. The workers: this autoscaler's VirtualMachines, whether their guests joined, and
///    what is placed on them.
/// 4. The rest of the inputs (pending instances, directors' and agents' room, voters),
///    then [`cluster::decide`].
/// 5. The decisions written out: worker VMs created or deleted, one Event each.
pub fn plan(
    control: &crate::orchestrator::ControlPlane,
    members: &[MemberView],
    state: &mut ClusterState,
    now_ms: u64,
) -> (Vec<Command>, Vec<EventDraft>) {
    let load = |k| super::load_all(control, k);
    // 1.
    let mut cas = load(Kind::ClusterAutoscaler);
    if cas.is_empty() {
        *state = ClusterState::default();
        return (Vec::new(), Vec::new());
    }
    cas.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut events = ignored(&cas);
    let ca = &cas[0];
    let Some(Spec::ClusterAutoscaler(spec)) = &ca.spec else {
        return (Vec::new(), events);
    };
    // 2.
    let classes = node_classes(&load(Kind::NodeClass));
    let limits = bootstrap_limits(&load(Kind::ClusterScalingPolicy));
    let usable = 100 - limits.reserve_pct;
    let floors = super::schedule::vm_pool_floors(
        &load(Kind::PredictiveBootstrapScaler),
        spec.node_groups.first().map(|g| g.name.as_str()),
        now_ms,
    );
    // 3.
    let vms = load(Kind::VirtualMachine);
    let instances = load(Kind::Instance);
    let views: Vec<InstanceView> = instances.iter().filter_map(InstanceView::of).collect();
    let ns = DEFAULT_NAMESPACE;
    let ours: Vec<&Resource> = vms
        .iter()
        .filter(|v| v.metadata.namespace.as_deref().unwrap_or(ns) == ns)
        .filter(|v| v.metadata.labels.get(AUTOSCALER_LABEL) == Some(&ca.metadata.name))
        .collect();
    let workers = workers_of(&ours, &views, members, state);
    // 4.
    let worker_nodes: BTreeSet<String> = workers.iter().map(|w| w.node.clone()).collect();
    let room_of = |keep: &dyn Fn(&MemberView) -> bool| -> Vec<Size> {
        members
            .iter()
            .filter(|m| keep(m))
            .map(|m| free(size_of(m), used_on(&views, &m.meta.name), usable))
            .collect()
    };
    let inputs = Inputs {
        now_ms,
        groups: groups(&spec.node_groups, &classes, &floors),
        pending: pending_of(&views),
        workers,
        directors: room_of(&|m| has_role(m, Role::Director)),
        orchestrators: control
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count(),
        placed_containers: views
            .iter()
            .filter(|i| i.node().is_some() && !i.spec.is_vm())
            .count(),
        agent_room: room_of(&|m| has_role(m, Role::Agent) && !worker_nodes.contains(&m.meta.name)),
        taken: vms
            .iter()
            .filter(|v| v.metadata.namespace.as_deref().unwrap_or(ns) == ns)
            .map(|v| v.metadata.name.clone())
            .collect(),
        limits,
    };
    let decisions = cluster::decide(&inputs, &mut state.memory);
    // 5.
    let out = Writer {
        ca,
        classes: &classes,
        groups: &inputs.groups,
        ours: &ours,
        now_ms,
    };
    let mut commands = Vec::new();
    for d in decisions {
        commands.extend(out.commands(&d, state));
        events.push(if d.warning {
            EventDraft::warning(ca, d.reason, d.message, SOURCE)
        } else {
            EventDraft::normal(ca, d.reason, d.message, SOURCE)
        });
    }
    (commands, events)
}

/// Step 1: a warning on every ClusterAutoscaler but the first (`cas` sorted by name).
fn ignored(cas: &[Resource]) -> Vec<EventDraft> {
    cas[1..]
        .iter()
        .map(|other| {
            EventDraft::warning(
                other,
                EventReason::ScaleUpLimited,
                format!(
                    "ClusterAutoscaler {} acts for the cluster; this one is ignored",
                    cas[0].metadata.name
                ),
                SOURCE,
            )
        })
        .collect()
}

/// Step 2: every NodeClass's worker size by name.
fn node_classes(classes: &[Resource]) -> BTreeMap<String, (Size, Size, i64)> {
    classes
        .iter()
        .filter_map(|c| match &c.spec {
            Some(Spec::NodeClass(s)) => Some((c.metadata.name.clone(), class_size(s))),
            _ => None,
        })
        .collect()
}

/// Step 2: the first ClusterScalingPolicy's `bootstrapLimits`.
fn bootstrap_limits(policies: &[Resource]) -> Limits {
    let policy = policies
        .iter()
        .find_map(|p| match &p.spec {
            Some(Spec::ClusterScalingPolicy(s)) => s.bootstrap_limits.clone(),
            _ => None,
        })
        .unwrap_or_default();
    Limits {
        orchestrator_ratio: policy.orchestrator_ratio.as_deref().and_then(parse_ratio),
        director_ratio: policy.director_ratio.as_deref().and_then(parse_ratio),
        reserve_pct: policy.minimum_reserved_capacity.unwrap_or(0).clamp(0, 90) as u64,
    }
}

/// Step 3: one [`Worker`] per VirtualMachine of this autoscaler; a worker whose instance
/// is not Running yet is remembered as requested (for the provisioning metric), and the
/// VMs that are gone are forgotten.
fn workers_of(
    ours: &[&Resource],
    views: &[InstanceView],
    members: &[MemberView],
    state: &mut ClusterState,
) -> Vec<Worker> {
    let alive_agent = |name: &str| {
        members
            .iter()
            .find(|m| m.meta.name == name && has_role(m, Role::Agent))
    };
    let mut workers = Vec::new();
    for v in ours {
        let node = format!("{}-0", v.metadata.name);
        let requested_ms = v
            .metadata
            .annotations
            .get(REQUESTED_AT)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| parse_ms(&v.metadata.creation_timestamp));
        let running = views.iter().any(|i| {
            i.owned_by(Kind::VirtualMachine, &v.metadata.uid) && i.status.phase == Phase::Running
        });
        if !running {
            state
                .requested
                .entry(v.metadata.name.clone())
                .or_insert(requested_ms);
        }
        let member = alive_agent(&node);
        workers.push(Worker {
            vm: v.metadata.name.clone(),
            group: v
                .metadata
                .labels
                .get(NODE_GROUP_LABEL)
                .cloned()
                .unwrap_or_default(),
            node: node.clone(),
            requested_ms,
            joined: member.is_some(),
            capacity: member.map(size_of).unwrap_or_default(),
            placed: views
                .iter()
                .filter(|i| i.node() == Some(node.as_str()) && !i.spec.is_vm())
                .map(|i| {
                    let (c, m) = i.spec.requests();
                    Size {
                        cpu_millis: c,
                        memory_bytes: m,
                    }
                })
                .collect(),
        });
    }
    let live: BTreeSet<&str> = ours.iter().map(|v| v.metadata.name.as_str()).collect();
    state.requested.retain(|k, _| live.contains(k.as_str()));
    workers
}

/// Step 4: the node groups with their NodeClass (the first NodeClass when a group names
/// none) and vmPool window.
fn groups<'a>(
    specs: &'a [NodeGroup],
    classes: &BTreeMap<String, (Size, Size, i64)>,
    floors: &BTreeMap<String, (i64, String)>,
) -> Vec<Group<'a>> {
    specs
        .iter()
        .map(|g| {
            let class_name = g
                .node_class
                .clone()
                .or_else(|| classes.keys().next().cloned());
            Group {
                spec: g,
                class: class_name.and_then(|n| {
                    let (size, vm, _) = classes.get(&n)?;
                    Some((n, *size, *vm))
                }),
                scheduled: floors.get(&g.name).cloned(),
            }
        })
        .collect()
}

/// Step 4: container instances the scheduler left Unschedulable.
fn pending_of(views: &[InstanceView]) -> Vec<Pending> {
    views
        .iter()
        .filter(|i| i.node().is_none() && !i.spec.is_vm())
        .filter(|i| i.status.reason == reasons::UNSCHEDULABLE)
        .map(|i| {
            let (c, m) = i.spec.requests();
            Pending {
                key: format!("{}/{}", i.namespace(), i.name()),
                need: Size {
                    cpu_millis: c,
                    memory_bytes: m,
                },
                since_ms: parse_ms(&i.resource.metadata.creation_timestamp),
            }
        })
        .collect()
}

/// Step 5: what a decision writes.
struct Writer<'a> {
    ca: &'a Resource,
    classes: &'a BTreeMap<String, (Size, Size, i64)>,
    groups: &'a [Group<'a>],
    ours: &'a [&'a Resource],
    now_ms: u64,
}

impl Writer<'_> {
    /// The commands of one decision; the requested workers are remembered (or forgotten).
    fn commands(&self, d: &Decision, state: &mut ClusterState) -> Vec<Command> {
        match &d.action {
            Some(Action::Create(names)) => {
                let group = self
                    .groups
                    .iter()
                    .find(|g| g.spec.name == d.group)
                    .expect("decided for a group");
                let (class, _, _) = group.class.clone().expect("sized");
                names
                    .iter()
                    .map(|name| {
                        state.requested.insert(name.clone(), self.now_ms);
                        self.worker_vm(name, &d.group, &class)
                    })
                    .collect()
            }
            Some(Action::Delete(name)) => {
                state.requested.remove(name);
                self.ours
                    .iter()
                    .find(|v| &v.metadata.name == name)
                    .map(|v| Command::Delete {
                        key: key_of(v),
                        expected_version: None,
                    })
                    .into_iter()
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// A new worker VirtualMachine of `group`, sized by its NodeClass `class`.
    fn worker_vm(&self, name: &str, group: &str, class: &str) -> Command {
        let (size, _, cores) = self.classes[class];
        let ns = DEFAULT_NAMESPACE;
        let vm = json!({
            "apiVersion": API_VERSION,
            "kind": "VirtualMachine",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    AUTOSCALER_LABEL: self.ca.metadata.name,
                    NODE_GROUP_LABEL: group,
                    NODE_CLASS_LABEL: class,
                },
                "annotations": {REQUESTED_AT: self.now_ms.to_string()},
            },
            "spec": {
                "worker": true,
                "cpu": {"cores": cores},
                "memory": {"guest": memory_text(size.memory_bytes)},
                "network": {"bridge": true},
            },
        });
        Command::put(
            ObjectKey::new(Kind::VirtualMachine, ns, name),
            &vm,
            PutMode::Create,
            None,
        )
    }
}

/// A committed Instance change: a worker VM's instance seen Running for the first time
/// ends its provisioning; returns the seconds since the request.
pub fn provisioned(state: &mut ClusterState, object: &[u8], now_ms: u64) -> Option<f64> {
    if state.requested.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_slice(object).ok()?;
    v["metadata"]["labels"][AUTOSCALER_LABEL].as_str()?;
    if v["status"]["phase"] != "Running" {
        return None;
    }
    let vm = v["spec"]["owner"]["name"].as_str()?;
    let at = state.requested.remove(vm)?;
    Some(now_ms.saturating_sub(at) as f64 / 1000.0)
}
