//! The statuses the controllers write and the CLI, the API and other controllers read:
//! Deployment, StatefulSet and VirtualMachine (the workloads with replicas), and the HPA's
//! and the VPA's with their conditions. An Instance's status is [`super::InstanceStatus`].
//!
//! Each serializes to exactly the JSON stored and shown (`get -o json`, the k8s surface);
//! a status reads with every field defaulted, so one written by another version, or none
//! yet, still parses ([`of`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workload::PodTemplate;

/// The status stored in `v` (an object's `status`) as `T`; `T`'s default when there is
/// none or it does not read as `T`.
pub fn of<T: DeserializeOwned + Default>(v: Option<&Value>) -> T {
    v.filter(|v| !v.is_null())
        .and_then(|v| T::deserialize(v).ok())
        .unwrap_or_default()
}

/// The counts every workload status has: what `--wait` and `describe` follow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReplicaCounts {
    pub observed_generation: u64,
    pub replicas: i64,
    pub ready_replicas: i64,
}

/// Where a Deployment's rollout is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutCondition {
    #[default]
    Progressing,
    /// Every replica of the target revision is available and no old one is left.
    Complete,
    /// `spec.paused`: the target revision is frozen.
    Paused,
    /// Not complete within `progressDeadlineSeconds` (rolled back when it can be).
    ProgressDeadlineExceeded,
}

/// One pod template revision a Deployment rolled out (`rollout history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// The template's hash (`spec.revision` of its instances).
    pub revision: String,
    pub template: PodTemplate,
    /// RFC 3339: when it became the target.
    pub since: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub observed_generation: u64,
    pub replicas: i64,
    /// Instances of the target revision.
    pub updated_replicas: i64,
    pub ready_replicas: i64,
    /// Ready for `minReadySeconds`.
    pub available_replicas: i64,
    /// The target revision.
    pub revision: String,
    pub condition: RolloutCondition,
    /// RFC 3339: when the target revision's rollout began.
    pub progressing_since: String,
    /// Oldest first, at most `revisionHistoryLimit`.
    pub history: Vec<RevisionRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StatefulSetStatus {
    pub observed_generation: u64,
    pub replicas: i64,
    pub ready_replicas: i64,
    pub available_replicas: i64,
    /// Instances of the current template.
    pub updated_replicas: i64,
    pub update_revision: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    pub observed_generation: u64,
    pub replicas: i64,
    /// VMs whose `__vmm` runs.
    pub running_replicas: i64,
    pub ready_replicas: i64,
    pub revision: String,
}

/// "True" or "False", as Kubernetes writes a condition's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    #[default]
    False,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// One condition of an autoscaler's status (Kubernetes' shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// RFC 3339: kept while the condition's type and status stay the same.
    pub last_transition_time: String,
}

impl Condition {
    /// A condition as of `now`, keeping the transition time of the same type and status in
    /// `old` (the previous status's conditions).
    pub fn since(
        old: &[Condition],
        kind: &str,
        status: bool,
        reason: &str,
        message: &str,
        now: &str,
    ) -> Condition {
        let status = ConditionStatus::from(status);
        let since = old
            .iter()
            .find(|o| o.kind == kind && o.status == status)
            .map_or(now, |o| o.last_transition_time.as_str());
        Condition {
            kind: kind.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: since.to_string(),
        }
    }
}

/// The HorizontalPodAutoscaler's status (autoscaling/v2's shape).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HpaStatus {
    pub observed_generation: u64,
    pub current_replicas: i64,
    pub desired_replicas: i64,
    /// autoscaling/v2 MetricStatus objects, one per spec metric.
    pub current_metrics: Vec<Value>,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
}

/// The VerticalPodAutoscaler's status (autoscaling.k8s.io/v1's shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VpaStatus {
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<VpaRecommendation>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VpaRecommendation {
    pub container_recommendations: Vec<ContainerRecommendation>,
}

/// Requests per resource (`cpu: 250m`, `memory: 300Mi`).
pub type Amounts = std::collections::BTreeMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerRecommendation {
    pub container_name: String,
    pub lower_bound: Amounts,
    pub target: Amounts,
    pub upper_bound: Amounts,
    pub uncapped_target: Amounts,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statuses_keep_their_stored_shape() {
        let v = json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 1,
            "availableReplicas": 1, "updatedReplicas": 3, "updateRevision": "abc"});
        let s: StatefulSetStatus = of(Some(&v));
        assert_eq!((s.replicas, s.update_revision.as_str()), (3, "abc"));
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        let v = json!({"observedGeneration": 1, "replicas": 1, "runningReplicas": 1,
            "readyReplicas": 0, "revision": "r1"});
        assert_eq!(
            serde_json::to_value(of::<VirtualMachineStatus>(Some(&v))).unwrap(),
            v
        );
        let counts: ReplicaCounts = of(Some(&v));
        assert_eq!((counts.observed_generation, counts.replicas), (1, 1));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let old: VpaStatus = of(Some(
            &json!({"conditions": [{"type": "RecommendationProvided",
            "status": "True", "reason": "R", "message": "m", "lastTransitionTime": "t0"}]}),
        ));
        let same = Condition::since(
            &old.conditions,
            "RecommendationProvided",
            true,
            "R",
            "m2",
            "t1",
        );
        assert_eq!(same.last_transition_time, "t0");
        let flipped = Condition::since(
            &old.conditions,
            "RecommendationProvided",
            false,
            "N",
            "m",
            "t1",
        );
        assert_eq!(flipped.last_transition_time, "t1");
        assert_eq!(
            serde_json::to_value(&flipped).unwrap(),
            json!({"type": "RecommendationProvided", "status": "False", "reason": "N",
                   "message": "m", "lastTransitionTime": "t1"})
        );
        let vpa = VpaStatus {
            conditions: vec![same],
            recommendation: None,
        };
        assert_eq!(
            serde_json::to_value(&vpa).unwrap()["conditions"][0]["status"],
            "True"
        );
        assert!(serde_json::to_value(&vpa)
            .unwrap()
            .get("recommendation")
            .is_none());
    }

    #[test]
    fn a_missing_or_foreign_status_reads_as_the_default() {
        assert_eq!(of::<DeploymentStatus>(None), DeploymentStatus::default());
        assert_eq!(
            of::<DeploymentStatus>(Some(&Value::Null)),
            DeploymentStatus::default()
        );
        let d: DeploymentStatus = of(Some(&json!({"replicas": 2})));
        assert_eq!(
            (d.replicas, d.condition),
            (2, RolloutCondition::Progressing)
        );
        let d: DeploymentStatus = of(Some(&json!({"condition": "ProgressDeadlineExceeded"})));
        assert_eq!(d.condition, RolloutCondition::ProgressDeadlineExceeded);
        assert_eq!(
            serde_json::to_value(RolloutCondition::ProgressDeadlineExceeded).unwrap(),
            "ProgressDeadlineExceeded"
        );
    }
}
