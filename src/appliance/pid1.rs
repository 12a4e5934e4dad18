//! Carrying out an init plan as PID 1. PID 1 must never exit (the kernel panics), so every
//! failure is printed on the console and init goes on: a mount that fails is reported, a
//! data device that does not mount falls back to tmpfs, a node that dies is started again.
//! Orphans are reparented to PID 1 and reaped here. SIGTERM or SIGINT (ctrl-alt-del) stop
//! the node politely and power the machine off. Only a config partition that cannot be
//! found or mounted stops the boot (a rescue shell): guessing would start a new cluster.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::disks::{self, Content};
use super::init::{InitPlan, Step, BUSYBOX, CONFIG_DIR, DATA_DIR, MKE2FS};
use super::ApplianceError;

/// How long init waits for a partition to show up (USB disks enumerate slowly).
const DISK_WAIT: Duration = Duration::from_secs(30);

/// How long the node gets to stop before the machine powers off regardless.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub fn say(msg: &str) {
    // The console is init's stderr.
    let _ = writeln!(std::io::stderr(), "omnicloud init: {msg}");
}

fn mount(fstype: &str, source: &str, target: &str) -> Result<(), ApplianceError> {
    mount_with(fstype, source, target, 0)
}

fn mount_with(
    fstype: &str,
    source: &str,
    target: &str,
    flags: libc::c_ulong,
) -> Result<(), ApplianceError> {
    std::fs::create_dir_all(target).map_err(ApplianceError::io(format!("creating {target}")))?;
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (src, tgt, fs) = (c(source), c(target), c(fstype));
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // The kernel may have mounted devtmpfs already.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(ApplianceError::io(format!(
                "mounting {fstype} {source} on {target}"
            ))(e));
        }
    }
    Ok(())
}

/// A pseudo filesystem mounted on `target` (proc, sysfs).
pub fn run_mount(fstype: &str, target: &str) -> Result<(), ApplianceError> {
    mount(fstype, fstype, target)
}

/// The command line cannot be used: say why on the console and give the user a shell there
/// (busybox, in the image) to look around; power off when it exits.
pub fn rescue_shell(why: &ApplianceError) -> ! {
    say(&format!("error: {}", crate::error_chain(why)));
    say("fix the kernel command line (or the USB config partition); starting a rescue shell");
    let _ = Command::new(BUSYBOX).arg("sh").status();
    power_off();
}

/// A device given as a path or `LABEL=NAME`, once it exists.
fn resolve(device: &str) -> Result<String, ApplianceError> {
    if let Some(label) = device.strip_prefix("LABEL=") {
        return disks::wait_for(label, DISK_WAIT);
    }
    let deadline = Instant::now() + DISK_WAIT;
    while !std::path::Path::new(device).exists() {
        if Instant::now() >= deadline {
            return Err(ApplianceError::NoDevice {
                device: device.to_string(),
                waited_s: DISK_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(device.to_string())
}

fn run_command(argv: &[&str]) -> Result<(), ApplianceError> {
    match Command::new(argv[0]).args(&argv[1..]).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(status) => Err(ApplianceError::Exited {
            command: argv.join(" "),
            status,
        }),
        Err(e) => Err(ApplianceError::io(format!("running {}", argv.join(" ")))(e)),
    }
}

/// The data partition: mounted if it holds ext4, formatted first if blank, and never
/// touched if it holds anything else. Err: why the data dir is a tmpfs instead.
fn data_partition(label: &str) -> Result<(), ApplianceError> {
    let dev = disks::wait_for(label, DISK_WAIT)?;
    let head = disks::read_head(std::path::Path::new(&dev))
        .map_err(ApplianceError::io(format!("reading {dev}")))?;
    match disks::content(&head) {
        Content::Ext { .. } => {}
        Content::Blank => {
            say(&format!(
                "{dev} ({label}) is blank: formatting it (ext4), first boot"
            ));
            let formatted = if std::path::Path::new(MKE2FS).exists() {
                run_command(&[MKE2FS, "-F", "-q", "-t", "ext4", "-L", label, &dev])
            } else {
                run_command(&[BUSYBOX, "mke2fs", "-F", "-L", label, &dev])
            };
            formatted?;
        }
        Content::Fat { .. } | Content::Unknown => {
            return Err(ApplianceError::NotExt4 {
                dev,
                label: label.to_string(),
            })
        }
    }
    mount("ext4", &dev, DATA_DIR)?;
    say(&format!("data partition {dev} mounted on {DATA_DIR}"));
    Ok(())
}

/// The steps before the config file can be read ([`super::init::early_steps`]). Err: the
/// config partition is missing, and booting on would guess the node's identity.
pub fn run_early(steps: &[Step]) -> Result<(), ApplianceError> {
    for step in steps {
        match step {
            Step::ConfigPartition { device } => {
                let config_partition = |e| ApplianceError::ConfigPartition(Box::new(e));
                let dev = resolve(device).map_err(config_partition)?;
                mount_with("vfat", &dev, CONFIG_DIR, libc::MS_RDONLY).map_err(config_partition)?;
                say(&format!("config partition {dev} mounted on {CONFIG_DIR}"));
            }
            other => run_step(other, None),
        }
    }
    Ok(())
}

fn run_step(step: &Step, plan: Option<&InitPlan>) {
    match step {
        Step::Mount {
            fstype,
            source,
            target,
        } => {
            if let Err(e) = mount(fstype, source, target) {
                say(&crate::error_chain(&e));
                if target == DATA_DIR {
                    say("the data dir falls back to tmpfs: state will not survive a reboot");
                    if let Err(e) = mount("tmpfs", "tmpfs", DATA_DIR) {
                        say(&crate::error_chain(&e));
                    }
                }
            }
        }
        Step::ConfigPartition { .. } => unreachable!("done by run_early"),
        Step::DataPartition { label } => {
            if let Err(e) = data_partition(label) {
                say(&crate::error_chain(&e));
                say("the data dir falls back to tmpfs: state will not survive a reboot");
                if let Err(e) = mount("tmpfs", "tmpfs", DATA_DIR) {
                    say(&crate::error_chain(&e));
                }
            }
        }
        Step::Hostname { name } => {
            // SAFETY: the pointer and length describe `name`'s bytes.
            let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
            if rc != 0 {
                say(&format!(
                    "setting the hostname: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Step::Run { argv } => {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            if let Err(e) = run_command(&argv) {
                say(&crate::error_chain(&e));
            }
        }
        Step::ClusterCa { from, to } => {
            match copy_cluster_ca(std::path::Path::new(from), std::path::Path::new(to)) {
                Ok(notes) => notes.iter().for_each(|n| say(n)),
                Err(e) => say(&crate::error_chain(&e)),
            }
        }
        Step::WriteSecret { path } => {
            let token = plan.and_then(|p| p.token.as_deref()).unwrap_or_default();
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(token.as_bytes()));
            if let Err(e) = written {
                say(&format!("writing {path}: {e}"));
            }
        }
        Step::Node { .. } => unreachable!("the node is supervised by run"),
    }
}

/// Copies `ca.key` (first: a CA certificate is never there without its key) and `ca.crt`
/// from a stick's `from` to the node's `to`, each only where `to` has none. What was done
/// (or found different and left) comes back as lines for the console.
pub fn copy_cluster_ca(
    from: &std::path::Path,
    to: &std::path::Path,
) -> Result<Vec<String>, ApplianceError> {
    let mut notes = Vec::new();
    for (file, mode) in [("ca.key", 0o600), ("ca.crt", 0o644)] {
        let src = from.join(file);
        let Ok(body) = std::fs::read(&src) else {
            continue;
        };
        let dst = to.join(file);
        match std::fs::read(&dst) {
            Ok(have) if have == body => {}
            Ok(_) => notes.push(format!(
                "{} differs from the stick's {}: the node keeps its own (a stick prepared for another cluster?)",
                dst.display(),
                src.display()
            )),
            Err(_) => {
                std::fs::create_dir_all(to)
                    .map_err(ApplianceError::io(format!("creating {}", to.display())))?;
                let tmp = dst.with_extension("tmp");
                let _ = std::fs::remove_file(&tmp);
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&body).and_then(|_| f.sync_all()))
                    .and_then(|_| std::fs::rename(&tmp, &dst))
                    .map_err(ApplianceError::io(format!("writing {}", dst.display())))?;
                notes.push(format!("cluster CA: {} copied from the stick", dst.display()));
            }
        }
    }
    Ok(notes)
}

fn spawn_node(argv: &[String]) -> Option<i32> {
    match Command::new(&argv[0]).args(&argv[1..]).spawn() {
        Ok(child) => Some(child.id() as i32),
        Err(e) => {
            say(&format!("starting the node: {e}"));
            None
        }
    }
}

/// Reaps every exited child; true if `node` was among them.
fn reap(node: Option<i32>) -> bool {
    let mut node_ended = false;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return node_ended;
        }
        if Some(pid) == node {
            node_ended = true;
            say(&format!("the node ended (wait status {status})"));
        }
    }
}

/// Runs the plan as PID 1; returns only by powering the machine off.
pub fn run(plan: &InitPlan, steps: &[Step]) -> ! {
    // Signals arrive through sigwait, never as handlers: block them first.
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for the duration of these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    for step in steps {
        if !matches!(step, Step::Node { .. }) {
            run_step(step, Some(plan));
        }
    }
    let Some(Step::Node { argv }) = steps.iter().find(|s| matches!(s, Step::Node { .. })) else {
        say("no node in the plan");
        power_off();
    };
    ca_bundle();
    let mut node = spawn_node(argv);
    say(&format!("node {} started", plan.name));
    loop {
        let mut sig = 0;
        // SAFETY: `set` holds blocked signals; sigwait writes the one taken to `sig`.
        unsafe { libc::sigwait(&set, &mut sig) };
        match sig {
            libc::SIGCHLD => {
                if reap(node) {
                    std::thread::sleep(Duration::from_secs(1));
                    node = spawn_node(argv);
                    say("node started again");
                }
            }
            _ => {
                say("stopping: the node gets 30 s, then the machine powers off");
                if let Some(pid) = node {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    let deadline = Instant::now() + STOP_GRACE;
                    while Instant::now() < deadline && !reap(Some(pid)) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                power_off();
            }
        }
    }
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; RB_POWER_OFF ends the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot(2) returns only on failure (not PID 1, no CAP_SYS_BOOT).
    say("power off failed; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Where TLS clients look for the system's CA certificates (Debian's bundle path).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The initramfs has no CA bundle: write Mozilla's roots (built into the binary) where the
/// registry client looks, so the node can pull from HTTPS registries (and build a client
/// at all: it refuses to start without any system root).
fn ca_bundle() {
    use base64::Engine as _;
    if std::path::Path::new(CA_BUNDLE).exists() {
        return;
    }
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let written =
        std::fs::create_dir_all("/etc/ssl/certs").and_then(|_| std::fs::write(CA_BUNDLE, pem));
    match written {
        Ok(()) => say(&format!(
            "wrote {} built-in CA roots to {CA_BUNDLE}",
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
        )),
        Err(e) => say(&format!("cannot write {CA_BUNDLE}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sticks_ca_is_copied_once_key_first_and_a_different_one_is_left() {
        let stick = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let to = data.path().join("tls");
        std::fs::write(stick.path().join("ca.crt"), "CERT").unwrap();
        std::fs::write(stick.path().join("ca.key"), "KEY").unwrap();
        let notes = copy_cluster_ca(stick.path(), &to).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("ca.key"), "{notes:?}");
        assert_eq!(std::fs::read_to_string(to.join("ca.crt")).unwrap(), "CERT");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(to.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(copy_cluster_ca(stick.path(), &to).unwrap().is_empty());
        std::fs::write(stick.path().join("ca.crt"), "OTHER").unwrap();
        let notes = copy_cluster_ca(stick.path(), &to).unwrap();
        assert!(notes[0].contains("differs"), "{notes:?}");
        assert_eq!(std::fs::read_to_string(to.join("ca.crt")).unwrap(), "CERT");
        // A joiner's stick: the certificate only.
        let joiner = tempfile::tempdir().unwrap();
        std::fs::remove_file(stick.path().join("ca.key")).unwrap();
        copy_cluster_ca(stick.path(), joiner.path()).unwrap();
        assert!(!joiner.path().join("ca.key").exists());
        assert!(joiner.path().join("ca.crt").exists());
        // A stick without tls/: nothing.
        let none = tempfile::tempdir().unwrap();
        assert!(copy_cluster_ca(&none.path().join("tls"), joiner.path())
            .unwrap()
            .is_empty());
    }
}
