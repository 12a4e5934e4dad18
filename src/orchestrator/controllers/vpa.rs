//! VerticalPodAutoscaler updates: the updater and admission halves of Kubernetes' VPA (the
//! recommender is `autoscaler::vpa`, which writes `status.recommendation`).
//!
//! - Admission (modes Initial, Auto, Recreate): every instance created for the target gets
//!   the recommended requests (`target`) of each controlled resource of each container;
//!   limits keep their ratio to the request (`controlledValues: RequestsAndLimits`, the
//!   default) or stay as they are (`RequestsOnly`).
//! - Updater (Auto, Recreate; there is no in-place resize, so both evict): an instance
//!   whose request lies outside `[lowerBound, upperBound]` is deleted and its workload
//!   creates it again with the recommendation; one per VPA per pass, only while every
//!   instance of the target is ready, and not when the target has fewer than
//!   `updatePolicy.minReplicas` (default 2, as Kubernetes) instances.

use serde_json::{json, Value};

use super::{key_of, version, Draft, EventDraft, Pass};
use crate::model::event::EventReason;
use crate::model::{CpuQuantity, MemoryQuantity, Resource, Spec, VpaSpec};
use crate::store::Command;

const SOURCE: &str = "vpa-updater";

/// One container's recommendation: (cpu millicores, memory bytes) for each of the bounds.
#[derive(Clone, Debug, PartialEq)]
struct Rec {
    container: String,
    lower: (Option<u64>, Option<u64>),
    target: (Option<u64>, Option<u64>),
    upper: (Option<u64>, Option<u64>),
}

fn cpu(v: &Value) -> Option<u64> {
    serde_json::from_value::<CpuQuantity>(v.clone())
        .ok()
        .map(|q| q.millis())
}

fn memory(v: &Value) -> Option<u64> {
    serde_json::from_value::<MemoryQuantity>(v.clone())
        .ok()
        .map(|q| q.bytes())
}

fn recommendations(vpa: &Resource) -> Vec<Rec> {
    let pair = |v: &Value| (cpu(&v["cpu"]), memory(&v["memory"]));
    vpa.status
        .as_ref()
        .and_then(|s| s["recommendation"]["containerRecommendations"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Rec {
                container: c["containerName"].as_str()?.to_string(),
                lower: pair(&c["lowerBound"]),
                target: pair(&c["target"]),
                upper: pair(&c["upperBound"]),
            })
        })
        .collect()
}

fn requests_only(spec: &VpaSpec, container: &str) -> bool {
    spec.resource_policy
        .as_ref()
        .and_then(|p| p.container_policies.as_ref())
        .into_iter()
        .flatten()
        .find(|p| p.container_name == container || p.container_name == "*")
        .and_then(|p| p.controlled_values.as_deref())
        == Some("RequestsOnly")
}

/// Sets a container's requests to the recommendation (limits scaled with them unless
/// RequestsOnly); true if anything changed.
fn admit(container: &mut Value, rec: &Rec, requests_only: bool) -> bool {
    let mut changed = false;
    for (resource, target, parse, text) in [
        (
            "cpu",
            rec.target.0,
            cpu as fn(&Value) -> Option<u64>,
            (|n: u64| format!("{n}m")) as fn(u64) -> String,
        ),
        ("memory", rec.target.1, memory, |n: u64| n.to_string()),
    ] {
        let Some(target) = target else { continue };
        let resources = &mut container["resources"];
        let old = parse(&resources["requests"][resource]);
        if old == Some(target) {
            continue;
        }
        if !requests_only {
            if let (Some(old), Some(limit)) = (old, parse(&resources["limits"][resource])) {
                if old > 0 {
                    let scaled = (limit as u128 * target as u128 / old as u128) as u64;
                    resources["limits"][resource] = json!(text(scaled.max(target)));
                }
            }
        }
        resources["requests"][resource] = json!(text(target));
        changed = true;
    }
    changed
}

/// Why `pod`'s container requests lie outside the recommendation's bounds, if they do.
fn out_of_bounds(pod: &Value, recs: &[Rec]) -> Option<String> {
    for c in pod["containers"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("");
        let Some(rec) = recs.iter().find(|r| r.container == name) else {
            continue;
        };
        let req = &c["resources"]["requests"];
        let checks = [
            ("cpu", cpu(&req["cpu"]), rec.lower.0, rec.upper.0),
            ("memory", memory(&req["memory"]), rec.lower.1, rec.upper.1),
        ];
        for (resource, have, lower, upper) in checks {
            let (Some(lower), Some(upper)) = (lower, upper) else {
                continue;
            };
            let have = have.unwrap_or(0);
            if have < lower || have > upper {
                return Some(format!(
                    "container {name} requests {have} {resource} outside the recommended {lower}..{upper}"
                ));
            }
        }
    }
    None
}

pub fn plan(pass: &Pass, draft: &mut Draft) {
    for vpa in &pass.world.vpas {
        let Some(Spec::VerticalPodAutoscaler(spec)) = &vpa.spec else {
            continue;
        };
        let mode = spec.update_mode();
        let recs = recommendations(vpa);
        if mode == "Off" || recs.is_empty() {
            continue;
        }
        let ns = vpa.metadata.namespace.clone().unwrap_or_default();
        let owner = format!("{ns}/{}/{}", spec.target_ref.kind, spec.target_ref.name);
        for create in draft.creates.iter_mut().filter(|c| c.owner == owner) {
            for c in create.object["spec"]["pod"]["containers"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                let name = c["name"].as_str().unwrap_or("").to_string();
                if let Some(rec) = recs.iter().find(|r| r.container == name) {
                    admit(c, rec, requests_only(spec, &name));
                }
            }
        }
        if mode != "Auto" && mode != "Recreate" {
            continue;
        }
        let mine: Vec<_> = pass
            .instances
            .iter()
            .filter(|i| {
                i.namespace() == ns
                    && i.spec.owner.as_ref().is_some_and(|o| {
                        o.kind.as_str() == spec.target_ref.kind && o.name == spec.target_ref.name
                    })
            })
            .collect();
        let min_replicas = spec
            .update_policy
            .as_ref()
            .and_then(|p| p.min_replicas)
            .unwrap_or(2)
            .max(1) as usize;
        if mine.len() < min_replicas || !mine.iter().all(|i| i.ready()) {
            continue;
        }
        let already = draft.commands.iter().any(|c| {
            matches!(c, Command::Delete { key, .. } if mine.iter().any(|i| i.name() == key.name))
        });
        if already {
            continue;
        }
        let pod = serde_json::to_value(&mine[0].spec.pod).expect("JSON");
        let victim = mine.iter().find_map(|i| {
            let pod = if i.name() == mine[0].name() {
                pod.clone()
            } else {
                serde_json::to_value(&i.spec.pod).expect("JSON")
            };
            out_of_bounds(&pod, &recs).map(|why| (i, why))
        });
        if let Some((i, why)) = victim {
            draft.commands.push(Command::Delete {
                key: key_of(i.resource),
                expected_version: version(i.resource),
            });
            draft.events.push(EventDraft::normal(
                vpa,
                EventReason::EvictedByVpa,
                format!("evicted {} to apply the recommendation ({why})", i.name()),
                SOURCE,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::controllers::{plan as plan_all, step, NodeView, World};

    fn deployment(replicas: i64) -> Resource {
        Resource::from_stored(json!({
            "apiVersion": "omnicloud.io/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u-web",
                          "resourceVersion": "1", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "toolbox:latest",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                   "limits": {"cpu": "200m", "memory": "128Mi"}}}]}}},
        }))
        .unwrap()
    }

    fn vpa(mode: &str) -> Resource {
        Resource::from_stored(json!({
            "apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
            "metadata": {"name": "web-vpa", "namespace": "default", "uid": "u-vpa",
                          "resourceVersion": "1", "generation": 1},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "updatePolicy": {"updateMode": mode}},
            "status": {"recommendation": {"containerRecommendations": [{"containerName": "c",
                "lowerBound": {"cpu": "250m", "memory": "100Mi"},
                "target": {"cpu": "300m", "memory": "128Mi"},
                "upperBound": {"cpu": "500m", "memory": "256Mi"}}]}},
        }))
        .unwrap()
    }

    fn world(mode: &str) -> World {
        World {
            deployments: vec![deployment(2)],
            vpas: vec![vpa(mode)],
            nodes: vec![NodeView::test_agent("a")],
            now_ms: 1_000_000_000,
            ..Default::default()
        }
    }

    fn spec_json(i: &Resource) -> Value {
        let view = crate::orchestrator::controllers::InstanceView::of(i).unwrap();
        serde_json::to_value(view.spec).unwrap()
    }

    fn requests(w: &World) -> Vec<(String, String, String)> {
        w.instances
            .iter()
            .map(|i| {
                let spec = spec_json(i);
                let c = &spec["pod"]["containers"][0]["resources"];
                (
                    c["requests"]["cpu"].as_str().unwrap_or("").to_string(),
                    c["requests"]["memory"].as_str().unwrap_or("").to_string(),
                    c["limits"]["cpu"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn ready_all(w: &mut World) {
        for i in w.instances.iter_mut() {
            let rev = spec_json(i)["revision"].clone();
            i.status = Some(json!({"phase": "Running", "ready": true, "restarts": 0,
                "revision": rev, "readySince": "2000-01-01T00:00:00Z"}));
        }
    }

    #[test]
    fn new_instances_get_the_recommendation_with_limits_in_proportion() {
        let mut w = world("Initial");
        step(&mut w);
        let reqs = requests(&w);
        assert_eq!(reqs.len(), 2);
        let mib128 = (128u64 << 20).to_string();
        for r in reqs {
            assert_eq!(r, ("300m".to_string(), mib128.clone(), "600m".to_string()));
        }
    }

    #[test]
    fn off_leaves_requests_alone() {
        let mut w = world("Off");
        step(&mut w);
        assert!(requests(&w).iter().all(|r| r.0 == "100m"));
    }

    #[test]
    fn auto_evicts_one_out_of_bounds_instance_at_a_time_while_all_are_ready() {
        let mut w = world("Off");
        step(&mut w); // instances made with the template's 100m
        ready_all(&mut w);
        w.vpas = vec![vpa("Initial")];
        let d = plan_all(&w);
        assert!(
            !d.commands
                .iter()
                .any(|c| matches!(c, Command::Delete { .. })),
            "Initial never evicts"
        );
        w.vpas = vec![vpa("Auto")];
        let d = plan_all(&w);
        let deletes = d
            .commands
            .iter()
            .filter(|c| matches!(c, Command::Delete { .. }))
            .count();
        assert_eq!(deletes, 1, "one at a time");
        let e = d
            .events
            .iter()
            .find(|e| e.reason == "EvictedByVPA")
            .unwrap();
        assert!(
            e.message
                .contains("requests 100 cpu outside the recommended 250..500"),
            "{e:?}"
        );
        // One instance not ready: no eviction.
        w.instances[1].status = Some(json!({"phase": "Running", "ready": false, "restarts": 0}));
        let d = plan_all(&w);
        assert!(!d
            .commands
            .iter()
            .any(|c| matches!(c, Command::Delete { .. })));
        // The evicted one comes back with the recommendation and is then left alone.
        ready_all(&mut w);
        step(&mut w); // evicts one
        step(&mut w); // recreates it, admitted
        ready_all(&mut w);
        let reqs = requests(&w);
        assert!(reqs.iter().any(|r| r.0 == "300m"), "{reqs:?}");
        assert!(reqs.iter().any(|r| r.0 == "100m"), "{reqs:?}");
    }
}
