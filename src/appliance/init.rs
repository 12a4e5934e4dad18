//! `omnicloud init`: this binary as PID 1 of a worker VM or a USB-booted machine. The
//! kernel command line says what the node is (`omnicloud.*` keys), and on the USB image a
//! config partition adds its own `omnicloud.conf` under it; init mounts the kernel
//! filesystems, loads modules, mounts (formatting on first boot) the data partition, brings
//! the network up, starts `omnicloud node` as its child, reaps every orphan, restarts the
//! node if it dies, and powers off cleanly on SIGTERM/SIGINT.
//!
//! The work is a plan ([`Step`]s) made by a pure function of the command line and the
//! config file's text, so `omnicloud init --dry-run --cmdline "..." [--config-file F]` shows
//! exactly what would run, and the tests check the plan without booting anything.
//!
//! Command line keys (others are the kernel's and ignored):
//!
//! | key | meaning |
//! |---|---|
//! | `omnicloud.name=NAME` | node name (default: `node-` and the NIC's MAC's last 3 bytes) |
//! | `omnicloud.join=HOST:PORT[,..]` | seeds to join; none: this node seeds a new cluster |
//! | `omnicloud.token=TOKEN` | the cluster's join token (needed with `join`; a seed uses it) |
//! | `omnicloud.roles=agent[,director,..]` | roles (default `auto`) |
//! | `omnicloud.ip=dhcp\|CIDR` | address of `omnicloud.iface` (default `dhcp`) |
//! | `omnicloud.gw=IP` | default gateway with a static address |
//! | `omnicloud.iface=NAME` | the network interface (default `eth0`) |
//! | `omnicloud.data=DEVICE\|LABEL=L` | the data dir's device (default: tmpfs); a labelled partition is formatted (ext4) when blank |
//! | `omnicloud.confpart=DEVICE\|LABEL=L` | the config partition (FAT) holding `omnicloud.conf` |
//! | `omnicloud.config=PATH` | a node config file (TOML; in `omnicloud.conf`, relative to the partition) |
//! | `omnicloud.modules=a,b` | kernel modules to load (default: the image's `/etc/modules`) |
//!
//! `omnicloud.conf` holds the same keys without the `omnicloud.` prefix, one `key=value` a
//! line, `#` comments; the kernel command line wins where both set a key. `data`,
//! `confpart` and `modules` belong to the image's boot entry and are refused there.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

use super::ApplianceError;

/// Where init keeps the node's state.
pub const DATA_DIR: &str = "/var/lib/omnicloud";
/// Where the config partition is mounted (read-only).
pub const CONFIG_DIR: &str = "/run/omnicloud/config";
/// The file init reads on the config partition.
pub const CONFIG_FILE: &str = "omnicloud.conf";
/// busybox, shipped in the image, provides `ip` and `udhcpc`.
pub const BUSYBOX: &str = "/bin/busybox";
/// e2fsprogs' mke2fs, shipped in the image, formats a blank data partition.
pub const MKE2FS: &str = "/sbin/mke2fs";
/// Applies a DHCP lease (written into the image by the build scripts).
pub const UDHCPC_SCRIPT: &str = "/etc/udhcpc.script";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Address {
    Dhcp,
    Static {
        cidr: String,
        gateway: Option<Ipv4Addr>,
    },
}

/// What the command line (and the config file) ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitPlan {
    pub name: String,
    pub join: Vec<String>,
    /// Shown as "(set)" by `--dry-run`, never printed.
    #[serde(serialize_with = "redacted")]
    pub token: Option<String>,
    pub roles: Vec<String>,
    pub iface: String,
    pub address: Address,
    /// A device path, or `LABEL=NAME` for a partition found by label.
    pub data_device: Option<String>,
    /// The config partition: a device path or `LABEL=NAME`.
    pub config_partition: Option<String>,
    pub config: Option<PathBuf>,
    /// Kernel modules loaded before anything needs them (a distribution kernel has its
    /// disk, filesystem, network and netfilter drivers as modules).
    pub modules: Vec<String>,
}

fn redacted<S: serde::Serializer>(token: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match token {
        Some(_) => s.serialize_str("(set)"),
        None => s.serialize_none(),
    }
}

/// One thing init does, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum Step {
    Mount {
        fstype: String,
        source: String,
        target: String,
    },
    /// Find the config partition (waiting for slow USB disks) and mount it read-only on
    /// [`CONFIG_DIR`]; init then reads [`CONFIG_FILE`] there. Failing stops the boot.
    ConfigPartition {
        device: String,
    },
    /// Find the data partition by label, format it (ext4, [`MKE2FS`]) if it is blank, and
    /// mount it on [`DATA_DIR`]; anything else on it is never formatted (tmpfs instead).
    DataPartition {
        label: String,
    },
    Hostname {
        name: String,
    },
    /// A command (busybox applets for the network).
    Run {
        argv: Vec<String>,
    },
    /// Copy the cluster CA a stick carries (`tls/ca.crt`, and on the seed stick `tls/ca.key`,
    /// from `omnicloud usb prepare`) into the node's `tls/`, before the node starts: the
    /// node then keeps that CA instead of making one, so the sticks' token pins it. A file
    /// the data dir has already is left alone (a different one is reported).
    ClusterCa {
        from: String,
        to: String,
    },
    /// A secret file (mode 0600).
    WriteSecret {
        path: String,
    },
    /// The node, supervised: restarted when it dies.
    Node {
        argv: Vec<String>,
    },
}

/// Where the image lists the modules to load (one per line).
pub const MODULES_FILE: &str = "/etc/modules";

/// Where a setting came from, for error messages that point at it.
#[derive(Clone, Copy)]
enum Origin {
    Cmdline,
    File(usize),
}

impl Origin {
    fn name(self, key: &str) -> String {
        match self {
            Origin::Cmdline => format!("omnicloud.{key}"),
            Origin::File(line) => format!("{CONFIG_FILE} line {line}: {key}"),
        }
    }
}

/// Keys the image's boot entry sets; a config file may not change them.
const IMAGE_KEYS: [&str; 3] = ["data", "confpart", "modules"];

/// The `key=value` lines of an `omnicloud.conf`: `#` comments, blank lines, an optional
/// `omnicloud.` prefix, spaces around `=` and quotes around the value are allowed (the file
/// may come from any editor: a BOM and CRLF line ends are fine).
fn config_file_settings(text: &str) -> Result<Vec<(Origin, String, String)>, ApplianceError> {
    let mut out = Vec::new();
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = Origin::File(i + 1);
        let (key, value) = line.split_once('=').ok_or_else(|| {
            ApplianceError::invalid(
                format!("{CONFIG_FILE} line {}", i + 1),
                format!("expected key=value, found \"{line}\""),
            )
        })?;
        let key = key.trim();
        let key = key.strip_prefix("omnicloud.").unwrap_or(key);
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if IMAGE_KEYS.contains(&key) {
            return Err(ApplianceError::invalid(
                origin.name(key),
                format!("set by the image's boot entry, not by {CONFIG_FILE}"),
            ));
        }
        let value = if key == "config" && !value.starts_with('/') {
            format!("{CONFIG_DIR}/{value}")
        } else {
            value.to_string()
        };
        out.push((origin, key.to_string(), value));
    }
    Ok(out)
}

/// Parses the `omnicloud.*` keys of a kernel command line.
pub fn plan(cmdline: &str, default_name: &str) -> Result<InitPlan, ApplianceError> {
    plan_with_modules(cmdline, default_name, &[])
}

/// [`plan`] with the image's [`MODULES_FILE`] as the default module list.
pub fn plan_with_modules(
    cmdline: &str,
    default_name: &str,
    default_modules: &[String],
) -> Result<InitPlan, ApplianceError> {
    plan_from(cmdline, None, default_name, default_modules)
}

/// The plan from a kernel command line and, on the USB image, the config partition's
/// [`CONFIG_FILE`] text: the file's keys first, the command line's over them.
pub fn plan_from(
    cmdline: &str,
    config_file: Option<&str>,
    default_name: &str,
    default_modules: &[String],
) -> Result<InitPlan, ApplianceError> {
    let mut settings = match config_file {
        Some(text) => config_file_settings(text)?,
        None => Vec::new(),
    };
    settings.extend(cmdline_settings(cmdline)?);
    let mut plan = InitPlan {
        name: default_name.to_string(),
        join: Vec::new(),
        token: None,
        roles: vec!["auto".into()],
        iface: "eth0".into(),
        address: Address::Dhcp,
        data_device: None,
        config_partition: None,
        config: None,
        modules: default_modules.to_vec(),
    };
    let (ip, gw) = apply(&mut plan, &settings)?;
    crate::model::validate_name("omnicloud.name", &plan.name)?;
    if plan.roles.is_empty() {
        return Err(ApplianceError::invalid(
            "omnicloud.roles",
            "empty (leave it out for auto)",
        ));
    }
    if !plan.join.is_empty() && plan.token.is_none() {
        return Err(ApplianceError::Needs {
            field: "omnicloud.join".into(),
            needs: "omnicloud.token (the cluster's join token)".into(),
        });
    }
    plan.address = address(ip, gw)?;
    Ok(plan)
}

/// An `ip` setting and where it came from.
type StaticIp = (Origin, String);

/// The `omnicloud.key=value` words of a kernel command line.
fn cmdline_settings(cmdline: &str) -> Result<Vec<(Origin, String, String)>, ApplianceError> {
    let mut settings = Vec::new();
    for word in cmdline.split_whitespace() {
        let Some(rest) = word.strip_prefix("omnicloud.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').ok_or_else(|| {
            ApplianceError::invalid(
                format!("omnicloud.{rest}"),
                format!("expected omnicloud.{rest}=VALUE"),
            )
        })?;
        settings.push((Origin::Cmdline, key.to_string(), value.to_string()));
    }
    Ok(settings)
}

/// Each setting onto the plan, later ones over earlier ones; returns the address settings
/// (`ip` with where it came from, `gw`) for [`address`].
fn apply(
    plan: &mut InitPlan,
    settings: &[(Origin, String, String)],
) -> Result<(Option<StaticIp>, Option<Ipv4Addr>), ApplianceError> {
    let mut ip = None;
    let mut gw = None;
    for (origin, key, value) in settings {
        let value = value.as_str();
        let list = || -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let device = || -> Result<String, ApplianceError> {
            match value.strip_prefix("LABEL=") {
                Some("") => Err(ApplianceError::invalid(
                    origin.name(key),
                    "LABEL= needs a label",
                )),
                _ if value.is_empty() => Err(ApplianceError::invalid(
                    origin.name(key),
                    "expected a device path or LABEL=NAME",
                )),
                _ => Ok(value.to_string()),
            }
        };
        match key.as_str() {
            "name" => plan.name = value.to_string(),
            "join" => plan.join = list(),
            "token" => plan.token = Some(value.to_string()).filter(|t| !t.is_empty()),
            "roles" => plan.roles = list(),
            "ip" => ip = Some((*origin, value.to_string())),
            "gw" => {
                gw = Some(value.parse::<Ipv4Addr>().map_err(|_| {
                    ApplianceError::invalid(
                        origin.name(key),
                        format!("\"{value}\" is not an IPv4 address"),
                    )
                })?)
            }
            "iface" => plan.iface = value.to_string(),
            "data" => plan.data_device = Some(device()?),
            "confpart" => plan.config_partition = Some(device()?),
            "config" => plan.config = Some(value.into()),
            "modules" => plan.modules = list(),
            other => {
                return Err(ApplianceError::invalid(
                    origin.name(other),
                    "unknown key (expected name, join, token, roles, ip, gw, iface, data, confpart, config or modules)",
                ))
            }
        }
    }
    Ok((ip, gw))
}

/// DHCP, or a static `ip` (an IPv4 CIDR) with an optional `gw`; a `gw` without a static
/// `ip` is refused.
fn address(ip: Option<(Origin, String)>, gw: Option<Ipv4Addr>) -> Result<Address, ApplianceError> {
    let address = match &ip {
        None => Address::Dhcp,
        Some((_, v)) if v == "dhcp" => Address::Dhcp,
        Some((origin, cidr)) => {
            let ok = cidr.split_once('/').is_some_and(|(a, p)| {
                a.parse::<Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
            });
            if !ok {
                return Err(ApplianceError::invalid(
                    origin.name("ip"),
                    format!("\"{cidr}\" is not dhcp or an IPv4 CIDR like 10.0.0.5/24"),
                ));
            }
            Address::Static {
                cidr: cidr.to_string(),
                gateway: gw,
            }
        }
    };
    if gw.is_some() && address == Address::Dhcp {
        return Err(ApplianceError::invalid(
            "omnicloud.gw",
            "only with a static omnicloud.ip=CIDR",
        ));
    }
    Ok(address)
}

fn mount(fstype: &str, source: &str, target: &str) -> Step {
    Step::Mount {
        fstype: fstype.into(),
        source: source.into(),
        target: target.into(),
    }
}

fn busybox(args: &[&str]) -> Step {
    Step::Run {
        argv: std::iter::once(BUSYBOX)
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect(),
    }
}

/// What init does before it can read the config partition: the kernel filesystems, the
/// drivers, and the config partition itself.
pub fn early_steps(plan: &InitPlan) -> Vec<Step> {
    let mut s = vec![
        mount("proc", "proc", "/proc"),
        mount("sysfs", "sysfs", "/sys"),
        mount("devtmpfs", "devtmpfs", "/dev"),
        mount("tmpfs", "tmpfs", "/run"),
        mount("tmpfs", "tmpfs", "/tmp"),
        mount("cgroup2", "cgroup2", "/sys/fs/cgroup"),
    ];
    // Drivers first: the data disk, its filesystem and the NIC may all be modules. busybox
    // modprobe applies `module.param=` options from the kernel command line (virtio_mmio's
    // device= entries, which the VMM puts there).
    if !plan.modules.is_empty() {
        let mut argv = vec!["modprobe", "-a"];
        argv.extend(plan.modules.iter().map(String::as_str));
        s.push(busybox(&argv));
    }
    if let Some(device) = &plan.config_partition {
        s.push(Step::ConfigPartition {
            device: device.clone(),
        });
    }
    s
}

/// What init does with the (merged) plan: the data dir, the hostname, the network and the
/// node. `exe` is this binary's path in the image.
pub fn late_steps(plan: &InitPlan, exe: &str) -> Vec<Step> {
    let mut s = vec![match plan.data_device.as_deref() {
        Some(dev) => match dev.strip_prefix("LABEL=") {
            Some(label) => Step::DataPartition {
                label: label.into(),
            },
            None => mount("ext4", dev, DATA_DIR),
        },
        None => mount("tmpfs", "tmpfs", DATA_DIR),
    }];
    if plan.config_partition.is_some() {
        s.push(Step::ClusterCa {
            from: format!("{CONFIG_DIR}/tls"),
            to: format!("{DATA_DIR}/tls"),
        });
    }
    s.extend([
        Step::Hostname {
            name: plan.name.clone(),
        },
        busybox(&["ip", "link", "set", "lo", "up"]),
        busybox(&["ip", "link", "set", &plan.iface, "up"]),
    ]);
    let mut advertise = None;
    match &plan.address {
        Address::Dhcp => s.push(busybox(&[
            "udhcpc",
            "-i",
            &plan.iface,
            "-n",
            "-q",
            "-t",
            "10",
            "-s",
            UDHCPC_SCRIPT,
        ])),
        Address::Static { cidr, gateway } => {
            s.push(busybox(&["ip", "addr", "add", cidr, "dev", &plan.iface]));
            if let Some(gw) = gateway {
                s.push(busybox(&[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ]));
            }
            // Without a default route the node could not work out its own address.
            advertise = cidr.split_once('/').map(|(ip, _)| ip.to_string());
        }
    }
    let mut argv: Vec<String> = [exe, "node", "--name", &plan.name, "--data-dir", DATA_DIR]
        .iter()
        .map(|a| a.to_string())
        .collect();
    argv.push("--roles".into());
    argv.push(plan.roles.join(","));
    if let Some(ip) = advertise {
        argv.extend(["--advertise".into(), ip]);
    }
    if let Some(config) = &plan.config {
        argv.push("--config".into());
        argv.push(config.display().to_string());
    }
    if !plan.join.is_empty() {
        argv.extend(["--join".into(), plan.join.join(",")]);
    }
    // A seed given a token uses it, so every stick of a cluster can carry the same one.
    if plan.token.is_some() {
        let token_file = format!("{DATA_DIR}/cluster.token");
        s.push(Step::WriteSecret {
            path: token_file.clone(),
        });
        argv.extend(["--token-file".into(), token_file]);
    }
    s.push(Step::Node { argv });
    s
}

/// Everything init does for `plan`, in order.
pub fn steps(plan: &InitPlan, exe: &str) -> Vec<Step> {
    let mut s = early_steps(plan);
    s.extend(late_steps(plan, exe));
    s
}

/// The kernel command line of a worker VM that joins `join` as an agent named `name`.
pub fn worker_cmdline(
    name: &str,
    join: &[String],
    token: &str,
    ip: Option<(String, Ipv4Addr)>,
) -> String {
    let mut c = format!(
        "console=ttyS0 reboot=k panic=1 omnicloud.name={name} omnicloud.roles=agent omnicloud.join={} omnicloud.token={token}",
        join.join(",")
    );
    match ip {
        Some((cidr, gw)) => c.push_str(&format!(" omnicloud.ip={cidr} omnicloud.gw={gw}")),
        None => c.push_str(" omnicloud.ip=dhcp"),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_cmdline_plans_a_joining_agent() {
        let join = vec!["10.88.0.1:7946".to_string()];
        let gw = "10.88.0.1".parse().unwrap();
        let cmdline = worker_cmdline("w-0", &join, "s3cret", Some(("10.88.0.200/24".into(), gw)));
        let p = plan(&format!("root=/dev/ram0 {cmdline}"), "x").unwrap();
        assert_eq!(p.name, "w-0");
        assert_eq!(p.join, join);
        assert_eq!(p.token.as_deref(), Some("s3cret"));
        assert_eq!(p.roles, ["agent"]);
        assert_eq!(
            p.address,
            Address::Static {
                cidr: "10.88.0.200/24".into(),
                gateway: Some("10.88.0.1".parse().unwrap())
            }
        );
        let steps = steps(&p, "/init");
        // No config partition: no stick CA to copy (a worker VM joins through its director).
        assert!(!steps.iter().any(|s| matches!(s, Step::ClusterCa { .. })));
        let Some(Step::Node { argv }) = steps.last() else {
            panic!("the node is the last step: {steps:?}")
        };
        assert_eq!(
            argv.join(" "),
            "/init node --name w-0 --data-dir /var/lib/omnicloud --roles agent --advertise 10.88.0.200 --join 10.88.0.1:7946 --token-file /var/lib/omnicloud/cluster.token"
        );
        assert!(steps.contains(&Step::WriteSecret {
            path: "/var/lib/omnicloud/cluster.token".into()
        }));
        assert!(steps.contains(&busybox(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.88.0.1"
        ])));
        assert_eq!(serde_json::to_value(&p).unwrap()["token"], "(set)");
        // The token never appears in a command line of a step.
        for s in &steps {
            if let Step::Run { argv } | Step::Node { argv } = s {
                assert!(!argv.iter().any(|a| a.contains("s3cret")), "{argv:?}");
            }
        }
    }

    #[test]
    fn no_join_seeds_a_cluster_on_dhcp_with_defaults() {
        let p = plan("console=ttyS0 quiet", "box").unwrap();
        assert_eq!(p.name, "box");
        assert!(p.join.is_empty());
        assert_eq!(p.address, Address::Dhcp);
        assert_eq!(p.roles, ["auto"]);
        let steps = steps(&p, "/init");
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Run { argv } if argv[1] == "udhcpc")));
        assert!(steps.contains(&mount("tmpfs", "tmpfs", DATA_DIR)));
    }

    #[test]
    fn image_modules_load_before_the_data_disk_and_network() {
        let image = vec!["virtio_net".to_string(), "ext4".to_string()];
        let p = plan_with_modules("omnicloud.data=/dev/vdb", "n", &image).unwrap();
        let steps = steps(&p, "/init");
        let at = |want: &Step| steps.iter().position(|s| s == want).unwrap();
        let modprobe = at(&busybox(&["modprobe", "-a", "virtio_net", "ext4"]));
        assert!(modprobe < at(&mount("ext4", "/dev/vdb", DATA_DIR)));
        assert!(modprobe < at(&busybox(&["ip", "link", "set", "eth0", "up"])));
        let p = plan_with_modules("omnicloud.modules=e1000e", "n", &image).unwrap();
        assert_eq!(p.modules, ["e1000e"]);
    }

    #[test]
    fn bad_keys_are_refused_by_name() {
        let cases = [
            ("omnicloud.joinn=x", "omnicloud.joinn: unknown key"),
            ("omnicloud.join=a:1", "omnicloud.join needs omnicloud.token"),
            (
                "omnicloud.ip=10.0.0.300/24",
                "omnicloud.ip: \"10.0.0.300/24\"",
            ),
            ("omnicloud.gw=10.0.0.1", "omnicloud.gw: only with a static"),
            ("omnicloud.name=Bad_Name", "omnicloud.name"),
            ("omnicloud.token", "omnicloud.token: expected"),
        ];
        for (cmdline, want) in cases {
            let e = plan(cmdline, "n").unwrap_err().to_string();
            assert!(e.starts_with(want), "{cmdline}: {e}");
        }
    }

    const USB: &str =
        "console=ttyS0 omnicloud.confpart=LABEL=OMNICONFIG omnicloud.data=LABEL=OMNIDATA";

    #[test]
    fn the_usb_entry_reads_the_config_partition_then_formats_and_mounts_the_data_partition() {
        let base = plan(USB, "n").unwrap();
        let early = early_steps(&base);
        assert_eq!(
            early.last(),
            Some(&Step::ConfigPartition {
                device: "LABEL=OMNICONFIG".into()
            })
        );
        let conf = "\u{feff}# a comment\r\nname = rack-1\r\n\njoin=10.0.0.1:7946\ntoken=\"t0k\"\n\
                    omnicloud.roles=agent, orchestrator\nip=10.0.0.7/24\ngw=10.0.0.1\nconfig=node.toml\n";
        let p = plan_from(USB, Some(conf), "n", &[]).unwrap();
        assert_eq!(p.name, "rack-1");
        assert_eq!(p.join, ["10.0.0.1:7946"]);
        assert_eq!(p.token.as_deref(), Some("t0k"));
        assert_eq!(p.roles, ["agent", "orchestrator"]);
        assert_eq!(
            p.config,
            Some(PathBuf::from("/run/omnicloud/config/node.toml"))
        );
        let late = late_steps(&p, "/init");
        assert_eq!(
            late[0],
            Step::DataPartition {
                label: "OMNIDATA".into()
            }
        );
        // The stick's CA goes into the mounted data dir, before the node starts.
        assert_eq!(
            late[1],
            Step::ClusterCa {
                from: "/run/omnicloud/config/tls".into(),
                to: "/var/lib/omnicloud/tls".into()
            }
        );
        let Some(Step::Node { argv }) = late.last() else {
            panic!("{late:?}")
        };
        assert_eq!(
            argv.join(" "),
            "/init node --name rack-1 --data-dir /var/lib/omnicloud --roles agent,orchestrator \
             --advertise 10.0.0.7 --config /run/omnicloud/config/node.toml --join 10.0.0.1:7946 \
             --token-file /var/lib/omnicloud/cluster.token"
        );
    }

    #[test]
    fn the_kernel_command_line_wins_over_the_config_file() {
        let conf = "name=from-file\nip=10.0.0.7/24\n";
        let p = plan_from(
            &format!("{USB} omnicloud.name=from-cmdline"),
            Some(conf),
            "n",
            &[],
        )
        .unwrap();
        assert_eq!(p.name, "from-cmdline");
        let p = plan_from("omnicloud.ip=dhcp", Some(conf), "n", &[]).unwrap();
        assert_eq!(p.address, Address::Dhcp);
    }

    #[test]
    fn the_shipped_template_seeds_a_cluster_and_a_seed_keeps_its_given_token() {
        let template = "# everything commented out\n# join=\n# token=\n";
        let p = plan_from(USB, Some(template), "node-a1b2c3", &[]).unwrap();
        assert_eq!(p.name, "node-a1b2c3");
        assert!(p.join.is_empty());
        assert_eq!(p.address, Address::Dhcp);
        let p = plan_from(USB, Some("token=shared\n"), "n", &[]).unwrap();
        let late = late_steps(&p, "/init");
        let Some(Step::Node { argv }) = late.last() else {
            panic!("{late:?}")
        };
        assert!(!argv.contains(&"--join".to_string()), "{argv:?}");
        assert!(argv.contains(&"--token-file".to_string()), "{argv:?}");
    }

    #[test]
    fn config_file_errors_name_the_line_and_key() {
        let cases = [
            (
                "name=ok\njoinn=x\n",
                "omnicloud.conf line 2: joinn: unknown key",
            ),
            (
                "ip=10.0.0.300/24",
                "omnicloud.conf line 1: ip: \"10.0.0.300/24\"",
            ),
            ("gw=nope", "omnicloud.conf line 1: gw: \"nope\" is not"),
            (
                "\n\nthis is not a setting",
                "omnicloud.conf line 3: expected key=value",
            ),
            (
                "data=/dev/sda",
                "omnicloud.conf line 1: data: set by the image's boot entry",
            ),
            (
                "modules=e1000e",
                "omnicloud.conf line 1: modules: set by the image",
            ),
            ("join=10.0.0.1:7946", "omnicloud.join needs omnicloud.token"),
            ("roles=", "omnicloud.roles: empty"),
        ];
        for (conf, want) in cases {
            let e = plan_from(USB, Some(conf), "n", &[])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{conf:?}: {e}");
        }
        let e = plan("omnicloud.data=LABEL=", "n").unwrap_err().to_string();
        assert!(e.starts_with("omnicloud.data: LABEL= needs a label"), "{e}");
    }
}
