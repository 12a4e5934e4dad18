//! One image pulled from registries into the store, in these steps:
//!
//! 1. [`plan`]: the places to ask, in order: for each registry the name may live in (its
//!    own host, else `registries.unqualified_search`), that registry's mirrors, then the
//!    registry itself (pure, tested without a network).
//! 2. For each place until one has the image: an `oci-client` client for that host (its
//!    scheme, the CA files, its credentials: a pull secret's first, then the node
//!    config's), the token flow (`auth`), the manifest (an index: the linux/amd64 entry),
//!    checked against a pinned digest.
//! 3. The blobs the store lacks, [`RegistrySettings::max_parallel_layers`] at a time, each
//!    streamed into the store and checked against its digest and size.
//! 4. The manifest stored and the image named; on any failure the blobs this pull added
//!    are removed again, so the store never holds half an image.
//!
//! Limits: a blob is refused past its descriptor's size (and 4 GiB); a manifest past
//! `limits::MAX_METADATA` is refused, but oci-client has read it whole by then (it has no
//! streaming manifest call), so a hostile registry can make one pull hold a large body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference as OciRef, RegistryOperation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{registry_host, DockerConfig, Progress, RegistryError, RegistrySettings};
use crate::config::Endpoint;
use crate::container::image::{normalize_reference, sha256_hex, REF_NAME};
use crate::container::limits::{self, MAX_METADATA};
use crate::container::store::{ImageInfo, ImageStore, MANIFEST_TYPE};
use crate::container::ContainerError;

/// The index annotation saying which registry reference an image was pulled as (images
/// brought by `image import` have none).
pub const SOURCE_ANNOTATION: &str = "io.omnicloud.image.source";
/// Largest blob accepted (a layer of the toolbox image is ~100 MiB).
const MAX_BLOB: u64 = 4 << 30;
const ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What to pull and with what.
pub struct PullRequest<'a> {
    /// The name as written (`nginx`, `127.0.0.1:5000/tools/toolbox:1`, `x@sha256:...`).
    pub name: &'a str,
    pub settings: &'a RegistrySettings,
    /// From the pod's `imagePullSecrets`, tried before the node config's credentials.
    pub secrets: &'a [DockerConfig],
    pub progress: Option<Arc<dyn Progress>>,
}

/// A pulled image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    #[serde(flatten)]
    pub info: ImageInfo,
    /// The host it came from (a mirror or the registry).
    pub endpoint: String,
    /// Bytes downloaded; the rest of `info.size` was in the store already.
    pub downloaded: u64,
}

/// Why one place did not give the image.
enum Miss {
    NotFound(String),
    Failed(String),
}

pub(super) fn chain(e: &dyn std::error::Error) -> String {
    crate::error_chain(e)
}

/// Step 1: (reference to ask for, where) in order.
pub(super) fn plan(
    name: &str,
    settings: &RegistrySettings,
) -> Result<Vec<(OciRef, Endpoint)>, RegistryError> {
    let (registries, rest) = match registry_host(name) {
        Some(h) => (vec![h.to_string()], &name[h.len() + 1..]),
        None => (settings.unqualified_search.clone(), name),
    };
    let mut out = Vec::new();
    for registry in registries {
        let reference: OciRef =
            format!("{registry}/{rest}")
                .parse()
                .map_err(|e: oci_client::ParseError| RegistryError::BadReference {
                    reference: name.to_string(),
                    message: e.to_string(),
                })?;
        for ep in settings.endpoints(reference.registry()) {
            let mut r = reference.clone();
            if ep.host != reference.resolve_registry() {
                r.set_mirror_registry(ep.host.clone());
            }
            out.push((r, ep));
        }
    }
    Ok(out)
}

/// Pulls `req.name` into `store` from the first place that has it.
pub async fn pull(store: &ImageStore, req: &PullRequest<'_>) -> Result<Pulled, RegistryError> {
    let name = normalize_reference(req.name);
    let places = plan(req.name, req.settings)?;
    if places.is_empty() {
        return Err(RegistryError::NotFound {
            image: name,
            tried: vec!["no registry to ask (the name has no registry host and \
                 registries.unqualified_search is empty)"
                .into()],
        });
    }
    let (mut not_found, mut errors) = (Vec::new(), Vec::new());
    for (reference, ep) in places {
        match pull_from(store, req, &name, &reference, &ep).await {
            Ok(p) => return Ok(p),
            Err(Miss::NotFound(m)) => not_found.push(format!("{}: {m}", ep.host)),
            Err(Miss::Failed(m)) => {
                tracing::info!(image = %name, endpoint = %ep.host, "pull failed: {m}");
                errors.push(format!("{}: {m}", ep.host))
            }
        }
    }
    if errors.is_empty() {
        return Err(RegistryError::NotFound {
            image: name,
            tried: not_found,
        });
    }
    errors.extend(not_found);
    Err(RegistryError::Failed {
        image: name,
        errors,
    })
}

fn auth_for(req: &PullRequest<'_>, host: &str) -> RegistryAuth {
    let from_secret = req.secrets.iter().find_map(|c| c.for_host(host));
    match from_secret {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => match req.settings.auth_for(host) {
            Some(a) => RegistryAuth::Basic(a.username.clone(), a.password.clone()),
            None => RegistryAuth::Anonymous,
        },
    }
}

fn certificates(settings: &RegistrySettings, host: &str) -> Result<Vec<Certificate>, String> {
    settings
        .ca_files_for(host)
        .iter()
        .map(|f| {
            std::fs::read(f)
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .map_err(|e| format!("reading CA file {}: {e}", f.display()))
        })
        .collect()
}

pub(super) fn client(settings: &RegistrySettings, ep: &Endpoint) -> Result<Client, String> {
    // rustls needs one process-wide crypto provider; a second install is refused, fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let extra = certificates(settings, &ep.host)?;
    let config = |only: Vec<Certificate>| ClientConfig {
        protocol: if ep.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates: extra.clone(),
        tls_certs_only: only,
        max_concurrent_download: settings.max_parallel_layers,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    Client::try_from(config(Vec::new())).map_err(|e| {
        let why = chain(&e);
        if why.contains("No CA certificates") {
            // The appliance writes a bundle at boot (`appliance::pid1`); elsewhere, install one.
            format!("{why}: this host has no CA certificates (apt-get install ca-certificates)")
        } else {
            why
        }
    })
}

/// Step 2 and on, from one place.
async fn pull_from(
    store: &ImageStore,
    req: &PullRequest<'_>,
    name: &str,
    reference: &OciRef,
    ep: &Endpoint,
) -> Result<Pulled, Miss> {
    let client = client(req.settings, ep).map_err(Miss::Failed)?;
    let auth = auth_for(req, &ep.host);
    // The token flow first: a refused login is reported with the token server's answer.
    if let Err(e) = client.auth(reference, &auth, RegistryOperation::Pull).await {
        return Err(Miss::Failed(chain(&e)));
    }
    let fail = |e: OciDistributionError| classify(e, req.settings, ep, &auth);
    let (mut body, mut digest) = match client.pull_manifest_raw(reference, &auth, &ACCEPT).await {
        Ok(m) => m,
        Err(e) => return Err(fail(e).await),
    };
    if let Some(pinned) = reference.digest() {
        check_digest(&body, pinned, "the manifest")?;
    }
    let mut manifest = parse(&body)?;
    if manifest["manifests"].is_array() {
        let pick = pick_platform(&manifest)?;
        let by_digest = reference.clone_with_digest(pick.clone());
        (body, digest) = match client.pull_manifest_raw(&by_digest, &auth, &ACCEPT).await {
            Ok(m) => m,
            Err(e) => return Err(fail(e).await),
        };
        check_digest(&body, &pick, "the platform manifest")?;
        manifest = parse(&body)?;
    }
    let parts = parts(&manifest)?;
    let created = Mutex::new(Vec::new());
    let fetched = fetch_blobs(store, req, &client, reference, &parts, &created).await;
    let tagged = fetched.and_then(|downloaded| {
        let stored = store
            .put_blob(&body)
            .map_err(|e| Miss::Failed(e.one_line()))?;
        store
            .tag(json!({
                "mediaType": MANIFEST_TYPE,
                "digest": stored,
                "size": body.len(),
                "annotations": {REF_NAME: name, SOURCE_ANNOTATION: reference.whole()},
            }))
            .map_err(|e| Miss::Failed(e.one_line()))?;
        Ok(downloaded)
    });
    match tagged {
        Ok(downloaded) => Ok(Pulled {
            info: ImageInfo {
                name: name.to_string(),
                digest,
                size: body.len() as u64 + parts.iter().map(|p| p.1).sum::<u64>(),
            },
            endpoint: ep.host.clone(),
            downloaded,
        }),
        Err(e) => {
            store.discard(&created.into_inner().unwrap_or_default());
            Err(e)
        }
    }
}

fn check_digest(body: &[u8], want: &str, what: &str) -> Result<(), Miss> {
    let got = format!("sha256:{}", hex(body));
    if got != want {
        return Err(Miss::Failed(format!(
            "{what} hashes to {got}, not the digest asked for ({want})"
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse(body: &[u8]) -> Result<Value, Miss> {
    if body.len() as u64 > MAX_METADATA {
        return Err(Miss::Failed(format!(
            "the manifest is larger than {} (the limit)",
            limits::bytes(MAX_METADATA)
        )));
    }
    serde_json::from_slice(body).map_err(|e| Miss::Failed(format!("not a manifest: {e}")))
}

/// The linux/amd64 entry of an image index (Docker manifest list or OCI index).
fn pick_platform(index: &Value) -> Result<String, Miss> {
    let arch = std::env::consts::ARCH.replace("x86_64", "amd64");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| {
            d["platform"]["os"].as_str() == Some("linux")
                && d["platform"]["architecture"].as_str() == Some(arch.as_str())
        })
        .and_then(|d| d["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Miss::NotFound(format!("the image index has no linux/{arch} image")))
}

/// The config and layers of an image manifest: (digest, size), digests checked.
fn parts(manifest: &Value) -> Result<Vec<(String, u64)>, Miss> {
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .map(|p| {
            let d = p["digest"]
                .as_str()
                .ok_or_else(|| Miss::Failed("the manifest has a part without a digest".into()))?;
            sha256_hex(d).map_err(|e| Miss::Failed(e.one_line()))?;
            let size = p["size"].as_u64().unwrap_or(MAX_BLOB);
            Ok((d.to_string(), size))
        })
        .collect()
}

/// Step 3: the blobs the store lacks, a few at a time; returns the bytes downloaded.
async fn fetch_blobs(
    store: &ImageStore,
    req: &PullRequest<'_>,
    client: &Client,
    reference: &OciRef,
    parts: &[(String, u64)],
    created: &Mutex<Vec<String>>,
) -> Result<u64, Miss> {
    let progress = req.progress.clone();
    let mut missing = Vec::new();
    for (digest, size) in parts {
        let cached = store.has_blob(digest);
        if let Some(p) = &progress {
            p.blob(digest, *size, cached);
        }
        if !cached && !missing.contains(&(digest, *size)) {
            missing.push((digest, *size));
        }
    }
    let downloaded = std::sync::atomic::AtomicU64::new(0);
    futures::stream::iter(missing.into_iter().map(Ok))
        .try_for_each_concurrent(req.settings.max_parallel_layers, |(digest, size)| {
            let (progress, downloaded) = (progress.clone(), &downloaded);
            async move {
                let stored = fetch_blob(store, client, reference, digest, size, progress).await?;
                downloaded.fetch_add(stored.size, std::sync::atomic::Ordering::Relaxed);
                if stored.created {
                    created.lock().expect("not poisoned").push(stored.digest);
                }
                Ok(())
            }
        })
        .await?;
    Ok(downloaded.into_inner())
}

async fn fetch_blob(
    store: &ImageStore,
    client: &Client,
    reference: &OciRef,
    digest: &str,
    size: u64,
    progress: Option<Arc<dyn Progress>>,
) -> Result<crate::container::store::Stored, Miss> {
    let desc = OciDescriptor {
        digest: digest.to_string(),
        size: size as i64,
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(reference, &desc)
        .await
        .map_err(|e| Miss::Failed(format!("blob {digest}: {}", chain(&e))))?;
    let stored_err = |e: ContainerError| Miss::Failed(e.one_line());
    // Never more than the manifest says: a registry cannot fill the disk.
    let mut w = store
        .blob_writer(Some(digest), size.min(MAX_BLOB))
        .map_err(stored_err)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Miss::Failed(format!("blob {digest}: {e}")))?;
        w.write(&chunk).map_err(stored_err)?;
        if let Some(p) = &progress {
            p.advance(digest, chunk.len() as u64);
        }
    }
    let stored = w.finish().map_err(stored_err)?;
    if stored.size != size {
        return Err(Miss::Failed(format!(
            "blob {digest} is {} bytes, the manifest says {size}",
            stored.size
        )));
    }
    if let Some(p) = &progress {
        p.done(digest);
    }
    Ok(stored)
}

/// An oci-client error as a miss: "not found" answers apart, the registry's own message
/// kept (for a 401, asked for again: oci-client drops the body).
async fn classify(
    e: OciDistributionError,
    settings: &RegistrySettings,
    ep: &Endpoint,
    auth: &RegistryAuth,
) -> Miss {
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let message = envelope
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            let unknown = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            });
            if unknown {
                Miss::NotFound(format!("{message} ({url})"))
            } else {
                Miss::Failed(format!("{message} ({url})"))
            }
        }
        OciDistributionError::ServerError { code: 404, url, .. } => {
            Miss::NotFound(format!("HTTP 404 ({url})"))
        }
        OciDistributionError::ImageManifestNotFoundError(m) => Miss::NotFound(m),
        OciDistributionError::UnauthorizedError { url } => {
            let said = refusal(settings, ep, auth, &url).await;
            Miss::Failed(format!("HTTP 401 Unauthorized: {said} ({url})"))
        }
        e => Miss::Failed(chain(&e)),
    }
}

/// What the registry says when it refuses `url` (its error envelope's messages).
async fn refusal(
    settings: &RegistrySettings,
    ep: &Endpoint,
    auth: &RegistryAuth,
    url: &str,
) -> String {
    let fallback = || match auth {
        RegistryAuth::Anonymous => "the registry needs credentials".to_string(),
        _ => "the registry refused the credentials".to_string(),
    };
    let Ok(certs) = certificates(settings, &ep.host) else {
        return fallback();
    };
    let certs: Vec<reqwest::Certificate> = certs
        .iter()
        .filter_map(|c| reqwest::Certificate::from_pem(&c.data).ok())
        .collect();
    let Ok(http) = reqwest::Client::builder()
        .tls_certs_merge(certs)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .build()
    else {
        return fallback();
    };
    let mut request = http.get(url);
    if let RegistryAuth::Basic(u, p) = auth {
        request = request.basic_auth(u, Some(p));
    }
    let Ok(response) = request.send().await else {
        return fallback();
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let said: Vec<&str> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str())
        .collect();
    if said.is_empty() {
        fallback()
    } else {
        said.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> RegistrySettings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::load_registries(Some(&path)).unwrap()
    }

    fn places(name: &str, s: &RegistrySettings) -> Vec<String> {
        plan(name, s)
            .unwrap()
            .into_iter()
            .map(|(r, ep)| {
                format!(
                    "{}://{}/{}:{}",
                    if ep.plain_http { "http" } else { "https" },
                    r.resolve_registry(),
                    r.repository(),
                    r.digest().or(r.tag()).unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn docker_hub_names_mirrors_first_and_insecure_hosts() {
        let s = settings(
            "[registries]\ninsecure = [\"127.0.0.1:5000\"]\n\
             [registries.mirrors.\"docker.io\"]\nendpoints = [\"mirror.local:5000\"]\n",
        );
        assert_eq!(
            places("nginx", &s),
            [
                "https://mirror.local:5000/library/nginx:latest",
                "https://index.docker.io/library/nginx:latest"
            ]
        );
        assert_eq!(
            places("bitnami/redis:7", &s)[1],
            "https://index.docker.io/bitnami/redis:7"
        );
        assert_eq!(
            places("127.0.0.1:5000/tools/toolbox:1", &s),
            ["http://127.0.0.1:5000/tools/toolbox:1"]
        );
        let pinned = format!("ghcr.io/o/app@sha256:{}", "a".repeat(64));
        assert_eq!(
            places(&pinned, &s),
            [format!("https://ghcr.io/o/app:sha256:{}", "a".repeat(64))]
        );
        let none = settings("[registries]\nunqualified_search = []\n");
        assert!(places("nginx", &none).is_empty());
        assert!(matches!(
            plan("UPPER/Case", &s),
            Err(RegistryError::BadReference { .. })
        ));
    }

    #[test]
    fn an_index_gives_the_linux_amd64_entry() {
        let index = json!({"manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}}
        ]});
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(pick_platform(&index).ok().unwrap(), "sha256:amd");
        }
        let none = json!({"manifests": [{"digest": "sha256:w", "platform": {"os": "windows", "architecture": "amd64"}}]});
        assert!(matches!(pick_platform(&none), Err(Miss::NotFound(_))));
    }
}
