//! The node's image store: one OCI image layout under `<data-dir>/images`, filled by
//! `omnicloud image import` from an OCI layout (directory or tar archive) or a
//! `docker save` archive, listed and pruned by `image ls` / `image rm`. Blobs are content
//! addressed and verified on the way in; removing an image deletes the blobs no remaining
//! image uses.
//!
//! Blobs are streamed to disk (never whole in memory) and appear under their digest only
//! when complete; a blob's path is made only from a checked `sha256:<64 hex>` digest.
//! Importing lives in [`import`](super::import).
//!
//! Sync, file-based; writes index.json atomically (write + rename). May call: `image`,
//! `limits`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::image::{self, normalize_reference, REF_NAME};
use super::limits;
use super::{ContainerError, Result};

pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A blob written by [`ImageStore::put_blob_from`].
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub digest: String,
    pub size: u64,
    /// Whether this call created it (it was not in the store before).
    pub created: bool,
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub digest: String,
    /// Manifest + config + layers, in bytes.
    pub size: u64,
}

pub struct ImageStore {
    dir: PathBuf,
}

/// A blob on its way into the store; see [`ImageStore::blob_writer`].
pub(crate) struct BlobWriter {
    dir: PathBuf,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    limit: u64,
    expect: Option<String>,
}

impl BlobWriter {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(ContainerError::Limit {
                what: self.expect.clone().unwrap_or_else(|| "a blob".into()),
                why: format!("is larger than {} (the limit)", limits::bytes(self.limit)),
            });
        }
        self.hasher.update(bytes);
        self.tmp.write_all(bytes).map_err(io("writing a blob"))
    }

    /// Checks the digest and stores the blob under it.
    pub(crate) fn finish(self) -> Result<Stored> {
        let hex: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let digest = format!("sha256:{hex}");
        if let Some(d) = self.expect.filter(|d| **d != digest) {
            return Err(ContainerError::Digest {
                digest: d,
                message: format!("content hashes to {digest}"),
            });
        }
        let path = self.dir.join("blobs/sha256").join(&hex);
        let created = !path.exists();
        if created {
            self.tmp
                .persist(&path)
                .map_err(|e| ContainerError::io("storing a blob", e.error))?;
        }
        Ok(Stored {
            digest,
            size: self.size,
            created,
        })
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |e| ContainerError::io(what, e)
}

pub(crate) fn bad(path: &Path, message: impl Into<String>) -> ContainerError {
    ContainerError::BadImage {
        layout: path.to_path_buf(),
        message: message.into(),
    }
}

#[cfg(test)]
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ImageStore {
    /// Opens the store, creating an empty layout if there is none.
    pub fn open(dir: &Path) -> Result<ImageStore> {
        fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(io(format!("creating {}", dir.display())))?;
        if !dir.join("oci-layout").exists() {
            fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(io("writing oci-layout"))?;
        }
        if !dir.join("index.json").exists() {
            let store = ImageStore {
                dir: dir.to_path_buf(),
            };
            store.write_index(&json!({"schemaVersion": 2, "manifests": []}))?;
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The layout directory, as `ContainerSpec.image.layout` expects it.
    pub fn layout(&self) -> &Path {
        &self.dir
    }

    fn index(&self) -> Result<Value> {
        let path = self.dir.join("index.json");
        let text = fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| bad(&self.dir, format!("index.json: {e}")))
    }

    fn write_index(&self, index: &Value) -> Result<()> {
        let tmp = self.dir.join("index.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(index).expect("JSON"))
            .map_err(io("writing index.json"))?;
        fs::rename(&tmp, self.dir.join("index.json")).map_err(io("replacing index.json"))
    }

    /// The file of a blob; the digest must be `sha256:<64 hex>` (it may come from a
    /// manifest or a request, and must never name another file).
    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .dir
            .join("blobs/sha256")
            .join(image::sha256_hex(digest)?))
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        Ok(self.put_blob_from(bytes, None, u64::MAX)?.digest)
    }

    /// Streams a blob into the store (never whole in memory), refusing more than `limit`
    /// bytes and, with `expect` (`sha256:<hex>`), content of another digest. The blob
    /// appears under its digest only once complete.
    pub(crate) fn put_blob_from(
        &self,
        mut reader: impl Read,
        expect: Option<&str>,
        limit: u64,
    ) -> Result<Stored> {
        let what = expect.unwrap_or("a blob").to_string();
        let mut w = self.blob_writer(expect, limit)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io(format!("reading {what}")))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.finish()
    }

    /// A blob being written piece by piece (a download): [`BlobWriter::finish`] checks
    /// it and names it by its digest; dropped unfinished, nothing is left.
    pub(crate) fn blob_writer(&self, expect: Option<&str>, limit: u64) -> Result<BlobWriter> {
        if let Some(d) = expect {
            image::sha256_hex(d)?;
        }
        let tmp = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&self.dir)
            .map_err(io("creating a blob file"))?;
        Ok(BlobWriter {
            dir: self.dir.clone(),
            tmp,
            hasher: Sha256::new(),
            size: 0,
            limit,
            expect: expect.map(str::to_string),
        })
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(io(format!("reading blob {digest}")))
    }

    /// Removes blobs a failed import or pull created, unless an image now uses them.
    pub(crate) fn discard(&self, created: &[String]) {
        let Ok(live) = self.live() else { return };
        for digest in created {
            if let Ok(path) = self.blob_path(digest) {
                if !live.contains(digest.trim_start_matches("sha256:")) {
                    let _ = fs::remove_file(path);
                }
            }
        }
    }

    /// Adds or replaces the index entries with these entries' names, in one write.
    pub(crate) fn tag_all(&self, entries: &[Value]) -> Result<()> {
        let names: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| e["annotations"][REF_NAME].as_str())
            .collect();
        let mut index = self.index()?;
        let manifests = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| bad(&self.dir, "index.json has no manifests"))?;
        manifests.retain(|d| {
            !d["annotations"][REF_NAME]
                .as_str()
                .is_some_and(|n| names.contains(n))
        });
        manifests.extend(entries.iter().cloned());
        self.write_index(&index)
    }

    /// Adds or replaces the index entry with this entry's name.
    pub(crate) fn tag(&self, entry: Value) -> Result<()> {
        self.tag_all(&[entry])
    }

    /// The index entry (manifest descriptor) of an image, by name.
    pub fn descriptor(&self, name: &str) -> Result<Option<Value>> {
        let wanted = normalize_reference(name);
        let index = self.index()?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"][REF_NAME].as_str() == Some(wanted.as_str()))
            .cloned())
    }

    /// Whether the blob is stored (and so can be served).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let index = self.index()?;
        let mut out = Vec::new();
        for desc in index["manifests"].as_array().into_iter().flatten() {
            let (Some(name), Some(digest)) = (
                desc["annotations"][REF_NAME].as_str(),
                desc["digest"].as_str(),
            ) else {
                continue;
            };
            let manifest: Value = serde_json::from_slice(&self.read_blob(digest)?)
                .map_err(|e| bad(&self.dir, format!("manifest {digest}: {e}")))?;
            let parts = std::iter::once(&manifest["config"])
                .chain(manifest["layers"].as_array().into_iter().flatten());
            let size = desc["size"].as_u64().unwrap_or(0)
                + parts.filter_map(|p| p["size"].as_u64()).sum::<u64>();
            out.push(ImageInfo {
                name: name.to_string(),
                digest: digest.to_string(),
                size,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes an image by name and deletes the blobs nothing else references.
    pub fn remove(&self, name: &str) -> Result<ImageInfo> {
        let wanted = normalize_reference(name);
        let info = self
            .list()?
            .into_iter()
            .find(|i| i.name == wanted)
            .ok_or_else(|| ContainerError::ImageNotFound {
                reference: wanted.clone(),
                layout: self.dir.clone(),
            })?;
        let mut index = self.index()?;
        if let Some(m) = index["manifests"].as_array_mut() {
            m.retain(|d| d["annotations"][REF_NAME].as_str() != Some(wanted.as_str()));
        }
        self.write_index(&index)?;
        self.collect_garbage()?;
        Ok(info)
    }

    /// The hex digests of every blob an indexed image reaches.
    fn live(&self) -> Result<BTreeSet<String>> {
        let mut live = BTreeSet::new();
        for desc in self.index()?["manifests"].as_array().into_iter().flatten() {
            let Some(digest) = desc["digest"].as_str() else {
                continue;
            };
            live.insert(digest.trim_start_matches("sha256:").to_string());
            if let Ok(bytes) = self.read_blob(digest) {
                let manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let parts = std::iter::once(&manifest["config"])
                    .chain(manifest["layers"].as_array().into_iter().flatten());
                for d in parts.filter_map(|p| p["digest"].as_str()) {
                    live.insert(d.trim_start_matches("sha256:").to_string());
                }
            }
        }
        Ok(live)
    }

    /// Deletes blobs that no indexed manifest reaches.
    fn collect_garbage(&self) -> Result<()> {
        let live = self.live()?;
        let blobs = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(io("listing blobs"))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-layer docker archive built in memory: manifest.json, config, layer.tar.
    fn docker_archive(dir: &Path) -> PathBuf {
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        let body = b"hello from a layer\n";
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        layer
            .append_data(&mut header, "etc/greeting", &body[..])
            .unwrap();
        let layer = layer.into_inner().unwrap();
        let config = json!({"architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["cat", "/etc/greeting"], "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))]}});
        let manifest = json!([{"Config": "cfg.json", "RepoTags": ["greeter:v1"], "Layers": ["abc/layer.tar"]}]);
        let mut archive = tar::Builder::new(Vec::new());
        for (path, bytes) in [
            ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
            ("cfg.json", serde_json::to_vec(&config).unwrap()),
            ("abc/layer.tar", layer),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            archive.append_data(&mut h, path, &bytes[..]).unwrap();
        }
        let path = dir.join("greeter.tar");
        fs::write(&path, archive.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn docker_archive_import_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        let imported = store.import(&docker_archive(dir.path())).unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].name, "greeter:v1");
        // The result is a valid layout the runtime can open.
        let image = super::super::image::open(store.layout(), "greeter:v1").unwrap();
        assert_eq!(image.config.cmd, ["cat", "/etc/greeting"]);
        assert_eq!(image.layers.len(), 1);
        assert_eq!(store.list().unwrap()[0].name, "greeter:v1");
        // Importing again is idempotent.
        store.import(&docker_archive(dir.path())).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        // Removing deletes the image and its blobs.
        store.remove("greeter:v1").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(store.layout().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert!(matches!(
            store.remove("greeter:v1"),
            Err(ContainerError::ImageNotFound { .. })
        ));
    }

    #[test]
    fn garbage_and_corruption_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        let junk = dir.path().join("junk.tar");
        fs::write(
            &junk,
            b"definitely not a tar archive, just some bytes that go on",
        )
        .unwrap();
        assert!(store.import(&junk).is_err());
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let err = store.import(&empty).unwrap_err().to_string();
        assert!(err.contains("neither an OCI image layout"), "{err}");
        // A layout whose blob does not match its digest.
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("blobs/sha256")).unwrap();
        fs::write(src.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let fake = "0".repeat(64);
        fs::write(src.join("blobs/sha256").join(&fake), b"{}").unwrap();
        let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST_TYPE,
            "digest": format!("sha256:{fake}"), "size": 2, "annotations": {REF_NAME: "x:1"}}]});
        fs::write(src.join("index.json"), index.to_string()).unwrap();
        assert!(matches!(
            store.import(&src),
            Err(ContainerError::Digest { .. })
        ));
        assert!(store.list().unwrap().is_empty(), "nothing half-imported");
    }
}
