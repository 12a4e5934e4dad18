//! The files of ConfigMap and Secret volumes, written the way kubelet's AtomicWriter does
//! so a reader never sees half a change: each version of the data is a fresh hidden
//! directory `..<stamp>/`, `..data` is a symlink to the current one (replaced by a rename,
//! which is atomic), and every visible name is a symlink through `..data`
//! (`key -> ..data/key`). The volume directory is bind-mounted into the container, so a
//! new version appears there in place. Secret volumes (and `emptyDir` with medium Memory)
//! are a tmpfs mounted on the volume directory: their files never reach a disk.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use super::{ContainerError, Result};

/// One file of a volume: its path inside the volume (relative, checked), bytes and mode.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for VolumeFile {
    // Never the data: it may be a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VolumeFile({}, {} bytes, {:o})",
            self.path,
            self.data.len(),
            self.mode
        )
    }
}

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

fn io_err(what: String) -> impl FnOnce(io::Error) -> ContainerError {
    move |e| ContainerError::io(what, e)
}

fn check_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.starts_with("..");
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidSpec(format!(
            "volume file path \"{path}\" must be relative without '..'"
        )))
    }
}

/// The files `..data` holds now, if it is exactly `files` (same paths, bytes and modes).
fn current_matches(dir: &Path, files: &[VolumeFile]) -> bool {
    let data = dir.join(DATA);
    let mut found = BTreeSet::new();
    if walk(&data, &data, &mut found).is_err() {
        return false;
    }
    let wanted: BTreeSet<String> = files.iter().map(|f| f.path.clone()).collect();
    found == wanted
        && files.iter().all(|f| {
            let p = data.join(&f.path);
            fs::read(&p).is_ok_and(|d| d == f.data)
                && fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == f.mode)
        })
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).expect("under root");
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Makes `dir` hold exactly `files`, atomically for readers. Returns whether anything
/// changed (the same content twice writes nothing). Idempotent after a crash at any step.
pub fn write_atomic(dir: &Path, files: &[VolumeFile]) -> Result<bool> {
    for f in files {
        check_path(&f.path)?;
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    if current_matches(dir, files) {
        return Ok(false);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let version = format!("..{stamp}");
    let vdir = dir.join(&version);
    fs::create_dir(&vdir).map_err(io_err(format!("creating {}", vdir.display())))?;
    fs::set_permissions(&vdir, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", vdir.display())))?;
    for f in files {
        let p = vdir.join(&f.path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        fs::write(&p, &f.data).map_err(io_err(format!("writing {}", p.display())))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode))
            .map_err(io_err(format!("chmod {}", p.display())))?;
    }
    // The switch: one rename of a symlink.
    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)
        .map_err(io_err(format!("linking {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(DATA)).map_err(io_err(format!("switching {}", dir.display())))?;
    // Visible names through ..data; names no longer there go.
    let top: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_string))
        .collect();
    for name in &top {
        let link = dir.join(name);
        let target = Path::new(DATA).join(name);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        let tmp = dir.join(format!("..{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .map_err(io_err(format!("linking {}", tmp.display())))?;
        fs::rename(&tmp, &link).map_err(io_err(format!("linking {}", link.display())))?;
    }
    for entry in fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let old_version = name.starts_with("..") && name != DATA && name != version;
        if old_version {
            let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
        } else if !name.starts_with("..") && !top.contains(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(true)
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ContainerError::InvalidSpec(format!("path {} holds a NUL", p.display())))
}

/// Whether `dir` is the root of a mount (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(dir);
    match (fs::metadata(dir), fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts a tmpfs on `dir` (made if missing) unless one is there already: memory-backed
/// volumes and Secret files, which must never reach a disk. `size`: its limit in bytes.
pub fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let target = cstring(dir)?;
    let fstype = CString::new("tmpfs").expect("no NUL");
    let mut options = "mode=0755".to_string();
    if let Some(bytes) = size {
        options.push_str(&format!(",size={bytes}"));
    }
    let data = CString::new(options).expect("no NUL");
    // SAFETY: every pointer is a NUL-terminated string alive for the call; tmpfs reads
    // `data` as its option string.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(ContainerError::io(
            format!("mounting a tmpfs on {}", dir.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Unmounts whatever is mounted on `dir` (lazily); nothing mounted is fine.
pub fn unmount(dir: &Path) -> Result<()> {
    let c = cstring(dir)?;
    // SAFETY: `c` is a NUL-terminated path; MNT_DETACH only detaches this mount.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    let err = io::Error::last_os_error();
    if rc != 0 && !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
        return Err(ContainerError::io(
            format!("unmounting {}", dir.display()),
            err,
        ));
    }
    Ok(())
}

/// The mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<std::path::PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| std::path::PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts every mount at or under `dir` (tmpfs volumes), then removes `dir`: an
/// instance's volumes, gone with it. Idempotent.
pub fn remove_volumes(dir: &Path) -> Result<()> {
    for m in mounts_under(dir) {
        unmount(&m)?;
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(ContainerError::io(format!("removing {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str, mode: u32) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn versions_switch_through_the_data_link() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vol");
        let v1 = [file("a", "one", 0o644), file("sub/b", "two", 0o400)];
        assert!(write_atomic(&dir, &v1).unwrap());
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("sub/b")).unwrap(), "two");
        let mode = fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        assert!(
            !write_atomic(&dir, &v1).unwrap(),
            "same content: no new version"
        );
        let first = fs::read_link(dir.join(DATA)).unwrap();
        let v2 = [file("a", "uno", 0o644), file("c", "three", 0o644)];
        assert!(write_atomic(&dir, &v2).unwrap());
        assert_ne!(fs::read_link(dir.join(DATA)).unwrap(), first);
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "uno");
        assert_eq!(fs::read_to_string(dir.join("c")).unwrap(), "three");
        assert!(!dir.join("sub").exists(), "a key that went is gone");
        let hidden: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "..data and one version: {hidden:?}");
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c\134d"), "/a b/c\\d");
        assert_eq!(unescape(r"/plain\0x"), r"/plain\0x");
    }

    #[test]
    fn escaping_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "a/../../x", "..x", ""] {
            assert!(
                write_atomic(t.path(), &[file(bad, "x", 0o644)]).is_err(),
                "{bad}"
            );
        }
    }
}
