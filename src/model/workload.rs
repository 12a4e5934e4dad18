//! Workload kinds: the pod template (containers, probes, volumes, placement) shared by
//! Deployment and StatefulSet. Field names follow Kubernetes (so existing `apps/v1`
//! manifests work) plus the tutorial's OmniCloud additions (`topologyConstraints`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::{self, MAX_REPLICAS, MAX_REVISION_HISTORY, MAX_SECONDS};
use super::quantity::{CpuQuantity, IntOrString, MemoryQuantity, Quantity};
use super::sources::{ConfigMapVolume, EnvFromSource, EnvVarSource, SecretVolume};
use super::{invalid, validate_label_map, ModelError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let eq = self
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let exprs = self.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => labels.get(&r.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&r.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&r.key),
                "DoesNotExist" => !labels.contains_key(&r.key),
                _ => false,
            }
        });
        eq && exprs
    }

    pub(super) fn validate(&self, field: &str) -> Result<(), ModelError> {
        for (i, r) in self.match_expressions.iter().flatten().enumerate() {
            if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&r.operator.as_str()) {
                return Err(invalid(
                    &format!("{field}.matchExpressions[{i}].operator"),
                    format!(
                        "\"{}\" is not one of In, NotIn, Exists, DoesNotExist",
                        r.operator
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMeta>,
    pub spec: PodSpec,
}

impl PodTemplate {
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<super::affinity::Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// OmniCloud placement: VM groups, colocation with other workloads, director zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_constraints: Option<TopologyConstraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Always, OnFailure, Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// Secrets of type `kubernetes.io/dockerconfigjson` holding registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
}

/// A reference to an object in the same namespace, by name (`imagePullSecrets`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectReference {
    pub name: String,
}

/// When the node pulls a container's image (`imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the name at its registry on every start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull: the image must be on the node already.
    Never,
}

impl PullPolicy {
    /// The policy as written, else Kubernetes' default: Always for `:latest` or no tag
    /// (and no digest), IfNotPresent otherwise.
    pub fn of(image: &str, written: Option<&str>) -> PullPolicy {
        match written {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                let tag = last.split_once(':').map(|(_, t)| t);
                if last.contains('@') || tag.is_some_and(|t| t != "latest") {
                    PullPolicy::IfNotPresent
                } else {
                    PullPolicy::Always
                }
            }
        }
    }
}

impl PodSpec {
    /// Every container and init container with its field path under `field`
    /// (`FIELD.containers[i]`, `FIELD.initContainers[i]`).
    pub fn containers_with_paths<'a>(
        &'a self,
        field: &'a str,
    ) -> impl Iterator<Item = (String, &'a Container)> + 'a {
        self.containers
            .iter()
            .enumerate()
            .map(move |(i, c)| (format!("{field}.containers[{i}]"), c))
            .chain(
                self.init_containers
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(move |(i, c)| (format!("{field}.initContainers[{i}]"), c)),
            )
    }

    /// No containers and nothing else set (a VM instance's pod).
    pub fn is_empty(&self) -> bool {
        *self == PodSpec::default()
    }

    /// cpu millicores and memory bytes the pod asks for (each container's requests,
    /// else its limits, as Kubernetes defaults them).
    pub fn requests(&self) -> (u64, u64) {
        self.sum(|r| {
            let req = r.requests.clone().unwrap_or_default();
            let lim = r.limits.clone().unwrap_or_default();
            (req.cpu.or(lim.cpu), req.memory.or(lim.memory))
        })
    }

    /// cpu millicores and memory bytes of the containers' limits.
    pub fn limits(&self) -> (u64, u64) {
        self.sum(|r| {
            let lim = r.limits.clone().unwrap_or_default();
            (lim.cpu, lim.memory)
        })
    }

    fn sum(
        &self,
        pick: impl Fn(&Resources) -> (Option<CpuQuantity>, Option<MemoryQuantity>),
    ) -> (u64, u64) {
        self.containers.iter().fold((0, 0), |(cpu, mem), c| {
            let (c_cpu, c_mem) = pick(&c.resources.clone().unwrap_or_default());
            (
                cpu.saturating_add(c_cpu.map_or(0, |q| q.millis())),
                mem.saturating_add(c_mem.map_or(0, |q| q.bytes())),
            )
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Always, IfNotPresent, Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
}

/// Requests and limits: cpu and memory typed, anything else (ephemeral-storage,
/// hugepages-2Mi, ...) as a generic quantity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuQuantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryQuantity>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "ephemeral-storage"
    )]
    pub ephemeral_storage: Option<MemoryQuantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<MemoryQuantity>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "hugepages-2Mi"
    )]
    pub hugepages_2mi: Option<MemoryQuantity>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "hugepages-1Gi"
    )]
    pub hugepages_1gi: Option<MemoryQuantity>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// A health check. Exactly one handler: httpGet, tcpSocket, exec or grpc.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

impl Probe {
    pub fn period_seconds(&self) -> i64 {
        self.period_seconds.unwrap_or(10)
    }
    pub fn timeout_seconds(&self) -> i64 {
        self.timeout_seconds.unwrap_or(1)
    }
    pub fn failure_threshold(&self) -> i64 {
        self.failure_threshold.unwrap_or(3)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<Vec<Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolume>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmptyDir {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<MemoryQuantity>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostPath {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PvcSource {
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologySpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// DoNotSchedule or ScheduleAnyway.
    pub when_unsatisfiable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologyConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<TopologyPlacement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colocations: Option<Vec<Colocation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_awareness: Option<LayerAwareness>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologyPlacement {
    /// e.g. DistributedWithinVMGroup.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "vmGroupKey"
    )]
    pub vm_group_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Colocation {
    pub selector: LabelSelector,
    /// PreferSameVM, RequireSameVM, PreferDifferentVM.
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LayerAwareness {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_director_zones: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    pub selector: LabelSelector,
    pub template: PodTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// RollingUpdate (default) or Recreate.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollingUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// StatefulSets: ordinals below this keep the old revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i64>,
}

impl DeploymentSpec {
    pub fn replicas(&self) -> i64 {
        self.replicas.unwrap_or(1)
    }

    pub fn strategy_type(&self) -> &str {
        self.strategy
            .as_ref()
            .and_then(|s| s.kind.as_deref())
            .unwrap_or("RollingUpdate")
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        limits::replicas("spec.replicas", self.replicas)?;
        if let Some(t) = self.strategy.as_ref().and_then(|s| s.kind.as_deref()) {
            if t != "RollingUpdate" && t != "Recreate" {
                return Err(invalid(
                    "spec.strategy.type",
                    format!("\"{t}\" is not RollingUpdate or Recreate"),
                ));
            }
        }
        if let Some(ru) = self
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
        {
            ru.validate("spec.strategy.rollingUpdate")?;
        }
        validate_ready_and_history(self.min_ready_seconds, self.revision_history_limit)?;
        limits::opt_range(
            "spec.progressDeadlineSeconds",
            self.progress_deadline_seconds,
            0,
            MAX_SECONDS,
        )?;
        validate_selector_and_template(&self.selector, &self.template, &[])
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatefulSetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// OrderedReady (default) or Parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<String>,
    pub selector: LabelSelector,
    pub template: PodTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_templates: Option<Vec<VolumeClaimTemplate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<DeploymentStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<Value>,
}

impl StatefulSetSpec {
    pub fn replicas(&self) -> i64 {
        self.replicas.unwrap_or(1)
    }

    pub fn pod_management_policy(&self) -> &str {
        self.pod_management_policy
            .as_deref()
            .unwrap_or("OrderedReady")
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        limits::replicas("spec.replicas", self.replicas)?;
        if let Some(p) = &self.pod_management_policy {
            if p != "OrderedReady" && p != "Parallel" {
                return Err(invalid(
                    "spec.podManagementPolicy",
                    format!("\"{p}\" is not OrderedReady or Parallel"),
                ));
            }
        }
        if let Some(t) = self
            .update_strategy
            .as_ref()
            .and_then(|s| s.kind.as_deref())
        {
            if t != "RollingUpdate" && t != "OnDelete" {
                return Err(invalid(
                    "spec.updateStrategy.type",
                    format!("\"{t}\" is not RollingUpdate or OnDelete"),
                ));
            }
        }
        if let Some(ru) = self
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
        {
            ru.validate("spec.updateStrategy.rollingUpdate")?;
        }
        validate_ready_and_history(self.min_ready_seconds, self.revision_history_limit)?;
        for (i, t) in self.volume_claim_templates.iter().flatten().enumerate() {
            super::validate_name(
                &format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                &t.metadata.name,
            )?;
        }
        let claims: Vec<&str> = (self.volume_claim_templates.iter().flatten())
            .map(|t| t.metadata.name.as_str())
            .collect();
        validate_selector_and_template(&self.selector, &self.template, &claims)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeClaimTemplate {
    pub metadata: ClaimMeta,
    pub spec: ClaimSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl RollingUpdate {
    /// maxSurge and maxUnavailable: 0..=MAX_REPLICAS or a percentage 0%..=100%;
    /// partition: 0..=MAX_REPLICAS.
    fn validate(&self, field: &str) -> Result<(), ModelError> {
        for (name, v) in [
            ("maxSurge", &self.max_surge),
            ("maxUnavailable", &self.max_unavailable),
        ] {
            let f = format!("{field}.{name}");
            match v {
                None => {}
                Some(IntOrString::Int(n)) => limits::range(&f, *n, 0, MAX_REPLICAS)?,
                Some(IntOrString::Str(s)) => match IntOrString::percent(s) {
                    Some(p) if (0..=100).contains(&p) => {}
                    Some(_) => {
                        return Err(invalid(
                            &f,
                            format!("must be a percentage from 0% to 100%, got {s}"),
                        ))
                    }
                    None => {
                        return Err(invalid(
                            &f,
                            format!(
                                "\"{s}\" is not a non-negative integer or a percentage like 25%"
                            ),
                        ))
                    }
                },
            }
        }
        limits::opt_range(
            &format!("{field}.partition"),
            self.partition,
            0,
            MAX_REPLICAS,
        )
    }
}

/// `spec.minReadySeconds` and `spec.revisionHistoryLimit`, as Deployments and
/// StatefulSets both have them.
fn validate_ready_and_history(
    min_ready_seconds: Option<i64>,
    revision_history_limit: Option<i64>,
) -> Result<(), ModelError> {
    limits::opt_range("spec.minReadySeconds", min_ready_seconds, 0, MAX_SECONDS)?;
    limits::opt_range(
        "spec.revisionHistoryLimit",
        revision_history_limit,
        0,
        MAX_REVISION_HISTORY,
    )
}

/// `claims`: the volumes a StatefulSet's claim templates add to each instance.
fn validate_selector_and_template(
    selector: &LabelSelector,
    template: &PodTemplate,
    claims: &[&str],
) -> Result<(), ModelError> {
    selector.validate("spec.selector")?;
    if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
    {
        return Err(invalid(
            "spec.selector",
            "must select something: set matchLabels or matchExpressions",
        ));
    }
    let labels = template.labels();
    validate_label_map("spec.template.metadata.labels", &labels)?;
    if !selector.matches(&labels) {
        return Err(invalid(
            "spec.selector",
            "does not match spec.template.metadata.labels: the workload would not own its own instances",
        ));
    }
    super::pod_validation::validate_pod_spec_with("spec.template.spec", &template.spec, claims)
}

/// Quantities for quota and VPA maps: any resource name to a quantity.
pub type QuantityMap = BTreeMap<String, Quantity>;
