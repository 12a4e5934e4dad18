//! Copies of per-replica claims between agents (`agent::claims`): `GET` packs this node's
//! copy (with its version), `PUT` takes a newer one. Behind the API token like all of /v1.

use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};

use super::error::ApiError;
use super::ApiState;
use crate::agent::claims::{self, VERSION_HEADER};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/claims/{ns}/{claim}", web::get().to(get))
        .route("/claims/{ns}/{claim}", web::put().to(put));
}

fn dir(state: &ApiState, ns: &str, claim: &str) -> Result<std::path::PathBuf, ApiError> {
    for (what, v) in [("namespace", ns), ("claim", claim)] {
        crate::model::validate_name(what, v).map_err(|e| ApiError::invalid(what, e.message))?;
    }
    Ok(claims::claim_dir(&state.data_dir.join("claims"), ns, claim))
}

async fn get(
    state: Data<ApiState>,
    path: Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (ns, claim) = path.into_inner();
    let d = dir(&state, &ns, &claim)?;
    let version = claims::local_version(&d);
    if version == 0 || !d.is_dir() {
        return Err(ApiError::not_found(format!(
            "no copy of claim {ns}/{claim} here"
        )));
    }
    let bytes = web::block(move || claims::pack(&d))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("packing claim {ns}/{claim}: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/gzip")
        .insert_header((VERSION_HEADER, version.to_string()))
        .body(bytes))
}

async fn put(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let (ns, claim) = path.into_inner();
    let d = dir(&state, &ns, &claim)?;
    let version: u64 = req
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("the {VERSION_HEADER} header is required")))?;
    let taken = web::block(move || claims::unpack(&d, version, &body))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::bad_request(format!("not a claim copy: {e}")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"taken": taken, "version": version})))
}
