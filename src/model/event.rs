//! `Event`: a record of something a controller decided or saw (scaled, placed, rolled
//! back, could not schedule), shown by `omnicloud get events` and `describe`. Written by
//! the server; a repeat of the same reason for the same object bumps `count`.

use serde::{Deserialize, Serialize};

use super::{invalid, ModelError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventSpec {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub kind: String,
    /// CamelCase, e.g. ScalingUp, FailedScheduling, RolledBack ([`EventReason`] for the
    /// server's; kept as written so an event of another version still reads).
    pub reason: String,
    pub message: String,
    pub involved_object: InvolvedObject,
    #[serde(default = "one")]
    pub count: u64,
    #[serde(default)]
    pub first_timestamp: String,
    #[serde(default)]
    pub last_timestamp: String,
    /// What reported it: deployment-controller, scheduler, node-lifecycle, ...
    #[serde(default)]
    pub source: String,
}

fn one() -> u64 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InvolvedObject {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl EventSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.kind != "Normal" && self.kind != "Warning" {
            return Err(invalid(
                "spec.type",
                format!("\"{}\" is not Normal or Warning", self.kind),
            ));
        }
        if self.reason.is_empty() {
            return Err(invalid("spec.reason", "is required"));
        }
        Ok(())
    }
}

/// Every reason the server's controllers and nodes give their events. The string form
/// (`as_str`, CamelCase as Kubernetes writes them) is what Event objects store; the CLI's
/// `scaling history` filter asks [`EventReason::is_scaling`] of the parsed reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// Cluster autoscaler: worker VMs asked for pending instances.
    TriggeredScaleUp,
    /// Cluster autoscaler: a node group raised to its minimum.
    ScaleUpToMinSize,
    /// Cluster autoscaler: a schedule's worker VM pool.
    ScheduledScaleUp,
    /// Cluster autoscaler: a scale-up held back (limits, no director room).
    ScaleUpLimited,
    /// Cluster autoscaler: an empty worker VM removed.
    ScaleDownEmpty,
    /// Cluster autoscaler: an underused worker VM drained and removed.
    ScaleDownUnderused,
    /// Cluster autoscaler: a worker VM that never joined removed.
    ScaleDownUnregistered,
    /// Scheduled scaling: a schedule entry began.
    ScheduleStarted,
    /// Scheduled scaling: a schedule entry ended.
    ScheduleEnded,
    /// Scheduled scaling: a target's replicas set.
    ScheduledRescale,
    /// Scheduled scaling: a target's replicas given back.
    ScheduledRestore,
    /// Scheduled scaling: a target could not be met.
    ScheduleLimited,
    /// Deployment: new instances created.
    ScalingUp,
    /// Deployment, StatefulSet, VirtualMachine: an instance removed.
    DeletingInstance,
    /// StatefulSet, VirtualMachine: an instance created.
    SuccessfulCreate,
    /// Deployment: creations held back by a ClusterScalingPolicy's rate.
    ScalingRateLimited,
    /// Deployment: a rollout past its deadline rolled back.
    RolledBack,
    /// Deployment: a rollout past progressDeadlineSeconds.
    ProgressDeadlineExceeded,
    /// Node lifecycle: an instance of a dead node replaced.
    NodeLost,
    /// Scheduler: an instance evicted for a higher-priority one.
    Preempted,
    /// Scheduler: no node fits an instance.
    FailedScheduling,
    /// HPA: the target's replicas changed.
    SuccessfulRescale,
    /// HPA: the target's replicas could not be changed.
    FailedRescale,
    /// HPA: the target does not exist or has no replicas.
    FailedGetScale,
    /// HPA: more than one HPA targets the same workload.
    AmbiguousSelector,
    /// HPA: no replica count could be computed from the metrics.
    FailedComputeMetricsReplicas,
    /// VPA updater: an instance evicted to take its recommendation.
    EvictedByVpa,
    /// Node network: the instance network is up (ends a network Warning).
    NetworkReady,
    /// Node network: setting up the instance network failed.
    NetworkSetupFailed,
    /// Node network: up without outbound NAT.
    NoOutboundNat,
    /// Node network: no Services data plane (iptables missing).
    NoServiceDataPlane,
    /// Endpoints controller: a Service's targetPort names no container port.
    TargetPortNotFound,
    /// Agent: pulling an instance's image.
    Pulling,
    /// Agent: the image was pulled.
    Pulled,
    /// Agent: the image pull failed.
    Failed,
    /// Agent: an imagePullSecret could not be read (missing, no key, malformed).
    FailedToRetrieveImagePullSecret,
    /// Agent: a container of a multi-container instance started (or restarted).
    Started,
    /// Agent: a container (an init container) failed and is restarted after a back-off.
    BackOff,
}

impl EventReason {
    pub const ALL: [EventReason; 38] = [
        EventReason::TriggeredScaleUp,
        EventReason::ScaleUpToMinSize,
        EventReason::ScheduledScaleUp,
        EventReason::ScaleUpLimited,
        EventReason::ScaleDownEmpty,
        EventReason::ScaleDownUnderused,
        EventReason::ScaleDownUnregistered,
        EventReason::ScheduleStarted,
        EventReason::ScheduleEnded,
        EventReason::ScheduledRescale,
        EventReason::ScheduledRestore,
        EventReason::ScheduleLimited,
        EventReason::ScalingUp,
        EventReason::DeletingInstance,
        EventReason::SuccessfulCreate,
        EventReason::ScalingRateLimited,
        EventReason::RolledBack,
        EventReason::ProgressDeadlineExceeded,
        EventReason::NodeLost,
        EventReason::Preempted,
        EventReason::FailedScheduling,
        EventReason::SuccessfulRescale,
        EventReason::FailedRescale,
        EventReason::FailedGetScale,
        EventReason::AmbiguousSelector,
        EventReason::FailedComputeMetricsReplicas,
        EventReason::EvictedByVpa,
        EventReason::NetworkReady,
        EventReason::NetworkSetupFailed,
        EventReason::NoOutboundNat,
        EventReason::NoServiceDataPlane,
        EventReason::TargetPortNotFound,
        EventReason::Pulling,
        EventReason::Pulled,
        EventReason::Failed,
        EventReason::FailedToRetrieveImagePullSecret,
        EventReason::Started,
        EventReason::BackOff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::TriggeredScaleUp => "TriggeredScaleUp",
            EventReason::ScaleUpToMinSize => "ScaleUpToMinSize",
            EventReason::ScheduledScaleUp => "ScheduledScaleUp",
            EventReason::ScaleUpLimited => "ScaleUpLimited",
            EventReason::ScaleDownEmpty => "ScaleDownEmpty",
            EventReason::ScaleDownUnderused => "ScaleDownUnderused",
            EventReason::ScaleDownUnregistered => "ScaleDownUnregistered",
            EventReason::ScheduleStarted => "ScheduleStarted",
            EventReason::ScheduleEnded => "ScheduleEnded",
            EventReason::ScheduledRescale => "ScheduledRescale",
            EventReason::ScheduledRestore => "ScheduledRestore",
            EventReason::ScheduleLimited => "ScheduleLimited",
            EventReason::ScalingUp => "ScalingUp",
            EventReason::DeletingInstance => "DeletingInstance",
            EventReason::SuccessfulCreate => "SuccessfulCreate",
            EventReason::ScalingRateLimited => "ScalingRateLimited",
            EventReason::RolledBack => "RolledBack",
            EventReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            EventReason::NodeLost => "NodeLost",
            EventReason::Preempted => "Preempted",
            EventReason::FailedScheduling => "FailedScheduling",
            EventReason::SuccessfulRescale => "SuccessfulRescale",
            EventReason::FailedRescale => "FailedRescale",
            EventReason::FailedGetScale => "FailedGetScale",
            EventReason::AmbiguousSelector => "AmbiguousSelector",
            EventReason::FailedComputeMetricsReplicas => "FailedComputeMetricsReplicas",
            EventReason::EvictedByVpa => "EvictedByVPA",
            EventReason::NetworkReady => "NetworkReady",
            EventReason::NetworkSetupFailed => "NetworkSetupFailed",
            EventReason::NoOutboundNat => "NoOutboundNAT",
            EventReason::NoServiceDataPlane => "NoServiceDataPlane",
            EventReason::TargetPortNotFound => "TargetPortNotFound",
            EventReason::Pulling => "Pulling",
            EventReason::Pulled => "Pulled",
            EventReason::Failed => "Failed",
            EventReason::FailedToRetrieveImagePullSecret => "FailedToRetrieveImagePullSecret",
            EventReason::Started => "Started",
            EventReason::BackOff => "BackOff",
        }
    }

    /// A scaling decision (`omnicloud scaling history` shows it): the autoscalers' and the
    /// controllers' changes to how many instances or nodes there are, and why one was held
    /// back. Every reason is listed, so a new one is a decision here.
    pub fn is_scaling(self) -> bool {
        match self {
            EventReason::TriggeredScaleUp
            | EventReason::ScaleUpToMinSize
            | EventReason::ScheduledScaleUp
            | EventReason::ScaleUpLimited
            | EventReason::ScaleDownEmpty
            | EventReason::ScaleDownUnderused
            | EventReason::ScaleDownUnregistered
            | EventReason::ScheduleStarted
            | EventReason::ScheduleEnded
            | EventReason::ScheduledRescale
            | EventReason::ScheduledRestore
            | EventReason::ScheduleLimited
            | EventReason::ScalingUp
            | EventReason::DeletingInstance
            | EventReason::SuccessfulCreate
            | EventReason::ScalingRateLimited
            | EventReason::RolledBack
            | EventReason::ProgressDeadlineExceeded
            | EventReason::NodeLost
            | EventReason::Preempted
            | EventReason::FailedScheduling
            | EventReason::SuccessfulRescale
            | EventReason::FailedRescale
            | EventReason::EvictedByVpa => true,
            EventReason::FailedGetScale
            | EventReason::AmbiguousSelector
            | EventReason::FailedComputeMetricsReplicas
            | EventReason::NetworkReady
            | EventReason::NetworkSetupFailed
            | EventReason::NoOutboundNat
            | EventReason::NoServiceDataPlane
            | EventReason::TargetPortNotFound
            | EventReason::Pulling
            | EventReason::Pulled
            | EventReason::Failed
            | EventReason::FailedToRetrieveImagePullSecret
            | EventReason::Started
            | EventReason::BackOff => false,
        }
    }

    /// The reason of a stored event; None for one this version does not give.
    pub fn parse(s: &str) -> Option<EventReason> {
        EventReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

string_form!(EventReason);

impl Serialize for EventReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_back_from_their_string_form() {
        for r in EventReason::ALL {
            assert_eq!(EventReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        let mut names: Vec<&str> = EventReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            EventReason::ALL.len(),
            "a string form is given twice"
        );
        assert_eq!(EventReason::parse("ScalingReplicaSet"), None);
    }

    #[test]
    fn autoscaler_decisions_are_scaling_and_node_faults_are_not() {
        for r in [
            EventReason::TriggeredScaleUp,
            EventReason::ScaleDownUnregistered,
            EventReason::ScheduledRestore,
            EventReason::SuccessfulRescale,
            EventReason::EvictedByVpa,
        ] {
            assert!(r.is_scaling(), "{r}");
        }
        for r in [EventReason::NoOutboundNat, EventReason::FailedGetScale] {
            assert!(!r.is_scaling(), "{r}");
        }
    }
}
