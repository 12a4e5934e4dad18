//! The HPA controller's glue, pure: from stored objects and the leader's metric buffer to
//! the algorithm's inputs ([`pods`], [`observe`]), and from its [`Decision`] to the HPA's
//! status (Kubernetes' autoscaling/v2 shape, each current metric beside its target) and
//! the event that records the decision with its inputs. The loop in `mod.rs` does the
//! writes.

use serde_json::{json, Map, Value};

use super::hpa::{
    format_milli, Condition, Decision, Metric, MetricError, Observed, Pod, PodMetrics, PodState,
    ResourceName,
};
use super::metrics::{MetricName, MetricStore};
use crate::model::instance::Phase;
use crate::model::status::{Condition as StatusCondition, HpaStatus};
use crate::model::{HpaSpec, Resource, Spec};
use crate::orchestrator::controllers::{parse_ms, InstanceView};

pub const SOURCE: &str = "horizontal-pod-autoscaler";

/// The HPA's scale target among `workloads` (same namespace, kind and name).
pub fn target<'a>(
    hpa: &Resource,
    spec: &HpaSpec,
    workloads: &'a [Resource],
) -> Option<&'a Resource> {
    let ns = hpa.metadata.namespace.as_deref();
    workloads.iter().find(|w| {
        w.kind.as_str() == spec.scale_target_ref.kind
            && w.metadata.name == spec.scale_target_ref.name
            && w.metadata.namespace.as_deref() == ns
    })
}

/// The target's pod template (Deployment or StatefulSet).
pub fn template(target: &Resource) -> Option<&crate::model::PodTemplate> {
    match &target.spec {
        Some(Spec::Deployment(d)) => Some(&d.template),
        Some(Spec::StatefulSet(s)) => Some(&s.template),
        _ => None,
    }
}

/// Instances as the algorithm groups them.
pub fn pods(instances: &[InstanceView], store: &MetricStore) -> Vec<Pod> {
    instances
        .iter()
        .map(|i| {
            let status = &i.status;
            let state = match status.phase {
                Phase::Running | Phase::CrashLoopBackOff => PodState::Running,
                Phase::Pending => PodState::Pending,
                Phase::Failed | Phase::Succeeded | Phase::Terminating => PodState::Ignored,
            };
            let ready = i.ready();
            let ready_changed_ms = if ready {
                Some(parse_ms(&status.ready_since)).filter(|t| *t > 0)
            } else {
                store.unready_since(i.namespace(), i.name())
            };
            let request = |pick: fn(&crate::model::workload::ResourceList) -> Option<u64>| {
                i.spec.pod.containers.iter().try_fold(0i64, |sum, c| {
                    let r = c.resources.clone().unwrap_or_default();
                    let v = r
                        .requests
                        .as_ref()
                        .and_then(pick)
                        .or_else(|| r.limits.as_ref().and_then(pick))?;
                    Some(sum + v as i64)
                })
            };
            Pod {
                name: i.name().to_string(),
                state,
                ready,
                started_ms: Some(parse_ms(&status.started_at)).filter(|t| *t > 0),
                ready_changed_ms,
                cpu_request_milli: request(|l| l.cpu.as_ref().map(|q| q.millis())),
                memory_request_milli: request(|l| l.memory.as_ref().map(|q| q.bytes() * 1000)),
            }
        })
        .collect()
}

/// The buffer's name for a metric's samples.
pub fn metric_name(m: &Metric) -> Option<MetricName> {
    match m {
        Metric::ResourceUtilization { resource, .. } | Metric::ResourceAverage { resource, .. } => {
            Some(match resource {
                ResourceName::Cpu => MetricName::Cpu,
                ResourceName::Memory => MetricName::Memory,
            })
        }
        Metric::PodsAverage { name, .. } => Some(MetricName::Custom(name.clone())),
        Metric::Unsupported { .. } => None,
    }
}

/// How fresh and how wide samples must be.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub window_ms: u64,
    pub max_age_ms: u64,
    pub now_ms: u64,
}

/// Each metric's samples for `instances`, from the buffer.
pub fn observe(
    metrics: &[Metric],
    instances: &[InstanceView],
    store: &MetricStore,
    w: Windows,
    scrape_errors: &std::collections::BTreeMap<String, String>,
) -> Observed {
    metrics
        .iter()
        .map(|m| {
            let Some(name) = metric_name(m) else {
                return Err(format!("{} metrics are not collected", m.name()));
            };
            let samples: PodMetrics = instances
                .iter()
                .filter_map(|i| {
                    let key = (i.namespace(), i.name(), i.resource.metadata.uid.as_str());
                    let s = store.sample(key, &name, w.window_ms, w.max_age_ms, w.now_ms)?;
                    Some((i.name().to_string(), s))
                })
                .collect();
            match (&name, scrape_errors.get(m.name())) {
                (MetricName::Custom(_), Some(e)) if samples.is_empty() => Err(e.clone()),
                _ => Ok(samples),
            }
        })
        .collect()
}

fn target_json(spec: &HpaSpec, i: usize) -> Value {
    let Some(m) = spec.metrics.as_ref().and_then(|m| m.get(i)) else {
        let percent = spec.target_cpu_utilization_percentage.unwrap_or(80);
        return json!({"type": "Utilization", "averageUtilization": percent});
    };
    let target = m
        .resource
        .as_ref()
        .map(|r| &r.target)
        .or(m.pods.as_ref().map(|p| &p.target));
    target
        .map(|t| serde_json::to_value(t).expect("JSON"))
        .unwrap_or(Value::Null)
}

/// One entry of `status.currentMetrics`: Kubernetes' shape plus the `target`.
fn metric_json(
    spec: &HpaSpec,
    i: usize,
    m: &Metric,
    result: &Result<super::hpa::Proposal, MetricError>,
) -> Value {
    let mut current = Map::new();
    if let Ok(p) = result {
        if let Some(u) = p.utilization {
            current.insert("averageUtilization".into(), json!(u));
        }
        current.insert("averageValue".into(), json!(format_milli(p.average_milli)));
    }
    let mut body = Map::new();
    if !current.is_empty() {
        body.insert("current".into(), Value::Object(current));
    }
    body.insert("target".into(), target_json(spec, i));
    if let Err(e) = result {
        body.insert("error".into(), json!(e.to_string()));
    }
    match m {
        Metric::PodsAverage { name, .. } => {
            body.insert("metric".into(), json!({"name": name}));
            json!({"type": "Pods", "pods": body})
        }
        Metric::ResourceUtilization { resource, .. } | Metric::ResourceAverage { resource, .. } => {
            body.insert("name".into(), json!(resource.as_str()));
            json!({"type": "Resource", "resource": body})
        }
        Metric::Unsupported { kind } => json!({"type": kind, "error": body.get("error")}),
    }
}

/// What the last write of the scale did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scaled {
    /// Nothing to write.
    No,
    Yes,
    /// The store refused (a quota, a policy) or the write failed: why.
    Refused(String),
}

/// The HPA's new status; conditions keep their transition time while unchanged.
pub fn status(hpa: &Resource, spec: &HpaSpec, d: &Decision, scaled: &Scaled, now: &str) -> Value {
    let old: HpaStatus = hpa.status_of();
    let mut conditions: Vec<Condition> = d.conditions.clone();
    if let Scaled::Refused(why) = scaled {
        conditions.retain(|c| c.kind != "AbleToScale");
        conditions.insert(
            0,
            Condition {
                kind: "AbleToScale",
                status: false,
                reason: "FailedUpdateScale".into(),
                message: format!("the HPA controller was unable to update the target scale: {why}"),
            },
        );
    } else if *scaled == Scaled::Yes {
        conditions.retain(|c| c.kind != "AbleToScale");
        conditions.insert(
            0,
            Condition {
                kind: "AbleToScale",
                status: true,
                reason: "SucceededRescale".into(),
                message: format!(
                    "the HPA controller was able to update the target scale to {}",
                    d.desired
                ),
            },
        );
    }
    let conditions: Vec<StatusCondition> = conditions
        .iter()
        .map(|c| {
            StatusCondition::since(
                &old.conditions,
                c.kind,
                c.status,
                &c.reason,
                &c.message,
                now,
            )
        })
        .collect();
    let metrics: Vec<Value> = d
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| metric_json(spec, i, &m.metric, &m.result))
        .collect();
    let (current, desired) = match scaled {
        Scaled::Refused(_) => (d.current, d.current),
        _ => (d.current, d.desired),
    };
    let last_scale_time = match scaled {
        Scaled::Yes => Some(now.to_string()),
        _ => old.last_scale_time,
    };
    let s = HpaStatus {
        observed_generation: hpa.metadata.generation,
        current_replicas: current,
        desired_replicas: desired,
        current_metrics: metrics,
        conditions,
        last_scale_time,
    };
    serde_json::to_value(s).expect("statuses serialize")
}

/// The decision with its inputs, for the event: "New size: 5; reason: cpu resource
/// utilization (percentage of request) above target; cpu 180%/50% (3 ready) ...".
pub fn event_message(d: &Decision) -> String {
    let inputs: Vec<String> = d
        .metrics
        .iter()
        .map(|m| {
            let target = m.metric.to_string();
            let (name, want) = target.split_once(": ").unwrap_or((&target, ""));
            match &m.result {
                Ok(p) => {
                    let cur = match p.utilization {
                        Some(u) => format!("{u}%"),
                        None => format_milli(p.average_milli),
                    };
                    format!(
                        "{name} {cur}/{want} ({} ready, {} unready, {} missing -> {})",
                        p.ready, p.unready, p.missing, p.replicas
                    )
                }
                Err(e) => format!("{name} <unknown>/{want} ({e})"),
            }
        })
        .collect();
    let limited = d
        .conditions
        .iter()
        .find(|c| c.kind == "ScalingLimited" && c.status)
        .map(|c| format!(", limited: {}", c.reason))
        .unwrap_or_default();
    let proposed = d
        .proposed
        .map(|p| format!(", proposed {p}"))
        .unwrap_or_default();
    format!(
        "New size: {}; reason: {}; {} -> {}{proposed}{limited}; metrics: {}",
        d.desired,
        d.reason,
        d.current,
        d.desired,
        if inputs.is_empty() {
            "none".to_string()
        } else {
            inputs.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_manifests;
    use crate::orchestrator::autoscaler::hpa::{decide, History, Timing};
    use crate::orchestrator::autoscaler::metrics::IngestStatus;
    use crate::orchestrator::controllers::InstanceView;

    fn objects(yaml: &str) -> Vec<Resource> {
        parse_manifests(yaml)
            .unwrap()
            .into_iter()
            .map(|mut r| {
                r.metadata.namespace = Some("default".into());
                r.metadata.uid = format!("uid-{}", r.metadata.name);
                r
            })
            .collect()
    }

    #[test]
    fn from_stored_objects_to_status_and_event() {
        let hpa = &objects("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {kind: Deployment, name: web}\n  maxReplicas: 10\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n  - type: Pods\n    pods: {metric: {name: http_requests_per_second}, target: {type: AverageValue, averageValue: 10}}\n")[0];
        let Some(Spec::HorizontalPodAutoscaler(spec)) = &hpa.spec else {
            unreachable!()
        };
        let deploy = objects("apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: toolbox, resources: {requests: {cpu: 200m}}}]\n");
        assert!(target(hpa, spec, &deploy).is_some());
        let now = 1_000_000_000_000u64;
        let at = |ms: u64| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        };
        let mut store = MetricStore::default();
        let mut instances = Vec::new();
        for i in 0..2 {
            let mut inst = objects(&format!("apiVersion: omnicloud.io/v1\nkind: Instance\nmetadata: {{name: web-{i}}}\nspec:\n  index: {i}\n  pod:\n    containers: [{{name: c, image: toolbox, resources: {{requests: {{cpu: 200m}}}}}}]\n")).remove(0);
            inst.status = Some(json!({"phase": "Running", "ready": true, "restarts": 0,
                "startedAt": at(now - 600_000), "readySince": at(now - 590_000),
                "usage": {"cpuMillis": 300, "memoryBytes": 1000, "timestamp": at(now - 1000), "windowMs": 5000}}));
            let status: IngestStatus =
                serde_json::from_value(inst.status.clone().unwrap()).unwrap();
            store.ingest(
                ("default", &format!("web-{i}"), &inst.metadata.uid),
                &status,
                now,
            );
            instances.push(inst);
        }
        let views: Vec<InstanceView> = instances.iter().filter_map(InstanceView::of).collect();
        let ps = pods(&views, &store);
        assert_eq!(ps[0].cpu_request_milli, Some(200));
        assert_eq!(ps[0].memory_request_milli, None);
        assert_eq!(ps[1].state, PodState::Running);
        let w = Windows {
            window_ms: 10_000,
            max_age_ms: 30_000,
            now_ms: now,
        };
        let metrics = super::super::hpa::metrics_of(spec);
        let mut errors = std::collections::BTreeMap::new();
        errors.insert(
            "http_requests_per_second".to_string(),
            "connection refused".to_string(),
        );
        let observed = observe(&metrics, &views, &store, w, &errors);
        assert_eq!(observed[0].as_ref().unwrap().len(), 2);
        assert_eq!(observed[1], Err("connection refused".into()));
        // 300m of 200m is 150% of 50%: 2 -> 6 by cpu; the scrape failed but cpu scales up.
        let d = decide(
            spec,
            2,
            &ps,
            &observed,
            &mut History::default(),
            Timing::at(now),
        );
        assert_eq!(d.desired, 6);
        let st = status(hpa, spec, &d, &Scaled::Yes, "T1");
        assert_eq!(st["desiredReplicas"], 6);
        assert_eq!(st["lastScaleTime"], "T1");
        let cpu = &st["currentMetrics"][0]["resource"];
        assert_eq!(cpu["current"]["averageUtilization"], 150);
        assert_eq!(cpu["current"]["averageValue"], "300m");
        assert_eq!(cpu["target"]["averageUtilization"], 50);
        assert_eq!(
            st["currentMetrics"][1]["pods"]["error"],
            "connection refused"
        );
        assert_eq!(st["conditions"][0]["reason"], "SucceededRescale");
        let msg = event_message(&d);
        assert!(msg.starts_with("New size: 6; reason: cpu resource utilization (percentage of request) above target; 2 -> 6"), "{msg}");
        assert!(
            msg.contains("cpu 150%/50% (2 ready, 0 unready, 0 missing -> 6)"),
            "{msg}"
        );
        assert!(
            msg.contains("http_requests_per_second <unknown>/10 (connection refused)"),
            "{msg}"
        );
        // A refused scale keeps the count, says why, and keeps the old lastScaleTime;
        // unchanged conditions keep their transition time.
        let mut hpa2 = hpa.clone();
        hpa2.status = Some(st);
        let st2 = status(
            &hpa2,
            spec,
            &d,
            &Scaled::Refused("exceeded quota".into()),
            "T2",
        );
        assert_eq!(
            (
                st2["desiredReplicas"].as_i64(),
                st2["lastScaleTime"].as_str()
            ),
            (Some(2), Some("T1"))
        );
        assert_eq!(st2["conditions"][0]["reason"], "FailedUpdateScale");
        assert!(st2["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded quota"));
        let active = st2["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ScalingActive")
            .unwrap();
        assert_eq!(active["lastTransitionTime"], "T1");
    }
}
