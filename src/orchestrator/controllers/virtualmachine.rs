//! The VirtualMachine controller: a VirtualMachine is `replicas` VM instances
//! `<name>-<index>` (the seed's naming), each run by a director. `running: false` stops
//! them all and keeps the object. A changed spec replaces the instances (Recreate: a VM's
//! disk may be opened read-write by one VMM only). Scaling down removes the highest index
//! first. Restarts after a guest exit follow `restartPolicy`, on the director.

use std::collections::BTreeSet;

use super::deployment::template_revision;
use super::{key_of, owned_instance, owned_spec, version, Draft, EventDraft, InstanceView, Pass};
use crate::model::event::EventReason;
use crate::model::instance::Phase;
use crate::model::status::VirtualMachineStatus;
use crate::model::{Kind, Resource, Spec};
use crate::store::Command;

const SOURCE: &str = "virtualmachine-controller";

pub fn plan(pass: &Pass, vm: &Resource, draft: &mut Draft) {
    let Some(Spec::VirtualMachine(spec)) = &vm.spec else {
        return;
    };
    let ns = vm.metadata.namespace.clone().unwrap_or_default();
    let name = &vm.metadata.name;
    // Replicas and running do not change what one VM is.
    let machine = crate::model::VirtualMachineSpec {
        replicas: None,
        running: None,
        ..spec.clone()
    };
    let revision = template_revision(&serde_json::to_value(&machine).expect("JSON"));
    let desired = if spec.running() {
        spec.replicas().max(0)
    } else {
        0
    };
    let mine: Vec<&InstanceView> = pass
        .instances
        .iter()
        .filter(|i| i.namespace() == ns && i.owned_by(Kind::VirtualMachine, &vm.metadata.uid))
        .collect();
    let mut deleted = BTreeSet::new();
    for i in &mine {
        let why = if i.index() >= desired {
            if spec.running() {
                "scaled down"
            } else {
                "running: false"
            }
        } else if i.revision() != revision {
            "the VM spec changed"
        } else {
            continue;
        };
        deleted.insert(i.index());
        draft.commands.push(Command::Delete {
            key: key_of(i.resource),
            expected_version: version(i.resource),
        });
        draft.events.push(EventDraft::normal(
            vm,
            EventReason::DeletingInstance,
            format!("deleted VM {}: {why}", i.name()),
            SOURCE,
        ));
    }
    // A replaced index is created again once its old instance is gone (next pass).
    let present: BTreeSet<i64> = mine.iter().map(|i| i.index()).collect();
    let mut room = super::create_room(mine.iter().copied());
    for index in 0..desired {
        if present.contains(&index) {
            continue;
        }
        if draft.rate_left == Some(0) || room <= 0 {
            break;
        }
        room -= 1;
        if let Some(left) = draft.rate_left.as_mut() {
            *left -= 1;
        }
        let instance_name = format!("{name}-{index}");
        let spec = crate::model::InstanceSpec {
            vm: Some(machine.clone()),
            ..owned_spec(vm, index, &revision)
        };
        let labels = vm.metadata.labels.clone();
        draft
            .creates
            .push(owned_instance(vm, &ns, &instance_name, labels, spec));
        draft.events.push(EventDraft::normal(
            vm,
            EventReason::SuccessfulCreate,
            format!("created VM {instance_name}"),
            SOURCE,
        ));
    }
    let live: Vec<&&InstanceView> = mine
        .iter()
        .filter(|i| !deleted.contains(&i.index()))
        .collect();
    let running = live
        .iter()
        .filter(|i| i.status.phase == Phase::Running)
        .count();
    let ready = live.iter().filter(|i| i.ready()).count();
    let status = VirtualMachineStatus {
        observed_generation: vm.metadata.generation,
        replicas: live.len() as i64,
        running_replicas: running as i64,
        ready_replicas: ready as i64,
        revision: revision.to_string(),
    };
    draft.commands.extend(super::status_change(vm, &status));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::controllers::{plan as plan_all, step, NodeView, World};
    use serde_json::json;

    fn vm_object(replicas: i64, running: bool) -> Resource {
        let v = json!({
            "apiVersion": "omnicloud.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "db", "namespace": "default", "uid": "u-vm",
                          "resourceVersion": "3", "generation": 1,
                          "labels": {"app": "db"}},
            "spec": {"replicas": replicas, "running": running, "cpu": {"cores": 1},
                     "memory": {"guest": "64Mi"}, "kernel": "/k"},
        });
        Resource::from_stored(v).unwrap()
    }

    fn director(name: &str) -> NodeView {
        NodeView {
            agent: false,
            director: true,
            ..NodeView::test_agent(name)
        }
    }

    fn created(draft: &Draft) -> Vec<(String, String)> {
        draft
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Put { key, object, .. } => {
                    let v: serde_json::Value = serde_json::from_slice(object).ok()?;
                    Some((
                        key.name.clone(),
                        v["spec"]["nodeName"].as_str()?.to_string(),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn replicas_become_indexed_vm_instances_on_directors_only() {
        let world = World {
            virtual_machines: vec![vm_object(3, true)],
            nodes: vec![NodeView::test_agent("a1"), director("d1")],
            now_ms: 1_000_000,
            ..Default::default()
        };
        let draft = plan_all(&world);
        let mut made = created(&draft);
        made.sort();
        assert_eq!(
            made,
            vec![
                ("db-0".to_string(), "d1".to_string()),
                ("db-1".to_string(), "d1".to_string()),
                ("db-2".to_string(), "d1".to_string())
            ]
        );
    }

    #[test]
    fn without_a_director_they_wait_unscheduled() {
        let world = World {
            virtual_machines: vec![vm_object(1, true)],
            nodes: vec![NodeView::test_agent("a1")],
            now_ms: 1_000_000,
            ..Default::default()
        };
        let draft = plan_all(&world);
        assert!(created(&draft).is_empty(), "{:?}", draft.commands);
        let put = draft.commands.iter().find_map(|c| match c {
            Command::Put { key, object, .. } if key.name == "db-0" => Some(object.clone()),
            _ => None,
        });
        let v: serde_json::Value = serde_json::from_slice(&put.expect("created unplaced")).unwrap();
        assert!(v["spec"]["nodeName"].is_null());
    }

    #[test]
    fn running_false_stops_every_replica() {
        let mut world = World {
            virtual_machines: vec![vm_object(2, true)],
            nodes: vec![director("d1")],
            now_ms: 1_000_000,
            ..Default::default()
        };
        step(&mut world);
        assert_eq!(world.instances.len(), 2);
        world.virtual_machines = vec![vm_object(2, false)];
        let draft = plan_all(&world);
        let deletes = draft
            .commands
            .iter()
            .filter(|c| matches!(c, Command::Delete { .. }))
            .count();
        assert_eq!(deletes, 2);
        assert!(draft
            .events
            .iter()
            .any(|e| e.message.contains("running: false")));
    }
}
