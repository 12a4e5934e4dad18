//! The ports a guest uses to end the VM:
//!
//! - i8042 (0x60 data, 0x64 command), vm-superio's device: command 0xfe pulses the CPU
//!   reset line. This is how Linux reboots under Firecracker (`reboot=k`), and the VM ends.
//! - 0xcf9, the reset control register: a write with bit 2 (RST_CPU) set resets.
//! - 0x604, the ACPI PM1a control port of QEMU's q35 machine: a write with bit 13 (SLP_EN)
//!   set powers off. Guests without ACPI (the test guest, small kernels) write 0x2000 there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::I8042Device;

pub const I8042_DATA: u16 = 0x60;
pub const I8042_COMMAND: u16 = 0x64;
pub const RESET_CONTROL: u16 = 0xcf9;
pub const POWEROFF_PORT: u16 = 0x604;
/// SLP_EN in PM1a control.
pub const POWEROFF_BIT: u32 = 1 << 13;
const RST_CPU: u8 = 1 << 2;

/// The i8042's reset "interrupt": remembers that the guest asked for a reset.
#[derive(Debug, Clone, Default)]
pub struct ResetFlag(Arc<AtomicBool>);

impl vm_superio::Trigger for ResetFlag {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// What a legacy port write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyAction {
    None,
    Poweroff,
    Reset,
}

pub struct Legacy {
    i8042: I8042Device<ResetFlag>,
    reset: ResetFlag,
}

impl Default for Legacy {
    fn default() -> Self {
        Self::new()
    }
}

impl Legacy {
    pub fn new() -> Legacy {
        let reset = ResetFlag::default();
        Legacy {
            i8042: I8042Device::new(reset.clone()),
            reset,
        }
    }

    /// Fills `data` for the ports emulated here; false for any other port.
    pub fn read(&mut self, port: u16, data: &mut [u8]) -> bool {
        match port {
            I8042_DATA | I8042_COMMAND => {
                data.fill(0);
                data[0] = self.i8042.read((port - I8042_DATA) as u8);
                true
            }
            RESET_CONTROL | POWEROFF_PORT => {
                data.fill(0);
                true
            }
            _ => false,
        }
    }

    pub fn write(&mut self, port: u16, data: &[u8]) -> LegacyAction {
        match port {
            I8042_DATA | I8042_COMMAND => {
                let _ = self.i8042.write((port - I8042_DATA) as u8, data[0]);
                if self.reset.0.swap(false, Ordering::SeqCst) {
                    LegacyAction::Reset
                } else {
                    LegacyAction::None
                }
            }
            RESET_CONTROL if data[0] & RST_CPU != 0 => LegacyAction::Reset,
            POWEROFF_PORT | 0x605 => {
                let mut bytes = [0u8; 4];
                let shift = usize::from(port - POWEROFF_PORT);
                for (i, b) in data.iter().enumerate().take(4 - shift) {
                    bytes[i + shift] = *b;
                }
                if u32::from_le_bytes(bytes) & POWEROFF_BIT != 0 {
                    LegacyAction::Poweroff
                } else {
                    LegacyAction::None
                }
            }
            _ => LegacyAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_that_end_the_vm() {
        let mut l = Legacy::new();
        assert_eq!(l.write(I8042_COMMAND, &[0xfe]), LegacyAction::Reset);
        assert_eq!(l.write(I8042_COMMAND, &[0x20]), LegacyAction::None);
        assert_eq!(l.write(I8042_DATA, &[0xfe]), LegacyAction::None);
        assert_eq!(l.write(RESET_CONTROL, &[0x06]), LegacyAction::Reset);
        assert_eq!(l.write(RESET_CONTROL, &[0x02]), LegacyAction::None);
        assert_eq!(
            l.write(POWEROFF_PORT, &[0x00, 0x20]),
            LegacyAction::Poweroff
        );
        assert_eq!(l.write(0x605, &[0x20]), LegacyAction::Poweroff);
        assert_eq!(l.write(POWEROFF_PORT, &[0x00, 0x00]), LegacyAction::None);
        let mut b = [0xffu8; 1];
        assert!(l.read(I8042_COMMAND, &mut b));
        assert_eq!(b[0], 0);
        assert!(!l.read(0x80, &mut b));
    }
}
