//! Scheduled scaling: the PredictiveBootstrapScaler's `schedule` entries, on the leader.
//!
//! Each component of an entry's `bootstrapAction` is active from `timeStart` minus its
//! `preScaleMinutes` until `timeEnd` plus `bootstrapScaleDown.delay` (UTC, on the days of
//! `dayOfWeek`; a `timeEnd` before `timeStart` ends the next day). What being active does:
//! - `vmPool.targetSize`: the node group's floor (`vmPool.nodeGroup`, default the
//!   ClusterAutoscaler's first group) is raised to it; the cluster autoscaler adds the
//!   workers (ScheduledScaleUp) and, after the window, removes them as they empty.
//! - `orchestrators.targetReplicas`: the Raft voter target is raised to it (the leader's
//!   membership loop reads it from this object's status), up to the eligible nodes.
//! - `directors.targetReplicas`: directors are the nodes whose /dev/kvm opens; none can be
//!   made, so fewer alive than the target is a ScheduleLimited warning.
//! - `targets` (OmniCloud): at the start the workload's replicas (or an HPA's
//!   minReplicas) is set and the old value kept in the status; at the end it is put back
//!   unless someone changed it meanwhile.
//!
//! Which components are active is kept in the object's `status.active`, so a new leader
//! neither repeats nor misses a start or an end. `metricTriggers` and
//! `bootstrapScaleDown.conditionWindow` are accepted but not acted on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::event::EventReason;
use crate::model::predictive::{parse_hhmm, PredictiveBootstrapScalerSpec, ScheduleEntry};
use crate::model::{Kind, Resource, Spec};
use crate::orchestrator::controllers::{key_of, version, EventDraft};
use crate::store::{Command, PutMode};

const DAY_MS: u64 = 86_400_000;

/// 0 = Monday (1970-01-01 was a Thursday).
pub fn weekday(day: u64) -> u8 {
    ((day + 3) % 7) as u8
}

/// Whether `entry`'s window, widened by `pre_minutes` before and `hold_ms` after, holds
/// `now_ms`.
pub fn in_window(entry: &ScheduleEntry, pre_minutes: i64, hold_ms: u64, now_ms: u64) -> bool {
    let (Some(start), Some(end)) = (parse_hhmm(&entry.time_start), parse_hhmm(&entry.time_end))
    else {
        return false;
    };
    let days = entry.days();
    let today = now_ms / DAY_MS;
    (today.saturating_sub(2)..=today + 1).any(|d| {
        if !days.contains(&weekday(d)) {
            return false;
        }
        let from = d * DAY_MS + start as u64 * 60_000;
        let to = if end > start {
            d * DAY_MS + end as u64 * 60_000
        } else {
            (d + 1) * DAY_MS + end as u64 * 60_000
        };
        let pre = pre_minutes.max(0) as u64 * 60_000;
        from.saturating_sub(pre) <= now_ms && now_ms < to + hold_ms
    })
}

/// One component of one entry: "orchestrators", "directors", "vmPool" or
/// "Kind/namespace/name" of a target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Component {
    pub entry: usize,
    pub name: String,
}

/// The components active at `now_ms`, with the value each asks for.
pub fn active(spec: &PredictiveBootstrapScalerSpec, now_ms: u64) -> BTreeMap<Component, i64> {
    let hold = spec.scale_down_delay_ms();
    let mut out = BTreeMap::new();
    for (i, e) in spec.schedule.iter().enumerate() {
        let a = &e.bootstrap_action;
        let mut add = |name: String, pre: Option<i64>, value: i64| {
            if in_window(e, pre.unwrap_or(0), hold, now_ms) {
                out.insert(Component { entry: i, name }, value);
            }
        };
        if let Some(c) = &a.orchestrators {
            add(
                "orchestrators".into(),
                c.pre_scale_minutes,
                c.target_replicas,
            );
        }
        if let Some(c) = &a.directors {
            add("directors".into(), c.pre_scale_minutes, c.target_replicas);
        }
        if let Some(p) = &a.vm_pool {
            add("vmPool".into(), p.pre_scale_minutes, p.target_size);
        }
        for t in a.targets.iter().flatten() {
            let ns = t.namespace.as_deref().unwrap_or("default");
            add(
                format!("{}/{ns}/{}", t.kind, t.name),
                t.pre_scale_minutes,
                t.replicas.or(t.min_replicas).unwrap_or(0),
            );
        }
    }
    out
}

/// What changed since the last sync: (started, ended) components.
pub fn transitions(
    now: &BTreeMap<Component, i64>,
    before: &[ActiveComponent],
) -> (Vec<(Component, i64)>, Vec<ActiveComponent>) {
    let started = now
        .iter()
        .filter(|(c, _)| !before.iter().any(|b| &b.component == *c))
        .map(|(c, v)| (c.clone(), *v))
        .collect();
    let ended = before
        .iter()
        .filter(|b| !now.contains_key(&b.component))
        .cloned()
        .collect();
    (started, ended)
}

/// A component in `status.active`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveComponent {
    #[serde(flatten)]
    pub component: Component,
    pub value: i64,
    pub since: String,
    /// A target's value before the schedule set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<i64>,
}

pub fn status_active(r: &Resource) -> Vec<ActiveComponent> {
    r.status
        .as_ref()
        .and_then(|s| serde_json::from_value(s["active"].clone()).ok())
        .unwrap_or_default()
}

/// Node group -> (raised floor, scaler name) from every scaler's active vmPool.
pub fn vm_pool_floors(
    scalers: &[Resource],
    first_group: Option<&str>,
    now_ms: u64,
) -> BTreeMap<String, (i64, String)> {
    let mut out: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for s in scalers {
        let Some(Spec::PredictiveBootstrapScaler(spec)) = &s.spec else {
            continue;
        };
        for (c, v) in active(spec, now_ms) {
            if c.name != "vmPool" {
                continue;
            }
            let pool = spec.schedule[c.entry].bootstrap_action.vm_pool.as_ref();
            let Some(group) = pool.and_then(|p| p.node_group.as_deref()).or(first_group) else {
                continue;
            };
            let e = out
                .entry(group.to_string())
                .or_insert((0, s.metadata.name.clone()));
            if v > e.0 {
                *e = (v, s.metadata.name.clone());
            }
        }
    }
    out
}

/// The largest orchestrators target of the active schedules (from their status).
pub fn orchestrators_target(scalers: &[Resource]) -> Option<usize> {
    scalers
        .iter()
        .flat_map(status_active)
        .filter(|a| a.component.name == "orchestrators")
        .map(|a| a.value.max(1) as usize)
        .max()
}

/// A human description of an entry, for events.
pub fn describe(spec: &PredictiveBootstrapScalerSpec, entry: usize) -> String {
    let e = &spec.schedule[entry];
    format!(
        "schedule[{entry}]{} {} {}-{} UTC",
        e.description
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default(),
        e.day_of_week.as_deref().unwrap_or("every day"),
        e.time_start,
        e.time_end
    )
}

pub const SOURCE: &str = "predictive-bootstrap-scaler";

/// The target's current value: replicas, or an HPA's minReplicas.
fn current(r: &Resource) -> Option<i64> {
    match &r.spec {
        Some(Spec::HorizontalPodAutoscaler(h)) => Some(h.min_replicas()),
        _ => r.replicas(),
    }
}

/// Sets a target's replicas (Scale) or an HPA's minReplicas (an update of the HPA).
fn set(r: &Resource, value: i64) -> Result<Command, String> {
    match &r.spec {
        Some(Spec::HorizontalPodAutoscaler(h)) => {
            if value > h.max_replicas {
                return Err(format!(
                    "minReplicas {value} is above the HPA's maxReplicas {}",
                    h.max_replicas
                ));
            }
            let mut v = r.to_value();
            v["spec"]["minReplicas"] = value.into();
            Ok(Command::put(key_of(r), &v, PutMode::Update, version(r)))
        }
        _ => Ok(Command::Scale {
            key: key_of(r),
            replicas: value,
            expected_version: None,
        }),
    }
}

/// One sync of every PredictiveBootstrapScaler: starts and ends, written as commands and
/// events.
pub fn plan(
    control: &crate::orchestrator::ControlPlane,
    directors: usize,
    now_ms: u64,
    now_text: &str,
) -> (Vec<Command>, Vec<EventDraft>) {
    let scalers = super::load_all(control, Kind::PredictiveBootstrapScaler);
    let (mut commands, mut events) = (Vec::new(), Vec::new());
    for pbs in &scalers {
        let Some(Spec::PredictiveBootstrapScaler(spec)) = &pbs.spec else {
            continue;
        };
        let before = status_active(pbs);
        let now = active(spec, now_ms);
        let (started, ended) = transitions(&now, &before);
        if started.is_empty() && ended.is_empty() {
            continue;
        }
        let mut after: Vec<ActiveComponent> = before
            .iter()
            .filter(|b| now.contains_key(&b.component))
            .cloned()
            .collect();
        let target = |name: &str| -> Option<(Kind, Resource)> {
            let mut parts = name.splitn(3, '/');
            let (kind, ns, n) = (parts.next()?, parts.next()?, parts.next()?);
            let kind = Kind::parse(kind)?;
            let key = crate::store::ObjectKey::new(kind, ns, n);
            let bytes = control.reader().get(&key).ok()??;
            let v = serde_json::from_slice(&bytes).ok()?;
            Some((kind, Resource::from_stored(v).ok()?))
        };
        for (c, value) in started {
            let what = describe(spec, c.entry);
            let mut saved = None;
            let (warning, reason, message) = match c.name.as_str() {
                "orchestrators" => (
                    false,
                    EventReason::ScheduleStarted,
                    format!("{what}: orchestrators target {value} (Raft voters, up to the eligible nodes)"),
                ),
                "directors" if directors < value as usize => (
                    true,
                    EventReason::ScheduleLimited,
                    format!("{what}: directors target {value}, {directors} alive; directors are nodes whose /dev/kvm opens and cannot be created: add such nodes"),
                ),
                "directors" => (
                    false,
                    EventReason::ScheduleStarted,
                    format!("{what}: directors target {value} met ({directors} alive)"),
                ),
                "vmPool" => (
                    false,
                    EventReason::ScheduleStarted,
                    format!("{what}: worker VM pool held at >= {value} by the cluster autoscaler"),
                ),
                name => match target(name) {
                    None => (true, EventReason::ScheduleLimited, format!("{what}: {name} does not exist")),
                    Some((kind, r)) => {
                        let old = current(&r).unwrap_or(0);
                        let field = if kind == Kind::HorizontalPodAutoscaler { "minReplicas" } else { "replicas" };
                        match set(&r, value) {
                            Ok(cmd) => {
                                commands.push(cmd);
                                saved = Some(old);
                                (false, EventReason::ScheduledRescale, format!("{what}: {name} {field} {old} -> {value}"))
                            }
                            Err(why) => (true, EventReason::ScheduleLimited, format!("{what}: {name}: {why}")),
                        }
                    }
                },
            };
            events.push(if warning {
                EventDraft::warning(pbs, reason, message, SOURCE)
            } else {
                EventDraft::normal(pbs, reason, message, SOURCE)
            });
            after.push(ActiveComponent {
                component: c,
                value,
                since: now_text.to_string(),
                saved,
            });
        }
        for b in ended {
            let what = describe(spec, b.component.entry);
            let name = b.component.name.as_str();
            let restore = b.saved.and_then(|old| {
                let (_, r) = target(name)?;
                (current(&r) == Some(b.value)).then_some((r, old))
            });
            let (reason, message) = match restore {
                Some((r, old)) => match set(&r, old) {
                    Ok(cmd) => {
                        commands.push(cmd);
                        (EventReason::ScheduledRestore, format!("{what} ended: {name} {} -> {old}", b.value))
                    }
                    Err(why) => (EventReason::ScheduleEnded, format!("{what} ended: {name} not restored: {why}")),
                },
                None if b.saved.is_some() => (
                    EventReason::ScheduleEnded,
                    format!("{what} ended: {name} left as it is (changed since the schedule set it, or gone)"),
                ),
                None => (EventReason::ScheduleEnded, format!("{what} ended: {name} target {} released", b.value)),
            };
            events.push(EventDraft::normal(pbs, reason, message, SOURCE));
        }
        after.sort_by(|a, b| a.component.cmp(&b.component));
        let status = serde_json::json!({"active": after, "lastTransitionTime": now_text});
        commands.push(Command::SetStatus {
            key: key_of(pbs),
            status: serde_json::to_vec(&status).expect("JSON"),
            uid: Some(pbs.metadata.uid.clone()),
        });
    }
    (commands, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PredictiveBootstrapScalerSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    /// 2024-01-01 was a Monday.
    const MONDAY: u64 = 1_704_067_200_000;

    fn at(day: u64, hh: u64, mm: u64) -> u64 {
        MONDAY + day * DAY_MS + (hh * 60 + mm) * 60_000
    }

    const SEED: &str = "schedule:\n- dayOfWeek: Monday-Friday\n  timeStart: \"07:30\"\n  timeEnd: \"09:30\"\n  bootstrapAction:\n    orchestrators: {targetReplicas: 5, preScaleMinutes: 15}\n    vmPool: {targetSize: 20, preScaleMinutes: 25}\n    targets: [{kind: Deployment, name: web, replicas: 10}]\nbootstrapScaleDown: {delay: 30m}\n";

    fn names(m: &BTreeMap<Component, i64>) -> Vec<String> {
        m.keys().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn each_component_starts_its_pre_scale_minutes_early_and_ends_after_the_delay() {
        assert_eq!(weekday(MONDAY / DAY_MS), 0);
        let s = spec(SEED);
        assert!(active(&s, at(0, 7, 4)).is_empty());
        assert_eq!(names(&active(&s, at(0, 7, 5))), ["vmPool"]);
        assert_eq!(
            names(&active(&s, at(0, 7, 15))),
            ["orchestrators", "vmPool"]
        );
        let full = active(&s, at(0, 7, 30));
        assert_eq!(
            names(&full),
            ["Deployment/default/web", "orchestrators", "vmPool"]
        );
        assert_eq!(full.values().copied().collect::<Vec<_>>(), [10, 5, 20]);
        // Held 30m after 09:30, then released.
        assert_eq!(active(&s, at(0, 9, 59)).len(), 3);
        assert!(active(&s, at(0, 10, 0)).is_empty());
        // Saturday: nothing; Friday: yes.
        assert!(active(&s, at(5, 8, 0)).is_empty());
        assert_eq!(active(&s, at(4, 8, 0)).len(), 3);
    }

    #[test]
    fn a_window_may_cross_midnight_and_pre_scale_into_the_day_before() {
        let s = spec("schedule:\n- dayOfWeek: Monday\n  timeStart: \"23:00\"\n  timeEnd: \"01:00\"\n  bootstrapAction:\n    vmPool: {targetSize: 3}\n");
        assert!(active(&s, at(0, 22, 59)).is_empty());
        assert_eq!(active(&s, at(0, 23, 30)).len(), 1);
        assert_eq!(active(&s, at(1, 0, 59)).len(), 1, "Tuesday 00:59");
        assert!(active(&s, at(1, 1, 0)).is_empty());
        let early = spec("schedule:\n- dayOfWeek: Tuesday\n  timeStart: \"00:10\"\n  timeEnd: \"02:00\"\n  bootstrapAction:\n    vmPool: {targetSize: 3, preScaleMinutes: 30}\n");
        assert_eq!(active(&early, at(0, 23, 40)).len(), 1, "Monday 23:40");
        assert!(active(&early, at(0, 23, 39)).is_empty());
    }

    #[test]
    fn transitions_are_starts_and_ends_against_the_status() {
        let s = spec(SEED);
        let now = active(&s, at(0, 7, 20));
        let (started, ended) = transitions(&now, &[]);
        assert_eq!(started.len(), 2);
        assert!(ended.is_empty());
        let before: Vec<ActiveComponent> = started
            .into_iter()
            .map(|(component, value)| ActiveComponent {
                component,
                value,
                since: String::new(),
                saved: None,
            })
            .collect();
        let (started, ended) = transitions(&active(&s, at(0, 7, 30)), &before);
        assert_eq!(started.len(), 1, "the target joins at 07:30");
        assert!(ended.is_empty());
        let (started, ended) = transitions(&active(&s, at(0, 12, 0)), &before);
        assert!(started.is_empty());
        assert_eq!(ended.len(), 2);
    }

    #[test]
    fn the_largest_active_pool_wins_per_group() {
        let mk = |name: &str, size: i64| {
            Resource::from_stored(serde_json::json!({
                "apiVersion": "omnicloud.io/v1", "kind": "PredictiveBootstrapScaler",
                "metadata": {"name": name, "uid": name, "resourceVersion": "1"},
                "spec": {"schedule": [{"timeStart": "07:00", "timeEnd": "08:00",
                    "bootstrapAction": {"vmPool": {"targetSize": size}}}]},
            }))
            .unwrap()
        };
        let floors = vm_pool_floors(&[mk("a", 2), mk("b", 4)], Some("gp"), at(2, 7, 30));
        assert_eq!(floors.get("gp"), Some(&(4, "b".to_string())));
        assert!(vm_pool_floors(&[mk("a", 2)], Some("gp"), at(2, 9, 0)).is_empty());
    }
}
