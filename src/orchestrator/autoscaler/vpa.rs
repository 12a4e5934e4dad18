//! VerticalPodAutoscaler recommendations: the recommender half of Kubernetes' VPA, as pure
//! functions of the usage history the leader's metric buffer holds.
//!
//! As Kubernetes' recommender (`pkg/recommender/logic`): the target is the 90th
//! percentile of cpu samples and of memory peaks, the lower bound the 50th, the upper
//! bound the 95th; all get a 15% safety margin; the bounds are widened by the confidence
//! in the history (`upper x (1 + 1/days)`, `lower x (1 + 0.001/days)^-2`, days = the
//! history's length, or its samples at one a minute if fewer); each is at least the pod
//! minimum (25m cpu, 250Mi memory, split over the containers); then
//! `minAllowed`/`maxAllowed` of the container policy cap them (`uncappedTarget` keeps the
//! target before). Differences, documented: the history is the leader's buffer (one hour,
//! live instances only, not Kubernetes' eight days of decaying histograms), samples weigh
//! the same, a memory peak is each instance's maximum over the buffer, and usage is per
//! instance, split evenly over its containers. Applying them (Initial: at creation; Auto and
//! Recreate: also by evicting instances outside the bounds) is `controllers::vpa`.

use crate::model::autoscaling::VpaContainerPolicy;
use crate::model::VpaSpec;

pub const TARGET_PERCENTILE: f64 = 0.9;
pub const LOWER_PERCENTILE: f64 = 0.5;
pub const UPPER_PERCENTILE: f64 = 0.95;
pub const SAFETY_MARGIN: f64 = 0.15;
pub const POD_MIN_CPU_MILLIS: f64 = 25.0;
pub const POD_MIN_MEMORY_BYTES: f64 = 250.0 * 1024.0 * 1024.0;
const DAY_MS: f64 = 86_400_000.0;

/// The target's usage history: cpu samples (millicores, every instance) and memory peaks
/// (bytes, one per instance), over `span_ms` with `samples` points in all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageHistory {
    pub cpu_millis: Vec<f64>,
    pub memory_peaks: Vec<f64>,
    pub span_ms: u64,
    pub samples: usize,
}

/// One resource's recommendation (millicores or bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub lower: u64,
    pub target: u64,
    pub upper: u64,
    pub uncapped_target: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecommendation {
    pub container: String,
    pub cpu: Option<Estimate>,
    pub memory: Option<Estimate>,
}

/// Nearest-rank percentile of unsorted values.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Kubernetes' `getConfidence`: days of history, or of samples at one a minute.
fn confidence(h: &UsageHistory) -> f64 {
    let days = h.span_ms as f64 / DAY_MS;
    let by_samples = h.samples as f64 / (60.0 * 24.0);
    days.min(by_samples)
}

/// (lower, target, upper) before the pod minimum and the policy.
fn bounds(values: &[f64], conf: f64) -> Option<(f64, f64, f64)> {
    let margin = 1.0 + SAFETY_MARGIN;
    let target = percentile(values, TARGET_PERCENTILE)? * margin;
    let lower = percentile(values, LOWER_PERCENTILE)? * margin;
    let upper = percentile(values, UPPER_PERCENTILE)? * margin;
    // With no history at all the upper bound is unbounded: f64::INFINITY saturates.
    let upper = upper * (1.0 + 1.0 / conf);
    let lower = lower * (1.0 + 0.001 / conf).powf(-2.0);
    Some((lower, target, upper))
}

/// The container policy that applies: its own name, else "*".
fn policy<'a>(spec: &'a VpaSpec, container: &str) -> Option<&'a VpaContainerPolicy> {
    let all = spec
        .resource_policy
        .as_ref()
        .and_then(|r| r.container_policies.as_deref())
        .unwrap_or_default();
    all.iter()
        .find(|p| p.container_name == container)
        .or_else(|| all.iter().find(|p| p.container_name == "*"))
}

fn estimate(
    values: &[f64],
    conf: f64,
    floor: f64,
    min: Option<u64>,
    max: Option<u64>,
) -> Option<Estimate> {
    let (lower, target, upper) = bounds(values, conf)?;
    let cap = |v: f64| {
        let v = v.max(floor).min(u64::MAX as f64).round() as u64;
        v.max(min.unwrap_or(0)).min(max.unwrap_or(u64::MAX))
    };
    Some(Estimate {
        lower: cap(lower),
        target: cap(target),
        upper: cap(upper),
        uncapped_target: target.max(floor).round() as u64,
    })
}

/// Recommendations for each of `containers` from the pod-level history.
pub fn recommend(
    spec: &VpaSpec,
    containers: &[String],
    h: &UsageHistory,
) -> Vec<ContainerRecommendation> {
    let n = containers.len().max(1) as f64;
    let conf = confidence(h);
    let per = |v: &[f64]| v.iter().map(|x| x / n).collect::<Vec<f64>>();
    let (cpu, memory) = (per(&h.cpu_millis), per(&h.memory_peaks));
    containers
        .iter()
        .filter_map(|c| {
            let p = policy(spec, c);
            if p.and_then(|p| p.mode.as_deref()) == Some("Off") {
                return None;
            }
            let controls = |r: &str| {
                p.and_then(|p| p.controlled_resources.as_ref())
                    .is_none_or(|rs| rs.iter().any(|x| x == r))
            };
            let min = p.and_then(|p| p.min_allowed.clone()).unwrap_or_default();
            let max = p.and_then(|p| p.max_allowed.clone()).unwrap_or_default();
            Some(ContainerRecommendation {
                container: c.clone(),
                cpu: controls("cpu")
                    .then(|| {
                        estimate(
                            &cpu,
                            conf,
                            POD_MIN_CPU_MILLIS / n,
                            min.cpu.as_ref().map(|q| q.millis()),
                            max.cpu.as_ref().map(|q| q.millis()),
                        )
                    })
                    .flatten(),
                memory: controls("memory")
                    .then(|| {
                        estimate(
                            &memory,
                            conf,
                            POD_MIN_MEMORY_BYTES / n,
                            min.memory.as_ref().map(|q| q.bytes()),
                            max.memory.as_ref().map(|q| q.bytes()),
                        )
                    })
                    .flatten(),
            })
        })
        .collect()
}

/// The VPA's status (Kubernetes' shape): `recommendation.containerRecommendations` and a
/// RecommendationProvided condition that keeps its transition time while unchanged.
pub fn status(
    old: Option<&serde_json::Value>,
    recs: &[ContainerRecommendation],
    why_not: Option<&str>,
    now: &str,
) -> serde_json::Value {
    use crate::model::status::{self as st, Amounts, Condition, VpaRecommendation, VpaStatus};
    let amounts = |pick: fn(&Estimate) -> u64, r: &ContainerRecommendation| {
        let mut m = Amounts::new();
        if let Some(c) = &r.cpu {
            m.insert("cpu".into(), format_cpu(pick(c)));
        }
        if let Some(mem) = &r.memory {
            m.insert("memory".into(), format_memory(pick(mem)));
        }
        m
    };
    let containers: Vec<st::ContainerRecommendation> = recs
        .iter()
        .filter(|r| r.cpu.is_some() || r.memory.is_some())
        .map(|r| st::ContainerRecommendation {
            container_name: r.container.clone(),
            lower_bound: amounts(|e| e.lower, r),
            target: amounts(|e| e.target, r),
            upper_bound: amounts(|e| e.upper, r),
            uncapped_target: amounts(|e| e.uncapped_target, r),
        })
        .collect();
    let provided = why_not.is_none() && !containers.is_empty();
    let (state, reason, message) = match why_not {
        _ if provided => (
            true,
            "RecommendationProvided",
            "from the usage history of the target's instances",
        ),
        Some(w) => (false, "NoRecommendation", w),
        None => (
            false,
            "NoUsageHistory",
            "no usage samples of the target's instances yet",
        ),
    };
    let old: VpaStatus = st::of(old);
    let condition = Condition::since(
        &old.conditions,
        "RecommendationProvided",
        state,
        reason,
        message,
        now,
    );
    let s = VpaStatus {
        conditions: vec![condition],
        recommendation: provided.then_some(VpaRecommendation {
            container_recommendations: containers,
        }),
    };
    serde_json::to_value(s).expect("statuses serialize")
}

/// Memory as users write it: whole MiB ("300Mi", rounded up), cpu as millicores ("250m").
pub fn format_memory(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

pub fn format_cpu(millis: u64) -> String {
    format!("{millis}m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_manifests, Spec};

    fn spec(policy: &str) -> VpaSpec {
        let doc = format!("apiVersion: autoscaling.k8s.io/v1\nkind: VerticalPodAutoscaler\nmetadata: {{name: v}}\nspec:\n  targetRef: {{kind: Deployment, name: web}}\n{policy}");
        match parse_manifests(&doc).unwrap().remove(0).spec {
            Some(Spec::VerticalPodAutoscaler(s)) => s,
            _ => unreachable!(),
        }
    }

    fn history(cpu: &[f64], mem: &[f64], days: f64) -> UsageHistory {
        UsageHistory {
            cpu_millis: cpu.to_vec(),
            memory_peaks: mem.to_vec(),
            span_ms: (days * DAY_MS) as u64,
            samples: 1_000_000,
        }
    }

    const MI: f64 = 1024.0 * 1024.0;

    #[test]
    fn percentiles_margin_and_confidence_as_kubernetes() {
        // cpu 10, 20, ... 1000 m: p90 = 900, p50 = 500, p95 = 950; a 15% margin; one day
        // of history doubles the upper bound and leaves the lower at x(1.001)^-2.
        let cpu: Vec<f64> = (1..=100).map(|i| f64::from(i) * 10.0).collect();
        let r = recommend(&spec(""), &["c".into()], &history(&cpu, &[400.0 * MI], 1.0));
        let c = r[0].cpu.unwrap();
        assert_eq!(c.target, 1035); // 900 x 1.15
        assert_eq!(c.upper, 2185); // 950 x 1.15 x 2
        assert_eq!(c.lower, 574); // 500 x 1.15 / 1.002001
                                  // Low usage is raised to the pod minimum: 25m, 250Mi.
        let r = recommend(&spec(""), &["c".into()], &history(&[1.0; 10], &[MI], 7.0));
        assert_eq!(r[0].cpu.unwrap().target, 25);
        assert_eq!(r[0].memory.unwrap().target, 250 * (1 << 20));
        // Memory: the 90th percentile of the peaks, plus the margin.
        let r = recommend(
            &spec(""),
            &["c".into()],
            &history(&[100.0], &[1000.0 * MI; 3], 7.0),
        );
        assert_eq!(format_memory(r[0].memory.unwrap().target), "1150Mi");
        // Twelve hours: upper x3; an hour: lower x0.95.
        let r = recommend(&spec(""), &["c".into()], &history(&[100.0], &[MI], 0.5));
        assert_eq!(r[0].cpu.unwrap().upper, 345);
        let r = recommend(
            &spec(""),
            &["c".into()],
            &history(&[100.0], &[MI], 1.0 / 24.0),
        );
        assert_eq!(r[0].cpu.unwrap().lower, 110);
        // No history at all: nothing recommended.
        let r = recommend(&spec(""), &["c".into()], &UsageHistory::default());
        assert_eq!((r[0].cpu, r[0].memory), (None, None));
    }

    #[test]
    fn status_in_kubernetes_shape() {
        let h = history(&[100.0], &[100.0 * MI], 1.0);
        let recs = recommend(&spec(""), &["app".into()], &h);
        let s = status(None, &recs, None, "T1");
        let c = &s["recommendation"]["containerRecommendations"][0];
        assert_eq!(c["containerName"], "app");
        assert_eq!(c["target"]["cpu"], "115m");
        assert_eq!(c["target"]["memory"], "250Mi");
        assert_eq!(c["upperBound"]["cpu"], "230m");
        assert_eq!(s["conditions"][0]["status"], "True");
        // Unchanged condition keeps its time; a missing target says so, without numbers.
        assert_eq!(
            status(Some(&s), &recs, None, "T2")["conditions"][0]["lastTransitionTime"],
            "T1"
        );
        let none = status(
            Some(&s),
            &[],
            Some("the target Deployment/web does not exist"),
            "T3",
        );
        assert!(none.get("recommendation").is_none());
        assert_eq!(none["conditions"][0]["reason"], "NoRecommendation");
        assert_eq!(none["conditions"][0]["lastTransitionTime"], "T3");
    }

    #[test]
    fn policies_cap_and_select() {
        let s = spec("  resourcePolicy:\n    containerPolicies:\n    - containerName: \"*\"\n      minAllowed: {cpu: 100m}\n      maxAllowed: {cpu: 200m, memory: 300Mi}\n    - containerName: sidecar\n      mode: \"Off\"\n    - containerName: cpu-only\n      controlledResources: [cpu]\n");
        let h = history(&[1000.0; 10], &[1000.0 * MI], 7.0);
        let r = recommend(&s, &["app".into(), "sidecar".into(), "cpu-only".into()], &h);
        assert_eq!(r.len(), 2, "sidecar's mode is Off");
        // Split over three containers: 333m x 1.15 = 383m uncapped, capped to 200m.
        let cpu = r[0].cpu.unwrap();
        assert_eq!((cpu.target, cpu.uncapped_target), (200, 383));
        assert_eq!(r[0].memory.unwrap().target, 300 * (1 << 20));
        assert_eq!(r[1].container, "cpu-only");
        assert!(r[1].memory.is_none() && r[1].cpu.is_some());
        // The floor: the lower bound is at least minAllowed.
        let h = history(&[10.0; 10], &[MI], 7.0);
        assert_eq!(
            recommend(&s, &["app".into()], &h)[0].cpu.unwrap().lower,
            100
        );
    }
}
