//! An instance's sandbox when it has several containers (or init containers): a tiny
//! host process, `omnicloud __pause`, that holds the instance's network namespace (its
//! veth and address) for the instance's whole life, so each container can join it and be
//! restarted on its own without the others losing the network. Also the removal of the
//! instance's parent cgroup once its containers are gone.
//!
//! The pause process unshares its network namespace, says so with one line on stdout and
//! then sleeps until a signal ends it (SIGTERM, the default action). It keeps no file open
//! on the node's data dir and survives a node restart like a container does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ContainerError, Result};

/// The container id of the container `name` of the instance whose own id is `parent`:
/// `PARENT+NAME`, at most 64 characters (a name too long for that is replaced by a
/// stable hash of it).
pub fn member_id(parent: &str, name: &str) -> String {
    let id = format!("{parent}+{name}");
    if id.len() <= 64 {
        return id;
    }
    // FNV-1a: stable across runs and builds (a restarted node finds the same id).
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let short = format!("{hash:016x}");
    let mut parent = parent.to_string();
    parent.truncate(64 - 1 - short.len());
    format!("{parent}+{short}")
}

/// What the pause process prints once its network namespace is its own.
const READY: &str = "netns ready";

/// `omnicloud __pause`: unshares the network namespace and sleeps forever.
pub fn pause_main() -> Result<()> {
    // SAFETY: unshare takes a flag and changes only this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(ContainerError::io(
            "unsharing the network namespace",
            std::io::Error::last_os_error(),
        ));
    }
    println!("{READY}");
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// Starts `exe __pause` in its own session (it outlives the node process) and waits until
/// its network namespace is its own: its pid.
pub fn spawn_pause(exe: &Path) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(exe)
        .arg("__pause")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| ContainerError::io(format!("starting {} __pause", exe.display()), e))?;
    let pid = child.id() as i32;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    let read = BufReader::new(out).read_line(&mut line);
    if read.is_err() || line.trim() != READY {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ContainerError::Helper(format!(
            "the pause process did not set up its network namespace (said {:?})",
            line.trim()
        )));
    }
    // Not waited for here: the node is its subreaper and reaps it when it ends.
    std::mem::forget(child);
    Ok(pid)
}

/// The network namespace of the sandbox `pid`, for [`super::Network::Join`].
pub fn netns_path(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Removes the instance's parent cgroup (`/omnicloud/PARENT`) in every hierarchy, once its
/// containers' cgroups are gone. Missing is fine; one still holding a child stays (and
/// is named in the error).
pub fn remove_instance_cgroups(parent: &str) -> Result<()> {
    let rel = format!("{}/{parent}", super::spec::CGROUP_PARENT);
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(&rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.flatten().map(|e| e.path().join(&rel)));
    }
    let mut left = Vec::new();
    for d in dirs.into_iter().filter(|d| d.is_dir()) {
        // A cgroup dir is removed with rmdir (its control files are not real files).
        if let Err(e) = std::fs::remove_dir(&d) {
            left.push(format!("{}: {e}", d.display()));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(ContainerError::Helper(format!(
            "cgroups left: {}",
            left.join(", ")
        )))
    }
}

/// The parent cgroups (`/omnicloud/PARENT`) that exist in any hierarchy, for tests that
/// check nothing is left.
pub fn instance_cgroups(parent: &str) -> Vec<PathBuf> {
    let rel = format!("{}/{parent}", super::spec::CGROUP_PARENT);
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(&rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.flatten().map(|e| e.path().join(&rel)));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::{cgroup_path, validate_id};

    #[test]
    fn members_of_an_instance_nest_under_its_cgroup() {
        assert_eq!(
            cgroup_path("default.web-0.1234"),
            "/omnicloud/default.web-0.1234"
        );
        let id = member_id("default.web-0.1234", "sidecar");
        assert_eq!(id, "default.web-0.1234+sidecar");
        assert_eq!(cgroup_path(&id), "/omnicloud/default.web-0.1234/sidecar");
        let long = member_id(&"p".repeat(60), &"n".repeat(40));
        assert!(long.len() <= 64, "{long}");
        validate_id(&long).unwrap();
        assert_eq!(long, member_id(&"p".repeat(60), &"n".repeat(40)));
        assert_ne!(long, member_id(&"p".repeat(60), &"m".repeat(40)));
    }
}
