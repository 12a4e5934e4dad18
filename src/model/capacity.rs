//! Cluster capacity kinds: ClusterAutoscaler (node groups of worker VMs), ClusterScalingPolicy
//! (bootstrap limits, application limits, scaling rates) and ResourceQuota.

use serde::{Deserialize, Serialize};

use super::limits::{self, MAX_NODES, MAX_POLICY_COUNT};
use super::quantity::DurationStr;
use super::workload::QuantityMap;
use super::{invalid, ModelError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterAutoscalerSpec {
    pub node_groups: Vec<NodeGroup>,
    /// low, medium, high: how much headroom the platform's own components get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director_awareness: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroup {
    pub name: String,
    /// NodeClass giving the worker VM size; default: the first NodeClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class: Option<String>,
    pub min_size: i64,
    pub max_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_policy: Option<NodeGroupScaling>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroupScaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScaleUpRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDownRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleUpRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_time: Option<DurationStr>,
    /// OmniCloud: the least time between two scale-ups of the group (default 0s: workers
    /// still booting already count as capacity, so none is needed to avoid overshoot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationStr>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleDownRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_time: Option<DurationStr>,
    /// OmniCloud: no scale-down of the group until this long after its last scale-up
    /// (default 10m, Kubernetes' scale-down-delay-after-add).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationStr>,
}

/// Defaults of a node group's scaling policy.
pub const DEFAULT_DECISION_TIME_MS: u64 = 30_000;
pub const DEFAULT_EMPTY_TIME_MS: u64 = 600_000;
pub const DEFAULT_UTILIZATION_THRESHOLD: i64 = 50;
pub const DEFAULT_SCALE_DOWN_COOLDOWN_MS: u64 = 600_000;

impl NodeGroup {
    fn up(&self) -> Option<&ScaleUpRule> {
        self.scaling_policy.as_ref()?.scale_up.as_ref()
    }

    fn down(&self) -> Option<&ScaleDownRule> {
        self.scaling_policy.as_ref()?.scale_down.as_ref()
    }

    /// How long an instance waits unschedulable before it asks for a worker.
    pub fn decision_time_ms(&self) -> u64 {
        self.up()
            .and_then(|u| u.decision_time.as_ref())
            .map_or(DEFAULT_DECISION_TIME_MS, |d| d.as_millis())
    }

    pub fn scale_up_cooldown_ms(&self) -> u64 {
        self.up()
            .and_then(|u| u.cooldown.as_ref())
            .map_or(0, |d| d.as_millis())
    }

    /// How long a worker stays unneeded before it is removed.
    pub fn empty_time_ms(&self) -> u64 {
        self.down()
            .and_then(|d| d.empty_time.as_ref())
            .map_or(DEFAULT_EMPTY_TIME_MS, |d| d.as_millis())
    }

    /// Percent of its capacity a worker's instances request, below which it is underused.
    pub fn utilization_threshold(&self) -> i64 {
        self.down()
            .and_then(|d| d.utilization_threshold)
            .unwrap_or(DEFAULT_UTILIZATION_THRESHOLD)
    }

    pub fn scale_down_cooldown_ms(&self) -> u64 {
        self.down()
            .and_then(|d| d.cooldown.as_ref())
            .map_or(DEFAULT_SCALE_DOWN_COOLDOWN_MS, |d| d.as_millis())
    }
}

impl ClusterAutoscalerSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.node_groups.is_empty() {
            return Err(invalid("spec.nodeGroups", "needs at least one node group"));
        }
        if let Some(p) = &self.bootstrap_priority {
            if !["low", "medium", "high"].contains(&p.as_str()) {
                return Err(invalid(
                    "spec.bootstrapPriority",
                    format!("\"{p}\" is not low, medium or high"),
                ));
            }
        }
        for (i, g) in self.node_groups.iter().enumerate() {
            let field = format!("spec.nodeGroups[{i}]");
            super::validate_name(&format!("{field}.name"), &g.name)?;
            // Workers are VirtualMachines `<group>-<n>` whose guest joins as `<group>-<n>-0`.
            if g.name.len() > 40 {
                return Err(invalid(
                    &format!("{field}.name"),
                    "must be at most 40 characters (worker names are built from it)",
                ));
            }
            if self.node_groups[..i].iter().any(|o| o.name == g.name) {
                return Err(invalid(
                    &format!("{field}.name"),
                    format!("\"{}\" is given twice", g.name),
                ));
            }
            if let Some(c) = &g.node_class {
                super::validate_name(&format!("{field}.nodeClass"), c)?;
            }
            limits::range(&format!("{field}.minSize"), g.min_size, 0, MAX_NODES)?;
            limits::range(&format!("{field}.maxSize"), g.max_size, 0, MAX_NODES)?;
            if g.min_size > g.max_size {
                return Err(invalid(
                    &format!("{field}.minSize"),
                    format!("{} is above maxSize {}", g.min_size, g.max_size),
                ));
            }
            let thresholds = g.scaling_policy.iter().flat_map(|s| {
                let up = s.scale_up.as_ref();
                let down = s.scale_down.as_ref();
                [
                    ("scaleUp.cpuThreshold", up.and_then(|u| u.cpu_threshold)),
                    (
                        "scaleUp.memoryThreshold",
                        up.and_then(|u| u.memory_threshold),
                    ),
                    (
                        "scaleDown.utilizationThreshold",
                        down.and_then(|d| d.utilization_threshold),
                    ),
                ]
            });
            for (name, v) in thresholds {
                if v.is_some_and(|v| !(0..=100).contains(&v)) {
                    return Err(invalid(
                        &format!("{field}.scalingPolicy.{name}"),
                        "must be a percentage 0..100",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterScalingPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_limits: Option<BootstrapLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_limits: Option<ApplicationLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_rates: Option<ScalingRates>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapLimits {
    /// "1:100": one orchestrator per 100 application containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator_ratio: Option<String>,
    /// "1:10": one director per 10 worker VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director_ratio: Option<String>,
    /// Percent of capacity kept for platform components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_reserved_capacity: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplicationLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_per_node: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_containers_per_pod: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_deployment: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingRates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_max_per_minute: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_max_per_minute: Option<i64>,
}

/// Parses "1:100" into (1, 100).
pub fn parse_ratio(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && b > 0).then_some((a, b))
}

/// A ratio a manifest may give: each side 1..=MAX_POLICY_COUNT.
pub(super) fn valid_ratio(s: &str) -> bool {
    parse_ratio(s)
        .is_some_and(|(a, b)| i64::from(a) <= MAX_POLICY_COUNT && i64::from(b) <= MAX_POLICY_COUNT)
}

impl ClusterScalingPolicySpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if let Some(b) = &self.bootstrap_limits {
            for (name, v) in [
                ("orchestratorRatio", &b.orchestrator_ratio),
                ("directorRatio", &b.director_ratio),
            ] {
                if let Some(v) = v {
                    if !valid_ratio(v) {
                        return Err(invalid(
                            &format!("spec.bootstrapLimits.{name}"),
                            format!("\"{v}\" is not a ratio like 1:100 (each side 1..={MAX_POLICY_COUNT})"),
                        ));
                    }
                }
            }
            if b.minimum_reserved_capacity
                .is_some_and(|c| !(0..=100).contains(&c))
            {
                return Err(invalid(
                    "spec.bootstrapLimits.minimumReservedCapacity",
                    "must be a percentage 0..100",
                ));
            }
        }
        let limits = self.application_limits.clone().unwrap_or_default();
        let rates = self.scaling_rates.clone().unwrap_or_default();
        for (name, v) in [
            ("applicationLimits.maxPodsPerNode", limits.max_pods_per_node),
            (
                "applicationLimits.maxContainersPerPod",
                limits.max_containers_per_pod,
            ),
            (
                "applicationLimits.maxReplicasPerDeployment",
                limits.max_replicas_per_deployment,
            ),
            (
                "scalingRates.normalMaxPerMinute",
                rates.normal_max_per_minute,
            ),
            (
                "scalingRates.emergencyMaxPerMinute",
                rates.emergency_max_per_minute,
            ),
        ] {
            limits::opt_range(&format!("spec.{name}"), v, 1, MAX_POLICY_COUNT)?;
        }
        Ok(())
    }
}

/// ResourceQuota: hard limits per namespace plus the tutorial's VM awareness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceQuotaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<QuantityMap>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "vmAwareness"
    )]
    pub vm_awareness: Option<VmAwareness>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmAwareness {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "maxVMTypes"
    )]
    pub max_vm_types: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_exposure: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "vmAffinities"
    )]
    pub vm_affinities: Option<Vec<VmAffinity>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmAffinity {
    #[serde(rename = "vmType")]
    pub vm_type: String,
    pub allocation: String,
}

impl ResourceQuotaSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        limits::opt_range(
            "spec.vmAwareness.maxVMTypes",
            self.vm_awareness.as_ref().and_then(|v| v.max_vm_types),
            0,
            MAX_POLICY_COUNT,
        )?;
        const KNOWN: [&str; 12] = [
            "requests.cpu",
            "requests.memory",
            "limits.cpu",
            "limits.memory",
            "cpu",
            "memory",
            "pods",
            "persistentvolumeclaims",
            "services",
            "requests.storage",
            "count/deployments",
            "count/statefulsets",
        ];
        for name in self.hard.iter().flat_map(|h| h.keys()) {
            if !KNOWN.contains(&name.as_str()) && !name.starts_with("count/") {
                return Err(invalid(
                    &format!("spec.hard.{name}"),
                    format!("unknown resource; expected one of {}", KNOWN.join(", ")),
                ));
            }
        }
        Ok(())
    }
}
