//! Pod Security admission: before any write of objects that carry a pod spec (Deployment,
//! StatefulSet, a container Instance), the level of their namespace is read (the
//! `pod-security.kubernetes.io/enforce` label of the Namespace in the same request, else as
//! stored, else `[api] pod_security_default`) and the object is checked against it by
//! [`crate::model::pod_security`]. A breach is refused with 403 naming the namespace, the
//! level, each rule and its field; nothing of the request is written. A Namespace whose
//! label names no level is refused with 422.
//!
//! Only what users write is checked: controllers' instances are made from templates that
//! were admitted. Relabelling a namespace stricter does not stop what already runs there
//! (as in Kubernetes, the apply of the Namespace warns about each one, [`relabel_warnings`]);
//! the next write of each workload is checked against the new level.

use actix_web::http::StatusCode;

use super::{ApiError, ApiState};
use crate::model::pod_security::{self, Level};
use crate::model::{Kind, Resource};
use crate::store::ObjectKey;

/// Checks every item; `(index, error)` for the first refused.
pub(super) fn admit(
    state: &ApiState,
    items: &[(Resource, ObjectKey)],
) -> Result<(), (usize, ApiError)> {
    for (i, (r, key)) in items.iter().enumerate() {
        if r.kind == Kind::Namespace {
            Level::of_namespace(&r.metadata.labels, state.pod_security_default)
                .map_err(|e| (i, e.into()))?;
            continue;
        }
        let Some((field, spec)) = pod_security::pod_of(r) else {
            continue;
        };
        let level = namespace_level(state, items, &key.namespace).map_err(|e| (i, e))?;
        let found = pod_security::check(level, field, spec);
        if let Some(first) = found.first() {
            let message = pod_security::refusal(r, &key.namespace, level, &found);
            let e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
                .with_field(first.field.clone());
            return Err((i, e));
        }
    }
    Ok(())
}

/// The level of namespace `ns`: from a Namespace in this request, else the stored one.
fn namespace_level(
    state: &ApiState,
    items: &[(Resource, ObjectKey)],
    ns: &str,
) -> Result<Level, ApiError> {
    let default = state.pod_security_default;
    if let Some((r, _)) = items
        .iter()
        .find(|(r, _)| r.kind == Kind::Namespace && r.metadata.name == ns)
    {
        return Ok(Level::of_namespace(&r.metadata.labels, default)?);
    }
    let key = ObjectKey::new(Kind::Namespace, "", ns);
    let Some(bytes) = state.control.reader().get(&key)? else {
        return Ok(default);
    };
    let value = serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    let stored = Resource::from_stored(value).map_err(|e| ApiError::internal(e.to_string()))?;
    // A stored label that names no level (written before this check) counts as restricted:
    // an unreadable policy closes rather than opens.
    Ok(Level::of_namespace(&stored.metadata.labels, default).unwrap_or(Level::Restricted))
}

/// For a Namespace being applied: what already stored in it breaks its (new) level, as
/// warnings (`Deployment "web": privileged (...)`), as Kubernetes warns on a relabel. The
/// workloads keep running; their next write is refused until they comply.
pub(super) fn relabel_warnings(state: &ApiState, ns: &Resource) -> Vec<String> {
    let Ok(level) = Level::of_namespace(&ns.metadata.labels, state.pod_security_default) else {
        return Vec::new();
    };
    let name = &ns.metadata.name;
    let mut out = Vec::new();
    for kind in [Kind::Deployment, Kind::StatefulSet, Kind::Instance] {
        let Ok((objects, _)) = state.control.reader().list(kind, Some(name)) else {
            continue;
        };
        for bytes in objects {
            let stored = serde_json::from_slice(&bytes)
                .ok()
                .and_then(|v| Resource::from_stored(v).ok());
            let Some(r) = stored else { continue };
            // Controllers' instances follow their (already listed) owner's template.
            if matches!(&r.spec, Some(crate::model::Spec::Instance(s)) if s.owner.is_some()) {
                continue;
            }
            let Some((field, spec)) = pod_security::pod_of(&r) else {
                continue;
            };
            let found = pod_security::check(level, field, spec);
            if !found.is_empty() {
                out.push(format!(
                    "existing {kind} \"{}\" violates PodSecurity \"{level}:latest\": {}",
                    r.metadata.name,
                    found
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    out
}
