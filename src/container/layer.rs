//! Unpacking an image's layers into the content-addressed layer cache
//! (`<root>/layers/sha256/<hex>`), once per layer, converting whiteouts to overlayfs's
//! format (see [`image`](super::image)).
//!
//! A layer is untrusted input. Nothing it holds lands outside its directory: entries with
//! `..` are refused, absolute paths are taken as relative to the layer (as Docker does),
//! the tar reader refuses to write through a symlink or hard-link to a file outside, and a
//! whiteout is made only in real directories of the layer, never through a symlink, and
//! only for a plain name. Its size is bounded by the [`limits`](super::limits): the image's
//! unpacked budget, the compression ratio, the number of entries; GNU sparse entries are
//! refused. A refused layer leaves nothing in the cache.
//!
//! Sync, runs in the helper process. May call: `image`, `limits`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::image::{
    blob_path, check, hex, mknod, remove_any, set_xattr, sha256_hex, Image, Layer, OPAQUE_XATTR,
};
use super::limits::{Capped, Counted, Meter, MAX_IMAGE_UNPACKED};
use super::{ContainerError, Result};

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The cache directory of one layer under `store`.
pub fn layer_dir(store: &Path, digest: &str) -> Result<PathBuf> {
    Ok(store.join("layers/sha256").join(sha256_hex(digest)?))
}

/// Unpacks every layer of `image` that is not cached yet; returns the layer dirs, bottom
/// first. A layer is unpacked into a temporary dir and renamed into place only after its
/// digest checked out, so a cached dir is always complete. The layers unpacked by one call
/// share the image's budget of [`MAX_IMAGE_UNPACKED`] bytes.
pub fn unpack_layers(store: &Path, layout: &Path, image: &Image) -> Result<Vec<PathBuf>> {
    let parent = store.join("layers/sha256");
    fs::create_dir_all(&parent)
        .map_err(|e| ContainerError::io(format!("creating {}", parent.display()), e))?;
    let mut dirs = Vec::new();
    let mut left = MAX_IMAGE_UNPACKED;
    for layer in &image.layers {
        let dir = layer_dir(store, &layer.digest)?;
        if !dir.is_dir() {
            let tmp = parent.join(format!(
                ".tmp-{}-{}",
                sha256_hex(&layer.digest)?,
                std::process::id()
            ));
            let _ = remove_any(&tmp);
            let result = unpack_layer(layout, layer, &tmp, left).and_then(|used| {
                left -= used;
                match fs::rename(&tmp, &dir) {
                    Ok(()) => Ok(()),
                    // Another helper got there first; its copy is as good as ours.
                    Err(_) if dir.is_dir() => Ok(()),
                    Err(e) => Err(ContainerError::io(
                        format!("moving layer into {}", dir.display()),
                        e,
                    )),
                }
            });
            let _ = remove_any(&tmp);
            result?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Unpacks one layer blob into `dest`, converting whiteouts, verifying the digest, within
/// `budget` unpacked bytes; returns the bytes unpacked.
fn unpack_layer(layout: &Path, layer: &Layer, dest: &Path, budget: u64) -> Result<u64> {
    let digest = &layer.digest;
    let path = blob_path(layout, digest)?;
    let file =
        File::open(&path).map_err(|e| ContainerError::io(format!("opening layer {digest}"), e))?;
    fs::create_dir_all(dest)
        .map_err(|e| ContainerError::io(format!("creating {}", dest.display()), e))?;
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mt = layer.media_type.as_str();
    if mt.ends_with("zstd") {
        return Err(ContainerError::BadImage {
            layout: layout.to_path_buf(),
            message: format!("layer {digest}: zstd layers are not supported"),
        });
    }
    let gzip = mt.ends_with("gzip");
    let meter = Meter::new(budget, gzip);
    let unpacked = if gzip {
        let gz = flate2::read::MultiGzDecoder::new(Counted {
            inner: &mut hashing,
            meter: &meter,
        });
        unpack_stream(gz, &meter, dest)
    } else {
        unpack_stream(&mut hashing, &meter, dest)
    };
    let drained = unpacked.and_then(|()| io::copy(&mut hashing, &mut io::sink()));
    if let Err(e) = drained {
        return Err(match meter.exceeded() {
            Some(why) => ContainerError::Limit {
                what: format!("layer {digest}"),
                why: why.to_string(),
            },
            None => ContainerError::io(format!("unpacking layer {digest}"), e),
        });
    }
    let actual = hex(&hashing.hasher.finalize());
    check(digest, layer.size, hashing.bytes, &actual)?;
    Ok(meter.unpacked())
}

/// Unpacks the tar read from `reader` (already decompressed) into `dest`, then reads what
/// follows the tar's end, all of it counted by `meter`.
fn unpack_stream(reader: impl Read, meter: &Meter, dest: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(Capped {
        inner: reader,
        meter,
    });
    unpack_entries(&mut archive, meter, dest)?;
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(())
}

fn unpack_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    meter: &Meter,
    dest: &Path,
) -> io::Result<()> {
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        meter.entry()?;
        let path = entry.path()?.into_owned();
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(io::Error::other(format!("unsafe path {path:?} in layer")));
        }
        if entry.header().entry_type().is_gnu_sparse() {
            return Err(io::Error::other(format!(
                "{path:?}: GNU sparse files are not supported"
            )));
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the archive's root directory
        };
        match name.strip_prefix(".wh.") {
            None => {
                entry.unpack_in(dest)?;
            }
            Some(hidden) => whiteout(dest, rel.parent().unwrap_or(Path::new("")), hidden)
                .map_err(|e| io::Error::other(format!("whiteout {path:?}: {e}")))?,
        }
    }
    Ok(())
}

/// Applies the whiteout `.wh.<hidden>` found in directory `parent` (relative to `dest`).
fn whiteout(dest: &Path, parent: &Path, hidden: &str) -> io::Result<()> {
    let dir = real_dir(dest, parent)?;
    if hidden == ".wh..opq" {
        return set_xattr(&dir, OPAQUE_XATTR, b"y");
    }
    // `.wh..` or `.wh...` would name the directory itself or its parent.
    if matches!(hidden, "" | "." | "..") {
        return Err(io::Error::other(format!(
            "{hidden:?} is not a file name to hide"
        )));
    }
    let target = dir.join(hidden);
    remove_any(&target)?;
    mknod(&target, libc::S_IFCHR, 0)
}

/// `dest/rel`, creating missing directories, through real directories only: a symlink or
/// a file on the way is refused (so nothing is made or removed outside `dest`).
fn real_dir(dest: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut dir = dest.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                };
                let at = dir.strip_prefix(dest).unwrap_or(&dir).display();
                return Err(io::Error::other(format!("{at} is {what}")));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::image;
    use crate::container::testkit::{gzip, layout_with, snapshot, tar, Raw};
    use tar::EntryType;

    /// A temp dir with a victim directory beside the store; unpacks `layers` as app:1.
    fn unpack(layers: &[(Vec<u8>, bool)]) -> (tempfile::TempDir, Result<Vec<PathBuf>>) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("victim/keep")).unwrap();
        fs::write(tmp.path().join("victim/secret"), b"canary").unwrap();
        let layout = tmp.path().join("layout");
        layout_with(&layout, layers);
        let img = image::open(&layout, "app:1").unwrap();
        let r = unpack_layers(&tmp.path().join("store"), &layout, &img);
        (tmp, r)
    }

    fn victim(tmp: &tempfile::TempDir) -> std::collections::BTreeMap<String, String> {
        snapshot(&tmp.path().join("victim"), &[])
    }

    #[test]
    fn a_gzip_bomb_layer_is_refused_at_the_cap_naming_the_layer() {
        let zeros = vec![0u8; 64 << 20];
        // A file of zeros, and a tiny tar followed by zeros in the same gzip stream.
        let trailing = [tar(&[Raw::file("a", b"1")]), zeros.clone()].concat();
        for raw in [tar(&[Raw::file("big", &zeros)]), trailing] {
            let bomb = gzip(&raw);
            let digest = format!("sha256:{}", crate::container::testkit::sha256(&bomb));
            let (tmp, r) = unpack(&[(bomb, true)]);
            let e = r.unwrap_err();
            assert!(matches!(e, ContainerError::Limit { .. }), "{e}");
            let e = e.to_string();
            assert!(
                e.starts_with(&format!("layer {digest} unpacks to more than 100 times")),
                "{e}"
            );
            assert!(e.contains("100:1 beyond the first 16 MiB"), "{e}");
            // Nothing half-unpacked in the cache.
            let cache = tmp.path().join("store/layers/sha256");
            assert_eq!(fs::read_dir(cache).unwrap().count(), 0);
        }
    }

    #[test]
    fn whiteouts_are_made_only_inside_the_layer() {
        // A symlink to a directory outside, then a whiteout beneath it.
        let (tmp, r) = unpack(&[(
            tar(&[
                Raw::link("etc", EntryType::Symlink, "../../../../victim"),
                Raw::file("etc/sub/.wh.secret", b""),
            ]),
            false,
        )]);
        let e = r.unwrap_err().one_line();
        assert!(e.contains("etc is a symlink"), "{e}");
        // Only what setup made: no `sub` directory was created through the symlink.
        let names: Vec<_> = victim(&tmp).into_keys().collect();
        assert_eq!(names, ["keep", "secret"]);
        // `.wh...` names the layer dir's parent (the cache): refused, the cache survives.
        for name in [".wh...", ".wh..", "a/.wh..."] {
            let (tmp, r) = unpack(&[
                (tar(&[Raw::file("ok", b"1")]), false),
                (tar(&[Raw::file(name, b"")]), false),
            ]);
            let e = r.unwrap_err().one_line();
            assert!(e.contains("is not a file name to hide"), "{name}: {e}");
            let cache = tmp.path().join("store/layers/sha256");
            assert_eq!(fs::read_dir(&cache).unwrap().count(), 1, "{name}");
        }
    }

    #[test]
    fn layer_entries_cannot_reach_outside() {
        let tmp_probe = tempfile::tempdir().unwrap();
        let abs_victim = tmp_probe.path().join("abs-victim");
        let entries = [
            // An absolute path lands inside the layer, as with Docker.
            Raw::file(abs_victim.to_str().unwrap(), b"inside"),
            // Writing through a symlink to outside, and hard-linking a file outside.
            Raw::link("out", EntryType::Symlink, "../../../../victim"),
            Raw::file("out/planted", b"x"),
        ];
        let (tmp, r) = unpack(&[(tar(&entries), false)]);
        assert!(r.is_err());
        assert!(!abs_victim.exists());
        assert!(!tmp.path().join("victim/planted").exists());
        let secret = tmp.path().join("victim/secret");
        let (tmp2, r) = unpack(&[(
            tar(&[Raw::link("h", EntryType::Link, secret.to_str().unwrap())]),
            false,
        )]);
        assert!(r.is_err());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "no hard link to it"
        );
        drop(tmp2);
        // An absolute path alone is fine and stays inside.
        let (tmp, r) = unpack(&[(tar(&[Raw::file("/etc/motd", b"hi")]), false)]);
        let dirs = r.unwrap();
        assert_eq!(fs::read(dirs[0].join("etc/motd")).unwrap(), b"hi");
        assert_eq!(victim(&tmp).len(), 2);
    }
}
