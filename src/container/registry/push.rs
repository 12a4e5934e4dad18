//! `omnicloud image push NAME REF`: an image of the store to a registry with the same
//! client as pulls (HTTPS with the configured CAs, plain HTTP for `insecure` hosts, token
//! or basic auth from `[registries.configs]`). Blobs the registry has are skipped; the
//! manifest goes last, so the registry never names half an image. To the registry itself,
//! never a mirror. Blobs are read whole into memory (one at a time).

use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use serde_json::Value;

use super::pull::{chain, client, plan};
use super::{RegistryError, RegistrySettings};
use crate::container::image::normalize_reference;
use crate::container::store::ImageStore;

/// Pushes the store's image `name` as `target` (`host[:port]/repo:tag`); returns the
/// manifest's digest.
pub async fn push(
    store: &ImageStore,
    name: &str,
    target: &str,
    settings: &RegistrySettings,
) -> Result<String, RegistryError> {
    let failed = |message: String| RegistryError::Failed {
        image: target.to_string(),
        errors: vec![message],
    };
    let (reference, ep) = plan(target, settings)?.pop().ok_or_else(|| {
        failed("no registry to push to (name the host: HOST:PORT/REPO:TAG)".into())
    })?;
    let desc = store
        .descriptor(name)
        .map_err(|e| failed(e.one_line()))?
        .ok_or_else(|| {
            failed(format!(
                "image {} is not in the store",
                normalize_reference(name)
            ))
        })?;
    let digest = desc["digest"].as_str().unwrap_or_default().to_string();
    let body = store.read_blob(&digest).map_err(|e| failed(e.one_line()))?;
    let manifest: Value =
        serde_json::from_slice(&body).map_err(|e| failed(format!("manifest {digest}: {e}")))?;
    let client = client(settings, &ep).map_err(failed)?;
    let auth = match settings.auth_for(&ep.host) {
        Some(a) => RegistryAuth::Basic(a.username.clone(), a.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let at =
        |e: oci_client::errors::OciDistributionError| failed(format!("{}: {}", ep.host, chain(&e)));
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .map_err(at)?;
    let parts = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .filter_map(|p| p["digest"].as_str());
    for d in parts {
        if client.blob_exists(&reference, d).await.map_err(at)? {
            continue;
        }
        let data = store.read_blob(d).map_err(|e| failed(e.one_line()))?;
        client.push_blob(&reference, data, d).await.map_err(at)?;
    }
    let media = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    let content_type = reqwest::header::HeaderValue::from_str(media)
        .map_err(|e| failed(format!("manifest media type {media}: {e}")))?;
    client
        .push_manifest_raw(&reference, body, content_type)
        .await
        .map_err(at)?;
    Ok(digest)
}
