//! A Linux tap interface for the virtio-net device: opened through `/dev/net/tun`
//! (`TUNSETIFF`, `IFF_TAP | IFF_NO_PI`: whole Ethernet frames, no extra header; the
//! virtio-net header is handled by the device), non-blocking, optionally enslaved to a
//! Linux bridge, and set up.
//!
//! Lifetime: a tap this VMM creates is not persistent, so the kernel deletes it when its
//! last file descriptor closes: when the [`Tap`] drops, or when the VMM process ends in any
//! way (SIGKILL too). A tap that existed before (a persistent one, `ip tuntap add`) is only
//! attached to, and left as it is.
//!
//! The interface ioctls (`SIOCGIFINDEX`, `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, `SIOCBRADDIF`) go
//! through a throwaway datagram socket, so nothing outside the process (no `ip` binary) is
//! needed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::vmm::{Result, VmmError};

/// Adds an interface to a bridge (`linux/sockios.h`; not in the libc crate for glibc).
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// An open tap interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

/// Does a network interface of this name exist (in this network namespace)?
pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Is the interface a tun/tap device?
pub fn is_tap(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("tun_flags")
        .exists()
}

/// Is the interface a Linux bridge?
pub fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// The bridge the interface is enslaved to, if any.
pub fn master_of(name: &str) -> Option<String> {
    let link = std::fs::read_link(Path::new("/sys/class/net").join(name).join("master")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Is `name` a name Linux accepts for an interface (`dev_valid_name`), and one this VMM
/// can know in advance (no `%d` template)? Returns why not.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "{name:?} is longer than {} bytes",
            libc::IFNAMSIZ - 1
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not an interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{name:?} contains {c:?}"));
    }
    Ok(())
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers, sockaddrs and
    // a pointer); all zeroes is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// A socket for interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we just opened and own exclusively.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One ioctl with an ifreq on `fd`.
fn ioctl_ifreq(fd: RawFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here (TUNSETIFF, SIOCGIFINDEX, SIOC[GS]IFFLAGS,
    // SIOCBRADDIF) reads and writes at most one struct ifreq, and `req` is a valid,
    // exclusively borrowed ifreq for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, request as _, req as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Opens the tap `name`, creating it (not persistent) when no interface of that name
    /// exists; then enslaves it to `bridge` (unless it already is) and sets it up.
    pub fn open(name: &str, bridge: Option<&str>) -> Result<Tap> {
        let what = |doing: &str, e| VmmError::io(format!("{doing} the tap {name}"), e);
        let created = !interface_exists(name);
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| what("opening /dev/net/tun for", e))?;
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        ioctl_ifreq(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req)
            .map_err(|e| what("creating (TUNSETIFF)", e))?;
        let tap = Tap {
            file,
            name: name.to_string(),
            created,
        };
        let sock = ioctl_socket().map_err(|e| what("opening a socket to configure", e))?;
        if let Some(bridge) = bridge {
            if master_of(name).as_deref() != Some(bridge) {
                let mut req = ifreq(name);
                ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req)
                    .map_err(|e| what("finding the index of", e))?;
                // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index.
                let index = unsafe { req.ifr_ifru.ifru_ifindex };
                let mut breq = ifreq(bridge);
                breq.ifr_ifru.ifru_ifindex = index;
                ioctl_ifreq(sock.as_raw_fd(), SIOCBRADDIF, &mut breq).map_err(|e| {
                    VmmError::io(format!("adding the tap {name} to the bridge {bridge}"), e)
                })?;
            }
        }
        let mut req = ifreq(name);
        ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req)
            .map_err(|e| what("reading the flags of", e))?;
        // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        ioctl_ifreq(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req)
            .map_err(|e| what("setting up", e))?;
        Ok(tap)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Did this VMM create the interface (and so the kernel removes it when it closes)?
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Reads one frame; `WouldBlock` when none is queued.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame.
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_as_linux_does() {
        assert!(check_name("tap0").is_ok());
        assert!(check_name("omnivt12345-678").is_ok());
        for bad in [
            "",
            "a-name-too-long-1",
            "a/b",
            "a:b",
            "tap%d",
            "a b",
            ".",
            "..",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_is_an_interface_but_not_a_tap_or_bridge() {
        assert!(interface_exists("lo"));
        assert!(!is_tap("lo"));
        assert!(!is_bridge("lo"));
        assert!(!interface_exists("no-such-if0"));
    }
}
