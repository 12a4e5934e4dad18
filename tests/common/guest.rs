//! The VMM test guest (images/test-guest), built once per test binary by
//! `scripts/build-test-guest.sh` into `CARGO_TARGET_TMPDIR/vmm-test-guest`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the guest where VMs can run: Err says why not (no /dev/kvm, gcc or ld).
pub fn build() -> Result<PathBuf, String> {
    static GUEST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(|e| format!("/dev/kvm: {e}"))?;
            // One dir for every run: the script replaces its outputs atomically.
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmm-test-guest");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-guest.sh");
            let run = Command::new("bash")
                .arg(&script)
                .arg(&out)
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            if !run.status.success() {
                return Err(format!(
                    "building the test guest: {}",
                    String::from_utf8_lossy(&run.stderr).trim()
                ));
            }
            Ok(out.join("test-guest.elf"))
        })
        .clone()
}

/// The guest ELF; None (after a loud skip, or a failure under OMNICLOUD_REQUIRE_ALL=1)
/// where VMs cannot run here.
pub fn elf() -> Option<PathBuf> {
    match build() {
        Ok(path) => Some(path),
        Err(why) => {
            super::netns::require("/dev/kvm, gcc and ld (the VMM test guest)", why);
            None
        }
    }
}
