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
    /// CamelCase, e.g. ScalingReplicaSet, FailedScheduling, RolledBack.
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
