//! vCPU threads. Each vCPU runs on its own OS thread in a small state machine (Firecracker's
//! `VcpuRunState`): **running** (`KVM_RUN` in a loop, each exit handed to the device buses),
//! **paused** (waiting for an event), **stopped** (the guest ended the VM or the vCPU
//! failed; waiting to be told to exit). The VM sends [`VcpuEvent`]s over a channel and then
//! kicks the thread with a real-time signal so a vCPU inside `KVM_RUN` notices at once; the
//! thread answers with [`VcpuResponse`]s.
//!
//! The kick: the signal handler sets `kvm_run.immediate_exit` of the vCPU on that thread
//! (found through a thread-local pointer). If the signal lands while the thread is outside
//! `KVM_RUN`, the next `KVM_RUN` returns at once with EINTR, so no kick is lost between
//! checking the channel and entering the guest.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::devices::{BusAction, Devices};
use super::vm::ExitReason;
use super::{Result, VmmError};

/// What the VM asks of a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuEvent {
    Pause,
    Resume,
    /// End the thread.
    Stop,
}

/// What a vCPU thread reports (with its index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuResponse {
    Paused(u8),
    Resumed(u8),
    /// The vCPU stopped running the guest, and why.
    Exited(u8, ExitReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Running,
    Paused,
    Stopped,
}

/// What one `KVM_RUN` came to.
enum Step {
    Continue,
    Interrupted,
    Exit(ExitReason),
}

thread_local! {
    /// This thread's `kvm_run` area, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|cell| {
        let run = cell.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's own mmapped kvm_run area, set by the vCPU
            // thread before it first enters KVM_RUN and cleared before the VcpuFd (which owns
            // the mapping) is dropped. A volatile byte store is async-signal-safe.
            unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
        }
    });
    fence(Ordering::SeqCst);
}

/// Installs the kick handler once per process.
fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; we set the handler and flags, empty the mask,
        // and pass valid pointers to sigaction(2). The handler only does a volatile store.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = kick_handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) != 0 {
                result = Err(VmmError::io(
                    "installing the vCPU kick signal handler",
                    std::io::Error::last_os_error(),
                ));
            }
        }
    });
    result
}

/// A vCPU and what its exits go to.
pub struct Vcpu {
    pub index: u8,
    pub fd: VcpuFd,
    pub devices: Arc<Devices>,
}

impl Vcpu {
    /// Runs the guest until one exit, and handles it.
    fn step(&mut self) -> Step {
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                return Step::Interrupted;
            }
            Err(e) => {
                return Step::Exit(ExitReason::Failed(format!(
                    "vCPU {}: KVM_RUN failed: {e}",
                    self.index
                )))
            }
        };
        let failure = match exit {
            VcpuExit::IoIn(port, data) => {
                self.devices.pio_read(port, data);
                return Step::Continue;
            }
            VcpuExit::IoOut(port, data) => {
                return match self.devices.pio_write(port, data) {
                    BusAction::Continue => Step::Continue,
                    BusAction::Poweroff => Step::Exit(ExitReason::Poweroff),
                    BusAction::Reset => Step::Exit(ExitReason::Reset),
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                self.devices.mmio_read(addr, data);
                return Step::Continue;
            }
            VcpuExit::MmioWrite(addr, data) => {
                self.devices.mmio_write(addr, data);
                return Step::Continue;
            }
            VcpuExit::Intr => return Step::Interrupted,
            VcpuExit::Shutdown => {
                return Step::Exit(ExitReason::Crashed(
                    "triple fault (KVM shutdown exit)".into(),
                ))
            }
            VcpuExit::SystemEvent(kind, _) => {
                return Step::Exit(match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::Poweroff,
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => ExitReason::Reset,
                    other => ExitReason::Crashed(format!("KVM system event {other}")),
                })
            }
            VcpuExit::Hlt => "halted without an in-kernel interrupt controller".to_string(),
            VcpuExit::FailEntry(reason, cpu) => {
                format!("KVM entry failed (hardware reason {reason:#x}, host cpu {cpu})")
            }
            VcpuExit::InternalError => "KVM internal error (instruction emulation)".to_string(),
            other => format!("unexpected KVM exit {other:?}"),
        };
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        Step::Exit(ExitReason::Crashed(format!(
            "vCPU {}: {failure} at rip {rip:#x}",
            self.index
        )))
    }

    /// The thread body: the run-state machine.
    fn run_loop(mut self, events: Receiver<VcpuEvent>, responses: Sender<VcpuResponse>) {
        let run: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|cell| cell.set(run));
        let mut state = RunState::Running;
        loop {
            match state {
                RunState::Running => {
                    match events.try_recv() {
                        Ok(VcpuEvent::Pause) => {
                            state = RunState::Paused;
                            let _ = responses.send(VcpuResponse::Paused(self.index));
                            continue;
                        }
                        Ok(VcpuEvent::Stop) | Err(TryRecvError::Disconnected) => break,
                        Ok(VcpuEvent::Resume) | Err(TryRecvError::Empty) => {}
                    }
                    match self.step() {
                        Step::Continue | Step::Interrupted => {}
                        Step::Exit(reason) => {
                            state = RunState::Stopped;
                            let _ = responses.send(VcpuResponse::Exited(self.index, reason));
                        }
                    }
                }
                RunState::Paused => match events.recv() {
                    Ok(VcpuEvent::Resume) => {
                        state = RunState::Running;
                        let _ = responses.send(VcpuResponse::Resumed(self.index));
                    }
                    Ok(VcpuEvent::Pause) => {
                        let _ = responses.send(VcpuResponse::Paused(self.index));
                    }
                    Ok(VcpuEvent::Stop) | Err(_) => break,
                },
                RunState::Stopped => match events.recv() {
                    Ok(VcpuEvent::Stop) | Err(_) => break,
                    Ok(_) => {}
                },
            }
        }
        KVM_RUN.with(|cell| cell.set(std::ptr::null_mut()));
    }
}

/// The VM's side of one vCPU thread.
pub struct VcpuHandle {
    pub index: u8,
    events: Sender<VcpuEvent>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Starts the vCPU's thread, running.
    pub fn spawn(vcpu: Vcpu, responses: Sender<VcpuResponse>) -> Result<VcpuHandle> {
        install_kick_handler()?;
        let index = vcpu.index;
        let (events, rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .stack_size(256 * 1024)
            .spawn(move || vcpu.run_loop(rx, responses))
            .map_err(|e| VmmError::io(format!("starting the thread of vCPU {index}"), e))?;
        Ok(VcpuHandle {
            index,
            events,
            thread: Some(thread),
        })
    }

    /// Sends an event and kicks the thread out of `KVM_RUN`.
    pub fn send(&self, event: VcpuEvent) {
        if self.events.send(event).is_ok() {
            self.kick();
        }
    }

    fn kick(&self) {
        if let Some(thread) = &self.thread {
            // SAFETY: the pthread_t belongs to a thread we have not joined yet, so it is
            // valid; the signal's handler is installed before any vCPU thread starts.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
        }
    }

    /// Stops the thread and waits for it.
    pub fn join(&mut self) {
        self.send(VcpuEvent::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        self.join();
    }
}
