//! `behavior` of a HorizontalPodAutoscaler: Kubernetes' defaults, the stabilization
//! windows over the recommendation history, and the Percent/Pods rate policies against
//! the count at the start of each policy's period (`horizontal.go`'s
//! `stabilizeRecommendationWithBehaviors` and `convertDesiredReplicasWithBehaviorRate`).
//! Pure: the clock comes in as `now_ms`.

use crate::model::autoscaling::ScalingRules;
use crate::model::HpaSpec;

use super::hpa::{Tolerance, DEFAULT_TOLERANCE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i64,
    pub period_s: i64,
}

/// One direction's behavior with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub stabilization_s: i64,
    pub select: Select,
    pub policies: Vec<Policy>,
    pub tolerance: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn rules(given: Option<&ScalingRules>, default: Rules) -> Rules {
    let Some(g) = given else { return default };
    Rules {
        stabilization_s: g
            .stabilization_window_seconds
            .unwrap_or(default.stabilization_s),
        select: match g.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            Some(_) => Select::Max,
            None => default.select,
        },
        policies: match &g.policies {
            Some(p) => p
                .iter()
                .map(|p| Policy {
                    kind: if p.kind == "Pods" {
                        PolicyKind::Pods
                    } else {
                        PolicyKind::Percent
                    },
                    value: p.value,
                    period_s: p.period_seconds,
                })
                .collect(),
            None => default.policies,
        },
        tolerance: g
            .tolerance
            .as_ref()
            .map_or(default.tolerance, |q| q.millis() as f64 / 1000.0),
    }
}

impl Behavior {
    /// The spec's behavior over Kubernetes' defaults (field by field, as the API server
    /// defaults it; given policies replace the default ones).
    pub fn of(spec: &HpaSpec) -> Behavior {
        let b = spec.behavior.as_ref();
        let up = Rules {
            stabilization_s: 0,
            select: Select::Max,
            policies: vec![
                Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_s: 15,
                },
                Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_s: 15,
                },
            ],
            tolerance: DEFAULT_TOLERANCE,
        };
        let down = Rules {
            stabilization_s: 300,
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period_s: 15,
            }],
            tolerance: DEFAULT_TOLERANCE,
        };
        Behavior {
            up: rules(b.and_then(|b| b.scale_up.as_ref()), up),
            down: rules(b.and_then(|b| b.scale_down.as_ref()), down),
        }
    }

    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            up: self.up.tolerance,
            down: self.down.tolerance,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScaleEvent {
    change: i64,
    at_ms: u64,
    outdated: bool,
}

/// What one HPA remembers between syncs (on the leader; a new leader starts empty, as
/// a restarted kube-controller-manager does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// (time, unstabilized recommendation).
    recommendations: Vec<(u64, i64)>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
}

impl History {
    /// Records a rescale from `from` to `to` for the policies' periods.
    pub fn record_scale(&mut self, behavior: &Behavior, from: i64, to: i64, now_ms: u64) {
        let (events, rules, change) = if to > from {
            (&mut self.up_events, &behavior.up, to - from)
        } else if to < from {
            (&mut self.down_events, &behavior.down, from - to)
        } else {
            return;
        };
        let longest = rules.policies.iter().map(|p| p.period_s).max().unwrap_or(0) as u64;
        for e in events.iter_mut() {
            if e.at_ms + longest * 1000 <= now_ms {
                e.outdated = true;
            }
        }
        let event = ScaleEvent {
            change,
            at_ms: now_ms,
            outdated: false,
        };
        match events.iter_mut().find(|e| e.outdated) {
            Some(slot) => *slot = event,
            None => events.push(event),
        }
    }
}

/// Replicas added (or removed) within the last `period_s`.
fn change_in_period(events: &[ScaleEvent], period_s: i64, now_ms: u64) -> i64 {
    let cutoff = now_ms.saturating_sub(period_s as u64 * 1000);
    events
        .iter()
        .filter(|e| e.at_ms > cutoff)
        .map(|e| e.change)
        .sum()
}

fn scale_up_limit(current: i64, h: &History, rules: &Rules, now_ms: u64) -> i64 {
    if rules.select == Select::Disabled {
        return current;
    }
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = current - change_in_period(&h.up_events, p.period_s, now_ms)
            + change_in_period(&h.down_events, p.period_s, now_ms);
        let proposed = match p.kind {
            PolicyKind::Pods => start + p.value,
            // Rounded up, or a small target could never grow.
            PolicyKind::Percent => (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i64,
        };
        result = Some(match (result, rules.select) {
            (None, _) => proposed,
            (Some(r), Select::Min) => r.min(proposed),
            (Some(r), _) => r.max(proposed),
        });
    }
    result.unwrap_or(current)
}

fn scale_down_limit(current: i64, h: &History, rules: &Rules, now_ms: u64) -> i64 {
    if rules.select == Select::Disabled {
        return current;
    }
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = current - change_in_period(&h.up_events, p.period_s, now_ms)
            + change_in_period(&h.down_events, p.period_s, now_ms);
        let proposed = match p.kind {
            PolicyKind::Pods => start - p.value,
            PolicyKind::Percent => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i64,
        };
        // The smallest change (Min) is the highest floor.
        result = Some(match (result, rules.select) {
            (None, _) => proposed,
            (Some(r), Select::Min) => r.max(proposed),
            (Some(r), _) => r.min(proposed),
        });
    }
    result.unwrap_or(current)
}

/// A status condition: (type, true/false, reason, message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

pub(crate) fn condition(
    kind: &'static str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

/// The stabilized recommendation (Kubernetes' `stabilizeRecommendationWithBehaviors`),
/// recording the raw one.
pub(crate) fn stabilize(
    h: &mut History,
    b: &Behavior,
    current: i64,
    desired: i64,
    now_ms: u64,
) -> (i64, Condition) {
    let up_cutoff = now_ms.saturating_sub(b.up.stabilization_s as u64 * 1000);
    let down_cutoff = now_ms.saturating_sub(b.down.stabilization_s as u64 * 1000);
    let (mut up, mut down) = (desired, desired);
    let mut old = None;
    for (i, (at, rec)) in h.recommendations.iter().enumerate() {
        if *at > up_cutoff {
            up = up.min(*rec);
        }
        if *at > down_cutoff {
            down = down.max(*rec);
        }
        if *at < up_cutoff && *at < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up).min(down);
    match old {
        Some(i) => h.recommendations[i] = (now_ms, desired),
        None => h.recommendations.push((now_ms, desired)),
    }
    let c = if stabilized == desired {
        condition(
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size",
        )
    } else if desired >= current {
        condition(
            "AbleToScale",
            true,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )
    } else {
        condition(
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    };
    (stabilized, c)
}

/// The rate limits and min/max (Kubernetes' `convertDesiredReplicasWithBehaviorRate`).
pub(crate) fn limit_rate(
    h: &History,
    b: &Behavior,
    current: i64,
    desired: i64,
    min: i64,
    max: i64,
    now_ms: u64,
) -> (i64, Condition) {
    let within = |n| {
        (
            n,
            condition(
                "ScalingLimited",
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            ),
        )
    };
    if desired > current {
        let limit = scale_up_limit(current, h, &b.up, now_ms).max(current);
        let (allowed, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if desired > allowed {
            return (allowed, condition("ScalingLimited", true, reason, message));
        }
    } else if desired < current {
        let limit = scale_down_limit(current, h, &b.down, now_ms).min(current);
        let (allowed, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if desired < allowed {
            return (allowed, condition("ScalingLimited", true, reason, message));
        }
    }
    within(desired)
}
