//! The resource model: kinds, their typed specs, manifest parsing and validation. Pure
//! data: no I/O, no clocks.
//!
//! A manifest (YAML, possibly several documents, or JSON) becomes `serde_json::Value`s,
//! then each is checked for `apiVersion`/`kind` and deserialized into its kind's typed spec
//! with unknown fields refused (the error names the path, e.g.
//! `spec.template.spec.containers[0].resorces`), then validated. Stored objects keep exactly
//! what the user wrote: no defaults are injected (accessors such as
//! `DeploymentSpec::replicas()` supply them), and quantities keep their written form.
//!
//! Hostile bodies are stopped before anything is built from them (`parse`, `yaml_guard`:
//! nesting, alias expansion, non-finite numbers), and every count, size and duration is
//! held to a documented maximum (`limits`).

/// `Display` and `== "text"` for an enum whose written form is its `as_str`.
macro_rules! string_form {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Lets tests and callers compare with the written form.
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub mod address_pool;
pub mod affinity;
pub mod autoscaling;
pub mod capacity;
pub mod config;
pub mod event;
pub mod infra;
pub mod instance;
pub mod limits;
mod parse;
pub mod pod_security;
mod pod_validation;
pub mod predictive;
pub mod quantity;
pub mod rbac;
pub mod role;
pub mod security;
mod selector;
pub mod service;
pub mod sources;
pub mod status;
pub mod subnet;
pub mod workload;
mod yaml_guard;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use autoscaling::{HpaSpec, VpaSpec};
pub use capacity::{ClusterAutoscalerSpec, ClusterScalingPolicySpec, ResourceQuotaSpec};
pub use config::{ConfigMapSpec, SecretSpec};
pub use infra::{NamespaceSpec, NodeClassSpec, PriorityClassSpec, VirtualMachineSpec};
pub use instance::{InstanceSpec, InstanceStatus, NodeSubnetSpec};
pub use parse::parse_manifests;
pub use quantity::{CpuQuantity, DurationStr, IntOrString, MemoryQuantity, Quantity};
pub use role::Role;
pub use selector::{parse_label_selector, selector_matches, SelectorOp};
pub use service::{EndpointsSpec, ServiceSpec};
pub use subnet::Subnet;
pub use workload::{DeploymentSpec, PodTemplate, StatefulSetSpec};

pub const API_VERSION: &str = "omnicloud.io/v1";

/// A field path and what was wrong with it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub struct ModelError {
    /// JSON path, e.g. `spec.replicas`; empty for syntax errors of the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ModelError {
    ModelError {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    Deployment,
    StatefulSet,
    HorizontalPodAutoscaler,
    VerticalPodAutoscaler,
    VirtualMachine,
    ResourceQuota,
    PriorityClass,
    NodeClass,
    ClusterAutoscaler,
    ClusterScalingPolicy,
    PredictiveBootstrapScaler,
    Instance,
    NodeSubnet,
    Event,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    Token,
}

impl Kind {
    pub const ALL: [Kind; 24] = [
        Kind::Namespace,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::HorizontalPodAutoscaler,
        Kind::VerticalPodAutoscaler,
        Kind::VirtualMachine,
        Kind::ResourceQuota,
        Kind::PriorityClass,
        Kind::NodeClass,
        Kind::ClusterAutoscaler,
        Kind::ClusterScalingPolicy,
        Kind::PredictiveBootstrapScaler,
        Kind::Instance,
        Kind::NodeSubnet,
        Kind::Event,
        Kind::Service,
        Kind::Endpoints,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Role,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::ClusterRoleBinding,
        Kind::Token,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::VerticalPodAutoscaler => "VerticalPodAutoscaler",
            Kind::VirtualMachine => "VirtualMachine",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::PriorityClass => "PriorityClass",
            Kind::NodeClass => "NodeClass",
            Kind::ClusterAutoscaler => "ClusterAutoscaler",
            Kind::ClusterScalingPolicy => "ClusterScalingPolicy",
            Kind::PredictiveBootstrapScaler => "PredictiveBootstrapScaler",
            Kind::Instance => "Instance",
            Kind::NodeSubnet => "NodeSubnet",
            Kind::Event => "Event",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Role => "Role",
            Kind::ClusterRole => "ClusterRole",
            Kind::RoleBinding => "RoleBinding",
            Kind::ClusterRoleBinding => "ClusterRoleBinding",
            Kind::Token => "Token",
        }
    }

    /// The URL segment: lowercase plural.
    pub fn plural(&self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Kind::VerticalPodAutoscaler => "verticalpodautoscalers",
            Kind::VirtualMachine => "virtualmachines",
            Kind::ResourceQuota => "resourcequotas",
            Kind::PriorityClass => "priorityclasses",
            Kind::NodeClass => "nodeclasses",
            Kind::ClusterAutoscaler => "clusterautoscalers",
            Kind::ClusterScalingPolicy => "clusterscalingpolicies",
            Kind::PredictiveBootstrapScaler => "predictivebootstrapscalers",
            Kind::Instance => "instances",
            Kind::NodeSubnet => "nodesubnets",
            Kind::Event => "events",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Role => "roles",
            Kind::ClusterRole => "clusterroles",
            Kind::RoleBinding => "rolebindings",
            Kind::ClusterRoleBinding => "clusterrolebindings",
            Kind::Token => "tokens",
        }
    }

    fn short_names(&self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Deployment => &["deploy"],
            Kind::StatefulSet => &["sts"],
            Kind::HorizontalPodAutoscaler => &["hpa"],
            Kind::VerticalPodAutoscaler => &["vpa"],
            Kind::VirtualMachine => &["vm", "vms"],
            Kind::ResourceQuota => &["quota"],
            Kind::PriorityClass => &["pc"],
            Kind::NodeClass => &["nc"],
            Kind::ClusterAutoscaler => &["ca"],
            Kind::ClusterScalingPolicy => &["csp"],
            Kind::PredictiveBootstrapScaler => &["pbs"],
            Kind::Instance => &["inst", "instance"],
            Kind::NodeSubnet => &["subnet", "subnets"],
            Kind::Event => &["ev"],
            Kind::Service => &["svc"],
            Kind::Endpoints => &["ep"],
            Kind::ConfigMap => &["cm"],
            Kind::Secret => &[],
            Kind::Role | Kind::ClusterRole => &[],
            Kind::RoleBinding | Kind::ClusterRoleBinding => &[],
            Kind::Token => &["token"],
        }
    }

    pub fn namespaced(&self) -> bool {
        matches!(
            self,
            Kind::Deployment
                | Kind::StatefulSet
                | Kind::HorizontalPodAutoscaler
                | Kind::VerticalPodAutoscaler
                | Kind::VirtualMachine
                | Kind::ResourceQuota
                | Kind::Instance
                | Kind::Event
                | Kind::Service
                | Kind::Endpoints
                | Kind::ConfigMap
                | Kind::Secret
                | Kind::Role
                | Kind::RoleBinding
        )
    }

    pub fn has_replicas(&self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::StatefulSet | Kind::VirtualMachine
        )
    }

    /// Case-insensitive: the kind name, singular, plural or a short name.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let name = k.as_str().to_ascii_lowercase();
            s == name || s == k.plural() || k.short_names().contains(&s.as_str())
        })
    }

    pub fn api_versions(&self) -> &'static [&'static str] {
        match self {
            Kind::Deployment | Kind::StatefulSet => &[API_VERSION, "apps/v1"],
            Kind::HorizontalPodAutoscaler => &[API_VERSION, "autoscaling/v2", "autoscaling/v1"],
            Kind::VerticalPodAutoscaler => &[API_VERSION, "autoscaling.k8s.io/v1"],
            Kind::Namespace
            | Kind::ResourceQuota
            | Kind::Service
            | Kind::Endpoints
            | Kind::ConfigMap
            | Kind::Secret => &[API_VERSION, "v1"],
            Kind::PriorityClass => &[API_VERSION, "scheduling.k8s.io/v1"],
            Kind::Role | Kind::ClusterRole | Kind::RoleBinding | Kind::ClusterRoleBinding => {
                &[API_VERSION, "rbac.authorization.k8s.io/v1"]
            }
            _ => &[API_VERSION],
        }
    }

    pub fn accepts_api_version(&self, v: &str) -> bool {
        self.api_versions().contains(&v)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    // Set by the server; accepted from users (so a read-modify-write works) and replaced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_timestamp: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Namespace(NamespaceSpec),
    Deployment(DeploymentSpec),
    StatefulSet(StatefulSetSpec),
    HorizontalPodAutoscaler(HpaSpec),
    VerticalPodAutoscaler(VpaSpec),
    VirtualMachine(VirtualMachineSpec),
    ResourceQuota(ResourceQuotaSpec),
    PriorityClass(PriorityClassSpec),
    NodeClass(NodeClassSpec),
    ClusterAutoscaler(ClusterAutoscalerSpec),
    ClusterScalingPolicy(ClusterScalingPolicySpec),
    PredictiveBootstrapScaler(predictive::PredictiveBootstrapScalerSpec),
    Instance(InstanceSpec),
    NodeSubnet(NodeSubnetSpec),
    Event(event::EventSpec),
    Service(ServiceSpec),
    Endpoints(EndpointsSpec),
    ConfigMap(ConfigMapSpec),
    Secret(SecretSpec),
    Role(rbac::RoleSpec),
    Binding(rbac::BindingSpec),
    Token(rbac::TokenSpec),
}

/// A whole object: envelope, metadata, typed spec and server-owned status.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: ObjectMeta,
    /// None only for kinds whose spec is optional (Namespace) when the user gave none.
    pub spec: Option<Spec>,
    pub status: Option<Value>,
}

/// The document shape every kind shares; `S` is the kind's spec.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[serde(default)]
    status: Option<Value>,
}

fn typed<S: DeserializeOwned>(
    v: Value,
) -> Result<(ObjectMeta, Option<S>, Option<Value>), ModelError> {
    let env: Envelope<S> = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string().replace('`', "\"");
        invalid(if path == "." { "" } else { &path }, message)
    })?;
    Ok((env.metadata, env.spec, env.status))
}

fn required<S>(spec: Option<S>) -> Result<S, ModelError> {
    spec.ok_or_else(|| invalid("spec", "is required"))
}

impl Resource {
    /// Parses and validates one object. Any `status` sent is dropped (server-owned).
    pub fn from_value(v: Value) -> Result<Resource, ModelError> {
        let mut r = Self::decode(v)?;
        r.status = None;
        if let Some(Spec::Secret(s)) = &mut r.spec {
            // Kubernetes stores stringData merged into data; check the whole first.
            s.validate()?;
            s.merge_string_data();
        }
        r.validate()?;
        Ok(r)
    }

    /// Reads back an object the server stored itself: keeps status, skips validation.
    pub fn from_stored(v: Value) -> Result<Resource, ModelError> {
        Self::decode(v)
    }

    fn decode(mut v: Value) -> Result<Resource, ModelError> {
        let Some(obj) = v.as_object_mut() else {
            return Err(invalid(
                "",
                "expected an object (a mapping with apiVersion, kind, metadata, spec)",
            ));
        };
        let api_version = match obj.get("apiVersion") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(invalid(
                    "apiVersion",
                    "must be a string like omnicloud.io/v1",
                ))
            }
            None => return Err(invalid("apiVersion", "is required, e.g. omnicloud.io/v1")),
        };
        let kind_name = match obj.get("kind") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("kind", "must be a string like Deployment")),
            None => return Err(invalid("kind", "is required, e.g. Deployment")),
        };
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind_name)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(
                    "kind",
                    format!(
                        "unsupported kind \"{kind_name}\"; expected one of {}",
                        names.join(", ")
                    ),
                )
            })?;
        if !kind.accepts_api_version(&api_version) {
            return Err(invalid(
                "apiVersion",
                format!(
                    "unsupported apiVersion \"{api_version}\" for kind {kind}; expected one of {}",
                    kind.api_versions().join(", ")
                ),
            ));
        }
        // `metadata:` with nothing under it is an empty mapping to users, not a type error.
        if obj.get("metadata") == Some(&Value::Null) {
            obj.remove("metadata");
        }
        // core/v1 Endpoints keep their subsets at the top level; stored under spec.
        if kind == Kind::Endpoints && !obj.contains_key("spec") {
            let subsets = obj.remove("subsets").unwrap_or(Value::Array(Vec::new()));
            obj.insert("spec".into(), serde_json::json!({ "subsets": subsets }));
        }
        // Kubernetes' scheduling.k8s.io/v1 PriorityClass keeps its fields at the top level.
        if kind == Kind::PriorityClass && !obj.contains_key("spec") && obj.contains_key("value") {
            let mut spec = serde_json::Map::new();
            for f in ["value", "description", "globalDefault", "preemptionPolicy"] {
                if let Some(x) = obj.remove(f) {
                    spec.insert(f.into(), x);
                }
            }
            obj.insert("spec".into(), Value::Object(spec));
        }
        // ConfigMaps and Secrets keep their fields at the top level, always.
        if let Some(fields) = top_level_fields(kind) {
            if obj.contains_key("spec") {
                return Err(invalid(
                    "spec",
                    format!(
                        "{kind} has no spec: {} sit at the top level",
                        fields.join(", ")
                    ),
                ));
            }
            let mut spec = serde_json::Map::new();
            for f in fields {
                if let Some(x) = obj.remove(*f) {
                    spec.insert((*f).into(), x);
                }
            }
            obj.insert("spec".into(), Value::Object(spec));
        }
        let (metadata, spec, status) = match kind {
            Kind::Namespace => {
                let (m, s, st) = typed::<NamespaceSpec>(v)?;
                (m, s.map(Spec::Namespace), st)
            }
            Kind::Deployment => spec_of(v, Spec::Deployment)?,
            Kind::StatefulSet => spec_of(v, Spec::StatefulSet)?,
            Kind::HorizontalPodAutoscaler => spec_of(v, Spec::HorizontalPodAutoscaler)?,
            Kind::VerticalPodAutoscaler => spec_of(v, Spec::VerticalPodAutoscaler)?,
            Kind::VirtualMachine => spec_of(v, Spec::VirtualMachine)?,
            Kind::ResourceQuota => spec_of(v, Spec::ResourceQuota)?,
            Kind::PriorityClass => spec_of(v, Spec::PriorityClass)?,
            Kind::NodeClass => spec_of(v, Spec::NodeClass)?,
            Kind::ClusterAutoscaler => spec_of(v, Spec::ClusterAutoscaler)?,
            Kind::ClusterScalingPolicy => spec_of(v, Spec::ClusterScalingPolicy)?,
            Kind::PredictiveBootstrapScaler => spec_of(v, Spec::PredictiveBootstrapScaler)?,
            Kind::Instance => spec_of(v, Spec::Instance)?,
            Kind::NodeSubnet => spec_of(v, Spec::NodeSubnet)?,
            Kind::Event => spec_of(v, Spec::Event)?,
            Kind::Service => spec_of(v, Spec::Service)?,
            Kind::Endpoints => spec_of(v, Spec::Endpoints)?,
            // Their fields are at the top level: so are the paths in errors.
            Kind::ConfigMap => spec_of(v, Spec::ConfigMap).map_err(config::top_level_error)?,
            // A type error quotes what it found: never a Secret's value.
            Kind::Secret => spec_of(v, Spec::Secret)
                .map_err(|e| config::redact_error(config::top_level_error(e)))?,
            Kind::Role | Kind::ClusterRole => {
                spec_of(v, Spec::Role).map_err(config::top_level_error)?
            }
            Kind::RoleBinding | Kind::ClusterRoleBinding => {
                spec_of(v, Spec::Binding).map_err(config::top_level_error)?
            }
            Kind::Token => spec_of(v, Spec::Token)?,
        };
        Ok(Resource {
            api_version,
            kind,
            metadata,
            spec,
            status,
        })
    }

    fn validate(&self) -> Result<(), ModelError> {
        if self.metadata.name.is_empty() {
            return Err(invalid("metadata.name", "is required"));
        }
        validate_name("metadata.name", &self.metadata.name)?;
        if let Some(ns) = &self.metadata.namespace {
            validate_label_value("metadata.namespace", ns)?;
        }
        if self.kind == Kind::Namespace {
            validate_label_value("metadata.name", &self.metadata.name)?;
        }
        validate_label_map("metadata.labels", &self.metadata.labels)?;
        for key in self.metadata.annotations.keys() {
            validate_label_key("metadata.annotations", key)?;
        }
        validate_annotations_size(&self.metadata.annotations)?;
        match &self.spec {
            None => Ok(()),
            Some(Spec::Namespace(_)) => Ok(()),
            Some(Spec::Deployment(s)) => s.validate(),
            Some(Spec::StatefulSet(s)) => s.validate(),
            Some(Spec::HorizontalPodAutoscaler(s)) => s.validate(),
            Some(Spec::VerticalPodAutoscaler(s)) => s.validate(),
            Some(Spec::VirtualMachine(s)) => s.validate(),
            Some(Spec::ResourceQuota(s)) => s.validate(),
            Some(Spec::PriorityClass(s)) => s.validate(),
            Some(Spec::NodeClass(s)) => s.validate(),
            Some(Spec::ClusterAutoscaler(s)) => s.validate(),
            Some(Spec::ClusterScalingPolicy(s)) => s.validate(),
            Some(Spec::PredictiveBootstrapScaler(s)) => s.validate(),
            Some(Spec::Instance(s)) => s.validate(),
            Some(Spec::NodeSubnet(s)) => s.validate(),
            Some(Spec::Event(s)) => s.validate(),
            Some(Spec::Service(s)) => s.validate(),
            Some(Spec::Endpoints(s)) => s.validate(),
            Some(Spec::ConfigMap(s)) => s.validate(),
            Some(Spec::Secret(s)) => s.validate(),
            Some(Spec::Role(s)) => {
                if self.kind == Kind::ClusterRole
                    && rbac::BUILT_IN_ROLES.contains(&self.metadata.name.as_str())
                {
                    return Err(invalid(
                        "metadata.name",
                        format!(
                            "\"{}\" is a built-in cluster role; choose another name",
                            self.metadata.name
                        ),
                    ));
                }
                s.validate()
            }
            Some(Spec::Binding(s)) => s.validate(self.kind),
            Some(Spec::Token(s)) => s.validate(),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        obj.insert("kind".into(), Value::String(self.kind.as_str().into()));
        obj.insert(
            "metadata".into(),
            serde_json::to_value(&self.metadata).expect("metadata serializes"),
        );
        if let Some(spec) = &self.spec {
            let value = serde_json::to_value(spec).expect("specs serialize");
            match (top_level_fields(self.kind), value) {
                (Some(_), Value::Object(fields)) => obj.extend(fields),
                (_, value) => {
                    obj.insert("spec".into(), value);
                }
            }
        }
        if let Some(status) = &self.status {
            obj.insert("status".into(), status.clone());
        }
        Value::Object(obj)
    }

    /// What it asks that is accepted but not acted on yet, one line each with the field's
    /// path (`apply` answers them as warnings).
    pub fn warnings(&self) -> Vec<String> {
        let (path, pod) = match &self.spec {
            Some(Spec::Deployment(s)) => ("spec.template.spec", &s.template.spec),
            Some(Spec::StatefulSet(s)) => ("spec.template.spec", &s.template.spec),
            Some(Spec::Instance(s)) => ("spec.pod", &s.pod),
            _ => return Vec::new(),
        };
        let Some(affinity) = &pod.affinity else {
            return Vec::new();
        };
        affinity
            .not_acted_on()
            .into_iter()
            .map(|f| format!("{path}.affinity.{f}: accepted but not acted on by the scheduler yet"))
            .collect()
    }

    /// The stored status as the kind's typed status (its default when there is none).
    pub fn status_of<T: DeserializeOwned + Default>(&self) -> T {
        status::of(self.status.as_ref())
    }

    pub fn spec_value(&self) -> Value {
        self.spec
            .as_ref()
            .map(|s| serde_json::to_value(s).expect("specs serialize"))
            .unwrap_or(Value::Null)
    }

    pub fn replicas(&self) -> Option<i64> {
        match &self.spec {
            Some(Spec::Deployment(s)) => Some(s.replicas()),
            Some(Spec::StatefulSet(s)) => Some(s.replicas()),
            Some(Spec::VirtualMachine(s)) => Some(s.replicas()),
            _ => None,
        }
    }

    /// The scale subresource's write: the same bounds as `spec.replicas` in a manifest.
    pub fn set_replicas(&mut self, n: i64) -> Result<(), ModelError> {
        limits::range("spec.replicas", n, 0, limits::MAX_REPLICAS)?;
        match &mut self.spec {
            Some(Spec::Deployment(s)) => s.replicas = Some(n),
            Some(Spec::StatefulSet(s)) => s.replicas = Some(n),
            Some(Spec::VirtualMachine(s)) => s.replicas = Some(n),
            _ => {
                return Err(invalid(
                    "spec.replicas",
                    format!("{} has no replicas", self.kind),
                ))
            }
        }
        Ok(())
    }
}

/// The kinds whose fields sit at the top level of the object (core/v1 ConfigMap and
/// Secret): they are the typed spec inside, and written back at the top level.
fn top_level_fields(kind: Kind) -> Option<&'static [&'static str]> {
    match kind {
        Kind::ConfigMap => Some(&config::CONFIG_MAP_FIELDS),
        Kind::Secret => Some(&config::SECRET_FIELDS),
        Kind::Role | Kind::ClusterRole => Some(&rbac::ROLE_FIELDS),
        Kind::RoleBinding | Kind::ClusterRoleBinding => Some(&rbac::BINDING_FIELDS),
        _ => None,
    }
}

fn spec_of<S: DeserializeOwned>(
    v: Value,
    wrap: fn(S) -> Spec,
) -> Result<(ObjectMeta, Option<Spec>, Option<Value>), ModelError> {
    let (m, s, st) = typed::<S>(v)?;
    Ok((m, Some(wrap(required(s)?)), st))
}

/// Total bytes of an object's annotations (keys and values), as Kubernetes caps them.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn validate_annotations_size(a: &BTreeMap<String, String>) -> Result<(), ModelError> {
    let total: usize = a.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(invalid(
            "metadata.annotations",
            format!("annotations total {total} bytes; at most {MAX_ANNOTATIONS_BYTES} (256 KiB) are allowed"),
        ));
    }
    Ok(())
}

/// DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a
/// letter or digit, at most 253 characters.
pub fn validate_name(field: &str, name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "\"{name}\" is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253)"
            ),
        ))
    }
}

/// DNS-1123 label: like a name but no dots and at most 63 characters.
pub fn validate_label_value(field: &str, value: &str) -> Result<(), ModelError> {
    validate_name(field, value)?;
    if value.len() > 63 || value.contains('.') {
        return Err(invalid(
            field,
            format!("\"{value}\" must be at most 63 characters without '.'"),
        ));
    }
    Ok(())
}

/// A DNS label: 1-63 letters, digits and '-', not starting or ending with '-'.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A domain name (the cluster domain), lower case without a trailing dot; or why it is not one (labels of
/// letters, digits and '-', at most 253 characters).
pub fn validate_domain(domain: &str) -> Result<String, String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 {
        return Err(format!(
            "\"{domain}\" is not a domain name (1 to 253 characters, like cluster.local)"
        ));
    }
    if let Some(bad) = d.split('.').find(|l| !is_dns_label(l)) {
        return Err(format!(
            "\"{domain}\": label \"{bad}\" is not 1-63 letters, digits and '-' (not at either end)"
        ));
    }
    Ok(d)
}

pub(crate) fn validate_label_key(field: &str, key: &str) -> Result<(), ModelError> {
    let name = key.rsplit_once('/').map(|(_, n)| n).unwrap_or(key);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && key.len() <= 317;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            &format!("{field}.{key}"),
            "is not a valid key: [prefix/]name of letters, digits, '-', '_', '.'",
        ))
    }
}

pub(crate) fn validate_label_map(
    field: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    for (k, v) in labels {
        validate_label_key(field, k)?;
        let ok = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(invalid(
                &format!("{field}.{k}"),
                format!(
                    "\"{v}\" is not a valid label value (<= 63 of letters, digits, '-', '_', '.')"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
