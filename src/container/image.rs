//! Images: read a local OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`),
//! find an image by its `org.opencontainers.image.ref.name` annotation, verify every blob's
//! digest, unpack each layer once into a content-addressed cache and build a container's
//! rootfs from the cached layers: an overlay mount (layers read-only, a per-container upper
//! dir), or a plain copy where overlayfs is unavailable.
//!
//! Cached layers use overlayfs's own whiteout format (a 0/0 character device for a deleted
//! path, the `trusted.overlay.opaque` xattr for an opaque directory), so the overlay mount
//! needs no conversion and the copy fallback applies the same markers.
//!
//! Unpacking layers lives in [`layer`](super::layer) (re-exported here); every JSON file
//! read here is capped at [`MAX_METADATA`](super::limits::MAX_METADATA).
//!
//! Sync, runs in the helper process. May call: `layer`, `limits`.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::limits::{read_limited, MAX_METADATA};
use super::{ContainerError, Result};

pub use super::layer::{layer_dir, unpack_layers};

/// The index.json annotation that names an image.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What an image says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// One layer blob, bottom first in [`Image::layers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>`.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// An image found in a layout, its manifest and config verified.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: String,
    pub manifest_digest: String,
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
}

/// How a rootfs was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsKind {
    Overlay,
    Copy,
}

/// The name an image has in the store, Docker's "familiar" form: `busybox` ->
/// `busybox:latest`, `docker.io/library/nginx:1.25` -> `nginx:1.25`,
/// `docker.io/bitnami/redis` -> `bitnami/redis:latest`; a name with a registry host keeps
/// it (`127.0.0.1:5000/tools/toolbox:1`), and a name with a tag or digest keeps it.
pub fn normalize_reference(name: &str) -> String {
    let short = ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .map(|rest| rest.strip_prefix("library/").unwrap_or(rest))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name);
    let last = short.rsplit('/').next().unwrap_or(short);
    if last.contains(':') || last.contains('@') {
        short.to_string()
    } else {
        format!("{short}:latest")
    }
}

/// Finds `reference` in the layout at `layout` and reads its manifest and config.
pub fn open(layout: &Path, reference: &str) -> Result<Image> {
    let bad = |message: String| ContainerError::BadImage {
        layout: layout.to_path_buf(),
        message,
    };
    let marker = layout.join("oci-layout");
    let text = fs::read_to_string(&marker).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            bad("no oci-layout file (not an OCI image layout)".into())
        } else {
            ContainerError::io(format!("reading {}", marker.display()), e)
        }
    })?;
    let version: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("oci-layout: {e}")))?;
    if !version["imageLayoutVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("1."))
    {
        return Err(bad(format!("unsupported oci-layout {text}")));
    }
    let index = read_index(layout)?;
    let wanted = normalize_reference(reference);
    let found = index.manifests().iter().find(|d| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .is_some_and(|n| normalize_reference(n) == wanted)
    });
    let Some(desc) = found else {
        return Err(ContainerError::ImageNotFound {
            reference: wanted,
            layout: layout.to_path_buf(),
        });
    };
    let manifest_digest = desc.digest().to_string();
    let bytes = read_blob(layout, desc)?;
    let manifest = ImageManifest::from_reader(&bytes[..])
        .map_err(|e| bad(format!("manifest {manifest_digest}: {e}")))?;
    let config_bytes = read_blob(layout, manifest.config())?;
    let image_config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| bad(format!("config {}: {e}", manifest.config().digest())))?;
    let c = image_config.config().clone().unwrap_or_default();
    let layers = manifest
        .layers()
        .iter()
        .map(|l| Layer {
            digest: l.digest().to_string(),
            media_type: l.media_type().to_string(),
            size: l.size(),
        })
        .collect();
    Ok(Image {
        reference: wanted,
        manifest_digest,
        layers,
        config: ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|d| !d.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        },
    })
}

/// `sha256:<hex>` -> the hex part, refusing anything that is not a sha256 digest.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex),
        _ => Err(ContainerError::Digest {
            digest: digest.to_string(),
            message: "only sha256 digests are supported".into(),
        }),
    }
}

pub(super) fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    Ok(layout.join("blobs/sha256").join(sha256_hex(digest)?))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads at most [`MAX_METADATA`] bytes of a JSON file.
fn read_json_file(layout: &Path, path: &Path, what: &str) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| ContainerError::io(format!("reading {what}"), e))?;
    read_limited(file, MAX_METADATA)
        .map_err(|e| ContainerError::io(format!("reading {what}"), e))?
        .ok_or_else(|| ContainerError::BadImage {
            layout: layout.to_path_buf(),
            message: format!(
                "{what} is larger than {} (the limit for a JSON document)",
                super::limits::bytes(MAX_METADATA)
            ),
        })
}

fn read_index(layout: &Path) -> Result<ImageIndex> {
    let bad = |message: String| ContainerError::BadImage {
        layout: layout.to_path_buf(),
        message: format!("index.json: {message}"),
    };
    let bytes = match read_json_file(layout, &layout.join("index.json"), "index.json") {
        Err(ContainerError::Io { source, .. }) => return Err(bad(source.to_string())),
        other => other?,
    };
    ImageIndex::from_reader(&bytes[..]).map_err(|e| bad(e.to_string()))
}

/// Reads a small blob (manifest, config) and checks its size and digest.
fn read_blob(layout: &Path, desc: &Descriptor) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    let path = blob_path(layout, &digest)?;
    let bytes = read_json_file(layout, &path, &format!("blob {digest}"))?;
    check(
        &digest,
        desc.size(),
        bytes.len() as u64,
        &hex(&Sha256::digest(&bytes)),
    )?;
    Ok(bytes)
}

pub(super) fn check(digest: &str, want_size: u64, size: u64, actual_hex: &str) -> Result<()> {
    if size != want_size {
        return Err(ContainerError::Digest {
            digest: digest.into(),
            message: format!("{size} bytes, the descriptor says {want_size}"),
        });
    }
    if sha256_hex(digest)? != actual_hex {
        return Err(ContainerError::Digest {
            digest: digest.into(),
            message: format!("content hashes to sha256:{actual_hex}"),
        });
    }
    Ok(())
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

pub(super) fn mknod(path: &Path, kind: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mknod(c.as_ptr(), kind, rdev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (c, n) = (
        cstring(path)?,
        CString::new(name).map_err(io::Error::other)?,
    );
    // SAFETY: both strings are NUL-terminated and `value` is valid for `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_opaque(path: &Path) -> bool {
    let (Ok(c), Ok(n)) = (cstring(path), CString::new(OPAQUE_XATTR)) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: NUL-terminated strings; `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Removes a file, symlink or directory tree; a missing path is fine.
pub(super) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Builds `<bundle>/rootfs` from `layers` (bottom first): an overlay mount with
/// `<bundle>/upper` and `<bundle>/work`, or a copy of the layers if the mount fails.
pub fn mount_rootfs(layers: &[PathBuf], bundle: &Path) -> Result<(PathBuf, RootfsKind)> {
    let rootfs = bundle.join("rootfs");
    let (upper, work) = (bundle.join("upper"), bundle.join("work"));
    for d in [&rootfs, &upper, &work] {
        fs::create_dir_all(d)
            .map_err(|e| ContainerError::io(format!("creating {}", d.display()), e))?;
    }
    if overlay_mount(layers, &upper, &work, &rootfs).is_ok() {
        return Ok((rootfs, RootfsKind::Overlay));
    }
    tracing::debug!("overlay mount failed; copying the layers");
    for layer in layers {
        merge_copy(layer, &rootfs).map_err(|e| {
            ContainerError::io(
                format!("copying layer {} into the rootfs", layer.display()),
                e,
            )
        })?;
    }
    let _ = fs::remove_dir(&upper);
    let _ = fs::remove_dir(&work);
    Ok((rootfs, RootfsKind::Copy))
}

fn overlay_mount(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let text = |p: &Path| -> io::Result<String> {
        let s = p
            .to_str()
            .ok_or_else(|| io::Error::other("non-UTF-8 path"))?;
        if s.contains([',', ':', '\\']) {
            return Err(io::Error::other("path unusable in overlay options"));
        }
        Ok(s.to_string())
    };
    if layers.is_empty() {
        return Err(io::Error::other("no layers"));
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| text(l))
        .collect::<io::Result<_>>()?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        text(upper)?,
        text(work)?
    );
    if data.len() >= 4000 {
        return Err(io::Error::other("overlay options too long"));
    }
    let (src, fstype) = (CString::new("overlay")?, CString::new("overlay")?);
    let (dst, data) = (cstring(target)?, CString::new(data)?);
    // SAFETY: all pointers are NUL-terminated strings alive for the call; overlayfs reads
    // `data` as its option string.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies layer dir `src` over `dst`, applying whiteouts and opaque directories.
fn merge_copy(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::{lchown, symlink};
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let meta = fs::symlink_metadata(&s)?;
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            remove_any(&d)?;
            continue;
        }
        if ft.is_dir() {
            let existing = fs::symlink_metadata(&d).ok();
            if existing.as_ref().is_some_and(|m| !m.is_dir()) || is_opaque(&s) {
                remove_any(&d)?;
            }
            if !d.is_dir() {
                fs::create_dir(&d)?;
            }
            merge_copy(&s, &d)?;
        } else {
            remove_any(&d)?;
            if ft.is_symlink() {
                symlink(fs::read_link(&s)?, &d)?;
            } else if ft.is_file() {
                fs::copy(&s, &d)?;
            } else {
                mknod(&d, meta.mode() & libc::S_IFMT, meta.rdev())?;
            }
        }
        lchown(&d, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            fs::set_permissions(&d, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Unmounts `<bundle>/rootfs` (if mounted) and removes the bundle directory.
pub fn remove_bundle(bundle: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    if let Ok(c) = cstring(&rootfs) {
        // SAFETY: `c` is a NUL-terminated path; MNT_DETACH only detaches this mount.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let err = io::Error::last_os_error();
        if rc != 0 && !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(ContainerError::io(
                format!("unmounting {}", rootfs.display()),
                err,
            ));
        }
    }
    // Never delete through a mount that is still there.
    if let (Ok(b), Ok(r)) = (fs::metadata(bundle), fs::metadata(&rootfs)) {
        if b.dev() != r.dev() {
            return Err(ContainerError::io(
                format!("removing {}", bundle.display()),
                io::Error::other("rootfs is still mounted"),
            ));
        }
    }
    remove_any(bundle).map_err(|e| ContainerError::io(format!("removing {}", bundle.display()), e))
}

/// The images named in a layout's index.json, for messages and listings.
pub fn list(layout: &Path) -> Result<Vec<String>> {
    let index = read_index(layout)?;
    let empty = HashMap::new();
    Ok(index
        .manifests()
        .iter()
        .filter_map(|d| {
            d.annotations()
                .as_ref()
                .unwrap_or(&empty)
                .get(REF_NAME)
                .cloned()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a blob into `layout`; returns (digest, size).
    fn put(layout: &Path, bytes: &[u8]) -> (String, usize) {
        let h = hex(&Sha256::digest(bytes));
        fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        fs::write(layout.join("blobs/sha256").join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    }

    fn tar_of(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        let raw = b.into_inner().unwrap();
        if !gzip {
            return raw;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    }

    /// A layout with one image of the given layers (bytes, gzip?).
    fn layout_with(dir: &Path, layers: &[(Vec<u8>, bool)]) {
        let mut descs = Vec::new();
        for (bytes, gz) in layers {
            let (d, n) = put(dir, bytes);
            let mt = if *gz {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            descs.push(format!(
                r#"{{"mediaType":"{mt}","digest":"{d}","size":{n}}}"#
            ));
        }
        let config = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"],"Cmd":["run"],"Env":["PATH=/bin"],"WorkingDir":"/w"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (cd, cn) = put(dir, config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cn}}},"layers":[{}]}}"#,
            descs.join(",")
        );
        let (md, mn) = put(dir, manifest.as_bytes());
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{mn},"annotations":{{"{REF_NAME}":"app:1.0"}}}}]}}"#
            ),
        )
        .unwrap();
    }

    #[test]
    fn references_default_to_latest() {
        assert_eq!(normalize_reference("busybox"), "busybox:latest");
        assert_eq!(normalize_reference("busybox:1"), "busybox:1");
        assert_eq!(normalize_reference("reg:5000/x"), "reg:5000/x:latest");
        assert_eq!(
            normalize_reference("docker.io/library/nginx"),
            "nginx:latest"
        );
        assert_eq!(
            normalize_reference("docker.io/bitnami/redis:7"),
            "bitnami/redis:7"
        );
        assert_eq!(
            normalize_reference("index.docker.io/library/a@sha256:00"),
            "a@sha256:00"
        );
    }

    #[test]
    fn opens_unpacks_and_applies_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, store) = (tmp.path().join("layout"), tmp.path().join("store"));
        let base = tar_of(
            &[("bin/app", b"v1"), ("etc/gone", b"x"), ("data/old", b"o")],
            true,
        );
        let top = tar_of(
            &[
                ("bin/app", b"v2"),
                ("etc/.wh.gone", b""),
                ("data/.wh..wh..opq", b""),
                ("data/new", b"n"),
            ],
            false,
        );
        layout_with(&layout, &[(base, true), (top, false)]);

        let image = open(&layout, "app:1.0").unwrap();
        assert_eq!(image.config.entrypoint, ["/bin/app"]);
        assert_eq!(image.config.cmd, ["run"]);
        assert_eq!(image.config.working_dir.as_deref(), Some("/w"));
        assert_eq!(image.layers.len(), 2);
        assert!(matches!(
            open(&layout, "app").unwrap_err(),
            ContainerError::ImageNotFound { .. }
        ));
        assert_eq!(list(&layout).unwrap(), ["app:1.0"]);

        let dirs = unpack_layers(&store, &layout, &image).unwrap();
        assert_eq!(fs::read(dirs[1].join("bin/app")).unwrap(), b"v2");
        assert!(is_whiteout(
            &fs::symlink_metadata(dirs[1].join("etc/gone")).unwrap()
        ));
        // Cached: a second unpack reuses the dirs.
        assert_eq!(unpack_layers(&store, &layout, &image).unwrap(), dirs);

        // The copy fallback gives the same view as the overlay would.
        let root = tmp.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        for d in &dirs {
            merge_copy(d, &root).unwrap();
        }
        assert_eq!(fs::read(root.join("bin/app")).unwrap(), b"v2");
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("data/old").exists());
        assert_eq!(fs::read(root.join("data/new")).unwrap(), b"n");
    }

    #[test]
    fn corrupt_blobs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, store) = (tmp.path().join("layout"), tmp.path().join("store"));
        layout_with(&layout, &[(tar_of(&[("a", b"1")], false), false)]);
        let image = open(&layout, "app:1.0").unwrap();
        let blob = blob_path(&layout, &image.layers[0].digest).unwrap();
        let mut bytes = fs::read(&blob).unwrap();
        bytes[512] = b'2'; // the file's content: the tar still parses
        fs::write(&blob, bytes).unwrap();
        let e = unpack_layers(&store, &layout, &image).unwrap_err();
        assert!(matches!(e, ContainerError::Digest { .. }), "{e}");
        assert!(e.to_string().contains("content hashes to sha256:"), "{e}");
        // Nothing half-unpacked is left in the cache.
        assert!(!layer_dir(&store, &image.layers[0].digest).unwrap().exists());
        assert_eq!(
            fs::read_dir(store.join("layers/sha256")).unwrap().count(),
            0
        );
        assert!(sha256_hex("sha256:../../etc").is_err());
    }

    #[test]
    fn a_missing_layout_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let e = open(tmp.path(), "busybox").unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
    }
}
