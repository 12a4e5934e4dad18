//! `omnicloud image import`: an OCI image layout (directory or tar) or a `docker save`
//! archive into the node's [`ImageStore`].
//!
//! 1. An archive is unpacked into a scratch directory inside the store, regular files and
//!    directories only, within the [`limits`] ([`archive::unpack`]); a directory is read in
//!    place.
//! 2. Every file the archive's JSON names (manifest.json's `Config` and `Layers`, an OCI
//!    blob by its digest) is opened with [`archive::open_inside`]: a regular file inside
//!    the archive, reached without symlinks, `..` or an absolute path. An OCI digest must
//!    be `sha256:<64 hex>` before a path is made from it; JSON documents are read up to
//!    [`MAX_METADATA`], blobs are streamed into the store and checked against their digest.
//! 3. Only when every image of the archive is in are they named in index.json, in one
//!    write; a failed import removes the blobs it added and the scratch directory, so
//!    nothing half-imported remains.
//!
//! Sync. May call: `archive`, `limits`, `image`, `store`.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{json, Value};

use super::archive::{self, Skipped};
use super::image::{normalize_reference, sha256_hex, REF_NAME};
use super::limits::{self, read_limited, MAX_IMAGE_UNPACKED, MAX_METADATA};
use super::store::{bad, io, ImageInfo, ImageStore, Stored, MANIFEST_TYPE};
use super::{ContainerError, Result};

/// What one import has written so far.
#[derive(Default)]
struct Staged {
    /// Blobs this import created (removed again if it fails).
    created: Vec<String>,
    /// Index entries to add once everything is in.
    entries: Vec<Value>,
    imported: Vec<ImageInfo>,
}

impl Staged {
    fn keep(&mut self, stored: Stored) -> Stored {
        if stored.created {
            self.created.push(stored.digest.clone());
        }
        stored
    }
}

/// A source directory as read by one import: where it is and what its archive skipped.
struct Source<'a> {
    dir: &'a Path,
    skipped: &'a Skipped,
}

impl Source<'_> {
    fn open(&self, name: &str, what: &str) -> Result<std::fs::File> {
        archive::open_inside(self.dir, name, self.skipped)
            .map_err(|e| bad(self.dir, format!("{what}: {e}")))
    }

    /// A JSON document of at most [`MAX_METADATA`] bytes.
    fn json_bytes(&self, name: &str, what: &str) -> Result<Vec<u8>> {
        let file = self.open(name, what)?;
        read_limited(file, MAX_METADATA)
            .map_err(io(format!("reading {what}")))?
            .ok_or_else(|| ContainerError::Limit {
                what: what.to_string(),
                why: format!(
                    "is larger than {} (the limit for a JSON document)",
                    limits::bytes(MAX_METADATA)
                ),
            })
    }

    fn json(&self, name: &str, what: &str) -> Result<Value> {
        let bytes = self.json_bytes(name, what)?;
        serde_json::from_slice(&bytes).map_err(|e| bad(self.dir, format!("{what}: {e}")))
    }
}

impl ImageStore {
    /// Imports every named image of an OCI layout (directory or tar) or a `docker save`
    /// archive; all of them or none. Returns what was imported.
    pub fn import(&self, source: &Path) -> Result<Vec<ImageInfo>> {
        if source.is_dir() {
            return self.import_dir(source, &Skipped::default());
        }
        let scratch = tempfile::Builder::new()
            .prefix(".import-")
            .tempdir_in(self.layout())
            .map_err(io("creating an import directory"))?;
        let skipped = archive::unpack(source, scratch.path())?;
        self.import_dir(scratch.path(), &skipped)
    }

    fn import_dir(&self, dir: &Path, skipped: &Skipped) -> Result<Vec<ImageInfo>> {
        let src = Source { dir, skipped };
        let mut staged = Staged::default();
        let result = if dir.join("index.json").exists() && dir.join("oci-layout").exists() {
            self.import_oci(&src, &mut staged)
        } else if dir.join("manifest.json").exists() {
            self.import_docker(&src, &mut staged)
        } else {
            Err(bad(dir, "neither an OCI image layout (oci-layout, index.json) nor a docker archive (manifest.json)"))
        };
        match result.and_then(|()| self.tag_all(&staged.entries)) {
            Ok(()) => Ok(staged.imported),
            Err(e) => {
                self.discard(&staged.created);
                Err(e)
            }
        }
    }

    /// Copies a blob named by its digest from an OCI layout, verifying it.
    fn copy_blob(&self, src: &Source, digest: &str, limit: u64, st: &mut Staged) -> Result<u64> {
        let hex = sha256_hex(digest)?;
        let file = src.open(&format!("blobs/sha256/{hex}"), &format!("blob {digest}"))?;
        let stored = self.put_blob_from(BufReader::new(file), Some(digest), limit)?;
        Ok(st.keep(stored).size)
    }

    fn import_oci(&self, src: &Source, st: &mut Staged) -> Result<()> {
        let index = src.json("index.json", "index.json")?;
        for desc in index["manifests"].as_array().into_iter().flatten() {
            let Some(name) = desc["annotations"][REF_NAME].as_str() else {
                continue;
            };
            let digest = desc["digest"]
                .as_str()
                .ok_or_else(|| bad(src.dir, "index.json: a manifest without digest"))?;
            let mut size = self.copy_blob(src, digest, MAX_METADATA, st)?;
            let manifest: Value = serde_json::from_slice(&self.read_blob(digest)?)
                .map_err(|e| bad(src.dir, format!("manifest {digest}: {e}")))?;
            let config = std::iter::once((&manifest["config"], MAX_METADATA));
            let layers = manifest["layers"].as_array().into_iter().flatten();
            for (part, limit) in config.chain(layers.map(|l| (l, MAX_IMAGE_UNPACKED))) {
                let d = part["digest"]
                    .as_str()
                    .ok_or_else(|| bad(src.dir, format!("manifest {digest} lacks a digest")))?;
                size += self.copy_blob(src, d, limit, st)?;
                too_big(&format!("image {name}"), size)?;
            }
            let mut entry = desc.clone();
            entry["annotations"][REF_NAME] = Value::String(normalize_reference(name));
            st.entries.push(entry);
            st.imported.push(ImageInfo {
                name: normalize_reference(name),
                digest: digest.to_string(),
                size,
            });
        }
        if st.imported.is_empty() {
            return Err(bad(
                src.dir,
                format!("no image in index.json carries a {REF_NAME} annotation"),
            ));
        }
        Ok(())
    }

    /// `docker save` archives: manifest.json lists config and layer files and RepoTags.
    fn import_docker(&self, src: &Source, st: &mut Staged) -> Result<()> {
        let entries = src.json("manifest.json", "manifest.json")?;
        for entry in entries.as_array().into_iter().flatten() {
            let config_name = entry["Config"]
                .as_str()
                .ok_or_else(|| bad(src.dir, "manifest.json: an entry without Config"))?;
            let config = src.json_bytes(config_name, &format!("config {config_name}"))?;
            let config = st.keep(self.put_blob_from(&config[..], None, MAX_METADATA)?);
            let mut size = config.size;
            let mut layers = Vec::new();
            for rel in entry["Layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let mut reader = BufReader::new(src.open(rel, &format!("layer {rel}"))?);
                let head = reader
                    .fill_buf()
                    .map_err(io(format!("reading layer {rel}")))?;
                let media = if head.starts_with(&[0x1f, 0x8b]) {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.oci.image.layer.v1.tar"
                };
                let layer = st.keep(self.put_blob_from(reader, None, MAX_IMAGE_UNPACKED)?);
                size += layer.size;
                too_big(&format!("the image of {config_name}"), size)?;
                layers
                    .push(json!({"mediaType": media, "digest": layer.digest, "size": layer.size}));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.size},
                "layers": layers,
            });
            let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON");
            let digest = st
                .keep(self.put_blob_from(&manifest_bytes[..], None, u64::MAX)?)
                .digest;
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
                    src.dir,
                    "an image in manifest.json has no RepoTags to name it by",
                ));
            }
            for name in tags {
                st.entries
                    .push(json!({"mediaType": MANIFEST_TYPE, "digest": digest,
                    "size": manifest_bytes.len(), "annotations": {REF_NAME: name}}));
                st.imported.push(ImageInfo {
                    name,
                    digest: digest.clone(),
                    size,
                });
            }
        }
        Ok(())
    }
}

/// Refuses an image whose blobs add up to more than [`MAX_IMAGE_UNPACKED`].
fn too_big(what: &str, size: u64) -> Result<()> {
    if size > MAX_IMAGE_UNPACKED {
        return Err(ContainerError::Limit {
            what: what.to_string(),
            why: format!(
                "is larger than {} (the limit per image)",
                limits::bytes(MAX_IMAGE_UNPACKED)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::container::testkit::{any_file_contains, gzip, snapshot, tar, Raw};

    const CANARY: &[u8] = b"root:$6$canary-secret-that-must-never-be-stored:19000:0:99999:7:::";

    /// A temp dir with `outside/shadow` (the canary) and an image store under `images`.
    fn setup() -> (tempfile::TempDir, PathBuf, ImageStore) {
        let tmp = tempfile::tempdir().unwrap();
        let shadow = tmp.path().join("outside/shadow");
        fs::create_dir_all(shadow.parent().unwrap()).unwrap();
        fs::write(&shadow, CANARY).unwrap();
        let store = ImageStore::open(&tmp.path().join("images")).unwrap();
        (tmp, shadow, store)
    }

    fn docker_entries(layer_name: &str) -> Vec<Raw> {
        let manifest =
            json!([{"Config": "cfg.json", "RepoTags": ["evil:1"], "Layers": [layer_name]}]);
        vec![
            Raw::file("manifest.json", manifest.to_string().as_bytes()),
            Raw::file("cfg.json", br#"{"architecture":"amd64","os":"linux"}"#),
        ]
    }

    /// Nothing of a refused import remains: no image, no blob, no scratch or temp file.
    fn assert_nothing_left(store: &ImageStore) {
        assert!(store.list().unwrap().is_empty(), "no image named");
        let blobs: Vec<_> = fs::read_dir(store.layout().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(blobs.is_empty(), "no blob left: {blobs:?}");
        let mut top: Vec<String> = fs::read_dir(store.layout())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["blobs", "index.json", "oci-layout"],
            "no scratch left"
        );
    }

    fn import_tar(store: &ImageStore, dir: &Path, bytes: &[u8]) -> Result<Vec<ImageInfo>> {
        let path = dir.join("in.tar");
        fs::write(&path, bytes).unwrap();
        store.import(&path)
    }

    #[test]
    fn absolute_or_parent_layer_paths_in_manifest_json_are_refused() {
        let (tmp, shadow, store) = setup();
        let abs = shadow.to_str().unwrap().to_string();
        for (layer, says) in [
            (abs.as_str(), "absolute path"),
            ("../../outside/shadow", "leaves the archive"),
            ("a/../../../outside/shadow", "leaves the archive"),
        ] {
            let e = import_tar(&store, tmp.path(), &tar(&docker_entries(layer)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{layer}: {e}");
            assert!(!any_file_contains(store.layout(), CANARY), "{layer}");
            assert_nothing_left(&store);
        }
    }

    #[test]
    fn a_layer_tar_that_is_a_symlink_or_hard_link_is_refused() {
        let (tmp, shadow, store) = setup();
        let abs = shadow.to_str().unwrap();
        for (kind, target, says) in [
            (tar::EntryType::Symlink, abs, "is a symlink in the archive"),
            (tar::EntryType::Symlink, "../../outside/shadow", "a symlink"),
            (tar::EntryType::Link, abs, "is a hard link in the archive"),
        ] {
            let mut entries = docker_entries("abc/layer.tar");
            entries.push(Raw::link("abc/layer.tar", kind, target));
            let e = import_tar(&store, tmp.path(), &tar(&entries))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{kind:?} {target}: {e}");
            assert!(!any_file_contains(store.layout(), CANARY));
            assert_nothing_left(&store);
        }
        // The same in a directory import: symlinks are not followed there either.
        let dir = tmp.path().join("unpacked");
        fs::create_dir_all(dir.join("abc")).unwrap();
        let manifest =
            json!([{"Config": "cfg.json", "RepoTags": ["evil:1"], "Layers": ["abc/layer.tar"]}]);
        fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        fs::write(dir.join("cfg.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(&shadow, dir.join("abc/layer.tar")).unwrap();
        let e = store.import(&dir).unwrap_err().to_string();
        assert!(e.contains("abc/layer.tar is a symlink"), "{e}");
        assert!(!any_file_contains(store.layout(), CANARY));
        assert_nothing_left(&store);
    }

    #[test]
    fn oci_digests_are_checked_before_a_path_is_made() {
        let (tmp, shadow, store) = setup();
        let src = tmp.path().join("layout");
        fs::create_dir_all(src.join("blobs/sha256")).unwrap();
        fs::write(src.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let evil = format!(
            "sha256:../../../outside/{}",
            shadow.file_name().unwrap().to_str().unwrap()
        );
        let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST_TYPE,
            "digest": evil, "size": CANARY.len(), "annotations": {REF_NAME: "x:1"}}]});
        fs::write(src.join("index.json"), index.to_string()).unwrap();
        let e = store.import(&src).unwrap_err().to_string();
        assert!(e.contains("only sha256 digests are supported"), "{e}");
        assert_nothing_left(&store);
    }

    #[test]
    fn an_outer_archive_bomb_is_refused_and_leaves_nothing() {
        let (tmp, _, store) = setup();
        // 64 MiB of zeros gzips to ~64 KiB: far past 100:1 once 16 MiB are out.
        let mut entries = docker_entries("layer.tar");
        entries.push(Raw::file("layer.tar", &vec![0u8; 64 << 20]));
        let bomb = gzip(&tar(&entries));
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let e = import_tar(&store, tmp.path(), &bomb).unwrap_err();
        assert!(matches!(e, ContainerError::Limit { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("archive") && e.contains("in.tar"), "{e}");
        assert!(e.contains("more than 100 times its compressed size"), "{e}");
        assert_nothing_left(&store);
    }

    #[test]
    fn a_refused_image_unnames_and_removes_what_the_import_added() {
        let (tmp, _, store) = setup();
        let in_tar = tmp.path().join("in.tar");
        let outside = || snapshot(tmp.path(), &[store.layout(), &in_tar]);
        let before = outside();
        // The first image is fine, the second names a layer the archive lacks.
        let manifest = json!([
            {"Config": "cfg.json", "RepoTags": ["good:1"], "Layers": ["good.tar"]},
            {"Config": "cfg.json", "RepoTags": ["bad:1"], "Layers": ["missing.tar"]},
        ]);
        let entries = vec![
            Raw::file("manifest.json", manifest.to_string().as_bytes()),
            Raw::file("cfg.json", b"{}"),
            Raw::file("good.tar", &tar(&[Raw::file("etc/hello", b"hi")])),
        ];
        let e = import_tar(&store, tmp.path(), &tar(&entries)).unwrap_err();
        assert!(e.to_string().contains("missing.tar"), "{e}");
        assert_nothing_left(&store);
        // A JSON document past the cap is refused by name.
        let big = format!("[{}]", " ".repeat(MAX_METADATA as usize));
        let e = import_tar(
            &store,
            tmp.path(),
            &tar(&[Raw::file("manifest.json", big.as_bytes())]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("manifest.json is larger than 4 MiB"), "{e}");
        assert_nothing_left(&store);
        // Nothing outside the store was touched by any of it.
        assert!(before.contains_key("outside/shadow"));
        assert_eq!(outside(), before);
    }
}
