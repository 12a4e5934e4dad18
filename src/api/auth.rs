//! Users' API tokens and the audit log:
//!
//! - `POST /v1/auth/tokens` `{"user": "alice", "ttl": "24h"}`: a new token, answered once
//!   (only the SHA-256 of its secret is stored, as a replicated `Token` object).
//! - `GET /v1/auth/tokens`: id, user, created, expires; never a secret or hash.
//! - `DELETE /v1/auth/tokens/{id}`: revoke; answers once every node has applied it.
//! - `GET /v1/auth/whoami`: the caller as the API sees it.
//! - `GET /v1/audit?user=&sinceMs=`: this node's audit log (the CLI gathers every node's).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::caller;
use super::{ApiError, ApiState};
use crate::auth::tokens;
use crate::cluster::identity::now_ms;
use crate::model::rbac::TokenSpec;
use crate::model::{self, Kind, Resource, Spec};
use crate::store::{Command, ObjectKey, PutMode};

/// How long a revocation waits for every node to apply it.
const REVOKE_CONFIRM: Duration = Duration::from_secs(5);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/tokens", web::post().to(create))
        .route("/auth/tokens", web::get().to(list))
        .route("/auth/tokens/{id}", web::delete().to(revoke))
        .route("/auth/whoami", web::get().to(whoami))
        .route("/audit", web::get().to(audit));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user: String,
    /// e.g. `24h`, `30m`; none: the token does not expire.
    #[serde(default)]
    ttl: Option<String>,
}

fn check_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > 253 {
        return Err(ApiError::invalid("user", "must be 1 to 253 characters"));
    }
    if user.starts_with("system:") {
        return Err(ApiError::invalid(
            "user",
            "names starting with \"system:\" belong to nodes and the cluster itself",
        ));
    }
    if !user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(ApiError::invalid(
            "user",
            "may hold letters, digits and - _ . @ only",
        ));
    }
    Ok(())
}

async fn create(state: Data<ApiState>, body: Json<NewToken>) -> Result<HttpResponse, ApiError> {
    let NewToken { user, ttl } = body.into_inner();
    check_user(&user)?;
    let ttl = ttl
        .map(|t| {
            humantime::parse_duration(&t)
                .map_err(|e| ApiError::invalid("ttl", format!("\"{t}\": {e} (e.g. 24h, 30m)")))
        })
        .transpose()?;
    let now = now_ms();
    let new = tokens::generate();
    let spec = TokenSpec {
        user: user.clone(),
        sha256: new.sha256.clone(),
        created_ms: now,
        expires_ms: ttl.map(|d| now.saturating_add(d.as_millis() as u64)),
    };
    let resource = Resource {
        api_version: model::API_VERSION.into(),
        kind: Kind::Token,
        metadata: model::ObjectMeta {
            name: new.id.clone(),
            ..Default::default()
        },
        spec: Some(Spec::Token(spec.clone())),
        status: None,
    };
    let key = ObjectKey::new(Kind::Token, "", new.id.clone());
    let cmd = super::resources::put_command(&resource, key, PutMode::Create)?;
    let result = state.control.write(cmd).await?;
    if let Some(r) = result.rejection {
        return Err(r.into());
    }
    Ok(HttpResponse::Created().json(json!({
        "id": new.id,
        "user": user,
        "token": new.token,
        "createdMs": spec.created_ms,
        "expiresMs": spec.expires_ms,
    })))
}

async fn list(state: Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let items: Vec<Value> = state
        .control
        .reader()
        .resources(Kind::Token)?
        .into_iter()
        .filter_map(|r| match r.spec {
            Some(Spec::Token(t)) => Some(json!({
                "id": r.metadata.name,
                "user": t.user,
                "createdMs": t.created_ms,
                "expiresMs": t.expires_ms,
            })),
            _ => None,
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn revoke(state: Data<ApiState>, id: Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let key = ObjectKey::new(Kind::Token, "", id.clone());
    let result = state
        .control
        .write(Command::Delete {
            key,
            expected_version: None,
        })
        .await?;
    if let Some(r) = result.rejection {
        return Err(r.into());
    }
    let unconfirmed = state
        .control
        .wait_applied_everywhere(REVOKE_CONFIRM)
        .await?;
    let status = if unconfirmed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(HttpResponse::build(status).json(json!({
        "revoked": id,
        "unconfirmedNodes": unconfirmed,
    })))
}

async fn whoami(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = caller(&req)?;
    Ok(HttpResponse::Ok().json(json!({
        "user": who.user,
        "groups": who.groups,
    })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AuditQuery {
    user: Option<String>,
    since_ms: u64,
}

async fn audit(state: Data<ApiState>, q: Query<AuditQuery>) -> Result<HttpResponse, ApiError> {
    let (user, since, st) = (q.user.clone(), q.since_ms, state.clone());
    let items = web::block(move || st.audit.read(user.as_deref(), since))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({ "node": state.node_name, "items": items })))
}
