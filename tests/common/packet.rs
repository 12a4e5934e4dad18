//! Raw Ethernet for VM network tests: a Linux bridge made for one test (deleted on drop)
//! and an AF_PACKET socket bound to it for one ethertype, to see the frames a VM sends
//! through its tap and to send it frames back. Needs root and `ip`; without them the test
//! skips loudly (fails under OMNICLOUD_REQUIRE_ALL=1).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses: `omnivt<prefix><pid><n>`, at most 15 bytes.
pub fn unique_ifname(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let name = format!("omnivt{prefix}{}{n}", std::process::id() % 10000);
    assert!(name.len() < 16, "{name}");
    name
}

pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The bridge an interface is enslaved to.
pub fn master_of(name: &str) -> Option<String> {
    let link = std::fs::read_link(Path::new("/sys/class/net").join(name).join("master")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes an interface when dropped.
pub struct DeleteLink(pub String);

impl Drop for DeleteLink {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.0]);
    }
}

/// A Linux bridge, up, forwarding at once, without IPv6 chatter.
pub struct TestBridge {
    pub name: String,
}

impl TestBridge {
    /// None (after a loud skip) where bridges cannot be made.
    pub fn new() -> Option<TestBridge> {
        let name = unique_ifname("b");
        let made = ip(&["link", "add", &name, "type", "bridge", "forward_delay", "0"]);
        if let Err(why) = made {
            super::netns::require("root and ip (a Linux bridge)", why);
            return None;
        }
        let bridge = TestBridge { name };
        let sysctl = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", bridge.name);
        let _ = std::fs::write(sysctl, "1");
        ip(&["link", "set", &bridge.name, "up"]).unwrap();
        Some(bridge)
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

/// An AF_PACKET socket on one interface for one ethertype.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn bind(ifname: &str, ethertype: u16) -> io::Result<PacketSocket> {
        // The index in the calling thread's network namespace (/sys/class/net shows the
        // namespace /sys was mounted in, not a thread's that entered another).
        let name = std::ffi::CString::new(ifname)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: if_nametoindex(3) reads the NUL-terminated name, valid for the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let protocol = ethertype.to_be();
        // SAFETY: socket(2) with plain integer arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index;
        // SAFETY: addr is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// The next frame (whole, from the destination MAC on) within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if ready <= 0 {
                continue;
            }
            // SAFETY: buf is valid for buf.len() writable bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                buf.truncate(n as usize);
                return Some(buf);
            }
        }
    }

    /// Sends one whole frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid for frame.len() readable bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl PacketSocket {
    /// [`PacketSocket::bind`] on an interface of network namespace `netns` (a path such
    /// as `/run/netns/NAME`): bound from a thread that entered it; usable from any thread.
    pub fn bind_in(netns: &str, ifname: &str, ethertype: u16) -> io::Result<PacketSocket> {
        let ns = std::fs::File::open(netns)?;
        let ifname = ifname.to_string();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            PacketSocket::bind(&ifname, ethertype)
        })
        .join()
        .expect("binding thread")
    }
}

/// Whether `frame` is an Ethernet frame to `mac` carrying an IPv4 TCP SYN to `ip:port`.
pub fn is_tcp_syn_to(frame: &[u8], mac: &[u8; 6], ip: std::net::Ipv4Addr, port: u16) -> bool {
    let ihl = usize::from(frame.get(14).copied().unwrap_or(0) & 0x0f) * 4;
    let tcp = 14 + ihl;
    frame.len() >= tcp + 14
        && frame[..6] == mac[..]
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 6
        && frame[30..34] == ip.octets()
        && u16::from_be_bytes([frame[tcp + 2], frame[tcp + 3]]) == port
        && frame[tcp + 13] & 0x02 != 0
}
