//! The test images (busybox, toolbox), built once per test binary by
//! `scripts/build-images.sh` into `CARGO_TARGET_TMPDIR/images`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static IMAGES: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The OCI layout holding busybox:latest and toolbox:latest; None (after a loud skip, or a
/// failure under OMNICLOUD_REQUIRE_ALL=1) where they cannot be built or run.
pub fn layout() -> Option<PathBuf> {
    if !omnicloud::config::is_root() {
        super::netns::require(
            "root",
            "containers need namespaces, cgroups and mounts".into(),
        );
        return None;
    }
    let built = IMAGES.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-images.sh");
        let result = std::process::Command::new("sh")
            .arg(&script)
            .arg(&out)
            .env("OMNICLOUD_BIN", super::BIN)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !result.status.success() {
            return Err(format!(
                "build-images.sh failed: {}",
                String::from_utf8_lossy(&result.stderr).trim()
            ));
        }
        eprint!("{}", String::from_utf8_lossy(&result.stderr));
        Ok(out)
    });
    match built {
        Ok(p) => Some(p.clone()),
        Err(e) => {
            super::netns::require("the test images (busybox-static)", e.clone());
            None
        }
    }
}

/// Imports the test images into the node store of `data_dir` (`omnicloud image import`).
pub fn import(data_dir: &Path, layout: &Path) {
    let out = std::process::Command::new(super::BIN)
        .args(["image", "import", layout.to_str().unwrap()])
        .env("OMNICLOUD_DATA_DIR", data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static DEBIAN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The OCI layout of third-party images packed from Debian packages (tag `redis`), built
/// once per test binary by `scripts/build-debian-images.sh`; None (after a loud skip, or a
/// failure under OMNICLOUD_REQUIRE_ALL=1) where umoci or the packages are missing.
pub fn debian_layout() -> Option<PathBuf> {
    let built = DEBIAN.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-images");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-debian-images.sh");
        let result = std::process::Command::new("sh")
            .arg(&script)
            .arg(&out)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !result.status.success() {
            return Err(format!(
                "build-debian-images.sh failed: {}",
                String::from_utf8_lossy(&result.stderr).trim()
            ));
        }
        eprint!("{}", String::from_utf8_lossy(&result.stderr));
        Ok(out)
    });
    match built {
        Ok(p) => Some(p.clone()),
        Err(e) => {
            super::netns::require("Debian images (umoci, apt-get download)", e.clone());
            None
        }
    }
}
