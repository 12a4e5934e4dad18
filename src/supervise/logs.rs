//! Instance logs: the container's stdout and stderr go, by file descriptor, to
//! `<data-dir>/logs/<namespace>/<instance>.log` (appended across restarts), as a VM's serial
//! console does. The supervisor rotates it copy-then-truncate (the container keeps its O_APPEND descriptor, so it writes
//! on at the new end): `.log.1` is the newest old file, up to `keep` of them.
//!
//! Readers take the last N lines and then follow from that offset; a file that shrank was
//! rotated, and the follower starts again from its beginning.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub fn log_path(logs_dir: &Path, namespace: &str, instance: &str) -> PathBuf {
    logs_dir.join(namespace).join(format!("{instance}.log"))
}

/// The log of the container `container` of a multi-container instance:
/// `<logs>/<namespace>/<instance>/<container>.log` (beside the instance's own log path).
pub fn container_log_path(
    logs_dir: &Path,
    namespace: &str,
    instance: &str,
    container: &str,
) -> PathBuf {
    logs_dir
        .join(namespace)
        .join(instance)
        .join(format!("{container}.log"))
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Rotates `path` when it is larger than `max_bytes`. Returns whether it did.
pub fn rotate_if_needed(path: &Path, max_bytes: u64, keep: u32) -> io::Result<bool> {
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= max_bytes {
        return Ok(false);
    }
    if keep > 0 {
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                fs::rename(&from, rotated(path, n + 1))?;
            }
        }
        fs::copy(path, rotated(path, 1))?;
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Removes the log and its rotated files (the instance is gone).
pub fn remove(path: &Path, keep: u32) {
    let _ = fs::remove_file(path);
    for n in 1..=keep.max(1) {
        let _ = fs::remove_file(rotated(path, n));
    }
}

/// The last `lines` lines of the file (all of it for None) and the offset after them.
pub fn tail(path: &Path, lines: Option<usize>) -> io::Result<(Vec<u8>, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let Some(want) = lines else {
        let mut all = Vec::new();
        f.read_to_end(&mut all)?;
        return Ok((all.clone(), all.len() as u64));
    };
    // Read backwards in blocks until enough newlines are seen.
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    const BLOCK: u64 = 8192;
    loop {
        let newlines = buf.iter().filter(|&&b| b == b'\n').count();
        // A trailing newline ends the last line rather than starting an empty one.
        let needed = want + usize::from(buf.last() == Some(&b'\n'));
        if newlines >= needed || start == 0 {
            break;
        }
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = from;
    }
    let body = &buf[..];
    let mut cut = 0;
    let mut seen = 0;
    let end = if body.last() == Some(&b'\n') {
        body.len() - 1
    } else {
        body.len()
    };
    for i in (0..end).rev() {
        if body[i] == b'\n' {
            seen += 1;
            if seen == want {
                cut = i + 1;
                break;
            }
        }
    }
    if want == 0 {
        cut = body.len();
    }
    Ok((body[cut..].to_vec(), len))
}

/// What was appended since `offset`, and the new offset; after a rotation (the file is
/// shorter than `offset`) it reads from the start.
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::new();
    f.take(1 << 20).read_to_end(&mut out)?;
    Ok((out.clone(), from + out.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, &text).unwrap();
        let (last, off) = tail(&p, Some(3)).unwrap();
        assert_eq!(last, b"line 4997\nline 4998\nline 4999\n");
        assert_eq!(off, text.len() as u64);
        assert_eq!(tail(&p, Some(0)).unwrap().0, b"");
        assert_eq!(tail(&p, None).unwrap().0.len(), text.len());
        fs::write(&p, "a\nb").unwrap();
        assert_eq!(tail(&p, Some(1)).unwrap().0, b"b");
        assert_eq!(tail(&p, Some(10)).unwrap().0, b"a\nb");
    }

    #[test]
    fn rotation_keeps_the_writer_appending_and_followers_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        writer.write_all(&[b'x'; 100]).unwrap();
        let (_, off) = read_from(&p, 0).unwrap();
        assert_eq!(off, 100);
        assert!(!rotate_if_needed(&p, 100, 2).unwrap());
        writer.write_all(b"y\n").unwrap();
        assert!(rotate_if_needed(&p, 100, 2).unwrap());
        assert_eq!(fs::metadata(rotated(&p, 1)).unwrap().len(), 102);
        writer.write_all(b"after\n").unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            b"after\n",
            "O_APPEND writes at the new end"
        );
        let (got, off) = read_from(&p, off).unwrap();
        assert_eq!((got.as_slice(), off), (&b"after\n"[..], 6));
        // Rotations shift .1 to .2 and drop what is beyond `keep`.
        for _ in 0..3 {
            writer.write_all(&[b'z'; 200]).unwrap();
            rotate_if_needed(&p, 100, 2).unwrap();
        }
        assert!(rotated(&p, 2).exists() && !rotated(&p, 3).exists());
        remove(&p, 2);
        assert!(!p.exists() && !rotated(&p, 1).exists() && !rotated(&p, 2).exists());
    }
}
