//! Events: what controllers decided, as `Event` objects (`omnicloud get events`,
//! `describe`). One object per (object, reason, message); a repeat bumps its count. The
//! recorder remembers counts on this leader (a new leader starts counting again).

use std::collections::HashMap;

use serde_json::json;
use sha2::{Digest, Sha256};

pub use crate::model::event::EventReason;
use crate::model::{Kind, Resource, API_VERSION};
use crate::store::{Command, ObjectKey, PutMode};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDraft {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
    pub source: String,
}

impl EventDraft {
    fn about(
        r: &Resource,
        warning: bool,
        reason: EventReason,
        message: String,
        source: &str,
    ) -> Self {
        EventDraft {
            namespace: r
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| crate::store::state_machine::DEFAULT_NAMESPACE.into()),
            kind: r.kind.as_str().into(),
            name: r.metadata.name.clone(),
            warning,
            reason,
            message,
            source: source.into(),
        }
    }

    pub fn normal(r: &Resource, reason: EventReason, message: String, source: &str) -> Self {
        Self::about(r, false, reason, message, source)
    }

    pub fn warning(r: &Resource, reason: EventReason, message: String, source: &str) -> Self {
        Self::about(r, true, reason, message, source)
    }

    /// The event object's name: stable for the same object, reason and message.
    fn object_name(&self) -> String {
        let h = Sha256::digest(format!("{}\0{}\0{}", self.kind, self.reason, self.message));
        let hex: String = h.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let mut base = format!(
            "{}.{}",
            self.name,
            self.reason.as_str().to_ascii_lowercase()
        );
        base.truncate(240);
        format!("{base}.{hex}")
    }
}

/// Counts and first-seen times of the events written by this leader.
#[derive(Default)]
pub struct Recorder {
    seen: HashMap<String, (u64, String)>,
}

impl Recorder {
    pub fn commands(&mut self, drafts: Vec<EventDraft>, now: &str) -> Vec<Command> {
        drafts
            .into_iter()
            .map(|e| {
                let name = e.object_name();
                let entry = self
                    .seen
                    .entry(format!("{}/{name}", e.namespace))
                    .or_insert((0, now.to_string()));
                entry.0 += 1;
                if e.warning {
                    tracing::warn!(object = %format!("{}/{}", e.kind, e.name), reason = %e.reason, "{}", e.message);
                } else {
                    tracing::info!(object = %format!("{}/{}", e.kind, e.name), reason = %e.reason, "{}", e.message);
                }
                let object = json!({
                    "apiVersion": API_VERSION,
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": e.namespace},
                    "spec": {
                        "type": if e.warning { "Warning" } else { "Normal" },
                        "reason": e.reason,
                        "message": e.message,
                        "involvedObject": {"kind": e.kind, "name": e.name, "namespace": e.namespace},
                        "count": entry.0,
                        "firstTimestamp": entry.1,
                        "lastTimestamp": now,
                        "source": e.source,
                    },
                });
                Command::put(
                    ObjectKey::new(Kind::Event, e.namespace.clone(), name),
                    &object,
                    PutMode::Apply,
                    None,
                )
            })
            .collect()
    }
}
