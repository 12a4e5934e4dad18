//! Scheduler glue: the new instances of this pass and the ones still waiting for a node
//! become one batch of [`scheduler::Request`]s against the live agents and what already
//! runs on them; the outcomes become writes. Preemption deletes the lower-priority
//! victims; an instance that fits nowhere is still created (Pending, reason
//! Unschedulable, with the scheduler's explanation) and is retried every pass.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{key_of, version, Draft, EventDraft, InstanceView, Pass};
use crate::model::affinity::{PodAffinity, PodAffinityTerm};
use crate::model::event::EventReason;
use crate::model::instance::reasons;
use crate::model::instance::{InstanceSpec, InstanceStatus};
use crate::model::Spec;
use crate::orchestrator::scheduler::{
    self, NodeInfo, Outcome, Placed, Policy, Request, Spread, Term, HOSTNAME_KEYS,
};
use crate::store::{Command, PutMode};

const SOURCE: &str = "scheduler";

fn term(t: &PodAffinityTerm) -> Term {
    Term {
        selector: t.match_labels(),
        topology_key: t
            .topology_key
            .clone()
            .unwrap_or_else(|| HOSTNAME_KEYS[0].to_string()),
    }
}

fn preferred(a: Option<&PodAffinity>) -> Vec<(i32, Term)> {
    a.and_then(|a| a.preferred.as_ref())
        .into_iter()
        .flatten()
        .map(|p| (p.weight.clamp(1, 100) as i32, term(&p.pod_affinity_term)))
        .collect()
}

fn request(
    key: String,
    owner: String,
    labels: BTreeMap<String, String>,
    spec: &InstanceSpec,
    priorities: &BTreeMap<String, i64>,
) -> Request {
    let (cpu_millis, memory_bytes) = spec.requests();
    if let Some(vm) = &spec.vm {
        return Request {
            key,
            owner,
            labels,
            cpu_millis,
            memory_bytes,
            priority: vm
                .priority_class_name
                .as_ref()
                .and_then(|p| priorities.get(p).copied())
                .unwrap_or(0),
            node_selector: vm.node_selector.clone().unwrap_or_default(),
            ..Default::default()
        };
    }
    let pod = &spec.pod;
    let affinity = pod.affinity.clone().unwrap_or_default();
    let mut req = Request {
        key,
        owner,
        labels,
        cpu_millis,
        memory_bytes,
        priority: pod
            .priority_class_name
            .as_ref()
            .and_then(|p| priorities.get(p).copied())
            .unwrap_or(0),
        node_selector: pod.node_selector.clone().unwrap_or_default(),
        spread: pod
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| Spread {
                max_skew: c.max_skew.max(1) as u32,
                topology_key: c.topology_key.clone(),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                selector: c
                    .label_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        anti_affinity: affinity
            .pod_anti_affinity
            .iter()
            .flat_map(|a| a.required.iter().flatten())
            .map(term)
            .collect(),
        affinity_preferred: preferred(affinity.pod_affinity.as_ref()),
        anti_affinity_preferred: preferred(affinity.pod_anti_affinity.as_ref()),
    };
    // The seed's colocation: PreferSameVM / RequireSameVM pull towards the node running
    // the selected workload, PreferDifferentVM away from it.
    for c in pod
        .topology_constraints
        .iter()
        .flat_map(|t| t.colocations.iter().flatten())
    {
        let t = Term {
            selector: c.selector.match_labels.clone().unwrap_or_default(),
            topology_key: HOSTNAME_KEYS[1].into(),
        };
        match c.strategy.as_str() {
            "PreferDifferentVM" => req.anti_affinity_preferred.push((100, t)),
            _ => req.affinity_preferred.push((100, t)),
        }
    }
    req
}

fn policy(pass: &Pass) -> (Policy, u64) {
    let spec = pass.world.policies.iter().find_map(|p| match &p.spec {
        Some(Spec::ClusterScalingPolicy(s)) => Some(s.clone()),
        _ => None,
    });
    let max_pods = spec
        .as_ref()
        .and_then(|s| s.application_limits.as_ref()?.max_pods_per_node)
        .map(|n| n.max(0) as u32);
    let reserve_pct = spec
        .as_ref()
        .and_then(|s| s.bootstrap_limits.as_ref()?.minimum_reserved_capacity)
        .unwrap_or(0)
        .clamp(0, 90) as u64;
    (
        Policy {
            max_pods_per_node: max_pods,
            ..Default::default()
        },
        reserve_pct,
    )
}

fn placed(i: &InstanceView) -> Option<Placed> {
    let (cpu_millis, memory_bytes) = i.spec.requests();
    Some(Placed {
        key: format!("{}/{}", i.namespace(), i.name()),
        node: i.node()?.to_string(),
        owner: owner_of(i.namespace(), i.spec),
        labels: i.resource.metadata.labels.clone(),
        cpu_millis,
        memory_bytes,
        priority: 0,
    })
}

fn owner_of(ns: &str, spec: &InstanceSpec) -> String {
    match &spec.owner {
        Some(o) => format!("{ns}/{}/{}", o.kind, o.name),
        None => String::new(),
    }
}

pub fn place(pass: &Pass, draft: &mut Draft) {
    let world = pass.world;
    let priorities: BTreeMap<String, i64> = world
        .priority_classes
        .iter()
        .filter_map(|p| match &p.spec {
            Some(Spec::PriorityClass(s)) => Some((p.metadata.name.clone(), s.value)),
            _ => None,
        })
        .collect();
    let (policy, reserve_pct) = policy(pass);
    // Containers go to agents, VMs to directors; a node with both roles shares its capacity.
    let nodes_for = |vm: bool| -> Vec<NodeInfo> {
        world
            .nodes
            .iter()
            .map(|n| {
                let mut labels = n.labels.clone();
                for k in HOSTNAME_KEYS {
                    labels.insert(k.into(), n.name.clone());
                }
                NodeInfo {
                    name: n.name.clone(),
                    alive: n.alive,
                    schedulable: if vm { n.director } else { n.agent },
                    labels,
                    cpu_millis: n.cpu_millis * (100 - reserve_pct) / 100,
                    memory_bytes: n.memory_bytes * (100 - reserve_pct) / 100,
                }
            })
            .collect()
    };
    let deleted: std::collections::BTreeSet<String> = draft
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Delete { key, .. } => Some(format!("{}/{}", key.namespace, key.name)),
            _ => None,
        })
        .collect();
    let mut existing: Vec<Placed> = pass
        .instances
        .iter()
        .filter_map(placed)
        .filter(|p| !deleted.contains(&p.key))
        .collect();
    for p in existing.iter_mut() {
        if let Some(i) = pass
            .instances
            .iter()
            .find(|i| format!("{}/{}", i.namespace(), i.name()) == p.key)
        {
            let class = match &i.spec.vm {
                Some(vm) => &vm.priority_class_name,
                None => &i.spec.pod.priority_class_name,
            };
            p.priority = class
                .as_ref()
                .and_then(|n| priorities.get(n).copied())
                .unwrap_or(0);
        }
    }
    let waiting: Vec<&InstanceView> = pass
        .instances
        .iter()
        .filter(|i| i.node().is_none())
        .filter(|i| !deleted.contains(&format!("{}/{}", i.namespace(), i.name())))
        .collect();
    let mut requests = Vec::new();
    let mut is_vm = Vec::new();
    for i in &waiting {
        is_vm.push(i.spec.is_vm());
        requests.push(request(
            format!("{}/{}", i.namespace(), i.name()),
            owner_of(i.namespace(), i.spec),
            i.resource.metadata.labels.clone(),
            i.spec,
            &priorities,
        ));
    }
    let creates = std::mem::take(&mut draft.creates);
    for c in &creates {
        let spec: InstanceSpec =
            serde_json::from_value(c.object["spec"].clone()).expect("made by a controller");
        let labels =
            serde_json::from_value(c.object["metadata"]["labels"].clone()).unwrap_or_default();
        is_vm.push(spec.is_vm());
        requests.push(request(
            format!("{}/{}", c.key.namespace, c.key.name),
            c.owner.clone(),
            labels,
            &spec,
            &priorities,
        ));
    }
    if requests.is_empty() {
        return;
    }
    let outcomes = schedule_by_role(nodes_for, existing, &requests, &is_vm, &policy);
    for (n, outcome) in outcomes.into_iter().enumerate() {
        let node = match outcome {
            Outcome::Placed(node) => Some(node),
            Outcome::Preempt { node, victims } => {
                for v in victims {
                    if let Some(i) = pass
                        .instances
                        .iter()
                        .find(|i| format!("{}/{}", i.namespace(), i.name()) == v)
                    {
                        draft.commands.push(Command::Delete {
                            key: key_of(i.resource),
                            expected_version: version(i.resource),
                        });
                        draft.events.push(EventDraft::warning(
                            i.resource,
                            EventReason::Preempted,
                            format!(
                                "evicted from {node} for the higher-priority {}",
                                requests[n].key
                            ),
                            SOURCE,
                        ));
                    }
                }
                Some(node)
            }
            Outcome::Unschedulable(reason) => {
                if n < waiting.len() {
                    let i = waiting[n];
                    if i.status.message != reason {
                        let status = InstanceStatus {
                            reason: reasons::UNSCHEDULABLE.into(),
                            message: reason.clone(),
                            ..Default::default()
                        };
                        draft.commands.push(Command::SetStatus {
                            key: key_of(i.resource),
                            status: serde_json::to_vec(&status).expect("JSON"),
                            uid: Some(i.resource.metadata.uid.clone()),
                        });
                        draft.events.push(EventDraft::warning(
                            i.resource,
                            EventReason::FailedScheduling,
                            reason,
                            SOURCE,
                        ));
                    }
                } else {
                    // Created unplaced; the next pass records why (status is server-set).
                    let c = &creates[n - waiting.len()];
                    draft.commands.push(Command::put(
                        c.key.clone(),
                        &c.object,
                        PutMode::Create,
                        None,
                    ));
                }
                None
            }
        };
        let Some(node) = node else { continue };
        if n < waiting.len() {
            let i = waiting[n];
            let mut v = i.resource.to_value();
            v["spec"]["nodeName"] = Value::String(node);
            draft.commands.push(Command::put(
                key_of(i.resource),
                &v,
                PutMode::Update,
                version(i.resource),
            ));
        } else {
            let c = &creates[n - waiting.len()];
            let mut object = c.object.clone();
            object["spec"]["nodeName"] = Value::String(node);
            draft
                .commands
                .push(Command::put(c.key.clone(), &object, PutMode::Create, None));
        }
    }
}

/// Schedules the container requests on agents, then the VM requests on directors with the
/// first batch's placements counted; outcomes in the order of `requests`.
fn schedule_by_role(
    nodes_for: impl Fn(bool) -> Vec<NodeInfo>,
    mut existing: Vec<Placed>,
    requests: &[Request],
    is_vm: &[bool],
    policy: &Policy,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
    for vm in [false, true] {
        let batch: Vec<usize> = (0..requests.len()).filter(|&i| is_vm[i] == vm).collect();
        if batch.is_empty() {
            continue;
        }
        let reqs: Vec<Request> = batch.iter().map(|&i| requests[i].clone()).collect();
        let out = scheduler::schedule(&nodes_for(vm), &existing, &reqs, policy);
        for ((&i, req), outcome) in batch.iter().zip(&reqs).zip(out) {
            if let Outcome::Placed(node) | Outcome::Preempt { node, .. } = &outcome {
                existing.push(Placed {
                    key: req.key.clone(),
                    node: node.clone(),
                    owner: req.owner.clone(),
                    labels: req.labels.clone(),
                    cpu_millis: req.cpu_millis,
                    memory_bytes: req.memory_bytes,
                    priority: req.priority,
                });
            }
            outcomes[i] = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every request is in one batch"))
        .collect()
}
