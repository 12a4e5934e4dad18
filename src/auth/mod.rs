//! Who is calling and what they may do: API tokens (`tokens`), RBAC decisions over the
//! replicated Role / Binding kinds and the built-in roles (`rbac`), what an HTTP request
//! asks for (`request`), the per-node audit log (`audit`) and per-user rate limits
//! (`limit`). The API asks this module through [`Authorizer`]; nothing else decides access.
//!
//! Every decision is a pure function of the caller, the request and the replicated state
//! read at the time of the request (no cache): a revoked token or a removed binding stops
//! working as soon as the node has applied the change.
//!
//! Threads: none of its own (the audit log is written by the caller under a mutex).
//! May call: `model`, `store` (local reads).

pub mod audit;
pub mod limit;
pub mod rbac;
pub mod request;
pub mod tokens;

use crate::model::{Kind, Resource, Spec};
use crate::store::{ObjectKey, StoreError, StoreReader};

pub use rbac::{Attributes, Decision, Policy};
pub use tokens::Identity;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing bearer token: pass --token, set OMNICLOUD_TOKEN, or read <data-dir>/admin.token"
    )]
    Missing,
    #[error("unknown or revoked token")]
    Unknown,
    #[error("token {id} of user {user} expired")]
    Expired { id: String, user: String },
    #[error("reading the replicated state")]
    Store(#[source] StoreError),
    #[error("cannot write the audit log {path}")]
    AuditWrite {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Authentication and authorization against this node's replicated state.
#[derive(Clone)]
pub struct Authorizer {
    pub credentials: tokens::Credentials,
    pub reader: StoreReader,
}

impl Authorizer {
    /// The caller a bearer token names, checked against the replicated Token objects.
    pub fn authenticate(&self, bearer: &str, now_ms: u64) -> Result<Identity, AuthError> {
        self.credentials.authenticate(bearer, now_ms, |id| {
            let key = ObjectKey::new(Kind::Token, "", id);
            let bytes = self.reader.get(&key).map_err(AuthError::Store)?;
            Ok(bytes.and_then(|b| token_spec(&b)))
        })
    }

    /// The roles and bindings as replicated to this node now.
    pub fn policy(&self) -> Result<Policy, AuthError> {
        let mut objects = Vec::new();
        for kind in [
            Kind::Role,
            Kind::ClusterRole,
            Kind::RoleBinding,
            Kind::ClusterRoleBinding,
        ] {
            objects.extend(self.reader.resources(kind).map_err(AuthError::Store)?);
        }
        Ok(Policy::from_resources(objects))
    }

    /// May `who` do what `attrs` asks? Reads the current policy, unless a built-in binding
    /// (cluster admins, nodes) already allows it.
    pub fn decide(&self, who: &Identity, attrs: &Attributes) -> Result<Decision, AuthError> {
        if rbac::authorize(who, attrs, &Policy::default()) == Decision::Allow {
            return Ok(Decision::Allow);
        }
        Ok(rbac::authorize(who, attrs, &self.policy()?))
    }
}

fn token_spec(bytes: &[u8]) -> Option<crate::model::rbac::TokenSpec> {
    let v = serde_json::from_slice(bytes).ok()?;
    match Resource::from_stored(v).ok()?.spec {
        Some(Spec::Token(t)) => Some(t),
        _ => None,
    }
}
