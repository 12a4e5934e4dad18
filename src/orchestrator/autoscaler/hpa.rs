//! The HorizontalPodAutoscaler algorithm, as Kubernetes' `replica_calculator.go` and
//! `horizontal.go` define it, as pure functions of the spec, the target's instances, their
//! metric samples, a clock and the HPA's recommendation/scale history. No I/O: the
//! controller (`horizontal`) gathers the inputs and writes the outcome; `omnicloud
//! autoscaling simulate` runs the same code on made-up samples.
//!
//! 1. Per metric: `ratio = current / target`; within the tolerance (default 0.1 each way)
//!    the proposal is the current count, else `ceil(ratio x instances with a sample)`.
//!    Missing samples are conservative: on a scale-up they count as 0 (cpu/memory: 0% of
//!    the request), on a scale-down as the target (Utilization: 100% or the target if
//!    higher); unready instances count as 0 on a scale-up and are left out otherwise; if
//!    the filled-in ratio crosses 1 or lands within the tolerance, nothing changes.
//!    Failed or terminating instances are ignored; pending ones are unready. For cpu,
//!    an instance in its first `cpu_initialization_period` counts only once its sample
//!    was taken a full window after it became ready (startup spikes are no load).
//! 2. Several metrics: the largest proposal. Metrics that cannot be computed are skipped
//!    unless all fail, or the others would scale down (then nothing changes).
//! 3. Outside [min, max] the count is first brought back in range.
//! 4. `behavior` (in `behavior.rs`; Kubernetes' defaults when unset: scale-up no stabilization, max of
//!    +100% and +4 instances per 15 s; scale-down 300 s stabilization, -100% per 15 s):
//!    stabilization takes the lowest recommendation of the scale-up window and the
//!    highest of the scale-down window; then the policies limit the change against the
//!    count at the start of each policy's period (`selectPolicy` Max, Min or Disabled);
//!    then min/max.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::autoscaling::MetricTarget;
use crate::model::HpaSpec;

pub(crate) use super::behavior::{condition, limit_rate, stabilize};
pub use super::behavior::{Behavior, Condition, History, Policy, PolicyKind, Rules, Select};

/// Kubernetes' `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Kubernetes' `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD_MS: u64 = 300_000;
/// Kubernetes' `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceName {
    Cpu,
    Memory,
}

impl ResourceName {
    pub fn parse(s: &str) -> Option<ResourceName> {
        match s {
            "cpu" => Some(ResourceName::Cpu),
            "memory" => Some(ResourceName::Memory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceName::Cpu => "cpu",
            ResourceName::Memory => "memory",
        }
    }
}

/// Where an instance is in its life, as the algorithm groups it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Waiting for a node, an image or its start: unready.
    Pending,
    Running,
    /// Failed, finished or terminating: left out entirely.
    Ignored,
}

/// One instance of the scale target.
#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub name: String,
    pub state: PodState,
    pub ready: bool,
    /// When its container started; None before.
    pub started_ms: Option<u64>,
    /// When its readiness last changed (became ready, or stopped being ready); None when
    /// unknown, which for an unready instance reads as "never was ready".
    pub ready_changed_ms: Option<u64>,
    /// Sum of its containers' requests (limits when a request is unset), in milli-units
    /// (millicores, milli-bytes); None when a container has neither.
    pub cpu_request_milli: Option<i64>,
    pub memory_request_milli: Option<i64>,
}

impl Pod {
    fn request(&self, r: ResourceName) -> Option<i64> {
        match r {
            ResourceName::Cpu => self.cpu_request_milli,
            ResourceName::Memory => self.memory_request_milli,
        }
    }
}

/// A metric value for one instance, in milli-units, averaged over `window_ms` up to
/// `timestamp_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub value_milli: i64,
    pub timestamp_ms: u64,
    pub window_ms: u64,
}

/// Samples of one metric by instance name.
pub type PodMetrics = BTreeMap<String, Sample>;

/// Why a metric gave no proposal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error("the scale target has no instances")]
    NoPods,
    #[error("no samples of {0} for the target's instances (they may be unready)")]
    NoMetrics(String),
    #[error("missing request for {resource} in instance {pod}")]
    MissingRequest { resource: &'static str, pod: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("metric type {0} is not supported (Resource and Pods are)")]
    Unsupported(String),
}

/// The two tolerances of a proposal: no change while `1 - down <= ratio <= 1 + up`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub up: f64,
    pub down: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            up: DEFAULT_TOLERANCE,
            down: DEFAULT_TOLERANCE,
        }
    }
}

impl Tolerance {
    fn within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// The clock and the Kubernetes timing flags the grouping of instances uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub now_ms: u64,
    pub cpu_initialization_period_ms: u64,
    pub initial_readiness_delay_ms: u64,
}

impl Timing {
    pub fn at(now_ms: u64) -> Timing {
        Timing {
            now_ms,
            cpu_initialization_period_ms: CPU_INITIALIZATION_PERIOD_MS,
            initial_readiness_delay_ms: INITIAL_READINESS_DELAY_MS,
        }
    }
}

/// One metric's proposal and the current value it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i64,
    /// Percent of the request (Utilization targets).
    pub utilization: Option<i64>,
    /// Average per instance with a sample, milli-units.
    pub average_milli: i64,
    pub ready: usize,
    pub unready: usize,
    pub missing: usize,
}

struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
}

/// Kubernetes' `groupPods`: ready instances with a sample, unready ones, and ones with no
/// sample; ignored instances are in none.
fn group_pods(
    pods: &[Pod],
    metrics: &PodMetrics,
    resource: Option<ResourceName>,
    t: Timing,
) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: BTreeSet::new(),
        missing: BTreeSet::new(),
    };
    for pod in pods {
        match pod.state {
            PodState::Ignored => continue,
            PodState::Pending => {
                g.unready.insert(pod.name.clone());
                continue;
            }
            PodState::Running => {}
        }
        let Some(sample) = metrics.get(&pod.name) else {
            g.missing.insert(pod.name.clone());
            continue;
        };
        if resource == Some(ResourceName::Cpu) {
            let unready = match pod.started_ms {
                None => true,
                Some(start) if start + t.cpu_initialization_period_ms > t.now_ms => {
                    // Still starting: count it only if ready and sampled a full window
                    // after it became ready.
                    let changed = pod.ready_changed_ms.unwrap_or(u64::MAX);
                    !pod.ready || sample.timestamp_ms < changed.saturating_add(sample.window_ms)
                }
                Some(start) => {
                    // Leave out an unready instance that has never been ready.
                    let changed = pod.ready_changed_ms.unwrap_or(start);
                    !pod.ready && start + t.initial_readiness_delay_ms > changed
                }
            };
            if unready {
                g.unready.insert(pod.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// Samples of the instances in `keep`, plus `fill` for each in `extra`.
fn with_fill(
    metrics: &PodMetrics,
    keep: &BTreeSet<String>,
    extra: &BTreeSet<String>,
    fill: impl Fn(&str) -> i64,
) -> BTreeMap<String, i64> {
    let mut m: BTreeMap<String, i64> = metrics
        .iter()
        .filter(|(k, _)| keep.contains(*k))
        .map(|(k, s)| (k.clone(), s.value_milli))
        .collect();
    for name in extra {
        m.insert(name.clone(), fill(name));
    }
    m
}

/// Kubernetes' `GetResourceUtilizationRatio`: (ratio, utilization %, average usage).
fn utilization_ratio(
    values: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: i64,
) -> Result<(f64, i64, i64), MetricError> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, v) in values {
        if let Some(r) = requests.get(pod) {
            used += v;
            requested += r;
            n += 1;
        }
    }
    if requested == 0 {
        return Err(MetricError::NoMetrics(
            "a resource with a request".to_string(),
        ));
    }
    let utilization = used * 100 / requested;
    Ok((utilization as f64 / target as f64, utilization, used / n))
}

/// Kubernetes' `GetMetricUsageRatio`: (ratio, average).
fn usage_ratio(values: &BTreeMap<String, i64>, target_milli: i64) -> (f64, i64) {
    let n = values.len().max(1) as i64;
    let average = values.values().sum::<i64>() / n;
    (average as f64 / target_milli as f64, average)
}

/// The instances that count (not ignored), and their samples limited to them.
fn live_pods<'a>(
    pods: &'a [Pod],
    metrics: &PodMetrics,
) -> Result<(Vec<&'a Pod>, PodMetrics), MetricError> {
    if pods.is_empty() {
        return Err(MetricError::NoPods);
    }
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.state != PodState::Ignored)
        .collect();
    let names: BTreeSet<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    let metrics = metrics
        .iter()
        .filter(|(k, _)| names.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    Ok((live, metrics))
}

/// A Resource metric with a Utilization target (percent of the instances' requests).
pub fn resource_utilization_replicas(
    current: i64,
    target_utilization: i64,
    resource: ResourceName,
    pods: &[Pod],
    metrics: &PodMetrics,
    t: Timing,
    tolerance: Tolerance,
) -> Result<Proposal, MetricError> {
    let (live, metrics) = live_pods(pods, metrics)?;
    let g = group_pods(pods, &metrics, Some(resource), t);
    let mut requests = BTreeMap::new();
    for p in &live {
        let r = p
            .request(resource)
            .ok_or_else(|| MetricError::MissingRequest {
                resource: resource.as_str(),
                pod: p.name.clone(),
            })?;
        requests.insert(p.name.clone(), r);
    }
    let counted: BTreeSet<String> = metrics
        .keys()
        .filter(|k| !g.unready.contains(*k) && requests.contains_key(*k))
        .cloned()
        .collect();
    if counted.is_empty() {
        return Err(MetricError::NoMetrics(resource.as_str().to_string()));
    }
    let values = with_fill(&metrics, &counted, &BTreeSet::new(), |_| 0);
    let (ratio, utilization, average) = utilization_ratio(&values, &requests, target_utilization)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization: Some(utilization),
        average_milli: average,
        ready: g.ready,
        unready: g.unready.len(),
        missing: g.missing.len(),
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if tolerance.within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * g.ready as f64).ceil() as i64));
    }
    // Fill in the instances without a usable sample, conservatively.
    let mut fill_in = BTreeSet::new();
    let mut fills: BTreeMap<String, i64> = BTreeMap::new();
    // Scale-down: missing instances use all of their request (or the target if above
    // 100%); scale-up: none of it.
    let fallback = target_utilization.max(100);
    for name in &g.missing {
        let v = if ratio < 1.0 {
            requests[name] * fallback / 100
        } else if ratio > 1.0 {
            0
        } else {
            continue;
        };
        fills.insert(name.clone(), v);
        fill_in.insert(name.clone());
    }
    if scale_up_with_unready {
        for name in &g.unready {
            fills.insert(name.clone(), 0);
            fill_in.insert(name.clone());
        }
    }
    let values = with_fill(&metrics, &counted, &fill_in, |n| fills[n]);
    let (new_ratio, _, _) = utilization_ratio(&values, &requests, target_utilization)?;
    if tolerance.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i64;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// An AverageValue target (a Pods metric, or a Resource metric as an absolute amount).
pub fn average_value_replicas(
    current: i64,
    target_milli: i64,
    resource: Option<ResourceName>,
    pods: &[Pod],
    metrics: &PodMetrics,
    t: Timing,
    tolerance: Tolerance,
) -> Result<Proposal, MetricError> {
    let (_, metrics) = live_pods(pods, metrics)?;
    let g = group_pods(pods, &metrics, resource, t);
    let live: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.state != PodState::Ignored)
        .map(|p| p.name.clone())
        .collect();
    let counted: BTreeSet<String> = metrics
        .keys()
        .filter(|k| live.contains(*k) && !g.unready.contains(*k))
        .cloned()
        .collect();
    if counted.is_empty() {
        let what = resource.map_or("the metric", |r| r.as_str());
        return Err(MetricError::NoMetrics(what.to_string()));
    }
    let values = with_fill(&metrics, &counted, &BTreeSet::new(), |_| 0);
    let (ratio, average) = usage_ratio(&values, target_milli.max(1));
    let proposal = |replicas| Proposal {
        replicas,
        utilization: None,
        average_milli: average,
        ready: g.ready,
        unready: g.unready.len(),
        missing: g.missing.len(),
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if tolerance.within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * g.ready as f64).ceil() as i64));
    }
    let mut fill_in = g.missing.clone();
    // Scale-down: missing instances use exactly the target; scale-up: nothing.
    let missing_value = if ratio < 1.0 { target_milli } else { 0 };
    if scale_up_with_unready {
        fill_in.extend(g.unready.iter().cloned());
    }
    let values = with_fill(&metrics, &counted, &fill_in, |n| {
        if g.missing.contains(n) {
            missing_value
        } else {
            0
        }
    });
    let (new_ratio, _) = usage_ratio(&values, target_milli.max(1));
    if tolerance.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i64;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// What a metric spec measures and against what, normalized.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    ResourceUtilization {
        resource: ResourceName,
        percent: i64,
    },
    ResourceAverage {
        resource: ResourceName,
        milli: i64,
    },
    PodsAverage {
        name: String,
        milli: i64,
    },
    /// Object, External, ContainerResource or a target type the source does not take.
    Unsupported {
        kind: String,
    },
}

impl Metric {
    /// Kubernetes' name for the metric in reasons ("cpu resource utilization ...").
    pub fn label(&self) -> String {
        match self {
            Metric::ResourceUtilization { resource, .. } => {
                format!(
                    "{} resource utilization (percentage of request)",
                    resource.as_str()
                )
            }
            Metric::ResourceAverage { resource, .. } => format!("{} resource", resource.as_str()),
            Metric::PodsAverage { name, .. } => format!("pods metric {name}"),
            Metric::Unsupported { kind } => format!("{kind} metric"),
        }
    }

    /// The short name the CLI and status use: cpu, memory or the custom metric's name.
    pub fn name(&self) -> &str {
        match self {
            Metric::ResourceUtilization { resource, .. }
            | Metric::ResourceAverage { resource, .. } => resource.as_str(),
            Metric::PodsAverage { name, .. } => name,
            Metric::Unsupported { kind } => kind,
        }
    }
}

fn target_milli(t: &MetricTarget) -> Option<i64> {
    t.average_value.as_ref().map(|q| q.millis() as i64)
}

/// The HPA's metrics with Kubernetes' defaults: the v1 `targetCPUUtilizationPercentage`,
/// else cpu at 80% when none are given.
pub fn metrics_of(spec: &HpaSpec) -> Vec<Metric> {
    let given = spec.metrics.as_deref().unwrap_or_default();
    if given.is_empty() {
        let percent = spec.target_cpu_utilization_percentage.unwrap_or(80);
        return vec![Metric::ResourceUtilization {
            resource: ResourceName::Cpu,
            percent,
        }];
    }
    given
        .iter()
        .map(|m| {
            let unsupported = || Metric::Unsupported {
                kind: m.kind.clone(),
            };
            match (m.kind.as_str(), &m.resource, &m.pods) {
                ("Resource", Some(r), _) => {
                    let Some(resource) = ResourceName::parse(&r.name) else {
                        return unsupported();
                    };
                    match (r.target.kind.as_str(), r.target.average_utilization) {
                        ("Utilization", Some(percent)) => {
                            Metric::ResourceUtilization { resource, percent }
                        }
                        ("AverageValue", _) => match target_milli(&r.target) {
                            Some(milli) => Metric::ResourceAverage { resource, milli },
                            None => unsupported(),
                        },
                        _ => unsupported(),
                    }
                }
                ("Pods", _, Some(p)) if p.target.kind == "AverageValue" => {
                    match target_milli(&p.target) {
                        Some(milli) => Metric::PodsAverage {
                            name: p.metric.name.clone(),
                            milli,
                        },
                        None => unsupported(),
                    }
                }
                _ => unsupported(),
            }
        })
        .collect()
}

/// One metric's current value for the status, or why it has none.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricStatus {
    pub metric: Metric,
    pub result: Result<Proposal, MetricError>,
}

/// The outcome of one sync of one HPA.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub current: i64,
    pub desired: i64,
    /// The largest metric proposal before behavior and min/max (None: not computed).
    pub proposed: Option<i64>,
    pub rescale: bool,
    /// Why, in Kubernetes' words ("cpu resource utilization (percentage of request)
    /// above target", "All metrics below target", ...).
    pub reason: String,
    pub metrics: Vec<MetricStatus>,
    pub conditions: Vec<Condition>,
}

/// Samples per metric, aligned with [`metrics_of`]; Err when fetching failed.
pub type Observed = Vec<Result<PodMetrics, String>>;

/// One metric's proposal from its samples.
pub fn propose(
    metric: &Metric,
    current: i64,
    pods: &[Pod],
    samples: &Result<PodMetrics, String>,
    t: Timing,
    tolerance: Tolerance,
) -> Result<Proposal, MetricError> {
    if let Metric::Unsupported { kind } = metric {
        return Err(MetricError::Unsupported(kind.clone()));
    }
    let samples = samples
        .as_ref()
        .map_err(|e| MetricError::Unavailable(e.clone()))?;
    match metric {
        Metric::ResourceUtilization { resource, percent } => {
            resource_utilization_replicas(current, *percent, *resource, pods, samples, t, tolerance)
        }
        Metric::ResourceAverage { resource, milli } => average_value_replicas(
            current,
            *milli,
            Some(*resource),
            pods,
            samples,
            t,
            tolerance,
        ),
        Metric::PodsAverage { milli, .. } => {
            average_value_replicas(current, *milli, None, pods, samples, t, tolerance)
        }
        Metric::Unsupported { kind } => Err(MetricError::Unsupported(kind.clone())),
    }
}

/// One sync: Kubernetes' `reconcileAutoscaler` without the writes. `current` is the
/// target's `spec.replicas`; `history` is updated (recommendations now, scale events only
/// through [`History::record_scale`] once the rescale is written).
pub fn decide(
    spec: &HpaSpec,
    current: i64,
    pods: &[Pod],
    observed: &Observed,
    history: &mut History,
    t: Timing,
) -> Decision {
    let min = spec.min_replicas();
    let max = spec.max_replicas;
    let behavior = Behavior::of(spec);
    let metrics = metrics_of(spec);
    let mut d = Decision {
        current,
        desired: current,
        proposed: None,
        rescale: false,
        reason: String::new(),
        metrics: Vec::new(),
        conditions: Vec::new(),
    };
    if current == 0 && min != 0 {
        d.conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
        return d;
    }
    if current > max || current < min {
        d.desired = current.clamp(min, max);
        d.rescale = true;
        d.reason = if current > max {
            "Current number of replicas above Spec.MaxReplicas".into()
        } else {
            "Current number of replicas below Spec.MinReplicas".into()
        };
        d.conditions.push(condition(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!(
                "the HPA controller was able to update the target scale to {}",
                d.desired
            ),
        ));
        return d;
    }
    let tolerance = behavior.tolerance();
    let mut best: Option<(i64, String)> = None;
    let mut first_error: Option<String> = None;
    for (i, metric) in metrics.iter().enumerate() {
        let samples = observed
            .get(i)
            .cloned()
            .unwrap_or_else(|| Err("not fetched".into()));
        let result = propose(metric, current, pods, &samples, t, tolerance);
        match &result {
            Ok(p) if best.as_ref().is_none_or(|(r, _)| p.replicas > *r) => {
                best = Some((p.replicas, metric.label()));
            }
            Ok(_) => {}
            Err(e) if first_error.is_none() => {
                first_error = Some(format!("{}: {e}", metric.label()));
            }
            Err(_) => {}
        }
        d.metrics.push(MetricStatus {
            metric: metric.clone(),
            result,
        });
    }
    let invalid = d.metrics.iter().filter(|m| m.result.is_err()).count();
    let proposed = match best {
        Some((n, _)) if invalid > 0 && n < current => None,
        Some(b) => Some(b),
        None => None,
    };
    let Some((proposed, label)) = proposed else {
        let why = first_error.unwrap_or_default();
        let reason = if invalid == metrics.len() {
            "FailedGetMetrics"
        } else {
            "InvalidMetricsWouldScaleDown"
        };
        d.conditions.push(condition(
            "ScalingActive",
            false,
            reason,
            format!("the HPA was unable to compute the replica count: {why}"),
        ));
        d.reason = why;
        return d;
    };
    d.conditions.push(condition(
        "ScalingActive",
        true,
        "ValidMetricFound",
        format!("the HPA was able to successfully calculate a replica count from {label}"),
    ));
    d.proposed = Some(proposed);
    if proposed > current {
        d.reason = format!("{label} above target");
    } else if proposed < current {
        d.reason = "All metrics below target".into();
    }
    let (stabilized, able) = stabilize(history, &behavior, current, proposed, t.now_ms);
    let (desired, limited) =
        limit_rate(history, &behavior, current, stabilized, min, max, t.now_ms);
    d.conditions.insert(0, able);
    d.conditions.push(limited);
    d.desired = desired;
    d.rescale = desired != current;
    d
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::ResourceUtilization { resource, percent } => {
                write!(f, "{}: {percent}%", resource.as_str())
            }
            Metric::ResourceAverage { resource, milli } => {
                write!(f, "{}: {}", resource.as_str(), format_milli(*milli))
            }
            Metric::PodsAverage { name, milli } => write!(f, "{name}: {}", format_milli(*milli)),
            Metric::Unsupported { kind } => write!(f, "{kind}: <unsupported>"),
        }
    }
}

/// A milli-unit amount as a Kubernetes quantity: "250m", "3", "2.5" is "2500m".
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
#[path = "hpa_tests.rs"]
mod tests;
