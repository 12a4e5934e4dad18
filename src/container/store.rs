//! The node's image store: one OCI image layout under `<data-dir>/images`, filled by
//! `omnicloud image import` from an OCI layout (directory or tar archive) or a
//! `docker save` archive, listed and pruned by `image ls` / `image rm`. Blobs are content
//! addressed and verified on the way in; removing an image deletes the blobs no remaining
//! image uses.
//!
//! Sync, file-based; writes index.json atomically (write + rename). May call: `image`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::image::{normalize_reference, REF_NAME};
use super::{ContainerError, Result};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

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

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |e| ContainerError::io(what, e)
}

fn bad(path: &Path, message: impl Into<String>) -> ContainerError {
    ContainerError::BadImage {
        layout: path.to_path_buf(),
        message: message.into(),
    }
}

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

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let hex = sha256_hex(bytes);
        let path = self.blob_path(&hex);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, bytes).map_err(io("writing a blob"))?;
            fs::rename(&tmp, &path).map_err(io("storing a blob"))?;
        }
        Ok(format!("sha256:{hex}"))
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(io(format!("reading blob {digest}")))
    }

    /// Imports every named image of an OCI layout (directory or tar) or a `docker save`
    /// archive. Returns what was imported.
    pub fn import(&self, source: &Path) -> Result<Vec<ImageInfo>> {
        if source.is_dir() {
            return self.import_dir(source);
        }
        let scratch = tempfile::Builder::new()
            .prefix(".import-")
            .tempdir_in(&self.dir)
            .map_err(io("creating an import directory"))?;
        let file = fs::File::open(source).map_err(io(format!("opening {}", source.display())))?;
        let mut magic = [0u8; 2];
        let gz = fs::File::open(source)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == [0x1f, 0x8b];
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        tar::Archive::new(reader)
            .unpack(scratch.path())
            .map_err(|e| bad(source, format!("not a readable tar archive: {e}")))?;
        self.import_dir(scratch.path())
    }

    fn import_dir(&self, src: &Path) -> Result<Vec<ImageInfo>> {
        if src.join("index.json").exists() && src.join("oci-layout").exists() {
            self.import_oci(src)
        } else if src.join("manifest.json").exists() {
            self.import_docker(src)
        } else {
            Err(bad(src, "neither an OCI image layout (oci-layout, index.json) nor a docker archive (manifest.json)"))
        }
    }

    /// Copies a verified blob from another layout.
    fn copy_blob(&self, src: &Path, digest: &str) -> Result<u64> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| bad(src, format!("unsupported digest {digest}")))?;
        let bytes = fs::read(src.join("blobs/sha256").join(hex))
            .map_err(io(format!("reading blob {digest}")))?;
        if sha256_hex(&bytes) != hex {
            return Err(ContainerError::Digest {
                digest: digest.into(),
                message: "content does not match".into(),
            });
        }
        self.put_blob(&bytes)?;
        Ok(bytes.len() as u64)
    }

    fn import_oci(&self, src: &Path) -> Result<Vec<ImageInfo>> {
        let text = fs::read_to_string(src.join("index.json")).map_err(io("reading index.json"))?;
        let index: Value =
            serde_json::from_str(&text).map_err(|e| bad(src, format!("index.json: {e}")))?;
        let mut imported = Vec::new();
        for desc in index["manifests"].as_array().into_iter().flatten() {
            let Some(name) = desc["annotations"][REF_NAME].as_str() else {
                continue;
            };
            let digest = desc["digest"]
                .as_str()
                .ok_or_else(|| bad(src, "manifest without digest"))?;
            let mut size = self.copy_blob(src, digest)?;
            let manifest: Value = serde_json::from_slice(&self.read_blob(digest)?)
                .map_err(|e| bad(src, format!("manifest {digest}: {e}")))?;
            let parts = std::iter::once(&manifest["config"])
                .chain(manifest["layers"].as_array().into_iter().flatten());
            for part in parts {
                let d = part["digest"]
                    .as_str()
                    .ok_or_else(|| bad(src, format!("manifest {digest} lacks a digest")))?;
                size += self.copy_blob(src, d)?;
            }
            let mut entry = desc.clone();
            entry["annotations"][REF_NAME] = Value::String(normalize_reference(name));
            self.tag(entry)?;
            imported.push(ImageInfo {
                name: normalize_reference(name),
                digest: digest.to_string(),
                size,
            });
        }
        if imported.is_empty() {
            return Err(bad(
                src,
                format!("no image in index.json carries a {REF_NAME} annotation"),
            ));
        }
        Ok(imported)
    }

    /// `docker save` archives: manifest.json lists config and layer files and RepoTags.
    fn import_docker(&self, src: &Path) -> Result<Vec<ImageInfo>> {
        let text =
            fs::read_to_string(src.join("manifest.json")).map_err(io("reading manifest.json"))?;
        let entries: Value =
            serde_json::from_str(&text).map_err(|e| bad(src, format!("manifest.json: {e}")))?;
        let mut imported = Vec::new();
        for entry in entries.as_array().into_iter().flatten() {
            let file = |rel: &str| -> Result<Vec<u8>> {
                if rel.contains("..") {
                    return Err(bad(src, format!("path {rel} leaves the archive")));
                }
                fs::read(src.join(rel)).map_err(io(format!("reading {rel} from the archive")))
            };
            let config = file(
                entry["Config"]
                    .as_str()
                    .ok_or_else(|| bad(src, "entry without Config"))?,
            )?;
            let config_digest = self.put_blob(&config)?;
            let mut size = config.len() as u64;
            let mut layers = Vec::new();
            for rel in entry["Layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let bytes = file(rel)?;
                let media = if bytes.starts_with(&[0x1f, 0x8b]) {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.oci.image.layer.v1.tar"
                };
                size += bytes.len() as u64;
                layers.push(json!({"mediaType": media, "digest": self.put_blob(&bytes)?, "size": bytes.len()}));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
                "layers": layers,
            });
            let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON");
            let digest = self.put_blob(&manifest_bytes)?;
            size += manifest_bytes.len() as u64;
            let tags: Vec<String> = entry["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(normalize_reference)
                .collect();
            if tags.is_empty() {
                return Err(bad(
                    src,
                    "an image in manifest.json has no RepoTags to name it by",
                ));
            }
            for name in tags {
                self.tag(json!({"mediaType": MANIFEST_TYPE, "digest": digest, "size": manifest_bytes.len(),
                                "annotations": {REF_NAME: name}}))?;
                imported.push(ImageInfo {
                    name,
                    digest: digest.clone(),
                    size,
                });
            }
        }
        Ok(imported)
    }

    /// Adds or replaces the index entry with this entry's name.
    pub(crate) fn tag(&self, entry: Value) -> Result<()> {
        let name = entry["annotations"][REF_NAME]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut index = self.index()?;
        let manifests = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| bad(&self.dir, "index.json has no manifests"))?;
        manifests.retain(|d| d["annotations"][REF_NAME].as_str() != Some(name.as_str()));
        manifests.push(entry);
        self.write_index(&index)
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
        digest.starts_with("sha256:")
            && digest.len() == 71
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit())
            && self.blob_path(digest).exists()
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

    /// Deletes blobs that no indexed manifest reaches.
    fn collect_garbage(&self) -> Result<()> {
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
