//! Getting an instance's image onto this node: the local store first, then, for a name
//! with a registry host (`10.0.0.5:5000/toolbox:1`), that registry; for a plain name, any
//! alive peer whose store has it (`/v1/registry` on its API, with the cluster's admin
//! token). Pulls run one at a time, so replicas of one new image fetch it once.

use std::time::Instant;

use crate::cluster::MemberStatus;
use crate::container::image::{self, normalize_reference};
use crate::container::registry::{Reference, Source};
use crate::container::store::ImageStore;
use crate::container::ContainerError;
use crate::model::instance::reasons;

use super::Shared;

/// Why an image could not be had: (reason, message) for the instance status.
pub type Missing = (&'static str, String);

pub async fn ensure(shared: &Shared, name: &str) -> Result<(), Missing> {
    let name = normalize_reference(name);
    if local(shared, &name).await? {
        return Ok(());
    }
    let _one_at_a_time = shared.pulls.lock().await;
    if local(shared, &name).await? {
        return Ok(());
    }
    let reference = Reference::parse(&name);
    let sources: Vec<(String, Source)> = match &reference.registry {
        Some(host) => vec![(
            format!("registry {host}"),
            Source {
                base: format!("http://{host}"),
                token: None,
            },
        )],
        None => shared
            .peers
            .members()
            .await
            .into_iter()
            .filter(|m| m.status == MemberStatus::Alive && m.meta.name != shared.node)
            .map(|m| {
                (
                    format!("node {}", m.meta.name),
                    Source {
                        base: format!("http://{}/v1/registry", m.meta.api_addr),
                        token: Some(shared.admin_token.clone()),
                    },
                )
            })
            .collect(),
    };
    let mut errors = Vec::new();
    for (label, source) in sources {
        let store = store(shared)?;
        let (r, n) = (reference.clone(), name.clone());
        let t0 = Instant::now();
        let pulled = tokio::task::spawn_blocking(move || source.pull(&store, &r, &n))
            .await
            .map_err(|e| (reasons::ERR_IMAGE_PULL, e.to_string()))?;
        match pulled {
            Ok(Some(info)) => {
                tracing::info!(image = %name, from = %label, bytes = info.size, secs = t0.elapsed().as_secs_f64(), "image pulled");
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("{label}: {}", e.one_line())),
        }
    }
    let mut message = match &reference.registry {
        Some(host) => format!("image {name} was not found in registry {host}"),
        None => format!(
            "image {name} is not in this node's image store nor on any peer (omnicloud image import)"
        ),
    };
    if !errors.is_empty() {
        message.push_str(&format!("; {}", errors.join("; ")));
        return Err((reasons::ERR_IMAGE_PULL, message));
    }
    Err((reasons::ERR_IMAGE_NOT_FOUND, message))
}

fn store(shared: &Shared) -> Result<ImageStore, Missing> {
    ImageStore::open(&shared.dirs.images).map_err(|e| (reasons::ERR_IMAGE_PULL, e.one_line()))
}

async fn local(shared: &Shared, name: &str) -> Result<bool, Missing> {
    let layout = shared.dirs.images.clone();
    let name = name.to_string();
    let found = tokio::task::spawn_blocking(move || image::open(&layout, &name))
        .await
        .map_err(|e| (reasons::ERR_IMAGE_PULL, e.to_string()))?;
    match found {
        Ok(_) => Ok(true),
        Err(ContainerError::ImageNotFound { .. }) => Ok(false),
        // An empty store is not an OCI layout yet.
        Err(ContainerError::BadImage { .. }) if !shared.dirs.images.join("index.json").exists() => {
            Ok(false)
        }
        Err(e) => Err((reasons::ERR_IMAGE_PULL, e.one_line())),
    }
}
