//! `omnicloud install` / `uninstall`: the one binary on a vendor's or homelab's own Linux,
//! as a systemd service. Install writes the binary, a config file, the join token (0600),
//! a data dir (0700) and a unit, records what it wrote in `/etc/omnicloud/install.json`,
//! and enables and starts the service when systemd runs. Uninstall removes exactly what
//! the record lists (the data dir only with `--purge`). `--root DIR` installs into a tree
//! (an image being built, or a test); then nothing is started.
//!
//! The unit uses `KillMode=process`: stopping or restarting the service ends the node
//! process only, so containers and VMs keep running and the restarted node adopts them.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::ApplianceError;

const UNIT: &str = "omnicloud.service";

#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Install into this tree instead of / (nothing is started).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// A node of the cluster to join, HOST:PORT (repeatable); none: this node seeds one.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// The cluster's join token file (needed with --join; copied, mode 0600).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Roles: auto, or a comma-separated list of orchestrator, director, agent.
    #[arg(long, default_value = "auto")]
    pub roles: String,
    #[arg(long, default_value = "/var/lib/omnicloud")]
    pub data_dir: PathBuf,
    /// Write the files but do not enable or start the service.
    #[arg(long)]
    pub no_start: bool,
    /// Replace a config file that differs from the one this install would write.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Also remove the data dir (the node's state, images, logs) after ending the
    /// containers and VMs it ran.
    #[arg(long)]
    pub purge: bool,
}

/// What an install wrote (paths as seen from inside the root).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    pub files: Vec<PathBuf>,
    pub data_dir: PathBuf,
}

const BIN: &str = "/usr/local/bin/omnicloud";
const CONFIG_DIR: &str = "/etc/omnicloud";
const UNIT_PATH: &str = "/etc/systemd/system/omnicloud.service";

fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The node config the service runs with.
pub fn config_text(args: &InstallArgs, name: &str) -> String {
    let roles: Vec<String> = args.roles.split(',').map(|r| toml_str(r.trim())).collect();
    let mut text = format!(
        "# Written by `omnicloud install`; the built-in defaults fill in the rest\n\
         # (see config/node.toml in the omnicloud sources for every key).\n\
         name = {}\ndata_dir = {}\nroles = [{}]\n",
        toml_str(name),
        toml_str(&args.data_dir.display().to_string()),
        roles.join(", ")
    );
    if !args.join.is_empty() {
        let join: Vec<String> = args.join.iter().map(|j| toml_str(j)).collect();
        text.push_str(&format!(
            "join = [{}]\ntoken_file = {}\n",
            join.join(", "),
            toml_str(&format!("{CONFIG_DIR}/join.token"))
        ));
    }
    text
}

pub fn unit_text() -> String {
    format!(
        "[Unit]\n\
         Description=omnicloud node\n\
         Documentation=https://github.com/omnicloud/omnicloud\n\
         After=network-online.target\n\
         Wants=network-online.target\n\n\
         [Service]\n\
         ExecStart={BIN} node --config {CONFIG_DIR}/node.toml\n\
         Restart=always\n\
         RestartSec=2\n\
         # Containers and VMs outlive the node process; a restarted node adopts them.\n\
         KillMode=process\n\
         Delegate=yes\n\
         LimitNOFILE=1048576\n\
         TasksMax=infinity\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ApplianceError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(ApplianceError::io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("omnicloud-new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(ApplianceError::io(format!("writing {}", tmp.display())))?;
    std::io::Write::write_all(&mut f, bytes)
        .map_err(ApplianceError::io(format!("writing {}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(ApplianceError::io(tmp.display().to_string()))?;
    std::fs::rename(&tmp, path)
        .map_err(ApplianceError::io(format!("installing {}", path.display())))
}

fn systemd_running(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<(), ApplianceError> {
    let command = format!("systemctl {}", args.join(" "));
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(ApplianceError::io(command.clone()))?;
    if !out.status.success() {
        return Err(ApplianceError::Refused {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Checks everything before writing anything: a refused install leaves no file behind.
pub fn install(args: &InstallArgs) -> Result<Vec<String>, ApplianceError> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "node".into()),
    };
    crate::model::validate_name("--name", &name)?;
    for role in args.roles.split(',') {
        if role.trim().parse::<crate::model::Role>().is_err() {
            return Err(ApplianceError::invalid(
                "--roles",
                format!("unknown role \"{role}\"; expected auto, orchestrator, director or agent"),
            ));
        }
    }
    let token = match (&args.join.is_empty(), &args.token_file) {
        (false, None) => {
            return Err(ApplianceError::Needs {
                field: "--join".into(),
                needs: "--token-file (the cluster's join token)".into(),
            })
        }
        (_, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(ApplianceError::io(format!("--token-file {}", f.display())))?
                .trim()
                .to_string(),
        ),
        (true, None) => None,
    };
    if !args.data_dir.is_absolute() {
        return Err(ApplianceError::invalid(
            "--data-dir",
            format!("{} is not an absolute path", args.data_dir.display()),
        ));
    }
    let config = config_text(args, &name);
    let config_path = inside(&args.root, &format!("{CONFIG_DIR}/node.toml"));
    if let Ok(existing) = std::fs::read_to_string(&config_path) {
        if existing != config && !args.force {
            return Err(ApplianceError::ConfigDiffers { path: config_path });
        }
    }
    let exe = std::env::current_exe().map_err(ApplianceError::io("finding this executable"))?;
    let binary =
        std::fs::read(&exe).map_err(ApplianceError::io(format!("reading {}", exe.display())))?;

    let mut record = Record {
        files: Vec::new(),
        data_dir: args.data_dir.clone(),
    };
    let mut steps = Vec::new();
    let mut put = |path: &str, bytes: &[u8], mode: u32| -> Result<(), ApplianceError> {
        write_file(&inside(&args.root, path), bytes, mode)?;
        record.files.push(path.into());
        steps.push(format!("wrote {path}"));
        Ok(())
    };
    put(BIN, &binary, 0o755)?;
    put(&format!("{CONFIG_DIR}/node.toml"), config.as_bytes(), 0o644)?;
    if let Some(token) = &token {
        put(&format!("{CONFIG_DIR}/join.token"), token.as_bytes(), 0o600)?;
    }
    put(UNIT_PATH, unit_text().as_bytes(), 0o644)?;
    let data = inside(&args.root, &args.data_dir.display().to_string());
    std::fs::create_dir_all(&data)
        .map_err(ApplianceError::io(format!("creating {}", data.display())))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
        .map_err(ApplianceError::io(data.display().to_string()))?;
    steps.push(format!("data dir {}", args.data_dir.display()));
    let json = serde_json::to_vec_pretty(&record).expect("JSON");
    write_file(
        &inside(&args.root, &format!("{CONFIG_DIR}/install.json")),
        &json,
        0o644,
    )?;
    if args.no_start || !systemd_running(&args.root) {
        steps.push(format!(
            "not started; start with: systemctl daemon-reload && systemctl enable --now {UNIT}"
        ));
    } else {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", UNIT])?;
        steps.push(format!("enabled and started {UNIT}"));
    }
    Ok(steps)
}

pub fn uninstall(args: &UninstallArgs) -> Result<Vec<String>, ApplianceError> {
    let record_path = inside(&args.root, &format!("{CONFIG_DIR}/install.json"));
    let bytes = std::fs::read(&record_path).map_err(|source| ApplianceError::NotInstalled {
        path: record_path.clone(),
        source,
    })?;
    let record: Record =
        serde_json::from_slice(&bytes).map_err(|source| ApplianceError::BadRecord {
            path: record_path.clone(),
            source,
        })?;
    let mut steps = Vec::new();
    if systemd_running(&args.root) {
        // Not installed as a unit any more, or never started: nothing to stop.
        let _ = systemctl(&["disable", "--now", UNIT]);
        steps.push(format!("stopped and disabled {UNIT}"));
    }
    for f in &record.files {
        let path = inside(&args.root, &f.display().to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => steps.push(format!("removed {}", f.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApplianceError::io(format!("removing {}", path.display()))(
                    e,
                ))
            }
        }
    }
    let _ = std::fs::remove_file(&record_path);
    let _ = std::fs::remove_dir(inside(&args.root, CONFIG_DIR));
    if systemd_running(&args.root) {
        let _ = systemctl(&["daemon-reload"]);
    }
    let data = inside(&args.root, &record.data_dir.display().to_string());
    if args.purge {
        end_workloads(&data);
        // Cross-node routes and the overlay link (a stopped node removes them itself; a
        // killed one leaves them): this host's, so not for an install under `--root DIR`.
        if args.root == Path::new("/") {
            match crate::net::purge() {
                Ok(changes) if !changes.is_empty() => steps.push(format!(
                    "removed {} cross-node route(s)/link(s)",
                    changes.removed.len()
                )),
                Ok(_) => {}
                Err(e) => steps.push(format!(
                    "could not remove cross-node routes: {}",
                    crate::error_chain(&e)
                )),
            }
        }
        // The Services rules are the host's own (not under --root): only a real uninstall.
        if args.root == Path::new("/") {
            match crate::net::dataplane::purge() {
                Ok(()) => steps.push("removed the Services rules (iptables OMNI-* chains)".into()),
                Err(e) => steps.push(format!("could not remove the Services rules: {e}")),
            }
        }
        std::fs::remove_dir_all(&data).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(ApplianceError::io(format!("removing {}", data.display()))(
                e,
            )),
        })?;
        steps.push(format!(
            "removed the data dir {}",
            record.data_dir.display()
        ));
    } else {
        steps.push(format!(
            "kept the data dir {} (uninstall --purge removes it); containers and VMs it ran keep running until then",
            record.data_dir.display()
        ));
    }
    Ok(steps)
}

/// Ends what a node ran from `data`: its containers (they outlive the node), its VMMs
/// and its fencing watchdog.
pub fn end_workloads(data: &Path) {
    let exe = std::env::current_exe().unwrap_or_else(|_| BIN.into());
    end_workloads_with(data, &exe);
}

/// [`end_workloads`] with the `omnicloud` binary `exe` (a test process is not one): ends
/// every process of `exe` whose arguments name a path in `data` (the node, its watchdog,
/// its VMMs, container helpers still running and containers not yet past their setup),
/// removes its containers and any bundle a crash left without container state, then
/// unmounts whatever is still mounted under `data`, so the dir can be removed.
pub fn end_workloads_with(data: &Path, exe: &Path) {
    for pid in processes_of(exe, data) {
        // SAFETY: kill(2) on a process running our binary on this data dir.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    crate::agent::fence::stop_watchdog(data);
    let root = data.join("containers");
    let mut ids: Vec<String> = crate::container::runtime::Runtime::new(&root)
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    // A crash between mounting a rootfs and saving the container's state leaves a bundle only.
    for entry in std::fs::read_dir(root.join("bundles"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for id in ids {
        let _ = Command::new(exe)
            .args(["__container", "delete", &id, "--force", "--root"])
            .arg(&root)
            .output();
    }
    unmount_under(data);
}

/// Pids of the processes running `exe` with an argument that is `dir` or a path in it.
fn processes_of(exe: &Path, dir: &Path) -> Vec<i32> {
    let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    let dir = dir.display().to_string();
    let inside = format!("{dir}/");
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let runs = std::fs::read_link(entry.path().join("exe")).is_ok_and(|p| {
            // A binary rebuilt while it runs reads as "PATH (deleted)".
            let p = p.display().to_string();
            Path::new(p.trim_end_matches(" (deleted)")) == exe
        });
        if pid == me || !runs {
            continue;
        }
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let names_dir = cmd.split(|b| *b == 0).any(|arg| {
            let arg = String::from_utf8_lossy(arg);
            let path = arg.rsplit_once('=').map_or(&*arg, |(_, v)| v);
            path == dir || path.starts_with(&inside)
        });
        if names_dir {
            pids.push(pid);
        }
    }
    pids
}

/// Detaches every mount at or below `dir`, deepest first (overlay rootfs mounts a killed
/// node or helper left).
fn unmount_under(dir: &Path) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `c` is a NUL-terminated path; MNT_DETACH only detaches this mount.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mount_path(p: &str) -> String {
    let mut out = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(root: &Path) -> InstallArgs {
        InstallArgs {
            root: root.into(),
            name: Some("box-1".into()),
            join: vec![],
            token_file: None,
            roles: "agent,director".into(),
            data_dir: "/var/lib/omnicloud".into(),
            no_start: true,
            force: false,
        }
    }

    #[test]
    fn refusals_are_typed_name_the_flag_and_write_nothing() {
        let root = tempfile::tempdir().unwrap();
        let refused = |a: InstallArgs| install(&a).unwrap_err();
        let e = refused(InstallArgs {
            join: vec!["10.0.0.1:7946".into()],
            ..args(root.path())
        });
        assert!(
            matches!(&e, ApplianceError::Needs { field, .. } if field == "--join"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "--join needs --token-file (the cluster's join token)"
        );
        let e = refused(InstallArgs {
            roles: "agent,boss".into(),
            ..args(root.path())
        });
        assert!(
            matches!(&e, ApplianceError::Invalid { field, .. } if field == "--roles"),
            "{e:?}"
        );
        let e = refused(InstallArgs {
            data_dir: "relative".into(),
            ..args(root.path())
        });
        assert_eq!(
            e.to_string(),
            "--data-dir: relative is not an absolute path"
        );
        let e = refused(InstallArgs {
            name: Some("Bad_Name".into()),
            ..args(root.path())
        });
        assert!(
            matches!(&e, ApplianceError::Name(m) if m.field == "--name"),
            "{e:?}"
        );
        let e = refused(InstallArgs {
            token_file: Some(root.path().join("missing.token")),
            ..args(root.path())
        });
        assert!(
            matches!(&e, ApplianceError::Io { action, .. } if action.starts_with("--token-file ")),
            "{e:?}"
        );
        assert!(crate::error_chain(&e).contains("No such file"), "{e}");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

        let e = uninstall(&UninstallArgs {
            root: root.path().into(),
            purge: false,
        })
        .unwrap_err();
        assert!(matches!(e, ApplianceError::NotInstalled { .. }), "{e:?}");
        assert!(
            crate::error_chain(&e).contains("(was omnicloud installed here?)"),
            "{e}"
        );
    }

    #[test]
    fn mount_points_are_read_back_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/tmp/omni-a\040b/rootfs\134x"),
            r"/tmp/omni-a b/rootfs\x"
        );
        assert_eq!(unescape_mount_path(r"/plain\04"), r"/plain\04");
    }

    #[test]
    fn the_config_is_one_the_node_loads() {
        let a = InstallArgs {
            join: vec!["10.0.0.1:7946".into()],
            ..args(Path::new("/x"))
        };
        let text = config_text(&a, "box-1");
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(v["name"].as_str(), Some("box-1"));
        assert_eq!(v["roles"].as_array().unwrap().len(), 2);
        assert_eq!(v["token_file"].as_str(), Some("/etc/omnicloud/join.token"));
        let unit = unit_text();
        assert!(unit
            .contains("ExecStart=/usr/local/bin/omnicloud node --config /etc/omnicloud/node.toml"));
        assert!(unit.contains("KillMode=process"));
    }
}
