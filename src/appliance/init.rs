//! `omnicloud init`: this binary as PID 1 of a worker VM or a USB-booted machine. The
//! kernel command line says what the node is (`omnicloud.*` keys); init mounts the kernel
//! filesystems, brings the network up, starts `omnicloud node` as its child, reaps every
//! orphan, restarts the node if it dies, and powers off cleanly on SIGTERM/SIGINT.
//!
//! The work is a plan ([`Step`]s) made by a pure function of the command line, so
//! `omnicloud init --dry-run --cmdline "..."` shows exactly what would run, and the tests
//! check the plan without booting anything.
//!
//! Command line keys (others are the kernel's and ignored):
//!
//! | key | meaning |
//! |---|---|
//! | `omnicloud.name=NAME` | node name (default: the hostname the kernel has, else `node`) |
//! | `omnicloud.join=HOST:PORT[,..]` | seeds to join; none: this node seeds a new cluster |
//! | `omnicloud.token=TOKEN` | the cluster's join token (needed with `join`) |
//! | `omnicloud.roles=agent[,director,..]` | roles (default `auto`) |
//! | `omnicloud.ip=dhcp\|CIDR` | address of `omnicloud.iface` (default `dhcp`) |
//! | `omnicloud.gw=IP` | default gateway with a static address |
//! | `omnicloud.iface=NAME` | the network interface (default `eth0`) |
//! | `omnicloud.data=DEVICE` | block device mounted as the data dir (default: tmpfs) |
//! | `omnicloud.config=PATH` | a node config file (e.g. on a USB stick's config partition) |
//! | `omnicloud.modules=a,b` | kernel modules to load (default: the image's `/etc/modules`) |

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

/// Where init keeps the node's state.
pub const DATA_DIR: &str = "/var/lib/omnicloud";
/// busybox, shipped in the image, provides `ip` and `udhcpc`.
pub const BUSYBOX: &str = "/bin/busybox";
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

/// What the command line asks for.
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
    pub data_device: Option<String>,
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
    Hostname {
        name: String,
    },
    /// A command (busybox applets for the network).
    Run {
        argv: Vec<String>,
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

/// Parses the `omnicloud.*` keys of a kernel command line; `default_modules` comes from
/// the image's [`MODULES_FILE`].
pub fn plan(cmdline: &str, default_name: &str) -> Result<InitPlan, String> {
    plan_with_modules(cmdline, default_name, &[])
}

pub fn plan_with_modules(
    cmdline: &str,
    default_name: &str,
    default_modules: &[String],
) -> Result<InitPlan, String> {
    let mut plan = InitPlan {
        name: default_name.to_string(),
        join: Vec::new(),
        token: None,
        roles: vec!["auto".into()],
        iface: "eth0".into(),
        address: Address::Dhcp,
        data_device: None,
        config: None,
        modules: default_modules.to_vec(),
    };
    let mut ip = None;
    let mut gw = None;
    for word in cmdline.split_whitespace() {
        let Some(rest) = word.strip_prefix("omnicloud.") else {
            continue;
        };
        let (key, value) = rest
            .split_once('=')
            .ok_or_else(|| format!("omnicloud.{rest}: expected omnicloud.{rest}=VALUE"))?;
        let list = || -> Vec<String> {
            value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        match key {
            "name" => plan.name = value.to_string(),
            "join" => plan.join = list(),
            "token" => plan.token = Some(value.to_string()),
            "roles" => plan.roles = list(),
            "ip" => ip = Some(value.to_string()),
            "gw" => {
                gw = Some(value.parse::<Ipv4Addr>().map_err(|_| {
                    format!("omnicloud.gw: \"{value}\" is not an IPv4 address")
                })?)
            }
            "iface" => plan.iface = value.to_string(),
            "data" => plan.data_device = Some(value.to_string()),
            "config" => plan.config = Some(value.into()),
            "modules" => plan.modules = list(),
            other => {
                return Err(format!(
                    "omnicloud.{other}: unknown key (expected name, join, token, roles, ip, gw, iface, data, config or modules)"
                ))
            }
        }
    }
    crate::model::validate_name("omnicloud.name", &plan.name).map_err(|e| e.to_string())?;
    if !plan.join.is_empty() && plan.token.is_none() {
        return Err("omnicloud.join needs omnicloud.token (the cluster's join token)".into());
    }
    plan.address = match ip.as_deref() {
        None | Some("dhcp") => {
            if gw.is_some() {
                return Err("omnicloud.gw: only with a static omnicloud.ip=CIDR".into());
            }
            Address::Dhcp
        }
        Some(cidr) => {
            let ok = cidr.split_once('/').is_some_and(|(a, p)| {
                a.parse::<Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
            });
            if !ok {
                return Err(format!(
                    "omnicloud.ip: \"{cidr}\" is not dhcp or an IPv4 CIDR like 10.0.0.5/24"
                ));
            }
            Address::Static {
                cidr: cidr.to_string(),
                gateway: gw,
            }
        }
    };
    Ok(plan)
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

/// Everything init does for `plan`, in order. `exe` is this binary's path in the image.
pub fn steps(plan: &InitPlan, exe: &str) -> Vec<Step> {
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
    s.extend([
        match &plan.data_device {
            Some(dev) => mount("ext4", dev, DATA_DIR),
            None => mount("tmpfs", "tmpfs", DATA_DIR),
        },
        Step::Hostname {
            name: plan.name.clone(),
        },
        busybox(&["ip", "link", "set", "lo", "up"]),
        busybox(&["ip", "link", "set", &plan.iface, "up"]),
    ]);
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
        }
    }
    let mut argv: Vec<String> = [exe, "node", "--name", &plan.name, "--data-dir", DATA_DIR]
        .iter()
        .map(|a| a.to_string())
        .collect();
    argv.push("--roles".into());
    argv.push(plan.roles.join(","));
    if let Some(config) = &plan.config {
        argv.push("--config".into());
        argv.push(config.display().to_string());
    }
    if !plan.join.is_empty() {
        let token_file = format!("{DATA_DIR}/cluster.token");
        s.push(Step::WriteSecret {
            path: token_file.clone(),
        });
        argv.extend(["--join".into(), plan.join.join(",")]);
        argv.extend(["--token-file".into(), token_file]);
    }
    s.push(Step::Node { argv });
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
        let Some(Step::Node { argv }) = steps.last() else {
            panic!("the node is the last step: {steps:?}")
        };
        assert_eq!(
            argv.join(" "),
            "/init node --name w-0 --data-dir /var/lib/omnicloud --roles agent --join 10.88.0.1:7946 --token-file /var/lib/omnicloud/cluster.token"
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
            let e = plan(cmdline, "n").unwrap_err();
            assert!(e.starts_with(want), "{cmdline}: {e}");
        }
    }
}
