//! Application autoscaling kinds: HorizontalPodAutoscaler (Kubernetes autoscaling/v2 fields
//! plus the tutorial's `scaling.coordination`) and VerticalPodAutoscaler. The cluster's own
//! capacity kinds are in `capacity`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::{self, MAX_PERCENT, MAX_REPLICAS};
use super::quantity::Quantity;
use super::{invalid, ModelError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaSpec {
    pub scale_target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
    pub max_replicas: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<MetricSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HpaBehavior>,
    /// autoscaling/v1 form.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "targetCPUUtilizationPercentage"
    )]
    pub target_cpu_utilization_percentage: Option<i64>,
    /// OmniCloud: how this HPA coordinates with vertical and infrastructure scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<HpaScaling>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaScaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<Coordination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Coordination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical_priority: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_awareness: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricSpec {
    /// Resource, Pods, Object, External or ContainerResource.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resource: Option<ResourceMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamedMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<NamedMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<NamedMetric>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceMetric {
    /// cpu or memory.
    pub name: String,
    pub target: MetricTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedMetric {
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub described_object: Option<TargetRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricIdentifier {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricTarget {
    /// Utilization, AverageValue or Value.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Quantity>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaBehavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<i64>,
    /// Max (default), Min or Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalingPolicy>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Quantity>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// Pods or Percent.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: i64,
    pub period_seconds: i64,
}

impl HpaSpec {
    pub fn min_replicas(&self) -> i64 {
        self.min_replicas.unwrap_or(1)
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        limits::opt_range("spec.minReplicas", self.min_replicas, 1, MAX_REPLICAS)?;
        limits::range("spec.maxReplicas", self.max_replicas, 1, MAX_REPLICAS)?;
        if self.min_replicas() > self.max_replicas {
            return Err(invalid(
                "spec.minReplicas",
                format!(
                    "{} is above maxReplicas {}",
                    self.min_replicas(),
                    self.max_replicas
                ),
            ));
        }
        let target = &self.scale_target_ref;
        if !["Deployment", "StatefulSet"].contains(&target.kind.as_str()) {
            return Err(invalid(
                "spec.scaleTargetRef.kind",
                format!("\"{}\" is not Deployment or StatefulSet", target.kind),
            ));
        }
        super::validate_name("spec.scaleTargetRef.name", &target.name)?;
        if let Some(p) = self.target_cpu_utilization_percentage {
            if p < 1 {
                return Err(invalid(
                    "spec.targetCPUUtilizationPercentage",
                    "must be a percentage > 0",
                ));
            }
            limits::range("spec.targetCPUUtilizationPercentage", p, 1, MAX_PERCENT)?;
            if self.metrics.as_ref().is_some_and(|m| !m.is_empty()) {
                return Err(invalid(
                    "spec.targetCPUUtilizationPercentage",
                    "give either this (autoscaling/v1) or spec.metrics, not both",
                ));
            }
        }
        for (i, m) in self.metrics.iter().flatten().enumerate() {
            let field = format!("spec.metrics[{i}]");
            if let (Some(r), "Resource" | "ContainerResource") = (
                m.resource.as_ref().or(m.container_resource.as_ref()),
                m.kind.as_str(),
            ) {
                if r.name != "cpu" && r.name != "memory" {
                    let source = if m.kind == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    return Err(invalid(
                        &format!("{field}.{source}.name"),
                        format!("\"{}\" is not cpu or memory", r.name),
                    ));
                }
            }
            let (source, target) = match m.kind.as_str() {
                "Resource" => ("resource", m.resource.as_ref().map(|r| &r.target)),
                "ContainerResource" => (
                    "containerResource",
                    m.container_resource.as_ref().map(|r| &r.target),
                ),
                "Pods" => ("pods", m.pods.as_ref().map(|p| &p.target)),
                "Object" => ("object", m.object.as_ref().map(|p| &p.target)),
                "External" => ("external", m.external.as_ref().map(|p| &p.target)),
                other => {
                    return Err(invalid(
                        &format!("{field}.type"),
                        format!(
                        "\"{other}\" is not Resource, Pods, Object, External or ContainerResource"
                    ),
                    ))
                }
            };
            let target = target.ok_or_else(|| {
                invalid(&format!("{field}.{source}"), "is required for this type")
            })?;
            let tfield = format!("{field}.{source}.target");
            if m.kind == "Pods" && target.kind != "AverageValue" {
                return Err(invalid(
                    &format!("{tfield}.type"),
                    format!(
                        "\"{}\" is not supported for Pods metrics; use AverageValue",
                        target.kind
                    ),
                ));
            }
            match target.kind.as_str() {
                "Utilization" => match target.average_utilization {
                    Some(u) if u > 0 => {
                        limits::range(&format!("{tfield}.averageUtilization"), u, 1, MAX_PERCENT)?
                    }
                    _ => {
                        return Err(invalid(
                            &format!("{tfield}.averageUtilization"),
                            "must be a percentage > 0",
                        ))
                    }
                },
                "AverageValue" if target.average_value.is_none() => {
                    return Err(invalid(
                        &format!("{tfield}.averageValue"),
                        "is required for AverageValue",
                    ))
                }
                "Value" if target.value.is_none() => {
                    return Err(invalid(&format!("{tfield}.value"), "is required for Value"))
                }
                "AverageValue" | "Value" => {}
                other => {
                    return Err(invalid(
                        &format!("{tfield}.type"),
                        format!("\"{other}\" is not Utilization, AverageValue or Value"),
                    ))
                }
            }
        }
        for (dir, rules) in [
            (
                "scaleUp",
                self.behavior.as_ref().and_then(|b| b.scale_up.as_ref()),
            ),
            (
                "scaleDown",
                self.behavior.as_ref().and_then(|b| b.scale_down.as_ref()),
            ),
        ] {
            let Some(rules) = rules else { continue };
            let field = format!("spec.behavior.{dir}");
            if rules
                .stabilization_window_seconds
                .is_some_and(|s| !(0..=3600).contains(&s))
            {
                return Err(invalid(
                    &format!("{field}.stabilizationWindowSeconds"),
                    "must be between 0 and 3600",
                ));
            }
            if let Some(p) = &rules.select_policy {
                if !["Max", "Min", "Disabled"].contains(&p.as_str()) {
                    return Err(invalid(
                        &format!("{field}.selectPolicy"),
                        format!("\"{p}\" is not Max, Min or Disabled"),
                    ));
                }
            }
            if rules.tolerance.as_ref().is_some_and(|t| t.millis() >= 1000) {
                return Err(invalid(
                    &format!("{field}.tolerance"),
                    "must be a fraction below 1, like 0.05",
                ));
            }
            for (i, p) in rules.policies.iter().flatten().enumerate() {
                let pf = format!("{field}.policies[{i}]");
                if p.kind != "Pods" && p.kind != "Percent" {
                    return Err(invalid(
                        &format!("{pf}.type"),
                        format!("\"{}\" is not Pods or Percent", p.kind),
                    ));
                }
                let max = if p.kind == "Pods" {
                    MAX_REPLICAS
                } else {
                    MAX_PERCENT
                };
                limits::range(&format!("{pf}.value"), p.value, 1, max)?;
                if !(1..=1800).contains(&p.period_seconds) {
                    return Err(invalid(
                        &format!("{pf}.periodSeconds"),
                        "must be between 1 and 1800",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VpaSpec {
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_policy: Option<VpaUpdatePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<VpaResourcePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommenders: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VpaUpdatePolicy {
    /// Off, Initial, Auto (default) or Recreate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VpaResourcePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_policies: Option<Vec<VpaContainerPolicy>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VpaContainerPolicy {
    pub container_name: String,
    /// Auto or Off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allowed: Option<super::workload::ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed: Option<super::workload::ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_resources: Option<Vec<String>>,
    /// RequestsAndLimits or RequestsOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_values: Option<String>,
    /// OmniCloud: startup and/or runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_phases: Option<Vec<String>>,
}

impl VpaSpec {
    pub fn update_mode(&self) -> &str {
        self.update_policy
            .as_ref()
            .and_then(|p| p.update_mode.as_deref())
            .unwrap_or("Auto")
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        limits::opt_range(
            "spec.updatePolicy.minReplicas",
            self.update_policy.as_ref().and_then(|p| p.min_replicas),
            1,
            MAX_REPLICAS,
        )?;
        if let Some(m) = self
            .update_policy
            .as_ref()
            .and_then(|p| p.update_mode.as_deref())
        {
            if !["Off", "Initial", "Auto", "Recreate"].contains(&m) {
                return Err(invalid(
                    "spec.updatePolicy.updateMode",
                    format!("\"{m}\" is not one of Off, Initial, Auto, Recreate"),
                ));
            }
        }
        for (i, p) in self
            .resource_policy
            .iter()
            .flat_map(|r| r.container_policies.iter().flatten())
            .enumerate()
        {
            let field = format!("spec.resourcePolicy.containerPolicies[{i}]");
            for (name, list) in [
                ("minAllowed", &p.min_allowed),
                ("maxAllowed", &p.max_allowed),
            ] {
                if let Some(list) = list {
                    super::pod_validation::validate_resource_list(
                        &format!("{field}.{name}"),
                        list,
                    )?;
                }
            }
            if let (Some(min), Some(max)) = (&p.min_allowed, &p.max_allowed) {
                if let (Some(a), Some(b)) = (&min.cpu, &max.cpu) {
                    if a.millis() > b.millis() {
                        return Err(invalid(
                            &format!("{field}.minAllowed.cpu"),
                            format!("{a} is above maxAllowed {b}"),
                        ));
                    }
                }
                if let (Some(a), Some(b)) = (&min.memory, &max.memory) {
                    if a.bytes() > b.bytes() {
                        return Err(invalid(
                            &format!("{field}.minAllowed.memory"),
                            format!("{a} is above maxAllowed {b}"),
                        ));
                    }
                }
            }
            for (j, r) in p.controlled_resources.iter().flatten().enumerate() {
                if r != "cpu" && r != "memory" {
                    return Err(invalid(
                        &format!("{field}.controlledResources[{j}]"),
                        format!("\"{r}\" is not cpu or memory"),
                    ));
                }
            }
            for (j, ph) in p.controlled_phases.iter().flatten().enumerate() {
                if ph != "startup" && ph != "runtime" {
                    return Err(invalid(
                        &format!("{field}.controlledPhases[{j}]"),
                        format!("\"{ph}\" is not startup or runtime"),
                    ));
                }
            }
        }
        Ok(())
    }
}
