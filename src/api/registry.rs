//! The node's image store, read-only over the OCI distribution API, so peers pull images
//! from each other (`container::registry`): `GET|HEAD /v1/registry/v2/<repo>/manifests/<tag>`
//! and `GET|HEAD /v1/registry/v2/<repo>/blobs/<digest>`. Behind the API token like all of /v1.

use actix_web::web::{self, Data, Path};
use actix_web::{HttpRequest, HttpResponse};

use super::error::ApiError;
use super::ApiState;
use crate::container::store::ImageStore;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/registry/v2/{repo:.+}/manifests/{reference}",
        web::get().to(manifest),
    )
    .route(
        "/registry/v2/{repo:.+}/manifests/{reference}",
        web::head().to(manifest),
    )
    .route("/registry/v2/{repo:.+}/blobs/{digest}", web::get().to(blob))
    .route(
        "/registry/v2/{repo:.+}/blobs/{digest}",
        web::head().to(blob),
    );
}

fn store(state: &ApiState) -> Result<ImageStore, ApiError> {
    ImageStore::open(&state.data_dir.join("images")).map_err(|e| ApiError::internal(e.one_line()))
}

fn body(req: &HttpRequest, media: &str, digest: &str, bytes: Vec<u8>) -> HttpResponse {
    let mut r = HttpResponse::Ok();
    r.content_type(media.to_string())
        .insert_header(("Docker-Content-Digest", digest.to_string()));
    if req.method() == actix_web::http::Method::HEAD {
        r.insert_header(("Content-Length", bytes.len().to_string()))
            .finish()
    } else {
        r.body(bytes)
    }
}

async fn manifest(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (repo, reference) = path.into_inner();
    let store = store(&state)?;
    let found = web::block(move || -> Result<Option<(String, Vec<u8>)>, String> {
        let digest = if reference.starts_with("sha256:") {
            reference
        } else {
            let Some(d) = store
                .descriptor(&format!("{repo}:{reference}"))
                .map_err(|e| e.one_line())?
            else {
                return Ok(None);
            };
            d["digest"].as_str().unwrap_or_default().to_string()
        };
        if !store.has_blob(&digest) {
            return Ok(None);
        }
        Ok(Some((
            digest.clone(),
            store.read_blob(&digest).map_err(|e| e.one_line())?,
        )))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(ApiError::internal)?;
    let (digest, bytes) = found.ok_or_else(|| ApiError::not_found("no such image here"))?;
    Ok(body(
        &req,
        "application/vnd.oci.image.manifest.v1+json",
        &digest,
        bytes,
    ))
}

async fn blob(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (_, digest) = path.into_inner();
    let store = store(&state)?;
    let d = digest.clone();
    let bytes = web::block(move || store.has_blob(&d).then(|| store.read_blob(&d)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .transpose()
        .map_err(|e| ApiError::internal(e.one_line()))?
        .ok_or_else(|| ApiError::not_found(format!("no blob {digest} here")))?;
    Ok(body(&req, "application/octet-stream", &digest, bytes))
}
