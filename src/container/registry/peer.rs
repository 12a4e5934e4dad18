//! A peer node's image store, read over the OCI distribution paths its API serves
//! (`/v1/registry/v2/<name>/manifests/<tag>`, with the cluster token). Every blob is checked against its
//! digest before it is stored; the image is named in the store only after all of its
//! blobs are in, and a failed pull removes the blobs it added. Digests a source names are
//! checked (`sha256:<64 hex>`) before any URL or path is made from them; manifests are
//! read up to `limits::MAX_METADATA`, blobs are streamed to disk up to [`MAX_BLOB`].
//!
//! Blocking (ureq): callers in async code use `spawn_blocking`.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::container::image::{normalize_reference, sha256_hex, REF_NAME};
use crate::container::limits::{self, read_limited, MAX_METADATA};
use crate::container::store::{ImageInfo, ImageStore, Stored};
use crate::container::{ContainerError, Result};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest manifest or blob accepted (a layer of the toolbox image is ~100 MiB).
const MAX_BLOB: u64 = 4 << 30;

/// Where images come from or go to: a registry (`http://127.0.0.1:5000`) or a peer's API
/// (`http://10.0.0.2:7070/v1/registry`), with a bearer token for peers.
#[derive(Clone, Debug)]
pub struct Source {
    pub base: String,
    pub token: Option<String>,
}

/// A reference split into where it lives and what it is: `127.0.0.1:5000/tools/toolbox:1`
/// is registry `127.0.0.1:5000`, repository `tools/toolbox`, tag `1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: Option<String>,
    pub repository: String,
    pub tag: String,
}

impl Reference {
    /// How a peer serves the store's image `name`: the whole name (host included) is the
    /// repository, as its store names it.
    pub fn for_peer(name: &str) -> Reference {
        let full = normalize_reference(name);
        let (repository, tag) = match full.rsplit_once('@') {
            Some((r, digest)) => (r.to_string(), digest.to_string()),
            None => {
                let (r, t) = full.rsplit_once(':').expect("normalized names have a tag");
                (r.to_string(), t.to_string())
            }
        };
        Reference {
            registry: None,
            repository,
            tag,
        }
    }

    pub fn parse(name: &str) -> Reference {
        let full = normalize_reference(name);
        let (first, rest) = full.split_once('/').unwrap_or(("", &full));
        let is_host = first.contains('.') || first.contains(':') || first == "localhost";
        let (registry, path) = if is_host {
            (Some(first.to_string()), rest.to_string())
        } else {
            (None, full.clone())
        };
        let (repository, tag) = match path.rsplit_once('@') {
            Some((r, digest)) => (r.to_string(), digest.to_string()),
            None => {
                let (r, t) = path.rsplit_once(':').unwrap_or((&path, "latest"));
                (r.to_string(), t.to_string())
            }
        };
        Reference {
            registry,
            repository,
            tag,
        }
    }
}

/// Peers' APIs are https when TLS is on (trusting the cluster CA); local registries http.
fn agent() -> ureq::Agent {
    crate::cluster::pki::peer_agent(
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(120)),
    )
}

fn fail(what: impl Into<String>) -> ContainerError {
    ContainerError::Helper(what.into())
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Source {
    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let r = agent().request(method, url);
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base.trim_end_matches('/'))
    }

    /// GETs `url`; Ok(None) on 404.
    fn call(&self, url: &str, accept: &str) -> Result<Option<ureq::Response>> {
        match self.request("GET", url).set("Accept", accept).call() {
            Ok(r) => Ok(Some(r)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, r)) => Err(fail(format!(
                "GET {url}: HTTP {code} {}",
                r.into_string().unwrap_or_default().trim()
            ))),
            Err(e) => Err(fail(format!("GET {url}: {e}"))),
        }
    }

    /// GETs a manifest (at most [`MAX_METADATA`] bytes); with `digest`, checks the body
    /// against it. Ok(None) on 404.
    fn manifest(&self, url: &str, digest: Option<&str>) -> Result<Option<Vec<u8>>> {
        let accept = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST].join(", ");
        let Some(r) = self.call(url, &accept)? else {
            return Ok(None);
        };
        let body = read_limited(r.into_reader(), MAX_METADATA)
            .map_err(|e| fail(format!("reading {url}: {e}")))?
            .ok_or_else(|| ContainerError::Limit {
                what: format!("the manifest at {url}"),
                why: format!("is larger than {} (the limit)", limits::bytes(MAX_METADATA)),
            })?;
        if let Some(d) = digest {
            if format!("sha256:{}", hex(&body)) != d {
                return Err(ContainerError::Digest {
                    digest: d.into(),
                    message: format!("the manifest served by {} does not match", self.base),
                });
            }
        }
        Ok(Some(body))
    }

    /// Streams a blob into `store`, checked against its digest.
    fn blob(&self, store: &ImageStore, repo: &str, digest: &str) -> Result<Stored> {
        sha256_hex(digest)?;
        let url = self.url(repo, &format!("blobs/{digest}"));
        let r = self
            .call(&url, "*/*")?
            .ok_or_else(|| fail(format!("{url}: blob not found")))?;
        store
            .put_blob_from(r.into_reader(), Some(digest), MAX_BLOB)
            .map_err(|e| match e {
                ContainerError::Digest { digest, .. } => ContainerError::Digest {
                    digest,
                    message: format!("the content served by {} does not match", self.base),
                },
                e => e,
            })
    }

    /// Pulls `reference` into `store`, naming it `name`. Ok(None) when the source does
    /// not have it. The image is named only once all its blobs are in; a failed pull
    /// removes the blobs it added.
    pub fn pull(
        &self,
        store: &ImageStore,
        reference: &Reference,
        name: &str,
    ) -> Result<Option<ImageInfo>> {
        let mut created = Vec::new();
        let pulled = self.pull_blobs(store, reference, name, &mut created);
        if !matches!(pulled, Ok(Some(_))) {
            store.discard(&created);
        }
        pulled
    }

    fn pull_blobs(
        &self,
        store: &ImageStore,
        reference: &Reference,
        name: &str,
        created: &mut Vec<String>,
    ) -> Result<Option<ImageInfo>> {
        let repo = &reference.repository;
        let by_digest = reference.tag.starts_with("sha256:");
        if by_digest {
            sha256_hex(&reference.tag)?;
        }
        let url = self.url(repo, &format!("manifests/{}", reference.tag));
        let Some(mut body) = self.manifest(&url, by_digest.then_some(reference.tag.as_str()))?
        else {
            return Ok(None);
        };
        let mut manifest: Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("{url}: not a manifest: {e}")))?;
        // An index (manifest list): take this platform's manifest.
        if manifest["manifests"].is_array() {
            let pick = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| {
                    d["platform"]["os"].as_str().unwrap_or("linux") == "linux"
                        && d["platform"]["architecture"].as_str().unwrap_or("amd64")
                            == std::env::consts::ARCH.replace("x86_64", "amd64")
                })
                .and_then(|d| d["digest"].as_str())
                .ok_or_else(|| fail(format!("{url}: no linux/{} image", std::env::consts::ARCH)))?
                .to_string();
            sha256_hex(&pick)?;
            let url = self.url(repo, &format!("manifests/{pick}"));
            body = self
                .manifest(&url, Some(&pick))?
                .ok_or_else(|| fail(format!("{url}: manifest not found")))?;
            manifest = serde_json::from_slice(&body).map_err(|e| fail(format!("{url}: {e}")))?;
        }
        let mut size = 0;
        let parts: Vec<String> = std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
            .map(|p| {
                let d = p["digest"]
                    .as_str()
                    .ok_or_else(|| fail(format!("{url}: a part without a digest")))?;
                sha256_hex(d)?;
                Ok(d.to_string())
            })
            .collect::<Result<_>>()?;
        for digest in &parts {
            if !store.has_blob(digest) {
                let stored = self.blob(store, repo, digest)?;
                size += stored.size;
                if stored.created {
                    created.push(stored.digest);
                }
            }
        }
        let digest = store.put_blob(&body)?;
        let name = normalize_reference(name);
        store.tag(json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": body.len(),
            "annotations": {REF_NAME: name},
        }))?;
        Ok(Some(ImageInfo { name, digest, size }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_repository_and_tag() {
        let r = Reference::parse("127.0.0.1:5000/tools/toolbox:1");
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("tools/toolbox", "1")
        );
        let r = Reference::parse("toolbox");
        assert_eq!(r.registry, None);
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("toolbox", "latest")
        );
        let r = Reference::parse("registry.local/busybox@sha256:abc");
        assert_eq!(r.registry.as_deref(), Some("registry.local"));
        assert_eq!(r.tag, "sha256:abc");
        assert_eq!(Reference::parse("library/busybox:1").registry, None);
        let p = Reference::for_peer("127.0.0.1:5000/tools/toolbox");
        assert_eq!(
            (p.repository.as_str(), p.tag.as_str()),
            ("127.0.0.1:5000/tools/toolbox", "latest")
        );
    }
}

#[cfg(test)]
mod pull_tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::container::testkit::sha256;

    /// A registry answering GETs from `routes` (path -> body), 404 otherwise; port 0.
    fn serve(routes: HashMap<String, Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() <= 2 {
                        break;
                    }
                }
                let (status, body) = match routes.get(&path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"no".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        base
    }

    fn blob_count(store: &ImageStore) -> usize {
        std::fs::read_dir(store.layout().join("blobs/sha256"))
            .unwrap()
            .count()
    }

    #[test]
    fn a_failed_pull_leaves_nothing_and_bad_digests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("images")).unwrap();
        let (config, layer) = (b"{}".to_vec(), b"layer bytes".to_vec());
        let (cd, ld) = (
            format!("sha256:{}", sha256(&config)),
            format!("sha256:{}", sha256(&layer)),
        );
        let manifest = |layers: Value| {
            json!({"schemaVersion": 2, "config": {"digest": cd, "size": 2}, "layers": layers})
                .to_string()
                .into_bytes()
        };
        let routes = HashMap::from([
            (format!("/v2/app/blobs/{cd}"), config.clone()),
            (format!("/v2/app/blobs/{ld}"), b"not the layer".to_vec()),
            (
                "/v2/app/manifests/bad".to_string(),
                manifest(json!([{"digest": ld}])),
            ),
            (
                "/v2/app/manifests/evil".to_string(),
                manifest(json!([{"digest": "sha256:../../../../etc/shadow"}])),
            ),
            (
                "/v2/app/manifests/sha256:".to_string() + &"0".repeat(64),
                manifest(json!([])),
            ),
        ]);
        let source = Source {
            base: serve(routes),
            token: None,
        };
        let pull = |tag: &str| source.pull(&store, &Reference::parse(&format!("app:{tag}")), "x");
        // The config came in before the layer failed its digest: it is removed again.
        let e = pull("bad").unwrap_err().to_string();
        assert!(e.contains(&ld) && e.contains("does not match"), "{e}");
        assert_eq!(blob_count(&store), 0, "nothing half-pulled");
        // A digest that is not sha256:<64 hex> is refused before any URL or path.
        let e = pull("evil").unwrap_err().to_string();
        assert!(e.contains("only sha256 digests are supported"), "{e}");
        assert_eq!(blob_count(&store), 0);
        // A manifest fetched by digest must hash to it.
        let by_digest = Reference::parse(&format!("app@sha256:{}", "0".repeat(64)));
        let e = source
            .pull(&store, &by_digest, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the manifest served by"), "{e}");
        assert!(store.list().unwrap().is_empty());
    }
}
