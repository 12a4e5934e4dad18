//! The appliance side of the one binary: what a machine booted from the worker image or a
//! USB stick runs as PID 1 ([`init`], carried out by [`pid1`]), and `omnicloud install`
//! on a host's own Linux ([`install`]).
//! [`disks`] finds the USB image's partitions by label; [`sticks`] prepares the config
//! partitions of a cluster's sticks (its CA made up front).
//! Errors are one [`ApplianceError`]. May call: `model` (name checks), `cluster::pki`
//! (the sticks' CA), and for
//! `uninstall --purge` `container` and `agent::fence` (ending the node's workloads).
//! Unsafe code (each with a `// SAFETY:` note): mount, sethostname, signal masks, waitpid,
//! reboot.

pub mod disks;
pub mod init;
pub mod install;
pub mod pid1;
pub mod sticks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// What can go wrong planning a boot, carrying it out, or installing on a host. A message
/// never repeats its cause: print it with [`crate::error_chain`].
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    /// A setting (kernel command line, `omnicloud.conf` line, install flag) that is wrong;
    /// `field` names it and where it came from.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A setting given without the one it needs.
    #[error("{field} needs {needs}")]
    Needs { field: String, needs: String },
    /// The node name failed the resource model's name check.
    #[error(transparent)]
    Name(#[from] crate::model::ModelError),
    /// A file, device or process operation; `action` says which and on what.
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// `systemctl` ran and refused.
    #[error("{command}: {stderr}")]
    Refused { command: String, stderr: String },
    /// A program ran and ended unsuccessfully.
    #[error("{command} ended with {status}")]
    Exited {
        command: String,
        status: std::process::ExitStatus,
    },
    /// No partition carries the label; `seen` lists the block devices there were.
    #[error("no partition labelled {label} after {waited_s} s (block devices: {seen})")]
    NoPartition {
        label: String,
        waited_s: u64,
        seen: String,
    },
    /// A device path that never appeared.
    #[error("{device} did not appear in {waited_s} s")]
    NoDevice { device: String, waited_s: u64 },
    /// The data partition holds a file system init will not format over.
    #[error(
        "{dev} ({label}) holds something that is not ext4 and is not blank; it is left alone \
         (to use it: mkfs.ext4 -L {label} {dev}, or write zeros over its first MiB)"
    )]
    NotExt4 { dev: String, label: String },
    /// The config partition could not be found or mounted (the boot stops there).
    #[error("config partition")]
    ConfigPartition(#[source] Box<ApplianceError>),
    /// `omnicloud install` would overwrite a config the user changed.
    #[error(
        "{} exists and differs from what this install would write; keep it (edit by hand) or pass --force",
        path.display()
    )]
    ConfigDiffers { path: PathBuf },
    /// `omnicloud uninstall` found no install record.
    #[error("{} (was omnicloud installed here?)", path.display())]
    NotInstalled {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The install record is not what `install` writes.
    #[error("{}", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ApplianceError {
    /// An [`ApplianceError::Io`] for `action` (e.g. `creating /etc/omnicloud`).
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ApplianceError {
        let action = action.into();
        move |source| ApplianceError::Io { action, source }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApplianceError {
        ApplianceError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `omnicloud init`
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Print the plan (JSON) for the command line and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The kernel command line to plan from (default: /proc/cmdline).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// With --dry-run: the text of the config partition's omnicloud.conf to merge.
    #[arg(long)]
    pub config_file: Option<std::path::PathBuf>,
}

/// `omnicloud usb`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsbCommand {
    /// Make a new cluster's CA and join token and the files for its sticks' OMNICONFIG
    /// partitions: OUT/seed (CA certificate and key, token) for the seed stick, OUT/join
    /// (CA certificate, token) for every other stick.
    Prepare {
        /// An empty (or new) folder to write to.
        out: PathBuf,
        /// The join token's secret (default: random).
        #[arg(long)]
        secret: Option<String>,
        /// The seed's gossip address HOST:PORT for the other sticks' `join=` (default: a
        /// placeholder to fill in).
        #[arg(long)]
        join: Option<String>,
    },
}

/// A default node name: `node-` and the last 3 bytes of the interface's MAC address.
fn default_name(iface: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .ok()
        .map(|mac| {
            format!(
                "node-{}",
                mac.trim().replace(':', "").get(6..).unwrap_or("0")
            )
        })
        .unwrap_or_else(|| "node".into())
}

fn config_error(e: std::io::Error, path: &std::path::Path) -> String {
    format!("reading {}: {e}", path.display())
}

pub fn init_main(args: InitArgs) -> ExitCode {
    let pid1 = std::process::id() == 1;
    if pid1 {
        // Needed to read the command line; the plan mounts them again (EBUSY is fine).
        for (fs, target) in [("proc", "/proc"), ("sysfs", "/sys")] {
            let _ = std::fs::create_dir_all(target);
            let _ = pid1::run_mount(fs, target);
        }
    }
    let cmdline = match args.cmdline {
        Some(c) => c,
        None => std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/init".into());
    let modules: Vec<String> = std::fs::read_to_string(init::MODULES_FILE)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    // The command line alone says how to reach the config partition; the merged plan (its
    // omnicloud.conf under the command line) says everything after that. The default name
    // comes from the NIC's MAC, readable once its driver is loaded (the early steps).
    let plan_with = |config: Option<&str>| {
        let probe = init::plan_from(&cmdline, config, "node", &modules)?;
        init::plan_from(&cmdline, config, &default_name(&probe.iface), &modules)
    };
    if args.dry_run {
        let config = match &args.config_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) => {
                    eprintln!("error: {}", config_error(e, path));
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        let planned = init::plan_with_modules(&cmdline, "node", &modules)
            .and_then(|base| Ok((base, plan_with(config.as_deref())?)));
        return match planned {
            Ok((base, plan)) => {
                let mut steps = init::early_steps(&base);
                steps.extend(init::late_steps(&plan, &exe));
                let out = serde_json::json!({"plan": plan, "steps": steps});
                println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", crate::error_chain(&e));
                ExitCode::from(2)
            }
        };
    }
    if !pid1 {
        eprintln!("error: omnicloud init runs as PID 1 (use --dry-run to see its plan)");
        return ExitCode::from(2);
    }
    let base = match init::plan_with_modules(&cmdline, "node", &modules) {
        Ok(base) => base,
        Err(e) => pid1::rescue_shell(&e),
    };
    if let Err(e) = pid1::run_early(&init::early_steps(&base)) {
        pid1::rescue_shell(&e);
    }
    let config = base.config_partition.as_ref().map(|_| {
        let path = std::path::Path::new(init::CONFIG_DIR).join(init::CONFIG_FILE);
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            pid1::say(&format!(
                "{}; going on with the kernel command line alone",
                config_error(e, &path)
            ));
            String::new()
        })
    });
    match plan_with(config.as_deref()) {
        Ok(plan) => {
            let steps = init::late_steps(&plan, &exe);
            pid1::run(&plan, &steps)
        }
        Err(e) => pid1::rescue_shell(&e),
    }
}
