//! The Deployment controller: indexed instances `<name>-<index>`, scaling (the highest
//! index goes first), rollouts and rollback, and the Deployment's status.
//!
//! A rollout moves instances from old template revisions to the current one:
//! - RollingUpdate: at most `replicas + maxSurge` instances exist and at least
//!   `replicas - maxUnavailable` are available (ready for `minReadySeconds`). New instances
//!   take the lowest free index; unavailable old ones go first, then old ones by highest
//!   index as availability allows.
//! - Recreate: every old instance goes before any new one is made.
//!
//! The status keeps the revision history (template per revision, `revisionHistoryLimit`)
//! that `rollout history|undo` read. A rollout whose new revision is not fully available
//! within `progressDeadlineSeconds` is rolled back to the previous revision automatically.
//! `paused` freezes the target revision (scaling still applies).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{key_of, new_instance, version, Draft, EventDraft, InstanceView, Pass};
use crate::model::event::EventReason;
#[cfg(test)]
use crate::model::instance::{InstanceSpec, OWNER_LABEL};
use crate::model::status::{DeploymentStatus, RevisionRecord, RolloutCondition};
use crate::model::{Kind, Resource, Spec};
use crate::store::{Command, PutMode};

const SOURCE: &str = "deployment-controller";
const DEFAULT_DEADLINE_SECS: i64 = 600;
const DEFAULT_HISTORY: usize = 10;

/// The pod template's hash: instances made from another template are replaced.
pub fn template_revision(template: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(serde_json::to_vec(template).expect("JSON"));
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// maxSurge and maxUnavailable as counts (Kubernetes rounding: surge up, unavailable
/// down; never both zero).
pub fn rolling_limits(spec: &crate::model::DeploymentSpec, replicas: i64) -> (i64, i64) {
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let resolve = |v: Option<crate::model::IntOrString>, up: bool| {
        v.unwrap_or(crate::model::IntOrString::Str("25%".into()))
            .resolve(replicas, up)
            .unwrap_or(0)
            .max(0)
    };
    let surge = resolve(ru.max_surge, true);
    let unavailable = resolve(ru.max_unavailable, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// One Deployment's pass:
///
/// 1. The target revision: the spec's template, or while paused the one being rolled out.
/// 2. Excess new instances go: the highest indexes, unready ones first.
/// 3. Old instances go: unavailable ones first, available ones as maxUnavailable allows.
/// 4. New instances at the lowest free indexes, within the surge budget, the unplaced
///    room and the ClusterScalingPolicy's rate.
/// 5. The status: counts, revision history and the progress deadline (rollback).
pub fn plan(pass: &Pass, d: &Resource, draft: &mut Draft) {
    let Some(Spec::Deployment(spec)) = &d.spec else {
        return;
    };
    let old_status: DeploymentStatus = d.status_of();
    // 1.
    let Some((revision, template)) = target(spec, &old_status) else {
        return;
    };
    let r = Rollout::new(pass, d, spec, revision, template);
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    // 2.
    let new_count = r.scale_down_new(&mut deleted, draft);
    // 3.
    let old_left = r.remove_old(&mut deleted, draft);
    // 4.
    r.create_new(new_count, old_left, &deleted, draft);
    // 5.
    r.write_status(new_count, &old_status, draft);
}

/// Step 1: the revision to roll out and its template; None if the template does not
/// parse.
fn target(
    spec: &crate::model::DeploymentSpec,
    old_status: &DeploymentStatus,
) -> Option<(String, crate::model::PodTemplate)> {
    let spec_template = serde_json::to_value(&spec.template).expect("JSON");
    let spec_revision = template_revision(&spec_template);
    let paused = spec.paused == Some(true);
    // While paused the target stays what was being rolled out.
    let r = old_status.revision.as_str();
    if paused && !r.is_empty() && r != spec_revision {
        if let Some(h) = old_status.history.iter().find(|h| h.revision == r) {
            return Some((r.to_string(), h.template.clone()));
        }
    }
    let template = serde_json::from_value(spec_template).ok()?;
    Some((spec_revision, template))
}

/// A Deployment, its target revision and its instances, for one pass.
struct Rollout<'p, 'a> {
    pass: &'p Pass<'a>,
    d: &'p Resource,
    spec: &'p crate::model::DeploymentSpec,
    ns: String,
    revision: String,
    template: crate::model::PodTemplate,
    desired: i64,
    min_ready: u64,
    recreate: bool,
    surge: i64,
    max_unavailable: i64,
    mine: Vec<&'p InstanceView<'a>>,
    /// Of the target revision.
    new: Vec<&'p InstanceView<'a>>,
    old: Vec<&'p InstanceView<'a>>,
}

impl<'p, 'a> Rollout<'p, 'a> {
    fn new(
        pass: &'p Pass<'a>,
        d: &'p Resource,
        spec: &'p crate::model::DeploymentSpec,
        revision: String,
        template: crate::model::PodTemplate,
    ) -> Self {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let desired = spec.replicas().max(0);
        let mine: Vec<&InstanceView> = pass
            .instances
            .iter()
            .filter(|i| i.namespace() == ns && i.owned_by(Kind::Deployment, &d.metadata.uid))
            .collect();
        let (new, old): (Vec<&InstanceView>, Vec<&InstanceView>) =
            mine.iter().copied().partition(|i| i.revision() == revision);
        let recreate = spec.strategy_type() == "Recreate";
        let (surge, max_unavailable) = if recreate {
            (0, desired)
        } else {
            rolling_limits(spec, desired)
        };
        Rollout {
            pass,
            d,
            spec,
            ns,
            revision,
            template,
            desired,
            min_ready: spec.min_ready_seconds.unwrap_or(0).max(0) as u64,
            recreate,
            surge,
            max_unavailable,
            mine,
            new,
            old,
        }
    }

    fn available(&self, i: &InstanceView) -> bool {
        i.available(self.pass.world.now_ms, self.min_ready)
    }

    fn available_count(&self) -> i64 {
        self.mine.iter().filter(|i| self.available(i)).count() as i64
    }

    /// Deletes `i` once per pass, with an event saying why.
    fn delete(
        &self,
        i: &InstanceView,
        why: &str,
        deleted: &mut BTreeSet<String>,
        draft: &mut Draft,
    ) {
        if deleted.insert(i.name().to_string()) {
            draft.commands.push(Command::Delete {
                key: key_of(i.resource),
                expected_version: version(i.resource),
            });
            draft.events.push(EventDraft::normal(
                self.d,
                EventReason::DeletingInstance,
                format!("deleted instance {}: {why}", i.name()),
                SOURCE,
            ));
        }
    }

    /// Step 2: excess new instances, the highest indexes (unready ones first); returns how
    /// many new ones stay.
    fn scale_down_new(&self, deleted: &mut BTreeSet<String>, draft: &mut Draft) -> i64 {
        let mut new_sorted: Vec<&&InstanceView> = self.new.iter().collect();
        new_sorted.sort_by_key(|i| (self.available(i), std::cmp::Reverse(i.index())));
        let mut new_count = self.new.len() as i64;
        for i in new_sorted {
            if new_count <= self.desired {
                break;
            }
            self.delete(i, "scaled down", deleted, draft);
            new_count -= 1;
        }
        new_count
    }

    /// Step 3: unavailable old instances never count towards availability, so they go
    /// first; available ones as far as maxUnavailable allows. Returns how many old ones
    /// stay.
    fn remove_old(&self, deleted: &mut BTreeSet<String>, draft: &mut Draft) -> i64 {
        let min_available = self.desired.saturating_sub(self.max_unavailable);
        let mut can_remove_available = (self.available_count() - min_available).max(0);
        let mut old_sorted: Vec<&&InstanceView> = self.old.iter().collect();
        old_sorted.sort_by_key(|i| (self.available(i), std::cmp::Reverse(i.index())));
        let mut old_left = self.old.len() as i64;
        for i in old_sorted {
            if !self.available(i) {
                self.delete(i, "old revision, unavailable", deleted, draft);
                old_left -= 1;
            } else if can_remove_available > 0 {
                let why = format!("rolling to revision {}", self.revision);
                self.delete(i, &why, deleted, draft);
                can_remove_available -= 1;
                old_left -= 1;
            }
        }
        old_left
    }

    /// Step 4: new instances at the lowest free indexes, within the surge budget, the
    /// unplaced room and the scaling rate (what the rate holds back is an event).
    fn create_new(
        &self,
        new_count: i64,
        old_left: i64,
        deleted: &BTreeSet<String>,
        draft: &mut Draft,
    ) {
        let (d, desired, revision) = (self.d, self.desired, &self.revision);
        let total_after = new_count + old_left;
        // Recreate waits a pass for the old ones to be gone before making new ones.
        let budget = if self.recreate && !self.old.is_empty() {
            0
        } else {
            (desired - new_count)
                .min(
                    desired
                        .saturating_add(self.surge)
                        .saturating_sub(total_after),
                )
                .max(0)
        };
        let taken: BTreeSet<&str> = self
            .pass
            .instances
            .iter()
            .filter(|i| i.namespace() == self.ns)
            .map(|i| i.name())
            .collect();
        let used: BTreeSet<i64> = self
            .mine
            .iter()
            .filter(|i| !deleted.contains(i.name()))
            .map(|i| i.index())
            .collect();
        let wanted = budget;
        let budget = budget.min(super::create_room(self.mine.iter().copied()));
        let budget = match draft.rate_left {
            Some(left) => budget.min(left),
            None => budget,
        };
        if budget < wanted && draft.rate_left.is_some_and(|left| left < wanted) {
            draft.events.push(EventDraft::normal(
                d,
                EventReason::ScalingRateLimited,
                format!(
                    "{} more instance(s) wait for the ClusterScalingPolicy scaling rate",
                    wanted - budget
                ),
                SOURCE,
            ));
        }
        if let Some(left) = draft.rate_left.as_mut() {
            *left -= budget;
        }
        let mut index = 0;
        let mut created = 0;
        while created < budget {
            let instance_name = format!("{}-{index}", d.metadata.name);
            if !used.contains(&index) && !taken.contains(instance_name.as_str()) {
                draft.creates.push(new_instance(
                    d,
                    &self.ns,
                    &instance_name,
                    index,
                    revision,
                    &self.template,
                ));
                created += 1;
            }
            index += 1;
        }
        if created > 0 {
            draft.events.push(EventDraft::normal(
                d,
                EventReason::ScalingUp,
                format!("created {created} instance(s) of revision {revision}"),
                SOURCE,
            ));
        }
    }

    /// Step 5: the status with the revision history; a rollout past its
    /// `progressDeadlineSeconds` is rolled back once.
    fn write_status(&self, new_count: i64, old_status: &DeploymentStatus, draft: &mut Draft) {
        let (d, spec, world, revision) = (self.d, self.spec, self.pass.world, &self.revision);
        let paused = spec.paused == Some(true);
        let ready = self.mine.iter().filter(|i| i.ready()).count() as i64;
        let updated_available = self.new.iter().filter(|i| self.available(i)).count() as i64;
        let mut hist = old_status.history.clone();
        if !hist.iter().any(|h| h.revision == *revision) {
            hist.push(RevisionRecord {
                revision: revision.clone(),
                template: self.template.clone(),
                since: world.now_rfc3339(),
            });
            let keep = spec
                .revision_history_limit
                .map_or(DEFAULT_HISTORY, |n| n.max(1) as usize);
            if hist.len() > keep {
                hist.drain(..hist.len() - keep);
            }
        }
        let complete = updated_available == self.desired
            && self.old.is_empty()
            && self.new.len() as i64 == self.desired;
        let since = match &old_status.progressing_since {
            s if old_status.revision == *revision && !s.is_empty() => s.clone(),
            _ => world.now_rfc3339(),
        };
        let deadline = spec
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_DEADLINE_SECS)
            .max(0) as u64;
        let elapsed = world.now_ms.saturating_sub(super::parse_ms(&since)) / 1000;
        let mut condition = if complete {
            RolloutCondition::Complete
        } else if paused {
            RolloutCondition::Paused
        } else {
            RolloutCondition::Progressing
        };
        if !complete && !paused && elapsed >= deadline {
            condition = RolloutCondition::ProgressDeadlineExceeded;
            if old_status.condition != condition {
                rollback(d, revision, &hist, elapsed, draft);
            }
        }
        let status = DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: self.mine.len() as i64,
            updated_replicas: new_count,
            ready_replicas: ready,
            available_replicas: self.available_count(),
            revision: revision.clone(),
            condition,
            progressing_since: since,
            history: hist,
        };
        draft.commands.extend(super::status_change(d, &status));
    }
}

/// Puts the previous revision's template back (a new generation), with events.
fn rollback(d: &Resource, bad: &str, hist: &[RevisionRecord], elapsed: u64, draft: &mut Draft) {
    let previous = hist.iter().rev().find(|h| h.revision != bad);
    let Some(previous) = previous else {
        draft.events.push(EventDraft::warning(
            d,
            EventReason::ProgressDeadlineExceeded,
            format!("revision {bad} is not available after {elapsed}s and there is no earlier revision to roll back to"),
            SOURCE,
        ));
        return;
    };
    let to = &previous.revision;
    let mut v = d.to_value();
    v["spec"]["template"] = serde_json::to_value(&previous.template).expect("JSON");
    v["metadata"]["annotations"]["omnicloud.io/rolled-back-from"] = Value::String(bad.into());
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    draft
        .commands
        .push(Command::put(key_of(d), &v, PutMode::Update, version(d)));
    draft.events.push(EventDraft::warning(
        d,
        EventReason::RolledBack,
        format!("revision {bad} was not available after {elapsed}s (progressDeadlineSeconds); rolled back to revision {to}"),
        SOURCE,
    ));
}

#[cfg(test)]
mod tests {
    use super::super::{plan as plan_all, step, NodeView, World};
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn deployment(name: &str, replicas: i64, image: &str, strategy: Value) -> Resource {
        let v = json!({
            "apiVersion": "omnicloud.io/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "resourceVersion": "1", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image,
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}},
        });
        Resource::from_stored(v).unwrap()
    }

    fn nodes(names: &[&str]) -> Vec<NodeView> {
        names.iter().map(|n| NodeView::test_agent(n)).collect()
    }

    fn world(d: Resource, agents: &[&str]) -> World {
        World {
            deployments: vec![d],
            nodes: nodes(agents),
            now_ms: 1_000_000_000,
            ..Default::default()
        }
    }

    /// What the agents would report: every placed instance ready (or only some).
    fn make_ready(world: &mut World, ready: impl Fn(&InstanceSpec) -> bool) {
        for i in world.instances.iter_mut() {
            let Some(Spec::Instance(s)) = &i.spec else {
                continue;
            };
            if s.node_name.is_some() && ready(s) {
                i.status = Some(json!({"phase": "Running", "ready": true, "restarts": 0,
                    "revision": s.revision, "readySince": "2000-01-01T00:00:00Z"}));
            }
        }
    }

    fn names(world: &World) -> Vec<String> {
        let mut v: Vec<String> = world
            .instances
            .iter()
            .map(|i| i.metadata.name.clone())
            .collect();
        v.sort();
        v
    }

    fn image_of(i: &Resource) -> String {
        match &i.spec {
            Some(Spec::Instance(s)) => s.pod.containers[0].image.clone(),
            _ => unreachable!(),
        }
    }

    /// Issue 13.3: a stored `replicas: 2147483648` made the leader allocate until it died,
    /// on every restart. Work per pass follows what can be placed: at most
    /// MAX_UNPLACED_PER_WORKLOAD instances wait for a node, whatever was asked.
    #[test]
    fn a_huge_replica_count_creates_only_what_can_wait_for_a_node() {
        for replicas in [i64::from(i32::MAX) + 1, i64::MAX] {
            // No agent: nothing can be placed.
            let mut w = world(deployment("big", replicas, "img:1", json!({})), &[]);
            for _ in 0..3 {
                step(&mut w);
            }
            assert_eq!(
                w.instances.len() as i64,
                crate::orchestrator::controllers::MAX_UNPLACED_PER_WORKLOAD
            );
            // Two small agents: what they hold is placed, and 256 more wait.
            let mut w = world(deployment("big", replicas, "img:1", json!({})), &["a", "b"]);
            for _ in 0..5 {
                step(&mut w);
            }
            let placed = w
                .instances
                .iter()
                .filter(|i| matches!(&i.spec, Some(Spec::Instance(s)) if s.node_name.is_some()))
                .count() as i64;
            assert!(placed > 0);
            assert_eq!(
                w.instances.len() as i64 - placed,
                crate::orchestrator::controllers::MAX_UNPLACED_PER_WORKLOAD
            );
        }
    }

    #[test]
    fn replicas_become_indexed_instances_spread_over_agents() {
        let mut w = world(
            deployment("web", 6, "toolbox", Value::Null),
            &["a", "b", "c"],
        );
        step(&mut w);
        assert_eq!(names(&w).len(), 6);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for i in &w.instances {
            let Some(Spec::Instance(s)) = &i.spec else {
                unreachable!()
            };
            *per_node.entry(s.node_name.clone().unwrap()).or_default() += 1;
            assert_eq!(i.metadata.labels[OWNER_LABEL], "web");
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        make_ready(&mut w, |_| true);
        step(&mut w);
        assert_eq!(
            w.deployments[0].status.as_ref().unwrap()["readyReplicas"],
            6
        );
        // Converged: nothing but (unchanged) status is planned.
        let again = plan_all(&w);
        assert!(
            again.commands.is_empty() && again.creates.is_empty(),
            "{:?}",
            again.commands
        );
    }

    #[test]
    fn scaling_down_removes_the_highest_indexes() {
        let mut w = world(deployment("web", 4, "toolbox", Value::Null), &["a"]);
        step(&mut w);
        make_ready(&mut w, |_| true);
        w.deployments = vec![deployment("web", 2, "toolbox", Value::Null)];
        step(&mut w);
        assert_eq!(names(&w), ["web-0", "web-1"]);
    }

    #[test]
    fn rolling_update_keeps_availability_and_surges_by_one() {
        let strategy =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        let mut w = world(deployment("web", 4, "v1", strategy.clone()), &["a", "b"]);
        step(&mut w);
        make_ready(&mut w, |_| true);
        step(&mut w);
        w.deployments[0] = Resource {
            status: w.deployments[0].status.clone(),
            ..deployment("web", 4, "v2", strategy)
        };
        for round in 0..20 {
            step(&mut w);
            let total = w.instances.len();
            assert!(
                total <= 5,
                "round {round}: {total} instances exceed replicas + maxSurge"
            );
            let available = w
                .instances
                .iter()
                .filter(|i| i.status.as_ref().is_some_and(|s| s["ready"] == true))
                .count();
            assert!(available >= 4, "round {round}: only {available} available");
            make_ready(&mut w, |_| true);
            if w.instances.iter().all(|i| image_of(i) == "v2") && total == 4 {
                return;
            }
        }
        panic!("the rollout did not finish: {:?}", names(&w));
    }

    #[test]
    fn recreate_removes_every_old_instance_first() {
        let strategy = json!({"type": "Recreate"});
        let mut w = world(deployment("web", 3, "v1", strategy.clone()), &["a"]);
        step(&mut w);
        make_ready(&mut w, |_| true);
        w.deployments[0] = deployment("web", 3, "v2", strategy);
        step(&mut w);
        assert!(w.instances.is_empty(), "old ones go before new ones come");
        step(&mut w);
        assert_eq!(w.instances.len(), 3);
        assert!(w.instances.iter().all(|i| image_of(i) == "v2"));
    }

    #[test]
    fn a_revision_that_never_gets_ready_is_rolled_back() {
        let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
        let mut d = deployment("web", 4, "good", strategy.clone());
        let mut w = world(d.clone(), &["a", "b"]);
        step(&mut w);
        make_ready(&mut w, |_| true);
        step(&mut w);
        d = deployment("web", 4, "bad", strategy);
        d.status = w.deployments[0].status.clone();
        if let Some(Spec::Deployment(s)) = &mut d.spec {
            s.progress_deadline_seconds = Some(30);
        }
        w.deployments[0] = d;
        for _ in 0..5 {
            step(&mut w);
            make_ready(&mut w, |s| s.pod.containers[0].image == "good");
        }
        let good = w.instances.iter().filter(|i| image_of(i) == "good").count();
        assert!(
            good >= 3,
            "maxUnavailable 1 keeps 3 of 4 good ones, got {good}"
        );
        w.now_ms += 31_000;
        let events = step(&mut w);
        assert!(
            events.iter().any(|e| e.reason == "RolledBack"),
            "{events:?}"
        );
        let Some(Spec::Deployment(s)) = &w.deployments[0].spec else {
            unreachable!()
        };
        assert_eq!(s.template.spec.containers[0].image, "good");
        for _ in 0..5 {
            step(&mut w);
            make_ready(&mut w, |s| s.pod.containers[0].image == "good");
        }
        assert_eq!(w.instances.len(), 4);
        assert!(w.instances.iter().all(|i| image_of(i) == "good"));
    }

    #[test]
    fn instances_of_a_dead_node_are_replaced_on_live_ones() {
        let mut w = world(
            deployment("web", 6, "toolbox", Value::Null),
            &["a", "b", "c"],
        );
        step(&mut w);
        make_ready(&mut w, |_| true);
        w.nodes[1].alive = false;
        let events = step(&mut w);
        assert!(events.iter().filter(|e| e.reason == "NodeLost").count() == 2);
        step(&mut w);
        assert_eq!(w.instances.len(), 6);
        for i in &w.instances {
            let Some(Spec::Instance(s)) = &i.spec else {
                unreachable!()
            };
            assert_ne!(s.node_name.as_deref(), Some("b"));
        }
    }

    #[test]
    fn orphans_go_and_unschedulable_instances_wait_pending() {
        let mut w = world(deployment("web", 1, "toolbox", Value::Null), &[]);
        step(&mut w);
        let events = step(&mut w);
        assert!(
            events.iter().any(|e| e.reason == "FailedScheduling"),
            "{events:?}"
        );
        let i = &w.instances[0];
        assert_eq!(i.status.as_ref().unwrap()["reason"], "Unschedulable");
        w.nodes = nodes(&["a"]);
        step(&mut w);
        let Some(Spec::Instance(s)) = &w.instances[0].spec else {
            unreachable!()
        };
        assert_eq!(s.node_name.as_deref(), Some("a"));
        w.deployments.clear();
        step(&mut w);
        assert!(w.instances.is_empty());
    }

    #[test]
    fn limits_resolve_like_kubernetes() {
        let d = deployment("w", 10, "x", Value::Null);
        let Some(Spec::Deployment(s)) = &d.spec else {
            unreachable!()
        };
        assert_eq!(rolling_limits(s, 10), (3, 2), "25% up and down");
        let d = deployment(
            "w",
            1,
            "x",
            json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
        );
        let Some(Spec::Deployment(s)) = &d.spec else {
            unreachable!()
        };
        assert_eq!(rolling_limits(s, 1), (0, 1));
    }
}

#[cfg(test)]
mod rate_tests {
    use super::super::{plan as plan_all, NodeView, World};
    use super::*;
    use serde_json::json;

    #[test]
    fn scaling_rates_cap_creations_per_minute() {
        let d = Resource::from_stored(json!({
            "apiVersion": "omnicloud.io/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "1"},
            "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "w"}},
                     "template": {"metadata": {"labels": {"app": "w"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap();
        let policy = Resource::from_stored(json!({
            "apiVersion": "omnicloud.io/v1", "kind": "ClusterScalingPolicy",
            "metadata": {"name": "rates"},
            "spec": {"scalingRates": {"normalMaxPerMinute": 2, "emergencyMaxPerMinute": 3}}
        }))
        .unwrap();
        let w = World {
            deployments: vec![d],
            policies: vec![policy],
            nodes: vec![NodeView::test_agent("a")],
            now_ms: 1_000_000_000,
            ..Default::default()
        };
        let draft = plan_all(&w);
        let creates = draft
            .commands
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Put {
                        mode: PutMode::Create,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(creates, 2, "normalMaxPerMinute");
        assert!(draft
            .events
            .iter()
            .any(|e| e.reason == "ScalingRateLimited"));
    }
}
