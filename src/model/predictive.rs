//! PredictiveBootstrapScaler: the tutorial's scheduled scaling of the platform itself.
//!
//! ```yaml
//! spec:
//!   schedule:
//!     - dayOfWeek: "Monday-Friday"   # or "Saturday", "Mon,Wed,Fri"; default every day
//!       timeStart: "07:30"           # UTC, HH:MM
//!       timeEnd: "09:30"             # before timeStart: the window ends the next day
//!       description: "Morning business ramp-up"
//!       bootstrapAction:
//!         orchestrators: {targetReplicas: 5, preScaleMinutes: 15}
//!         directors: {targetReplicas: 8, preScaleMinutes: 20}
//!         vmPool: {targetSize: 20, preScaleMinutes: 25, nodeGroup: general-purpose}
//!         targets:                   # OmniCloud: workloads and HPAs too
//!           - {kind: Deployment, name: web, replicas: 10, preScaleMinutes: 5}
//!           - {kind: HorizontalPodAutoscaler, name: web-hpa, minReplicas: 6}
//!   metricTriggers: [...]            # accepted and checked; not acted on yet
//!   bootstrapScaleDown: {delay: 30m, conditionWindow: 15m}
//! ```

use serde::{Deserialize, Serialize};

use super::capacity::valid_ratio;
use super::limits::{self, MAX_NODES, MAX_REPLICAS};
use super::quantity::{DurationStr, Quantity};
use super::{invalid, ModelError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PredictiveBootstrapScalerSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_triggers: Option<Vec<MetricTrigger>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_scale_down: Option<BootstrapScaleDown>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<String>,
    pub time_start: String,
    pub time_end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub bootstrap_action: BootstrapAction,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrators: Option<ComponentTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directors: Option<ComponentTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_pool: Option<VmPoolTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<ScheduledTarget>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentTarget {
    pub target_replicas: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_scale_minutes: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmPoolTarget {
    pub target_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_scale_minutes: Option<i64>,
    /// The ClusterAutoscaler node group kept at targetSize; default: the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduledTarget {
    /// Deployment, StatefulSet, VirtualMachine (replicas) or HorizontalPodAutoscaler
    /// (minReplicas).
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_scale_minutes: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricTrigger {
    pub metric: String,
    pub threshold: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_action: Option<RatioAction>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RatioAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator_ratio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director_ratio: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapScaleDown {
    /// Targets are held this long after timeEnd before they are released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationStr>,
    /// Accepted; not used yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_window: Option<DurationStr>,
}

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    if s.len() < 3 {
        return None;
    }
    DAYS.iter().position(|d| d.starts_with(&s)).map(|i| i as u8)
}

/// "Monday-Friday", "Saturday", "Mon,Wed,Fri", "Friday-Monday": the days (0 = Monday).
pub fn parse_days(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (mut d, b) = (day(a)?, day(b)?);
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out.push(day(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// "07:30" -> minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
}

impl ScheduleEntry {
    /// Every day when dayOfWeek is left out.
    pub fn days(&self) -> Vec<u8> {
        self.day_of_week
            .as_deref()
            .and_then(parse_days)
            .unwrap_or_else(|| (0..7).collect())
    }
}

impl PredictiveBootstrapScalerSpec {
    pub fn scale_down_delay_ms(&self) -> u64 {
        self.bootstrap_scale_down
            .as_ref()
            .and_then(|b| b.delay.as_ref())
            .map_or(0, |d| d.as_millis())
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.schedule.is_empty() && self.metric_triggers.is_none() {
            return Err(invalid("spec.schedule", "needs at least one entry"));
        }
        for (i, e) in self.schedule.iter().enumerate() {
            let f = format!("spec.schedule[{i}]");
            if let Some(d) = &e.day_of_week {
                if parse_days(d).is_none() {
                    return Err(invalid(
                        &format!("{f}.dayOfWeek"),
                        format!("\"{d}\" is not a day, a range like Monday-Friday or a list like Mon,Wed"),
                    ));
                }
            }
            let start = parse_hhmm(&e.time_start).ok_or_else(|| {
                invalid(
                    &format!("{f}.timeStart"),
                    format!("\"{}\" is not a time like 07:30 (UTC)", e.time_start),
                )
            })?;
            let end = parse_hhmm(&e.time_end).ok_or_else(|| {
                invalid(
                    &format!("{f}.timeEnd"),
                    format!("\"{}\" is not a time like 09:30 (UTC)", e.time_end),
                )
            })?;
            if start == end {
                return Err(invalid(
                    &format!("{f}.timeEnd"),
                    "equals timeStart: the window would be empty",
                ));
            }
            let a = &e.bootstrap_action;
            let f = format!("{f}.bootstrapAction");
            let pre = |name: &str, m: Option<i64>| -> Result<(), ModelError> {
                if m.is_some_and(|m| !(0..=1440).contains(&m)) {
                    return Err(invalid(
                        &format!("{f}.{name}.preScaleMinutes"),
                        "must be between 0 and 1440",
                    ));
                }
                Ok(())
            };
            for (name, c) in [
                ("orchestrators", &a.orchestrators),
                ("directors", &a.directors),
            ] {
                if let Some(c) = c {
                    let tf = format!("{f}.{name}.targetReplicas");
                    limits::range(&tf, c.target_replicas, 1, MAX_NODES)?;
                    pre(name, c.pre_scale_minutes)?;
                }
            }
            if let Some(p) = &a.vm_pool {
                limits::range(
                    &format!("{f}.vmPool.targetSize"),
                    p.target_size,
                    0,
                    MAX_NODES,
                )?;
                pre("vmPool", p.pre_scale_minutes)?;
                if let Some(g) = &p.node_group {
                    super::validate_name(&format!("{f}.vmPool.nodeGroup"), g)?;
                }
            }
            for (j, t) in a.targets.iter().flatten().enumerate() {
                let tf = format!("{f}.targets[{j}]");
                super::validate_name(&format!("{tf}.name"), &t.name)?;
                pre(&format!("targets[{j}]"), t.pre_scale_minutes)?;
                match (t.kind.as_str(), t.replicas, t.min_replicas) {
                    ("Deployment" | "StatefulSet" | "VirtualMachine", Some(r), None) => {
                        limits::range(&format!("{tf}.replicas"), r, 0, MAX_REPLICAS)?;
                    }
                    ("Deployment" | "StatefulSet" | "VirtualMachine", _, _) => {
                        return Err(invalid(
                            &format!("{tf}.replicas"),
                            format!("is required for a {} (and minReplicas is not)", t.kind),
                        ))
                    }
                    ("HorizontalPodAutoscaler", None, Some(m)) => {
                        limits::range(&format!("{tf}.minReplicas"), m, 1, MAX_REPLICAS)?;
                    }
                    ("HorizontalPodAutoscaler", _, _) => {
                        return Err(invalid(
                            &format!("{tf}.minReplicas"),
                            "is required for a HorizontalPodAutoscaler (and replicas is not)",
                        ))
                    }
                    (other, _, _) => {
                        return Err(invalid(
                            &format!("{tf}.kind"),
                            format!("\"{other}\" is not Deployment, StatefulSet, VirtualMachine or HorizontalPodAutoscaler"),
                        ))
                    }
                }
            }
            if a.orchestrators.is_none()
                && a.directors.is_none()
                && a.vm_pool.is_none()
                && a.targets.as_ref().is_none_or(|t| t.is_empty())
            {
                return Err(invalid(
                    &f,
                    "needs orchestrators, directors, vmPool or targets",
                ));
            }
        }
        for (i, t) in self.metric_triggers.iter().flatten().enumerate() {
            let a = t.bootstrap_action.clone().unwrap_or_default();
            for (name, v) in [
                ("orchestratorRatio", a.orchestrator_ratio),
                ("directorRatio", a.director_ratio),
            ] {
                if let Some(v) = v {
                    if !valid_ratio(&v) {
                        return Err(invalid(
                            &format!("spec.metricTriggers[{i}].bootstrapAction.{name}"),
                            format!("\"{v}\" is not a ratio like 1:200"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_ranges_lists_and_wrapping() {
        assert_eq!(parse_days("Monday-Friday"), Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(parse_days("Saturday"), Some(vec![5]));
        assert_eq!(parse_days("Mon,Wed,fri"), Some(vec![0, 2, 4]));
        assert_eq!(parse_days("Friday-Monday"), Some(vec![0, 4, 5, 6]));
        assert_eq!(parse_days("Funday"), None);
        assert_eq!(parse_hhmm("07:30"), Some(450));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("7"), None);
    }
}
