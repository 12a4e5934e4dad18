//! The fields the server fills in a Service: `spec.clusterIP` and node ports, allocated
//! here from the node's `[network]` settings against the Services in the store (read at a
//! linearizable point), then proposed. The Raft apply checks uniqueness again, so of two
//! concurrent creates that picked one address the later is refused; its write is then
//! allocated again from the fresh state (a value the user gave is never replaced).

use crate::model::service::{self, ServiceRanges, Taken};
use crate::model::{Kind, Resource, Spec};
use crate::store::{Applied, Command, ObjectKey, PutMode, Rejection};

use super::resources::put_command;
use super::{ApiError, ApiState};

/// Tries of an allocation that lost a race with a concurrent write.
const ATTEMPTS: usize = 5;

/// Fills the allocated fields of every Service in `items` (other kinds pass through).
fn allocate(
    state: &ApiState,
    items: &mut [(Resource, ObjectKey)],
    ranges: &ServiceRanges,
) -> Result<(), (usize, ApiError)> {
    if !items.iter().any(|(r, _)| r.kind == Kind::Service) {
        return Ok(());
    }
    let reader = state.control.reader();
    let stored: Vec<Resource> = reader
        .resources(Kind::Service)
        .map_err(|e| (0, ApiError::internal(e.to_string())))?;
    let mine: Vec<(String, String)> = items
        .iter()
        .filter(|(r, _)| r.kind == Kind::Service)
        .map(|(_, k)| (k.namespace.clone(), k.name.clone()))
        .collect();
    let mut taken = Taken::default();
    for s in &stored {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        if mine.contains(&(ns.clone(), s.metadata.name.clone())) {
            continue;
        }
        if let Some(Spec::Service(spec)) = &s.spec {
            taken.add(&format!("{ns}/{}", s.metadata.name), spec);
        }
    }
    for (i, (r, key)) in items.iter_mut().enumerate() {
        let Some(Spec::Service(spec)) = &mut r.spec else {
            continue;
        };
        let old = stored.iter().find_map(|s| match &s.spec {
            Some(Spec::Service(o))
                if s.metadata.name == key.name
                    && s.metadata.namespace.as_deref() == Some(key.namespace.as_str()) =>
            {
                Some(o.clone())
            }
            _ => None,
        });
        service::allocate(spec, old.as_ref(), &taken, ranges, random_start())
            .map_err(|e| (i, e.into()))?;
        taken.add(&format!("{}/{}", key.namespace, key.name), spec);
    }
    Ok(())
}

/// A random start for the allocation scan (std's per-instance hash keys are random).
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A rejection by the apply's uniqueness check: worth allocating again.
fn lost_race(r: &Rejection) -> bool {
    matches!(r, Rejection::Invalid { field, message }
        if (field == "spec.clusterIP" || field.ends_with(".nodePort"))
            && message.contains("already allocated"))
}

/// Admits the items' pod specs (`pod_security`), allocates, builds the puts (one command, or a batch when `batch`) and proposes them;
/// `in_document` names the document of a per-item error.
pub(super) async fn submit_puts(
    state: &ApiState,
    items: Vec<(Resource, ObjectKey)>,
    mode: PutMode,
    batch: bool,
    in_document: impl Fn(ApiError, usize) -> ApiError,
) -> Result<Vec<Applied>, ApiError> {
    super::pod_security::admit(state, &items).map_err(|(i, e)| in_document(e, i))?;
    let services = items.iter().any(|(r, _)| r.kind == Kind::Service);
    for attempt in 1..=ATTEMPTS {
        if services {
            state.control.read_barrier().await?;
        }
        let mut these = items.clone();
        allocate(state, &mut these, &state.services).map_err(|(i, e)| in_document(e, i))?;
        let mut commands = Vec::with_capacity(these.len());
        for (i, (r, key)) in these.into_iter().enumerate() {
            commands.push(put_command(&r, key, mode).map_err(|e| in_document(e, i))?);
        }
        let cmd = if batch {
            Command::Batch(commands)
        } else {
            commands.remove(0)
        };
        let result = state.control.write(cmd).await?;
        match result.rejection {
            None => return Ok(result.applied),
            Some(r) if services && attempt < ATTEMPTS && lost_race(&r) => continue,
            Some(r) => return Err(r.into()),
        }
    }
    unreachable!("the last attempt returns")
}
