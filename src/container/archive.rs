//! Reading what an import is given, trusting none of it: an archive (`docker save` tar or
//! OCI layout tar, gzipped or not) is unpacked into a scratch directory keeping only
//! regular files and directories, and a file named by the archive's own JSON
//! (manifest.json's `Layers`, a blob's digest) is opened only if it is a regular file
//! inside the directory, reached without symlinks.
//!
//! Refused: absolute paths and `..` (in an entry or in a name the JSON gives), entries of
//! other kinds (symlinks, hard links, devices, fifos) are skipped and remembered so that a
//! name pointing at one is refused by what it is; GNU sparse entries (their declared size
//! is not the bytes they carry); and everything past the [`limits`](super::limits).
//!
//! Sync. May call: `limits`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::limits::{Capped, Counted, Meter, MAX_IMAGE_UNPACKED};
use super::{ContainerError, Result};

/// What an unpacked archive held besides regular files and directories, by relative path.
#[derive(Debug, Default)]
pub struct Skipped(BTreeMap<PathBuf, &'static str>);

impl Skipped {
    /// What the entry at `rel` was, if it was skipped.
    pub fn get(&self, rel: &Path) -> Option<&'static str> {
        self.0.get(rel).copied()
    }
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "a symlink",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char | tar::EntryType::Block => "a device",
        tar::EntryType::Fifo => "a fifo",
        _ => "not a regular file",
    }
}

/// `a/./b/` -> `a/b`; refuses absolute paths, `..` and the empty path.
pub fn relative(name: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(io::Error::other(format!(
                    "{} is an absolute path; only paths inside the archive are read",
                    name.display()
                )))
            }
            Component::ParentDir => {
                return Err(io::Error::other(format!(
                    "{} leaves the archive (..)",
                    name.display()
                )))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(io::Error::other("an empty path"));
    }
    Ok(out)
}

/// Unpacks the archive at `source` (gzip detected by its magic) into `dest`, an empty
/// directory: regular files and directories only, within the limits.
pub fn unpack(source: &Path, dest: &Path) -> Result<Skipped> {
    let open = |_| {
        File::open(source)
            .map_err(|e| ContainerError::io(format!("opening {}", source.display()), e))
    };
    let mut magic = [0u8; 2];
    let gz = open(())?.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let meter = Meter::new(MAX_IMAGE_UNPACKED, gz);
    let counted = Counted {
        inner: io::BufReader::new(open(())?),
        meter: &meter,
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    let capped = Capped {
        inner: reader,
        meter: &meter,
    };
    unpack_from(capped, &meter, dest).map_err(|e| match meter.exceeded() {
        Some(why) => ContainerError::Limit {
            what: format!("archive {}", source.display()),
            why: why.to_string(),
        },
        None => ContainerError::BadImage {
            layout: source.to_path_buf(),
            message: format!("not a readable tar archive: {e}"),
        },
    })
}

/// [`unpack`] from an already metered stream.
pub fn unpack_from(reader: impl Read, meter: &Meter, dest: &Path) -> io::Result<Skipped> {
    let mut skipped = Skipped::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        meter.entry()?;
        let raw = entry.path()?.into_owned();
        let rel = match relative(&raw) {
            Ok(rel) => rel,
            // The archive's root (`./`) is harmless; anything else outside is refused.
            Err(_) if raw.components().all(|c| c == Component::CurDir) => continue,
            Err(e) => return Err(io::Error::other(format!("entry {}: {e}", raw.display()))),
        };
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => fs::create_dir_all(dest.join(&rel))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let path = dest.join(&rel);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                skipped.0.remove(&rel);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                io::copy(&mut entry, &mut file)?;
            }
            tar::EntryType::GNUSparse => {
                return Err(io::Error::other(format!(
                    "entry {}: GNU sparse files are not supported",
                    raw.display()
                )))
            }
            // Metadata entries are consumed by the tar reader; anything else is skipped.
            t => {
                skipped.0.insert(rel, kind_name(t));
            }
        }
    }
    // Trailing bytes after the tar's end count against the limits too.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(skipped)
}

/// Opens `name` (a path the archive's own JSON gives) inside `root` as a regular file,
/// through real directories only: no absolute path, no `..`, no symlink on the way.
pub fn open_inside(root: &Path, name: &str, skipped: &Skipped) -> io::Result<File> {
    let rel = relative(Path::new(name))?;
    if let Some(what) = skipped.get(&rel) {
        return Err(io::Error::other(format!(
            "{name} is {what} in the archive; only regular files are read"
        )));
    }
    let mut path = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
        let last = i + 1 == parts.len();
        let ok = if last { meta.is_file() } else { meta.is_dir() };
        if !ok {
            let what = if meta.file_type().is_symlink() {
                "a symlink"
            } else if last {
                "not a regular file"
            } else {
                "not a directory"
            };
            let at = path.strip_prefix(root).unwrap_or(&path).display();
            return Err(io::Error::other(format!(
                "{name}: {at} is {what}; only regular files inside the archive are read"
            )));
        }
    }
    // O_NOFOLLOW and O_NONBLOCK: if the file was swapped since the check, neither a
    // symlink is followed nor a fifo waited on; the type is checked again on the handle.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!("{name} is not a regular file")));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_only() {
        assert_eq!(relative(Path::new("./a//b/")).unwrap(), Path::new("a/b"));
        for bad in ["/etc/shadow", "a/../../x", "..", "", "."] {
            assert!(relative(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_inside_refuses_symlinks_on_the_way_and_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        fs::write(root.join("d/ok"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dirlink")).unwrap();
        let none = Skipped::default();
        let mut s = String::new();
        open_inside(&root, "d/ok", &none)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "ok");
        for (name, says) in [
            ("link", "is a symlink"),
            ("dirlink/secret", "dirlink is a symlink"),
            ("d", "not a regular file"),
            ("../outside/secret", "leaves the archive"),
        ] {
            let e = open_inside(&root, name, &none).unwrap_err().to_string();
            assert!(e.contains(says), "{name}: {e}");
        }
        let abs = outside.join("secret");
        let e = open_inside(&root, abs.to_str().unwrap(), &none).unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
    }
}
