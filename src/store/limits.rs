//! Limits the state machine enforces when a Deployment or StatefulSet is written or
//! scaled, inside the same deterministic apply (so two concurrent writes cannot both slip
//! under a limit): every ResourceQuota of the namespace (`pods`, `requests.cpu`/`cpu`,
//! `requests.memory`/`memory`, `limits.cpu`, `limits.memory`; other keys are not counted
//! yet) and every ClusterScalingPolicy's `applicationLimits.maxReplicasPerDeployment`.
//! A write is refused only when it raises usage past a limit, so shrinking always works.

use serde_json::Value;

use super::types::{ObjectKey, Rejection};
use crate::model::{Kind, Resource, Spec};

/// Quota keys naming a measure, its value, and how to print an amount of it.
type Measure = (&'static [&'static str], u64, fn(u64) -> String);

/// What one workload object holds: pods, cpu and memory requests, cpu and memory limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub pods: u64,
    pub requests_cpu: u64,
    pub requests_memory: u64,
    pub limits_cpu: u64,
    pub limits_memory: u64,
}

impl Usage {
    pub fn of(object: &Value) -> Usage {
        let Ok(r) = Resource::from_stored(object.clone()) else {
            return Usage::default();
        };
        let (replicas, pod) = match &r.spec {
            Some(Spec::Deployment(s)) => (s.replicas(), &s.template.spec),
            Some(Spec::StatefulSet(s)) => (s.replicas(), &s.template.spec),
            _ => return Usage::default(),
        };
        // Saturating: a count near i64::MAX must neither panic nor wrap under a quota.
        let n = replicas.max(0) as u64;
        let (rc, rm) = pod.requests();
        let (lc, lm) = pod.limits();
        Usage {
            pods: n,
            requests_cpu: n.saturating_mul(rc),
            requests_memory: n.saturating_mul(rm),
            limits_cpu: n.saturating_mul(lc),
            limits_memory: n.saturating_mul(lm),
        }
    }

    fn add(self, o: Usage) -> Usage {
        Usage {
            pods: self.pods.saturating_add(o.pods),
            requests_cpu: self.requests_cpu.saturating_add(o.requests_cpu),
            requests_memory: self.requests_memory.saturating_add(o.requests_memory),
            limits_cpu: self.limits_cpu.saturating_add(o.limits_cpu),
            limits_memory: self.limits_memory.saturating_add(o.limits_memory),
        }
    }

    /// (quota keys, used, how to print an amount).
    fn measured(&self) -> [Measure; 5] {
        fn count(n: u64) -> String {
            n.to_string()
        }
        fn cpu(m: u64) -> String {
            format!("{m}m")
        }
        fn mem(b: u64) -> String {
            format!("{}Mi", b / (1 << 20))
        }
        [
            (&["pods", "count/pods"], self.pods, count),
            (&["requests.cpu", "cpu"], self.requests_cpu, cpu),
            (&["requests.memory", "memory"], self.requests_memory, mem),
            (&["limits.cpu"], self.limits_cpu, cpu),
            (&["limits.memory"], self.limits_memory, mem),
        ]
    }
}

/// Checks writing `new` over `old` at `key`, given the namespace's other workloads
/// (`others`, without `key`), its quotas and the cluster's scaling policies.
pub fn check(
    key: &ObjectKey,
    old: Option<&Value>,
    new: &Value,
    others: &[Value],
    quotas: &[Value],
    policies: &[Value],
) -> Result<(), Rejection> {
    if !matches!(key.kind, Kind::Deployment | Kind::StatefulSet) {
        return Ok(());
    }
    let before = old.map(Usage::of).unwrap_or_default();
    let after = Usage::of(new);
    if key.kind == Kind::Deployment && after.pods > before.pods {
        for p in policies {
            let max = p["spec"]["applicationLimits"]["maxReplicasPerDeployment"].as_u64();
            if let Some(max) = max.filter(|m| after.pods > *m) {
                return Err(Rejection::Forbidden {
                    field: "spec.replicas".into(),
                    message: format!(
                        "{} replicas exceed ClusterScalingPolicy \"{}\": maxReplicasPerDeployment is {max}",
                        after.pods,
                        p["metadata"]["name"].as_str().unwrap_or("?")
                    ),
                });
            }
        }
    }
    let rest = others
        .iter()
        .map(Usage::of)
        .fold(Usage::default(), Usage::add);
    let (total_before, total_after) = (rest.add(before), rest.add(after));
    for q in quotas {
        let Ok(quota) = Resource::from_stored(q.clone()) else {
            continue;
        };
        let Some(Spec::ResourceQuota(spec)) = &quota.spec else {
            continue;
        };
        let hard = spec.hard.clone().unwrap_or_default();
        let was = total_before.measured();
        for (i, (keys, used, show)) in total_after.measured().into_iter().enumerate() {
            let Some((name, limit)) = keys.iter().find_map(|k| Some((*k, hard.get(*k)?))) else {
                continue;
            };
            // Quantities count in thousandths; memory limits are bytes, cpu millicores.
            let limit = match i {
                1 | 3 => limit.millis(),
                _ => limit.millis() / 1000,
            };
            if used > limit && used > was[i].1 {
                return Err(Rejection::Forbidden {
                    field: "spec.replicas".into(),
                    message: format!(
                        "exceeded quota \"{}\" in namespace {}: {name} would be {} of {} allowed",
                        quota.metadata.name,
                        key.namespace,
                        show(used),
                        show(limit)
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(replicas: u64) -> Value {
        json!({"apiVersion": "omnicloud.io/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "team-a"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "w"}},
                        "template": {"metadata": {"labels": {"app": "w"}},
                                     "spec": {"containers": [{"name": "c", "image": "x",
                                       "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}}}})
    }

    fn quota(hard: Value) -> Value {
        json!({"apiVersion": "omnicloud.io/v1", "kind": "ResourceQuota",
               "metadata": {"name": "team-quota", "namespace": "team-a"}, "spec": {"hard": hard}})
    }

    #[test]
    fn quotas_refuse_growth_past_the_limit_and_name_it() {
        let key = ObjectKey::new(Kind::Deployment, "team-a", "web");
        let q = [quota(json!({"requests.cpu": "2", "pods": "10"}))];
        assert!(
            check(&key, None, &deploy(4), &[], &q, &[]).is_ok(),
            "4 x 500m = 2 cores"
        );
        let e = check(&key, Some(&deploy(4)), &deploy(5), &[], &q, &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("team-quota") && text.contains("requests.cpu"),
            "{text}"
        );
        assert!(text.contains("2500m of 2000m"), "{text}");
        // Others in the namespace count too; shrinking is always allowed.
        let e = check(&key, None, &deploy(1), &[deploy(4)], &q, &[]).unwrap_err();
        assert!(e.to_string().contains("requests.cpu"));
        assert!(check(&key, Some(&deploy(9)), &deploy(8), &[], &q, &[]).is_ok());
        let mem = [quota(json!({"requests.memory": "3Gi"}))];
        let e = check(&key, None, &deploy(4), &[], &mem, &[]).unwrap_err();
        assert!(e.to_string().contains("4096Mi of 3072Mi"), "{e}");
    }

    /// A count near i64::MAX times a request must neither panic the apply nor wrap to a
    /// small number that slips under the quota (issue 13.3's relative).
    #[test]
    fn huge_counts_saturate_and_are_refused_by_the_quota() {
        let key = ObjectKey::new(Kind::Deployment, "team-a", "web");
        let q = [quota(json!({"requests.memory": "3Gi"}))];
        for n in [1u64 << 31, 1 << 34, i64::MAX as u64] {
            let e = check(&key, None, &deploy(n), &[], &q, &[]).unwrap_err();
            assert!(e.to_string().contains("team-quota"), "{e}");
        }
    }

    #[test]
    fn scaling_policy_caps_replicas_per_deployment() {
        let key = ObjectKey::new(Kind::Deployment, "team-a", "web");
        let p = [json!({"metadata": {"name": "limits"},
                        "spec": {"applicationLimits": {"maxReplicasPerDeployment": 50}}})];
        assert!(check(&key, None, &deploy(50), &[], &[], &p).is_ok());
        let e = check(&key, None, &deploy(51), &[], &[], &p).unwrap_err();
        assert!(
            e.to_string().contains("maxReplicasPerDeployment is 50"),
            "{e}"
        );
    }
}
