//! Per-replica claims that survive their node: a claim is a directory on the node running
//! its instance (`<data-dir>/claims/<namespace>/<claim>`). While the instance runs, the
//! agent snapshots the directory every `SYNC_EVERY` when it changed (a gzipped tar with a
//! version, ms since the epoch) and pushes it to up to `COPIES` other agents. An instance
//! that starts on a node first takes the newest copy any node holds, so after its node
//! dies the StatefulSet replica comes back elsewhere with its data as of the last sync
//! (crash-consistent, at most `SYNC_EVERY` behind).
//!
//! Peers serve and take copies at `/v1/claims/<namespace>/<claim>` (api::claims).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::cluster::{pki, MemberStatus};

use super::Shared;

pub const SYNC_EVERY: Duration = Duration::from_secs(3);
const COPIES: usize = 2;
/// Header carrying a copy's version.
pub const VERSION_HEADER: &str = "x-omnicloud-claim-version";

pub fn claim_dir(claims: &Path, namespace: &str, claim: &str) -> PathBuf {
    claims.join(namespace).join(claim)
}

fn version_file(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".version");
    PathBuf::from(s)
}

/// The version of the local copy (0: none).
pub fn local_version(dir: &Path) -> u64 {
    fs::read_to_string(version_file(dir))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Size and newest mtime of every file under `dir`: changes when the content does.
pub fn fingerprint(dir: &Path) -> u64 {
    fn walk(dir: &Path, acc: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            *acc = acc
                .wrapping_mul(31)
                .wrapping_add(m.len() ^ mtime ^ e.file_name().len() as u64);
            if m.is_dir() {
                walk(&e.path(), acc);
            }
        }
    }
    let mut acc = 0;
    walk(dir, &mut acc);
    acc
}

/// A gzipped tar of the directory's contents.
pub fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.finish()
}

/// Replaces the directory with the copy (unpacked beside it, then renamed), if `version`
/// is newer than what is there. Returns whether it did.
pub fn unpack(dir: &Path, version: u64, bytes: &[u8]) -> std::io::Result<bool> {
    if version <= local_version(dir) {
        return Ok(false);
    }
    let parent = dir.parent().expect("claim dirs have a parent");
    fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".claim-")
        .tempdir_in(parent)?;
    // A copy comes from a peer holding the token, but is still bounded as an image layer
    // is (size and gzip ratio), so a bad or buggy peer cannot fill this node's disk.
    use crate::container::limits::{Capped, Counted, Meter, MAX_IMAGE_UNPACKED};
    let meter = Meter::new(MAX_IMAGE_UNPACKED, true);
    let gz = flate2::read::GzDecoder::new(Counted {
        inner: bytes,
        meter: &meter,
    });
    tar::Archive::new(Capped {
        inner: gz,
        meter: &meter,
    })
    .unpack(tmp.path())
    .map_err(|e| match meter.exceeded() {
        Some(why) => std::io::Error::other(format!("the claim copy {why}")),
        None => e,
    })?;
    let old = parent.join(format!(".old-{version}"));
    if dir.exists() {
        fs::rename(dir, &old)?;
    }
    fs::rename(tmp.keep(), dir)?;
    let _ = fs::remove_dir_all(&old);
    fs::write(version_file(dir), version.to_string())?;
    Ok(true)
}

async fn peers(shared: &Shared) -> Vec<(String, String)> {
    shared
        .peers
        .members()
        .await
        .into_iter()
        .filter(|m| {
            m.status == MemberStatus::Alive
                && m.meta.name != shared.node
                && m.meta.roles.contains(&crate::model::Role::Agent)
        })
        .map(|m| (m.meta.name.clone(), m.meta.api_addr.clone()))
        .collect()
}

/// Before an instance starts here: take the newest copy of each claim any peer holds.
pub async fn restore(shared: &Shared, namespace: &str, claims: &[String]) {
    let peers = peers(shared).await;
    for claim in claims {
        let dir = claim_dir(&shared.dirs.claims, namespace, claim);
        let mut best: Option<(u64, Vec<u8>, String)> = None;
        for (name, addr) in &peers {
            let url = format!("{}/v1/claims/{namespace}/{claim}", pki::peer_api_url(addr));
            let token = shared.node_token.clone();
            let got = tokio::task::spawn_blocking(move || -> Option<(u64, Vec<u8>)> {
                let r = pki::peer_agent(ureq::AgentBuilder::new().timeout(Duration::from_secs(30)))
                    .get(&url)
                    .set("Authorization", &format!("Bearer {token}"))
                    .call()
                    .ok()?;
                let version = r.header(VERSION_HEADER)?.parse().ok()?;
                let mut body = Vec::new();
                r.into_reader().read_to_end(&mut body).ok()?;
                Some((version, body))
            })
            .await
            .ok()
            .flatten();
            if let Some((v, body)) = got {
                if best.as_ref().is_none_or(|b| v > b.0) {
                    best = Some((v, body, name.clone()));
                }
            }
        }
        let Some((version, body, from)) = best else {
            continue;
        };
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || unpack(&d, version, &body)).await {
            Ok(Ok(true)) => {
                tracing::info!(claim = %claim, %namespace, from = %from, version, "claim restored from a peer")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(claim = %claim, error = %e, "restoring a claim"),
            Err(e) => tracing::warn!(claim = %claim, error = %e, "restoring a claim"),
        }
    }
}

/// While an instance runs: push its claims to peers when they changed. `last` keeps each
/// claim's fingerprint between calls.
pub async fn push_changed(
    shared: &Shared,
    namespace: &str,
    claims: &[String],
    last: &mut std::collections::HashMap<String, u64>,
) {
    let mut peers = peers(shared).await;
    peers.sort();
    peers.truncate(COPIES);
    if peers.is_empty() {
        return;
    }
    for claim in claims {
        let dir = claim_dir(&shared.dirs.claims, namespace, claim);
        let d = dir.clone();
        let Ok(fp) = tokio::task::spawn_blocking(move || fingerprint(&d)).await else {
            continue;
        };
        if last.get(claim) == Some(&fp) {
            continue;
        }
        let version = crate::orchestrator::membership::now_ms();
        let d = dir.clone();
        let packed = tokio::task::spawn_blocking(move || {
            let bytes = pack(&d)?;
            fs::write(version_file(&d), version.to_string())?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await;
        let Ok(Ok(bytes)) = packed else {
            continue;
        };
        let mut pushed = 0;
        for (_, addr) in &peers {
            let url = format!("{}/v1/claims/{namespace}/{claim}", pki::peer_api_url(addr));
            let (token, body) = (shared.node_token.clone(), bytes.clone());
            let ok = tokio::task::spawn_blocking(move || {
                pki::peer_agent(ureq::AgentBuilder::new().timeout(Duration::from_secs(30)))
                    .put(&url)
                    .set("Authorization", &format!("Bearer {token}"))
                    .set(VERSION_HEADER, &version.to_string())
                    .send_bytes(&body)
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            pushed += usize::from(ok);
        }
        if pushed > 0 {
            last.insert(claim.clone(), fp);
            tracing::debug!(claim = %claim, version, copies = pushed, "claim pushed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy from a peer is bounded like an image layer: a small gzip bomb is refused and
    /// leaves neither the claim nor scratch dirs behind.
    #[test]
    fn a_gzip_bomb_copy_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("bomb");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("zeros"), vec![0u8; 64 << 20]).unwrap();
        let bytes = pack(&src).unwrap();
        assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
        let parent = tmp.path().join("default");
        let dst = parent.join("data-db-0");
        let err = unpack(&dst, 1, &bytes).unwrap_err();
        assert!(err.to_string().contains("100"), "{err}");
        assert!(!dst.exists());
        assert_eq!(local_version(&dst), 0);
        assert_eq!(
            fs::read_dir(&parent).unwrap().count(),
            0,
            "scratch left behind"
        );
    }

    #[test]
    fn copies_round_trip_and_only_newer_ones_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("a/data-db-0");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/file"), "v1").unwrap();
        let fp = fingerprint(&src);
        let bytes = pack(&src).unwrap();
        let dst = tmp.path().join("b/default/data-db-0");
        assert!(unpack(&dst, 10, &bytes).unwrap());
        assert_eq!(fs::read_to_string(dst.join("sub/file")).unwrap(), "v1");
        assert_eq!(local_version(&dst), 10);
        assert!(
            !unpack(&dst, 9, &bytes).unwrap(),
            "an older copy is ignored"
        );
        fs::write(src.join("sub/file"), "v2 longer").unwrap();
        assert_ne!(fingerprint(&src), fp);
        assert!(unpack(&dst, 11, &pack(&src).unwrap()).unwrap());
        assert_eq!(
            fs::read_to_string(dst.join("sub/file")).unwrap(),
            "v2 longer"
        );
    }
}
