//! The StatefulSet controller: stable identities `<name>-<ordinal>`, each with its own
//! claims (`<claim template>-<name>-<ordinal>`, a directory that outlives the instance).
//!
//! - OrderedReady (default): ordinal i is created only once 0..i are all ready; scaling
//!   down removes the highest ordinal, one per pass.
//! - Parallel: every missing ordinal is created, every excess one removed, at once.
//! - RollingUpdate (default): once every ordinal runs and is ready, stale ones at or above
//!   `partition` are replaced from the highest down, up to `maxUnavailable` at a time
//!   (default 1). OnDelete: only replaced when deleted by hand.
//!
//! At most one live instance per identity: names are the identity, the store holds one
//! object per name, and an instance on a dead node is only replaced after the node has
//! been down long enough that its agent has fenced it (see `nodes`).

use std::collections::{BTreeMap, BTreeSet};

use super::deployment::template_revision;
use super::{key_of, new_instance, version, Draft, EventDraft, InstanceView, Pass};
use crate::model::event::EventReason;
use crate::model::status::StatefulSetStatus;
use crate::model::workload::{PvcSource, Volume};
use crate::model::{Kind, PodTemplate, Resource, Spec};
use crate::store::Command;

const SOURCE: &str = "statefulset-controller";

/// The claim an ordinal's volume template resolves to.
pub fn claim_name(template: &str, set: &str, ordinal: i64) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The pod template of one ordinal: the set's template plus a volume per claim template.
fn ordinal_template(set: &crate::model::StatefulSetSpec, name: &str, ordinal: i64) -> PodTemplate {
    let mut t = set.template.clone();
    for c in set.volume_claim_templates.iter().flatten() {
        let volumes = t.spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != c.metadata.name);
        volumes.push(Volume {
            name: c.metadata.name.clone(),
            empty_dir: None,
            host_path: None,
            persistent_volume_claim: Some(PvcSource {
                claim_name: claim_name(&c.metadata.name, name, ordinal),
                read_only: None,
            }),
            config_map: None,
            secret: None,
        });
    }
    t
}

pub fn plan(pass: &Pass, s: &Resource, draft: &mut Draft) {
    let Some(Spec::StatefulSet(spec)) = &s.spec else {
        return;
    };
    let world = pass.world;
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    let name = s.metadata.name.clone();
    let revision = template_revision(&serde_json::to_value(&spec.template).expect("JSON"));
    let desired = spec.replicas().max(0);
    let parallel = spec.pod_management_policy() == "Parallel";
    let min_ready = spec.min_ready_seconds.unwrap_or(0).max(0) as u64;
    let mine: BTreeMap<i64, &InstanceView> = pass
        .instances
        .iter()
        .filter(|i| i.namespace() == ns && i.owned_by(Kind::StatefulSet, &s.metadata.uid))
        .map(|i| (i.index(), i))
        .collect();
    let ready = |i: &InstanceView| i.available(world.now_ms, min_ready);
    let mut deleted = BTreeSet::new();
    let mut delete = |i: &InstanceView, why: String, draft: &mut Draft| {
        deleted.insert(i.index());
        draft.commands.push(Command::Delete {
            key: key_of(i.resource),
            expected_version: version(i.resource),
        });
        draft.events.push(EventDraft::normal(
            s,
            EventReason::DeletingInstance,
            why,
            SOURCE,
        ));
    };

    // Scale down: excess ordinals, highest first.
    let excess: Vec<&&InstanceView> = mine.range(desired..).rev().map(|(_, i)| i).collect();
    for i in excess.iter().take(if parallel { usize::MAX } else { 1 }) {
        delete(i, format!("deleted {} (scaled down)", i.name()), draft);
    }
    // Scale up: missing ordinals; OrderedReady waits for every lower one to be ready.
    let taken: BTreeSet<&str> = pass
        .instances
        .iter()
        .filter(|i| i.namespace() == ns)
        .map(|i| i.name())
        .collect();
    // Work per pass is bounded by the instances that exist plus what may be created.
    let mut room = super::create_room(mine.values().copied());
    let mut lower_ready = true;
    for ordinal in 0..desired {
        if room <= 0 {
            break;
        }
        if let Some(i) = mine.get(&ordinal) {
            lower_ready &= ready(i);
            continue;
        }
        if !parallel && !lower_ready {
            break;
        }
        lower_ready = false; // this ordinal is missing: nothing above it is ordered-ready
        let instance_name = format!("{name}-{ordinal}");
        if taken.contains(instance_name.as_str()) {
            continue;
        }
        let template = ordinal_template(spec, &name, ordinal);
        room -= 1;
        draft.creates.push(new_instance(
            s,
            &ns,
            &instance_name,
            ordinal,
            &revision,
            &template,
        ));
        draft.events.push(EventDraft::normal(
            s,
            EventReason::SuccessfulCreate,
            format!("create instance {instance_name}"),
            SOURCE,
        ));
        if !parallel {
            break;
        }
    }
    // Rolling update: once all are up and ready, stale ordinals from the top down.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.kind.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let ru = strategy.rolling_update.unwrap_or_default();
    let partition = ru.partition.unwrap_or(0).max(0);
    let max_unavailable = ru
        .max_unavailable
        .and_then(|m| m.resolve(desired, false))
        .unwrap_or(1)
        .max(1);
    let in_range: Vec<&&InstanceView> = mine.range(..desired).map(|(_, i)| i).collect();
    let unavailable = (desired - in_range.iter().filter(|i| ready(i)).count() as i64).max(0);
    if rolling && (in_range.len() as i64) == desired {
        let budget = (max_unavailable - unavailable).max(0);
        let stale = in_range
            .iter()
            .rev()
            .filter(|i| i.index() >= partition && i.revision() != revision)
            .take(budget as usize);
        for i in stale {
            delete(
                i,
                format!("replacing {} with revision {revision}", i.name()),
                draft,
            );
        }
    }

    let count = |f: &dyn Fn(&InstanceView) -> bool| mine.values().filter(|i| f(i)).count() as i64;
    let status = StatefulSetStatus {
        observed_generation: s.metadata.generation,
        replicas: mine.len() as i64,
        ready_replicas: count(&|i| i.ready()),
        available_replicas: count(&|i| ready(i)),
        updated_replicas: count(&|i| i.revision() == revision),
        update_revision: revision.to_string(),
    };
    draft.commands.extend(super::status_change(s, &status));
}

#[cfg(test)]
mod tests {
    use super::super::{step, NodeView, World};
    use super::*;
    use crate::model::instance::InstanceSpec;
    use serde_json::json;

    fn set(replicas: i64, policy: &str, image: &str) -> Resource {
        Resource::from_stored(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default", "uid": "uid-db",
                         "resourceVersion": "1", "generation": 1},
            "spec": {"replicas": replicas, "podManagementPolicy": policy,
                     "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "c", "image": image,
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                               "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}
        }))
        .unwrap()
    }

    fn world(s: Resource) -> World {
        World {
            statefulsets: vec![s],
            nodes: vec![NodeView::test_agent("a")],
            now_ms: 1_000_000_000,
            ..Default::default()
        }
    }

    fn ready_all(w: &mut World) {
        for i in w.instances.iter_mut() {
            let Some(Spec::Instance(s)) = &i.spec else {
                continue;
            };
            i.status = Some(json!({"phase": "Running", "ready": true, "restarts": 0,
                                   "revision": s.revision, "readySince": "2000-01-01T00:00:00Z"}));
        }
    }

    fn names(w: &World) -> Vec<String> {
        let mut v: Vec<String> = w
            .instances
            .iter()
            .map(|i| i.metadata.name.clone())
            .collect();
        v.sort();
        v
    }

    fn spec_of(r: &Resource) -> &InstanceSpec {
        match &r.spec {
            Some(Spec::Instance(s)) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn ordered_ready_starts_one_at_a_time_with_stable_claims() {
        let mut w = world(set(3, "OrderedReady", "v1"));
        step(&mut w);
        step(&mut w);
        assert_eq!(names(&w), ["db-0"], "db-1 waits for db-0 to be ready");
        ready_all(&mut w);
        step(&mut w);
        assert_eq!(names(&w), ["db-0", "db-1"]);
        ready_all(&mut w);
        step(&mut w);
        ready_all(&mut w);
        assert_eq!(names(&w), ["db-0", "db-1", "db-2"]);
        let vols = spec_of(&w.instances[2]).pod.volumes.clone().unwrap();
        let claim = vols[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "data-db-2");
        // Scale down: the highest ordinal, one per pass.
        w.statefulsets = vec![set(1, "OrderedReady", "v1")];
        step(&mut w);
        assert_eq!(names(&w), ["db-0", "db-1"]);
        step(&mut w);
        assert_eq!(names(&w), ["db-0"]);
    }

    #[test]
    fn parallel_creates_everything_at_once() {
        let mut w = world(set(3, "Parallel", "v1"));
        step(&mut w);
        assert_eq!(names(&w), ["db-0", "db-1", "db-2"]);
    }

    #[test]
    fn rolling_update_replaces_from_the_highest_ordinal() {
        let mut w = world(set(3, "OrderedReady", "v1"));
        for _ in 0..4 {
            step(&mut w);
            ready_all(&mut w);
        }
        w.statefulsets = vec![set(3, "OrderedReady", "v2")];
        step(&mut w);
        assert_eq!(names(&w), ["db-0", "db-1"], "db-2 goes first");
        step(&mut w);
        let db2 = w
            .instances
            .iter()
            .find(|i| i.metadata.name == "db-2")
            .unwrap();
        assert_eq!(spec_of(db2).pod.containers[0].image, "v2");
        for _ in 0..6 {
            ready_all(&mut w);
            step(&mut w);
        }
        assert!(w
            .instances
            .iter()
            .all(|i| spec_of(i).pod.containers[0].image == "v2"));
        assert_eq!(names(&w), ["db-0", "db-1", "db-2"]);
    }
}
