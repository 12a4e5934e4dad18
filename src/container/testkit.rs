//! Test helpers for hostile archives: tar entries with any name or link (absolute, `..`,
//! symlinks, hard links: what `tar::Builder`'s checked paths cannot make), gzip, OCI
//! layouts of given layers, and a snapshot of a directory tree to show nothing changed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// One tar entry, unchecked.
#[derive(Debug, Clone)]
pub struct Raw {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
}

impl Raw {
    pub fn file(name: &str, data: &[u8]) -> Raw {
        Raw {
            name: name.into(),
            kind: tar::EntryType::Regular,
            link: vec![],
            data: data.to_vec(),
        }
    }

    pub fn link(name: &str, kind: tar::EntryType, target: &str) -> Raw {
        Raw {
            name: name.into(),
            kind,
            link: target.into(),
            data: vec![],
        }
    }
}

/// A tar of `entries`, names and links written as given (GNU long names past 100 bytes).
pub fn tar(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if e.name.len() > 99 {
            long(&mut out, b'L', &e.name);
        }
        if e.link.len() > 99 {
            long(&mut out, b'K', &e.link);
        }
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().expect("gnu");
        let n = e.name.len().min(99);
        gnu.name[..n].copy_from_slice(&e.name[..n]);
        let l = e.link.len().min(99);
        gnu.linkname[..l].copy_from_slice(&e.link[..l]);
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(if e.kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn long(out: &mut Vec<u8>, kind: u8, name: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(name.len() as u64 + 1);
    h.set_mode(0o644);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an OCI layout with one image `app:1` of these layer blobs (bytes, gzip?).
pub fn layout_with(dir: &Path, layers: &[(Vec<u8>, bool)]) {
    let put = |bytes: &[u8]| {
        let h = sha256(bytes);
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("blobs/sha256").join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    };
    let descs: Vec<String> = layers
        .iter()
        .map(|(bytes, gz)| {
            let (d, n) = put(bytes);
            let mt = if *gz { "tar+gzip" } else { "tar" };
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.{mt}","digest":"{d}","size":{n}}}"#
            )
        })
        .collect();
    let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (cd, cn) = put(config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cn}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (md, mn) = put(manifest.as_bytes());
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{mn},"annotations":{{"org.opencontainers.image.ref.name":"app:1"}}}}]}}"#
        ),
    )
    .unwrap();
}

/// Every path under `dir` (not following symlinks) with its kind, size, mode and content
/// hash: equal snapshots mean nothing was added, removed or changed.
pub fn snapshot(dir: &Path, skip: &[&Path]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: &[&Path], out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if skip.contains(&p.as_path()) {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let content = if m.is_file() {
            sha256(&fs::read(&p).unwrap())
        } else if m.file_type().is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.insert(rel, format!("{:o} {} {content}", m.mode(), m.len()));
        if m.is_dir() {
            walk(root, &p, skip, out);
        }
    }
}

/// Whether any regular file under `dir` holds `needle` (not following symlinks).
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            return false;
        };
        if m.is_dir() {
            any_file_contains(&p, needle)
        } else if m.is_file() {
            fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        } else {
            false
        }
    })
}
