//! Endpoints: one `Endpoints` object per Service with a selector, named after it, holding
//! the instances (containers and VM replicas) its selector matches in its namespace:
//!
//! 1. An instance counts when it is placed, has an address (`status.ip`) and runs on a
//!    node gossip holds alive; it is a ready address when it is ready at its own revision
//!    (`InstanceView::ready`), else a not-ready address (`publishNotReadyAddresses`: ready
//!    either way). A deleted instance, one not ready, or one whose node is down leaves the
//!    addresses in the next pass (each store change starts one).
//! 2. Each service port's `targetPort` is resolved per instance: a number as is, a name
//!    from the instance's container ports (`ports[].name`). Instances resolving to the
//!    same ports share a subset, as in Kubernetes.
//! 3. The Service's status says what is not acted on (`ServiceSpec::ignored_fields`), a
//!    selector that matches nothing, and a `targetPort` name no matched container has
//!    (also a Warning event, once when it appears).
//!
//! Endpoints whose Service is gone are deleted (only those this controller made, by
//! label). A Service without a selector keeps whatever Endpoints the user wrote.

use std::collections::BTreeMap;

use serde_json::json;

use super::{key_of, status_change, version, Draft, EventDraft, InstanceView, Pass};
use crate::model::event::EventReason;
use crate::model::instance::StatusWarning;
use crate::model::quantity::IntOrString;
use crate::model::service::{
    EndpointAddress, EndpointPort, EndpointSubset, EndpointTarget, EndpointsSpec,
    LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
};
use crate::model::{Kind, Resource, Spec, API_VERSION};
use crate::store::{Command, ObjectKey, PutMode};

const SOURCE: &str = "endpoints-controller";
/// Label on every Endpoints object this controller made: the Service it belongs to.
pub const SERVICE_LABEL: &str = "omnicloud.io/service-name";

pub fn plan(pass: &Pass, draft: &mut Draft) {
    let world = pass.world;
    for svc in &world.services {
        let Some(Spec::Service(spec)) = &svc.spec else {
            continue;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let current = world.endpoints.iter().find(|e| {
            e.metadata.name == svc.metadata.name && e.metadata.namespace.as_deref() == Some(ns)
        });
        let mut warnings: Vec<StatusWarning> = spec
            .ignored_fields()
            .into_iter()
            .map(|(field, why)| StatusWarning {
                reason: "FieldNotActedOn".into(),
                message: format!("{field}: {why}"),
            })
            .collect();
        if let Some(selector) = &spec.selector {
            let (subsets, matched, unresolved) = subsets_for(pass, ns, selector, spec);
            if matched == 0 {
                warnings.push(StatusWarning {
                    reason: "SelectorMatchesNothing".into(),
                    message: format!(
                        "spec.selector {} matches no instance in namespace {ns}",
                        selector
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                });
            }
            for (field, name) in unresolved {
                warnings.push(StatusWarning {
                    reason: EventReason::TargetPortNotFound.as_str().into(),
                    message: format!(
                        "{field}: no container port named \"{name}\" in the matched instances"
                    ),
                });
            }
            write_endpoints(svc, current, EndpointsSpec { subsets }, draft);
        }
        write_status(svc, &warnings, draft);
    }
    // Endpoints this controller made whose Service is gone.
    for e in &world.endpoints {
        let ns = e.metadata.namespace.as_deref();
        let managed = e.metadata.labels.contains_key(SERVICE_LABEL);
        let has_service = world.services.iter().any(|s| {
            s.metadata.name == e.metadata.name
                && s.metadata.namespace.as_deref() == ns
                && matches!(&s.spec, Some(Spec::Service(sp)) if sp.selector.is_some())
        });
        if managed && !has_service {
            draft.commands.push(Command::Delete {
                key: key_of(e),
                expected_version: version(e),
            });
        }
    }
}

/// The subsets of the instances `selector` matches in `ns`, how many matched, and the
/// `(field, name)` of every targetPort name no matched container port has.
fn subsets_for(
    pass: &Pass,
    ns: &str,
    selector: &BTreeMap<String, String>,
    spec: &ServiceSpec,
) -> (Vec<EndpointSubset>, usize, Vec<(String, String)>) {
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut groups: BTreeMap<Vec<EndpointPort>, EndpointSubset> = BTreeMap::new();
    let mut matched = 0;
    let mut resolved_names: BTreeMap<usize, bool> = BTreeMap::new();
    for i in &pass.instances {
        let labels = &i.resource.metadata.labels;
        if i.namespace() != ns || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        matched += 1;
        let Some(node) = i.node() else { continue };
        let alive = pass.world.node(node).is_some_and(|n| n.alive);
        if !alive
            || i.status.ip.is_empty()
            || i.status.phase == crate::model::instance::Phase::Terminating
        {
            continue;
        }
        let mut ports = Vec::new();
        for (idx, p) in spec.ports.iter().enumerate() {
            let target = match p.target() {
                IntOrString::Int(n) => Some(n),
                IntOrString::Str(name) => named_port(i, &name),
            };
            let entry = resolved_names.entry(idx).or_insert(false);
            match target {
                Some(port) => {
                    *entry = true;
                    ports.push(EndpointPort {
                        name: p.name.clone(),
                        port,
                        protocol: p.protocol(),
                    });
                }
                None => continue,
            }
        }
        if ports.is_empty() && !spec.ports.is_empty() {
            continue;
        }
        let address = EndpointAddress {
            ip: i.status.ip.clone(),
            node_name: Some(node.to_string()),
            target_ref: Some(EndpointTarget {
                kind: "Instance".into(),
                name: i.name().to_string(),
                namespace: ns.to_string(),
            }),
        };
        let subset = groups
            .entry(ports.clone())
            .or_insert_with(|| EndpointSubset {
                ports,
                ..Default::default()
            });
        if i.ready() || publish_not_ready {
            subset.addresses.push(address);
        } else {
            subset.not_ready_addresses.push(address);
        }
    }
    let unresolved = spec
        .ports
        .iter()
        .enumerate()
        .filter(|(idx, _)| resolved_names.get(idx) == Some(&false))
        .filter_map(|(idx, p)| match p.target() {
            IntOrString::Str(name) => Some((format!("spec.ports[{idx}].targetPort"), name)),
            IntOrString::Int(_) => None,
        })
        .collect();
    let subsets = groups
        .into_values()
        .map(|mut s| {
            s.addresses.sort();
            s.not_ready_addresses.sort();
            s
        })
        .collect();
    (subsets, matched, unresolved)
}

/// The container port named `name` in the instance's pod.
fn named_port(i: &InstanceView, name: &str) -> Option<i64> {
    i.spec
        .pod
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn write_endpoints(
    svc: &Resource,
    current: Option<&Resource>,
    spec: EndpointsSpec,
    draft: &mut Draft,
) {
    if let Some(Spec::Endpoints(have)) = current.and_then(|c| c.spec.as_ref()) {
        if *have == spec && current.is_some_and(|c| c.metadata.labels.contains_key(SERVICE_LABEL)) {
            return;
        }
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let object = json!({
        "apiVersion": API_VERSION,
        "kind": "Endpoints",
        "metadata": {
            "name": svc.metadata.name,
            "namespace": ns,
            "labels": {SERVICE_LABEL: svc.metadata.name},
        },
        "spec": spec,
    });
    draft.commands.push(Command::put(
        ObjectKey::new(Kind::Endpoints, ns, svc.metadata.name.clone()),
        &object,
        PutMode::Apply,
        current.and_then(version),
    ));
}

/// The Service's status: its warnings, and for a LoadBalancer Service its allocated
/// address (`spec.loadBalancerIP`) as `status.loadBalancer.ingress`, as Kubernetes shows it.
fn write_status(svc: &Resource, warnings: &[StatusWarning], draft: &mut Draft) {
    let old: ServiceStatus = svc
        .status
        .clone()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let lb_ip = match &svc.spec {
        Some(Spec::Service(s)) => s.lb_ip(),
        _ => None,
    };
    let status = ServiceStatus {
        load_balancer: LoadBalancerStatus {
            ingress: lb_ip
                .map(|ip| LoadBalancerIngress { ip: ip.to_string() })
                .into_iter()
                .collect(),
        },
        warnings: warnings.to_vec(),
    };
    let port_not_found = EventReason::TargetPortNotFound.as_str();
    for w in warnings.iter().filter(|w| w.reason == port_not_found) {
        if !old.warnings.contains(w) {
            draft.events.push(EventDraft::warning(
                svc,
                EventReason::TargetPortNotFound,
                w.message.clone(),
                SOURCE,
            ));
        }
    }
    let value = serde_json::to_value(&status).expect("statuses serialize");
    if let Some(c) = status_change(svc, &value) {
        draft.commands.push(c);
    }
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
