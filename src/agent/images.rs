//! Getting an instance's image onto this node, as its container's `imagePullPolicy` says
//! ([`PullPolicy::of`]: Kubernetes' defaults, `:latest` or no tag is Always):
//!
//! - Never: the store must have it, else the instance waits with ErrImageNeverPull.
//! - IfNotPresent: the store's copy if there is one; else any alive peer whose store has
//!   it (`/v1/registry` on its API, with the cluster's admin token), then the registry
//!   (`container::registry`: its mirrors first, the node's `[registries]` settings, the
//!   pod's pull secrets).
//! - Always: the registry is asked again on every start (blobs the store has are not
//!   fetched again), then peers if it cannot answer. An image brought by
//!   `omnicloud image import` has no registry to ask and is used as is.
//!
//! Each pull writes Pulling, then Pulled or Failed events on the instance; a failure
//! becomes the instance's reason (ErrImagePull, ErrImageNotFound, InvalidImageName) with
//! the registry's message, and the supervisor's backoff spaces the retries (shown as
//! ImagePullBackOff). Pulls run one at a time, so replicas of one new image fetch it once.

use std::time::Instant;

use crate::cluster::MemberStatus;
use crate::container::image::{self, normalize_reference};
use crate::container::registry::{
    self, DockerConfig, PullRequest, Reference, RegistryError, Source,
};
use crate::container::store::ImageStore;
use crate::container::ContainerError;
use crate::model::event::EventReason;
use crate::model::instance::reasons;
use crate::model::workload::PullPolicy;
use crate::orchestrator::controllers::EventDraft;
use crate::store::ObjectKey;

use super::Shared;

/// Why an image could not be had: (reason, message) for the instance status.
pub type Missing = (&'static str, String);

/// One container's image as its instance wants it.
pub struct Wanted<'a> {
    pub instance: &'a ObjectKey,
    pub image: &'a str,
    pub policy: PullPolicy,
    /// The pod's `imagePullSecrets` names.
    pub secrets: &'a [String],
}

/// The reason to show for a failed pull: one that failed before and fails again is
/// backing off (`ImagePullBackOff`), as Kubernetes shows it.
pub fn backing_off(previous: &str, reason: &'static str) -> &'static str {
    let again = matches!(
        previous,
        reasons::ERR_IMAGE_PULL | reasons::IMAGE_PULL_BACK_OFF
    );
    match reason {
        reasons::ERR_IMAGE_PULL if again => reasons::IMAGE_PULL_BACK_OFF,
        r => r,
    }
}

pub async fn ensure(shared: &Shared, want: &Wanted<'_>) -> Result<(), Missing> {
    let name = normalize_reference(want.image);
    let have = local(shared, &name).await?;
    match (want.policy, &have) {
        (_, Some(None)) => return Ok(()), // imported: no registry to ask again
        (PullPolicy::IfNotPresent | PullPolicy::Never, Some(_)) => return Ok(()),
        (PullPolicy::Never, None) => {
            return Err((
                reasons::ERR_IMAGE_NEVER_PULL,
                format!("image {name} is not on this node and imagePullPolicy is Never"),
            ))
        }
        _ => {}
    }
    let _one_at_a_time = shared.pulls.lock().await;
    if want.policy == PullPolicy::IfNotPresent && local(shared, &name).await?.is_some() {
        return Ok(());
    }
    event(
        shared,
        want.instance,
        false,
        EventReason::Pulling,
        format!("Pulling image \"{}\"", want.image),
    );
    let t0 = Instant::now();
    let result = if want.policy == PullPolicy::Always {
        // The registry first (the tag may have moved); peers when it cannot answer.
        match from_registry(shared, want, &name, Vec::new()).await {
            Ok(from) => Ok(from),
            Err(refused) => from_peers(shared, &name).await.map_err(|peers| {
                let (reason, mut message) = refused;
                if !peers.is_empty() {
                    message.push_str(&format!("; peers: {}", peers.join("; ")));
                }
                (reason, message)
            }),
        }
    } else {
        match from_peers(shared, &name).await {
            Ok(from) => Ok(from),
            Err(peers) => from_registry(shared, want, &name, peers).await,
        }
    };
    match result {
        Ok(from) => {
            let secs = t0.elapsed().as_secs_f64();
            tracing::info!(image = %name, from = %from, secs, "image pulled");
            event(
                shared,
                want.instance,
                false,
                EventReason::Pulled,
                format!(
                    "Successfully pulled image \"{}\" from {from} in {secs:.1}s",
                    want.image
                ),
            );
            Ok(())
        }
        Err((reason, message)) => {
            event(
                shared,
                want.instance,
                true,
                EventReason::Failed,
                format!("{reason}: {message}"),
            );
            Err((reason, message))
        }
    }
}

/// From the first alive peer that has it: Ok(where) or the peers' errors.
async fn from_peers(shared: &Shared, name: &str) -> Result<String, Vec<String>> {
    let peers: Vec<(String, Source)> = shared
        .peers
        .members()
        .await
        .into_iter()
        .filter(|m| m.status == MemberStatus::Alive && m.meta.name != shared.node)
        .map(|m| {
            (
                format!("node {}", m.meta.name),
                Source {
                    base: format!(
                        "{}/v1/registry",
                        crate::cluster::pki::peer_api_url(&m.meta.api_addr)
                    ),
                    token: Some(shared.node_token.clone()),
                },
            )
        })
        .collect();
    let mut errors = Vec::new();
    for (label, source) in peers {
        let Ok(store) = ImageStore::open(&shared.dirs.images) else {
            break;
        };
        let (r, n) = (Reference::for_peer(name), name.to_string());
        let pulled = tokio::task::spawn_blocking(move || source.pull(&store, &r, &n)).await;
        match pulled {
            Ok(Ok(Some(_))) => return Ok(label),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => errors.push(format!("{label}: {}", e.one_line())),
            Err(e) => errors.push(format!("{label}: {e}")),
        }
    }
    Err(errors)
}

async fn from_registry(
    shared: &Shared,
    want: &Wanted<'_>,
    name: &str,
    peer_errors: Vec<String>,
) -> Result<String, Missing> {
    let store = ImageStore::open(&shared.dirs.images)
        .map_err(|e| (reasons::ERR_IMAGE_PULL, e.one_line()))?;
    let secrets = pull_secrets(shared, want.instance, want.secrets);
    let request = PullRequest {
        name: want.image,
        settings: &shared.registries,
        secrets: &secrets,
        progress: None,
    };
    let with_peers = |mut m: String| {
        if !peer_errors.is_empty() {
            m.push_str(&format!("; peers: {}", peer_errors.join("; ")));
        }
        m
    };
    match registry::pull(&store, &request).await {
        Ok(p) => Ok(format!(
            "{} ({} bytes downloaded)",
            p.endpoint, p.downloaded
        )),
        Err(RegistryError::NotFound { tried, .. }) => Err((
            reasons::ERR_IMAGE_NOT_FOUND,
            with_peers(format!(
                "image {name} is not in this node's image store nor on any peer, nor in a \
                 registry ({}) (omnicloud image import, or a registry that has it)",
                tried.join("; ")
            )),
        )),
        Err(e @ RegistryError::BadReference { .. }) => {
            Err((reasons::INVALID_IMAGE_NAME, e.to_string()))
        }
        Err(e) => Err((reasons::ERR_IMAGE_PULL, with_peers(crate::error_chain(&e)))),
    }
}

/// The registry credentials of the pod's `imagePullSecrets`.
///
/// The seam for Secrets: a `kubernetes.io/dockerconfigjson` Secret's decoded
/// `.dockerconfigjson` bytes go through [`DockerConfig::parse`]. This node cannot read
/// Secrets yet (the kind is being added), so the names are logged as not used and the
/// node's own `[registries.configs]` credentials apply.
fn pull_secrets(shared: &Shared, instance: &ObjectKey, names: &[String]) -> Vec<DockerConfig> {
    let mut configs = Vec::new();
    for name in names {
        let parsed = super::configs::secret_data(&shared.control, &instance.namespace, name)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                let raw = data.get(".dockerconfigjson").ok_or_else(|| {
                    format!("Secret \"{name}\" has no .dockerconfigjson key (type kubernetes.io/dockerconfigjson)")
                })?;
                DockerConfig::parse(raw).map_err(|e| format!("Secret \"{name}\": {e}"))
            });
        match parsed {
            Ok(c) => configs.push(c),
            Err(message) => {
                // Kubelet goes on without it too (the registry may not need it).
                let message = format!("imagePullSecrets: {message}; pulling without it");
                tracing::warn!(instance = %instance, "{message}");
                event(
                    shared,
                    instance,
                    true,
                    EventReason::FailedToRetrieveImagePullSecret,
                    message,
                );
            }
        }
    }
    configs
}

/// Whether the store has `name`: Some(the registry it came from, None when imported).
async fn local(shared: &Shared, name: &str) -> Result<Option<Option<String>>, Missing> {
    let layout = shared.dirs.images.clone();
    let name = name.to_string();
    let found = tokio::task::spawn_blocking(move || {
        image::open(&layout, &name)?;
        let store = ImageStore::open(&layout)?;
        let desc = store.descriptor(&name)?;
        Ok::<_, ContainerError>(desc.and_then(|d| {
            d["annotations"][registry::SOURCE_ANNOTATION]
                .as_str()
                .map(str::to_string)
        }))
    })
    .await
    .map_err(|e| (reasons::ERR_IMAGE_PULL, e.to_string()))?;
    match found {
        Ok(source) => Ok(Some(source)),
        Err(ContainerError::ImageNotFound { .. }) => Ok(None),
        // An empty store is not an OCI layout yet.
        Err(ContainerError::BadImage { .. }) if !shared.dirs.images.join("index.json").exists() => {
            Ok(None)
        }
        Err(e) => Err((reasons::ERR_IMAGE_PULL, e.one_line())),
    }
}

/// An event on the instance (Pulling, Pulled, Failed), written in the background.
pub(super) fn event(
    shared: &Shared,
    key: &ObjectKey,
    warning: bool,
    reason: EventReason,
    message: String,
) {
    let draft = EventDraft {
        namespace: key.namespace.clone(),
        kind: "Instance".into(),
        name: key.name.clone(),
        warning,
        reason,
        message,
        source: format!("agent/{}", shared.node),
    };
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let writes = shared
        .events
        .lock()
        .expect("not poisoned")
        .commands(vec![draft], &now);
    let control = shared.control.clone();
    tokio::spawn(async move {
        for command in writes {
            if let Err(e) = control.write(command).await {
                tracing::debug!(error = %e, "writing an image pull event");
            }
        }
    });
}
