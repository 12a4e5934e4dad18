//! [`VmSpec`]: what one microVM is made of, as the director hands it to `omnicloud __vmm run`
//! (JSON). [`VmSpec::validate`] refuses a bad spec before any KVM object or process state is
//! created, with an error that names the field, so the caller can show it as is.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::devices::virtio::net::{parse_mac, tap};
use super::{Result, VmmError};

/// The most vCPUs one VM may have (Firecracker's limit too).
pub const MAX_VCPUS: u32 = 32;
/// The smallest guest: the kernel loads at 1 MiB, so less than 2 MiB cannot boot anything.
pub const MIN_MEMORY_MIB: u64 = 2;
/// Room for the command line in guest memory, with its NUL.
pub const CMDLINE_MAX: usize = 4096;
/// Bytes kept free on the command line for the `virtio_mmio.device=` entries the VMM adds.
pub const CMDLINE_RESERVED: usize = 256;

/// One microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Number of vCPUs, 1..=32.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// An ELF vmlinux (or any ELF64 with a 64-bit entry point) or a bzImage.
    pub kernel: PathBuf,
    /// An initial ramdisk, placed at the top of low memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line; the VMM appends the virtio-mmio device entries.
    #[serde(default)]
    pub cmdline: String,
    /// A raw disk image, the guest's virtio-blk device (`/dev/vda` in Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    /// Offer the disk read-only (`VIRTIO_BLK_F_RO`) and open it read-only.
    #[serde(default)]
    pub disk_read_only: bool,
    /// Where the serial console output is appended (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_log: Option<PathBuf>,
    /// Also copy the serial console output to the VMM's stdout.
    #[serde(default)]
    pub serial_stdout: bool,
    /// A Unix socket path the VMM listens on: a client that connects gets the serial output
    /// from then on, and what it writes is the serial input (an attachable console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_socket: Option<PathBuf>,
    /// A virtio-net device on a Linux tap interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetSpec>,
    /// A Unix socket path the VMM listens on for the guest-agent channel, the guest's COM2
    /// (port 0x2f8, IRQ 3): line-based JSON both ways by convention. Output the guest sends
    /// while no client is attached waits (up to 64 KiB) for the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_socket: Option<PathBuf>,
}

/// The guest's network interface: a virtio-net device whose frames go to and come from a
/// Linux tap interface on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// The tap interface (at most 15 bytes). The VMM creates it when no interface of that
    /// name exists, and then the kernel removes it when the VM ends; an existing tap is
    /// attached to and left in place.
    pub tap: String,
    /// The guest's MAC address, `02:xx:xx:xx:xx:xx` (unicast; locally administered ones
    /// are the safe choice), read by the guest from the device's config space.
    pub mac: String,
    /// A Linux bridge (it must exist) the tap is added to; otherwise the tap is left
    /// unattached (the host routes or bridges it itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

impl NetSpec {
    /// Checks the fields against this host; errors name `net.tap`, `net.mac`, `net.bridge`.
    pub fn validate(&self) -> Result<()> {
        tap::check_name(&self.tap).map_err(|m| VmmError::spec("net.tap", m))?;
        if tap::interface_exists(&self.tap) && !tap::is_tap(&self.tap) {
            return Err(VmmError::spec(
                "net.tap",
                format!("{:?} exists and is not a tap interface", self.tap),
            ));
        }
        parse_mac(&self.mac).map_err(|m| VmmError::spec("net.mac", m))?;
        if let Some(bridge) = &self.bridge {
            tap::check_name(bridge).map_err(|m| VmmError::spec("net.bridge", m))?;
            if !tap::interface_exists(bridge) {
                return Err(VmmError::spec(
                    "net.bridge",
                    format!("there is no interface {bridge:?}"),
                ));
            }
            if !tap::is_bridge(bridge) {
                return Err(VmmError::spec(
                    "net.bridge",
                    format!("{bridge:?} is not a Linux bridge"),
                ));
            }
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err(VmmError::spec("net", "/dev/net/tun does not exist here"));
        }
        Ok(())
    }

    /// The MAC as bytes (after [`NetSpec::validate`]).
    pub fn mac_bytes(&self) -> Result<[u8; 6]> {
        parse_mac(&self.mac).map_err(|m| VmmError::spec("net.mac", m))
    }
}

impl VmSpec {
    /// A spec with the defaults for everything but the essentials.
    pub fn new(vcpus: u32, memory_mib: u64, kernel: impl Into<PathBuf>) -> VmSpec {
        VmSpec {
            vcpus,
            memory_mib,
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            disk: None,
            disk_read_only: false,
            serial_log: None,
            serial_stdout: false,
            serial_socket: None,
            net: None,
            agent_socket: None,
        }
    }

    /// Parses JSON, naming the offending field on error.
    pub fn from_json(text: &str) -> Result<VmSpec> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." {
                VmmError::spec("spec", inner)
            } else {
                VmmError::spec(path, inner)
            }
        })
    }

    /// Checks every field against this host; the first problem is the error.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(host_memory_mib())
    }

    /// [`VmSpec::validate`] against a given host memory size (tests).
    pub fn validate_with(&self, host_memory_mib: Option<u64>) -> Result<()> {
        if self.vcpus == 0 {
            return Err(VmmError::spec("vcpus", "must be at least 1"));
        }
        if self.vcpus > MAX_VCPUS {
            return Err(VmmError::spec(
                "vcpus",
                format!("{} is more than the maximum of {MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.memory_mib == 0 {
            return Err(VmmError::spec("memory_mib", "must be more than 0"));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(VmmError::spec(
                "memory_mib",
                format!(
                    "{} MiB is too small (at least {MIN_MEMORY_MIB})",
                    self.memory_mib
                ),
            ));
        }
        if let Some(host) = host_memory_mib {
            if self.memory_mib > host {
                return Err(VmmError::spec(
                    "memory_mib",
                    format!(
                        "{} MiB is more than this host's memory ({host} MiB)",
                        self.memory_mib
                    ),
                ));
            }
        }
        readable_file("kernel", &self.kernel, false)?;
        if let Some(initrd) = &self.initrd {
            readable_file("initrd", initrd, false)?;
        }
        if let Some(disk) = &self.disk {
            readable_file("disk", disk, !self.disk_read_only)?;
        }
        if self.cmdline.len() + CMDLINE_RESERVED >= CMDLINE_MAX {
            return Err(VmmError::spec(
                "cmdline",
                format!(
                    "{} bytes is too long (at most {})",
                    self.cmdline.len(),
                    CMDLINE_MAX - CMDLINE_RESERVED - 1
                ),
            ));
        }
        if self.cmdline.contains('\0') {
            return Err(VmmError::spec("cmdline", "contains a NUL byte"));
        }
        for (field, path) in [
            ("serial_log", &self.serial_log),
            ("serial_socket", &self.serial_socket),
            ("agent_socket", &self.agent_socket),
        ] {
            if let Some(path) = path {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                if let Some(dir) = parent {
                    if !dir.is_dir() {
                        return Err(VmmError::spec(
                            field,
                            format!("{}: the directory does not exist", path.display()),
                        ));
                    }
                }
            }
        }
        if self.agent_socket.is_some() && self.agent_socket == self.serial_socket {
            return Err(VmmError::spec(
                "agent_socket",
                "is the same path as serial_socket",
            ));
        }
        if let Some(net) = &self.net {
            net.validate()?;
        }
        Ok(())
    }
}

/// A regular file that opens for reading (and writing when asked).
fn readable_file(field: &str, path: &Path, write: bool) -> Result<()> {
    let what = |msg: String| VmmError::spec(field, format!("{}: {msg}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| what(e.to_string()))?;
    if !meta.is_file() {
        return Err(what("not a regular file".into()));
    }
    File::options()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| what(e.to_string()))?;
    Ok(())
}

/// MemTotal of this host in MiB, if /proc/meminfo says.
pub fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"\x7fELF").unwrap();
        f
    }

    fn field_of(e: VmmError) -> String {
        match e {
            VmmError::InvalidSpec { field, .. } => field,
            other => panic!("not a spec error: {other}"),
        }
    }

    #[test]
    fn a_good_spec_passes() {
        let k = kernel();
        let spec = VmSpec::new(2, 64, k.path());
        spec.validate_with(Some(1024)).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let k = kernel();
        let good = VmSpec::new(1, 64, k.path());
        let cases: Vec<(&str, VmSpec)> = vec![
            (
                "vcpus",
                VmSpec {
                    vcpus: 0,
                    ..good.clone()
                },
            ),
            (
                "vcpus",
                VmSpec {
                    vcpus: 200,
                    ..good.clone()
                },
            ),
            (
                "memory_mib",
                VmSpec {
                    memory_mib: 0,
                    ..good.clone()
                },
            ),
            (
                "memory_mib",
                VmSpec {
                    memory_mib: 1,
                    ..good.clone()
                },
            ),
            (
                "memory_mib",
                VmSpec {
                    memory_mib: 4096,
                    ..good.clone()
                },
            ),
            (
                "kernel",
                VmSpec {
                    kernel: "/nonexistent/vmlinux".into(),
                    ..good.clone()
                },
            ),
            (
                "kernel",
                VmSpec {
                    kernel: "/".into(),
                    ..good.clone()
                },
            ),
            (
                "initrd",
                VmSpec {
                    initrd: Some("/nonexistent/initrd".into()),
                    ..good.clone()
                },
            ),
            (
                "disk",
                VmSpec {
                    disk: Some("/nonexistent/disk.img".into()),
                    ..good.clone()
                },
            ),
            (
                "cmdline",
                VmSpec {
                    cmdline: "x".repeat(CMDLINE_MAX),
                    ..good.clone()
                },
            ),
            (
                "serial_log",
                VmSpec {
                    serial_log: Some("/nonexistent/dir/serial.log".into()),
                    ..good.clone()
                },
            ),
            (
                "agent_socket",
                VmSpec {
                    agent_socket: Some("/nonexistent/dir/agent.sock".into()),
                    ..good.clone()
                },
            ),
        ];
        let net = |tap: &str, mac: &str, bridge: Option<&str>| VmSpec {
            net: Some(NetSpec {
                tap: tap.into(),
                mac: mac.into(),
                bridge: bridge.map(Into::into),
            }),
            ..good.clone()
        };
        let mac = "02:00:00:00:00:01";
        net("omnivt-unit0", mac, None)
            .validate_with(Some(1024))
            .unwrap();
        let cases = cases.into_iter().chain([
            ("net.tap", net("a-name-too-long-1", mac, None)),
            ("net.tap", net("tap%d", mac, None)),
            ("net.tap", net("lo", mac, None)),
            ("net.mac", net("omnivt-unit0", "02:00:00:00:01", None)),
            ("net.mac", net("omnivt-unit0", "01:00:5e:00:00:01", None)),
            ("net.bridge", net("omnivt-unit0", mac, Some("no-such-br0"))),
            ("net.bridge", net("omnivt-unit0", mac, Some("lo"))),
        ]);
        for (field, spec) in cases {
            let e = spec.validate_with(Some(1024)).unwrap_err();
            let text = e.to_string();
            assert_eq!(field_of(e), field, "{text}");
            assert!(text.contains(field), "{text}");
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let e =
            VmSpec::from_json(r#"{"vcpus": 1, "memory_mib": "lots", "kernel": "/k"}"#).unwrap_err();
        assert_eq!(field_of(e), "memory_mib");
        let e = VmSpec::from_json(r#"{"vcpus": -1, "memory_mib": 8, "kernel": "/k"}"#).unwrap_err();
        assert_eq!(field_of(e), "vcpus");
        let absurd = VmSpec::from_json(r#"{"vcpus": 1000, "memory_mib": 8, "kernel": "/k"}"#);
        let e = absurd.unwrap().validate_with(None).unwrap_err();
        assert!(
            e.to_string()
                .contains("vcpus: 1000 is more than the maximum of 32"),
            "{e}"
        );
        let e = VmSpec::from_json(r#"{"vcpus": 1, "memory_mib": 8, "kernl": "/k"}"#).unwrap_err();
        assert!(e.to_string().contains("kernl"), "{e}");
        let spec = VmSpec::from_json(r#"{"vcpus": 1, "memory_mib": 8, "kernel": "/k"}"#).unwrap();
        assert_eq!(spec, VmSpec::new(1, 8, "/k"));
        let e = VmSpec::from_json(
            r#"{"vcpus": 1, "memory_mib": 8, "kernel": "/k", "net": {"tap": "t0", "mac": 2}}"#,
        )
        .unwrap_err();
        assert_eq!(field_of(e), "net.mac");
        let spec = VmSpec::from_json(
            r#"{"vcpus": 1, "memory_mib": 8, "kernel": "/k", "agent_socket": "/run/a.sock",
                "net": {"tap": "vm0", "mac": "02:00:00:00:00:07", "bridge": "br0"}}"#,
        )
        .unwrap();
        let net = spec.net.as_ref().unwrap();
        assert_eq!(
            (net.tap.as_str(), net.bridge.as_deref()),
            ("vm0", Some("br0"))
        );
        assert_eq!(net.mac_bytes().unwrap(), [2, 0, 0, 0, 0, 7]);
    }
}
