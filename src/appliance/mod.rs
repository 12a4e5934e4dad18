//! The appliance side of the one binary: what a machine booted from the worker image or a
//! USB stick runs as PID 1 ([`init`], carried out by [`pid1`]), and `omnicloud install`
//! on a host's own Linux ([`install`]).
//! May call: `model` (name checks). Unsafe code (each with a `// SAFETY:` note): mount,
//! sethostname, signal masks, waitpid, reboot.

pub mod init;
pub mod install;
pub mod pid1;

use std::process::ExitCode;

use clap::Args;

/// `omnicloud init`
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Print the plan (JSON) for the command line and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The kernel command line to plan from (default: /proc/cmdline).
    #[arg(long)]
    pub cmdline: Option<String>,
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

pub fn init_main(args: InitArgs) -> ExitCode {
    let pid1 = std::process::id() == 1;
    if pid1 {
        // Needed to read the command line and the MAC; the plan mounts them again (EBUSY is
        // fine).
        for (fs, target) in [("proc", "/proc"), ("sysfs", "/sys")] {
            let _ = std::fs::create_dir_all(target);
            let _ = pid1::run_mount(fs, target);
        }
    }
    let cmdline = match args.cmdline {
        Some(c) => c,
        None => std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    };
    let iface = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("omnicloud.iface="))
        .unwrap_or("eth0");
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
    let plan = init::plan_with_modules(&cmdline, &default_name(iface), &modules);
    if args.dry_run {
        return match plan {
            Ok(plan) => {
                let steps = init::steps(&plan, &exe);
                let out = serde_json::json!({"plan": plan, "steps": steps});
                println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if !pid1 {
        eprintln!("error: omnicloud init runs as PID 1 (use --dry-run to see its plan)");
        return ExitCode::from(2);
    }
    match plan {
        Ok(plan) => {
            let steps = init::steps(&plan, &exe);
            pid1::run(&plan, &steps)
        }
        Err(e) => pid1::rescue_shell(&e),
    }
}
