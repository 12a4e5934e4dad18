//! Pull benchmark: `omnicloud image pull` of a ~100 MiB image (4 layers of 25 MiB of
//! random bytes, so nothing compresses) from Debian's docker-registry on loopback, against
//! `skopeo copy` of the same image from the same registry to an OCI layout on the same
//! machine. Each run starts from an empty store / layout; the median of the runs is
//! reported, and the ratio ours / skopeo (below 1: faster).
//!
//! Run: `cargo bench --bench pull` (5 runs each). Without `--bench` (as `cargo test
//! --all-targets` runs it) a smoke run: 1 run each of a 4 MiB image. Needs docker-registry
//! and skopeo; skips loudly without them.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::registry::{skopeo, Registry};
use common::BIN;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an OCI layout at `dir` with image `big` of `layers` uncompressed tar layers of
/// `layer_bytes` random bytes each.
fn make_image(dir: &Path, layers: usize, layer_bytes: usize) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let h = hex(bytes);
        std::fs::write(blobs.join(&h), bytes).unwrap();
        (format!("sha256:{h}"), bytes.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..layers {
        let mut data = vec![0u8; layer_bytes];
        for chunk in data.chunks_mut(8) {
            // xorshift: fast, incompressible enough for a registry benchmark.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = seed.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("data/part{i}"), &data[..])
            .unwrap();
        let layer = tar.into_inner().unwrap();
        let (d, n) = put(&layer);
        diff_ids.push(format!("\"{d}\""));
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#
        ));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (cd, cn) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cn}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (md, mn) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{mn},"annotations":{{"org.opencontainers.image.ref.name":"big"}}}}]}}"#
        ),
    )
    .unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(cmd: &mut std::process::Command) -> Duration {
    let t0 = Instant::now();
    let out = cmd.output().unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, layers, layer_bytes) = if full {
        (5, 4, 25 << 20)
    } else {
        (1, 2, 2 << 20)
    };
    if skopeo("the pull benchmark").is_none() {
        return;
    }
    let Some(registry) = Registry::start("127.0.0.1", "the pull benchmark") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    make_image(&layout, layers, layer_bytes);
    registry.push(&layout, "big", "bench/big:1", None);
    let size_mib = (layers * layer_bytes) as f64 / (1 << 20) as f64;
    let config = work.path().join("node.toml");
    std::fs::write(
        &config,
        format!("[registries]\ninsecure = [\"{}\"]\n", registry.addr),
    )
    .unwrap();
    let reference = format!("{}/bench/big:1", registry.addr);

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..runs {
        let data = work.path().join(format!("ours-{i}"));
        ours.push(run(std::process::Command::new(BIN)
            .args(["image", "pull", &reference, "-o", "json", "--config"])
            .arg(&config)
            .env("OMNICLOUD_DATA_DIR", &data)));
        let _ = std::fs::remove_dir_all(&data);
        let dest = work.path().join(format!("skopeo-{i}"));
        theirs.push(run(std::process::Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:big", dest.display()))));
        let _ = std::fs::remove_dir_all(&dest);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "pull of a {size_mib:.0} MiB image ({layers} layers) from docker-registry on loopback, \
         median of {runs}:\n  omnicloud image pull: {:.0} ms ({:.0} MiB/s)\n  skopeo copy:          \
         {:.0} ms ({:.0} MiB/s)\n  ratio omnicloud / skopeo: {:.2}",
        ours.as_secs_f64() * 1e3,
        size_mib / ours.as_secs_f64(),
        theirs.as_secs_f64() * 1e3,
        size_mib / theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
