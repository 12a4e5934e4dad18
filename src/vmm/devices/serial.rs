//! 16550 UARTs (vm-superio), each behind a Unix socket clients can attach to:
//!
//! - COM1 at port 0x3f8, IRQ 4, the console: what the guest writes goes to the serial log
//!   file, to stdout when asked, and to every client attached to the console socket.
//! - COM2 at port 0x2f8, IRQ 3, the guest-agent channel (`agent_socket`): what the guest
//!   writes goes to every attached client; while none is attached it is kept (up to
//!   [`AGENT_BACKLOG`] bytes) and handed to the next client that attaches, so an agent's
//!   first line is not lost before the host connects. By convention the channel carries
//!   line-based JSON both ways; the VMM does not look inside.
//!
//! On both, what an attached client writes is the guest's input on that port.
//!
//! Output is written byte by byte as the guest sends it (unbuffered), so the log is always
//! current and the first byte is visible at once. A client that does not read fast enough
//! loses output rather than stalling the vCPU (sends are non-blocking).
//!
//! Threads: per socket an accept loop, and one reader per attached client.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::{lock, IrqLine};
use crate::vmm::vm::VmMetrics;
use crate::vmm::{Result, VmmError};

/// Agent-channel output kept while no client is attached.
pub const AGENT_BACKLOG: usize = 64 * 1024;

/// The clients attached to one port, and what waits for the next one (agent only).
#[derive(Default)]
struct Attached {
    streams: Vec<UnixStream>,
    backlog: Vec<u8>,
}

/// Where serial output goes.
pub struct SerialOut {
    log: Option<File>,
    stdout: bool,
    /// The agent channel: keeps a backlog, counts as agent bytes.
    agent: bool,
    attached: Arc<Mutex<Attached>>,
    metrics: Arc<VmMetrics>,
}

impl SerialOut {
    /// The console's output.
    pub fn new(log: Option<File>, stdout: bool, metrics: Arc<VmMetrics>) -> SerialOut {
        SerialOut {
            log,
            stdout,
            agent: false,
            attached: Arc::default(),
            metrics,
        }
    }

    /// The agent channel's output: attached clients only.
    pub fn agent(metrics: Arc<VmMetrics>) -> SerialOut {
        SerialOut {
            agent: true,
            ..SerialOut::new(None, false, metrics)
        }
    }

    fn count_lost(&self, n: usize) {
        if self.agent {
            self.metrics.count_agent_lost(n);
        } else {
            self.metrics.count_serial_lost();
        }
    }
}

impl Write for SerialOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.agent {
            self.metrics.count_agent_out(buf.len());
        } else {
            self.metrics.count_serial_out(buf.len());
        }
        if let Some(log) = &mut self.log {
            log.write_all(buf)?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(buf)?;
            out.flush()?;
        }
        let mut attached = lock(&self.attached);
        if !attached.streams.is_empty() {
            attached.streams.retain(|c| send_nonblocking(c, buf));
        } else if self.agent {
            let room = AGENT_BACKLOG - attached.backlog.len();
            let kept = buf.len().min(room);
            attached.backlog.extend_from_slice(&buf[..kept]);
            drop(attached);
            if kept < buf.len() {
                self.count_lost(buf.len() - kept);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends without blocking (a slow client loses bytes) and without SIGPIPE; false when the
/// client is gone. The socket itself stays blocking for the client's reader thread.
fn send_nonblocking(client: &UnixStream, buf: &[u8]) -> bool {
    // SAFETY: the fd is a live socket owned by `client`; buf is valid for buf.len() bytes.
    let n = unsafe {
        libc::send(
            client.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// The UART and its output.
pub struct SerialDevice {
    uart: Serial<IrqLine, NoEvents, SerialOut>,
}

impl SerialDevice {
    pub fn new(irq: IrqLine, out: SerialOut) -> SerialDevice {
        SerialDevice {
            uart: Serial::new(irq, out),
        }
    }

    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// A register write; a failed output write is dropped (the guest cannot be told).
    pub fn write(&mut self, offset: u8, value: u8) {
        if self.uart.write(offset, value).is_err() {
            self.uart.writer().count_lost(1);
        }
    }

    /// Queues guest input; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    fn attached(&self) -> Arc<Mutex<Attached>> {
        self.uart.writer().attached.clone()
    }

    fn is_agent(&self) -> bool {
        self.uart.writer().agent
    }
}

/// Listens on `path` (replacing a stale socket) and attaches each client that connects.
pub fn listen(path: &Path, serial: Arc<Mutex<SerialDevice>>) -> Result<()> {
    let (what, thread) = if lock(&serial).is_agent() {
        ("agent", "vmm-agent")
    } else {
        ("console", "vmm-console")
    };
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| {
        VmmError::io(
            format!("listening on the {what} socket {}", path.display()),
            e,
        )
    })?;
    // The threads hold the UART weakly: they never keep a dropped VM (and its KVM fd) alive.
    let clients = Arc::downgrade(&lock(&serial).attached());
    let serial = Arc::downgrade(&serial);
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                let Some(clients) = clients.upgrade() else {
                    return; // the VM is gone
                };
                {
                    let mut attached = lock(&clients);
                    let backlog = std::mem::take(&mut attached.backlog);
                    if backlog.is_empty() || send_nonblocking(&writer, &backlog) {
                        attached.streams.push(writer);
                    }
                }
                let serial = serial.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("{thread}-in"))
                    .spawn(move || feed_input(stream, serial));
            }
        })
        .map_err(|e| VmmError::io(format!("starting the {what} thread"), e))?;
    Ok(())
}

/// Copies what a client writes into the UART's receive FIFO, waiting while it is full.
fn feed_input(mut stream: UnixStream, serial: Weak<Mutex<SerialDevice>>) {
    let mut buf = [0u8; 64];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let Some(uart) = serial.upgrade() else {
                return;
            };
            let taken = lock(&uart).enqueue_input(rest);
            rest = &rest[taken..];
            if !rest.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_channel_keeps_output_for_the_next_client() {
        let metrics = Arc::new(VmMetrics::default());
        let mut out = SerialOut::agent(metrics.clone());
        out.write_all(b"{}\n").unwrap();
        assert_eq!(lock(&out.attached).backlog, b"{}\n");
        out.write_all(&vec![b'x'; AGENT_BACKLOG]).unwrap();
        assert_eq!(lock(&out.attached).backlog.len(), AGENT_BACKLOG);
        let m = metrics.snapshot();
        assert_eq!(m.agent_out_bytes, 3 + AGENT_BACKLOG as u64);
        assert_eq!((m.agent_lost_bytes, m.serial_out_bytes), (3, 0));

        let mut console = SerialOut::new(None, false, metrics.clone());
        console.write_all(b"boot\n").unwrap();
        assert!(
            lock(&console.attached).backlog.is_empty(),
            "the console keeps none"
        );
        assert_eq!(metrics.snapshot().serial_out_bytes, 5);
    }
}
