//! Who a container's process runs as and with which privileges, from `securityContext`:
//! user and group over the image's, a read-only root filesystem, the capability set
//! (containerd's defaults with additions and removals, or every one when privileged).

use oci_spec::runtime::Capability;
use serde::{Deserialize, Serialize};

use super::spec::default_capabilities;
use super::{ContainerError, Result};

/// Who the process runs as and with which privileges (`securityContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Over the image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Capability names (`NET_ADMIN`) added to the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capability names taken from the defaults; `ALL` takes them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Every capability, no masked or read-only kernel paths.
    #[serde(default)]
    pub privileged: bool,
}

impl Security {
    pub fn is_default(&self) -> bool {
        *self == Security::default()
    }

    /// The capability set: every one when privileged, else the defaults without `drop`
    /// (all of them for `ALL`) plus `add`.
    pub fn capabilities(&self) -> Result<Vec<Capability>> {
        use std::str::FromStr;
        let parse = |n: &String| {
            Capability::from_str(n.trim_start_matches("CAP_"))
                .map_err(|_| ContainerError::InvalidSpec(format!("unknown capability {n:?}")))
        };
        if self.privileged {
            return Ok(ALL_CAPABILITIES
                .iter()
                .filter_map(|n| Capability::from_str(n).ok())
                .collect());
        }
        let mut caps = if self.cap_drop.iter().any(|d| d == "ALL") {
            Vec::new()
        } else {
            let drop = (self.cap_drop.iter())
                .map(parse)
                .collect::<Result<Vec<_>>>()?;
            let mut d = default_capabilities();
            d.retain(|c| !drop.contains(c));
            d
        };
        for c in self.cap_add.iter().filter(|c| *c != "ALL") {
            let c = parse(c)?;
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        if self.cap_add.iter().any(|c| c == "ALL") {
            return Security {
                privileged: true,
                ..Security::default()
            }
            .capabilities();
        }
        Ok(caps)
    }
}

/// Every Linux capability (privileged containers).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];
