//! Moving images between the node's image store and registries.
//!
//! - [`pull`] (`pull.rs`): from a registry over the OCI distribution API with `oci-client`
//!   (async, rustls): HTTPS with the system's CA roots plus the configured CA files,
//!   plain HTTP only for hosts listed in `registries.insecure`, the Docker Registry v2
//!   bearer-token flow (the `WWW-Authenticate` realm) or basic auth, Docker Hub naming
//!   (`nginx` is `docker.io/library/nginx:latest`), Docker and OCI manifests and image
//!   indexes (linux/amd64 is picked), digest pinning (`name@sha256:...`), mirrors tried
//!   in order before the registry. Blobs the store has are not fetched again; missing
//!   ones are downloaded [`RegistrySettings::max_parallel_layers`] at a time, each checked
//!   against its digest and size on the way in; the image is named in the store only once
//!   every blob is in, and a failed pull removes the blobs it added.
//! - [`push`] (`push.rs`): `omnicloud image push`, the same client the other way.
//! - [`Source`] (`peer.rs`): a peer node's store under its API's `/v1/registry` (plain
//!   HTTP with the cluster token, blocking ureq).
//! - [`DockerConfig`] (`auth.rs`): credentials from a `kubernetes.io/dockerconfigjson`
//!   Secret's `.dockerconfigjson` bytes, for a pod's `imagePullSecrets`.
//!
//! Async (`pull`) but spawns nothing and keeps no runtime: the agent awaits it on the
//! node's runtime, `omnicloud image pull` on a current-thread runtime of its own.
//! May call: `container::{image, store, limits}`, `config` (the `[registries]` settings).

mod auth;
mod peer;
mod pull;
mod push;

pub use auth::{credentials_for, Credentials, DockerConfig};
pub use peer::{Reference, Source};
pub use pull::{pull, PullRequest, Pulled, SOURCE_ANNOTATION};
pub use push::push;

pub use crate::config::RegistrySettings;

/// Why a pull did not give an image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse (Kubernetes' InvalidImageName).
    #[error("image reference \"{reference}\" is invalid: {message}")]
    BadReference { reference: String, message: String },
    /// No place asked has the image (or there was no place to ask).
    #[error("image {image} was not found: {}", .tried.join("; "))]
    NotFound { image: String, tried: Vec<String> },
    /// Every place asked failed (or said not found); each one's error, in order.
    #[error("pulling {image}: {}", .errors.join("; "))]
    Failed { image: String, errors: Vec<String> },
    /// A pull secret's `.dockerconfigjson` that does not parse.
    #[error("pull secret: {0}")]
    DockerConfig(String),
}

/// Progress of a pull, for a progress bar: one call per blob started, bytes as they
/// arrive, and when it is in.
pub trait Progress: Send + Sync {
    /// A blob is needed: `cached` when the store already has it (no download).
    fn blob(&self, digest: &str, size: u64, cached: bool);
    fn advance(&self, digest: &str, bytes: u64);
    fn done(&self, digest: &str);
}

/// Where a name says its image lives: `Some(host)` for `host[:port]/repo...` (a first
/// component with a dot or a colon, or `localhost`), `None` for a name without a host
/// (`nginx`, `bitnami/redis`), which Docker looks for on Docker Hub.
pub fn registry_host(name: &str) -> Option<&str> {
    let (first, _) = name.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_names() {
        assert_eq!(
            registry_host("127.0.0.1:5000/tools/toolbox:1"),
            Some("127.0.0.1:5000")
        );
        assert_eq!(registry_host("ghcr.io/org/app"), Some("ghcr.io"));
        assert_eq!(registry_host("localhost/app"), Some("localhost"));
        assert_eq!(registry_host("nginx:1.25"), None);
        assert_eq!(registry_host("bitnami/redis"), None);
    }
}
