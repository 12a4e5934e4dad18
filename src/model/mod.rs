//! TEMPORARY compile stub; replaced by the real model.
use std::collections::BTreeMap;
use serde::{Deserialize, Serialize};
pub const API_VERSION: &str = "omnicloud.io/v1";
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind { Namespace, Deployment, StatefulSet, HorizontalPodAutoscaler, VerticalPodAutoscaler,
  VirtualMachine, ResourceQuota, PriorityClass, NodeClass, ClusterAutoscaler, ClusterScalingPolicy }
impl Kind {
  pub const ALL: [Kind; 11] = [Kind::Namespace, Kind::Deployment, Kind::StatefulSet, Kind::HorizontalPodAutoscaler, Kind::VerticalPodAutoscaler,
  Kind::VirtualMachine, Kind::ResourceQuota, Kind::PriorityClass, Kind::NodeClass, Kind::ClusterAutoscaler, Kind::ClusterScalingPolicy];
  pub fn as_str(&self) -> &'static str { todo!() }
  pub fn plural(&self) -> &'static str { todo!() }
  pub fn namespaced(&self) -> bool { todo!() }
  pub fn parse(_s: &str) -> Option<Kind> { todo!() }
  pub fn has_replicas(&self) -> bool { todo!() }
}
impl std::fmt::Display for Kind { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) } }
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta { pub name: String, pub namespace: Option<String>, pub labels: BTreeMap<String, String>, pub resource_version: String }
#[derive(Clone, Debug, PartialEq)]
pub struct Resource { pub api_version: String, pub kind: Kind, pub metadata: ObjectMeta }
impl Resource { pub fn to_value(&self) -> serde_json::Value { todo!() } }
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{field}: {message}")]
pub struct ModelError { pub field: String, pub message: String }
#[derive(Debug, Clone, PartialEq)]
pub enum SelectorOp { Eq(String) }
pub fn parse_manifests(_body: &str) -> Result<Vec<Resource>, ModelError> { todo!() }
pub fn validate_name(_field: &str, _name: &str) -> Result<(), ModelError> { todo!() }
pub fn parse_label_selector(_s: &str) -> Result<Vec<(String, SelectorOp)>, ModelError> { todo!() }
pub fn selector_matches(_sel: &[(String, SelectorOp)], _labels: &BTreeMap<String,String>) -> bool { todo!() }
