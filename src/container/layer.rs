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
