//! VMM benchmark on /dev/kvm with the test guest (scripts/build-test-guest.sh):
//!
//! - process start -> first guest serial byte: spawn `omnicloud __vmm run` with the serial
//!   console on stdout, time until the first byte after its start line (median, p90);
//! - memory overhead: the VM process's RSS (and its anonymous memory) minus what the guest's
//!   memory mapping holds, while the guest waits on its serial port;
//! - VMs started per second: a batch of VMM processes launched at once, until every guest
//!   has printed its first serial byte.
//!
//! Run: `cargo bench --bench vmm` (20 starts, 5 memory samples, 5 batches of 50). Without
//! `--bench` (as `cargo test --all-targets` runs it) a smoke run: 3 starts, 1 sample, one
//! batch of 5. Skips loudly without /dev/kvm or gcc/ld.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omnicloud::vmm::VmSpec;

#[path = "../tests/common/mod.rs"]
mod common;

use common::BIN;
/// An odd size, so no other mapping (a malloc arena is 64 MiB) is taken for the guest's.
const GUEST_MIB: u64 = 72;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn spawn(dir: &Path, spec: &VmSpec) -> Child {
    let path = dir.join("spec.json");
    std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
    Command::new(BIN)
        .args(["__vmm", "run", "--spec"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Start -> first serial byte, once.
fn first_byte(dir: &Path, kernel: &Path) -> Duration {
    let mut spec = VmSpec::new(1, GUEST_MIB, kernel);
    spec.serial_stdout = true;
    let t = Instant::now();
    let mut child = spawn(dir, &spec);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut start_line = String::new();
    out.read_line(&mut start_line).unwrap();
    assert!(start_line.starts_with("{\"pid\""), "{start_line}");
    let mut byte = [0u8; 1];
    out.read_exact(&mut byte).unwrap();
    let took = t.elapsed();
    assert_eq!(byte[0], b'o', "the guest's banner starts with 'o'");
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    took
}

/// kB of `field` summed over the mappings of /proc/PID/smaps, all and the guest's.
fn smaps(pid: u32, field: &str, guest_kb: u64) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut total, mut guest) = (0, 0);
    let mut in_guest = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        if key.contains('-') && !key.ends_with(':') {
            in_guest = false; // a new mapping; its Size line tells whether it is the guest's
            continue;
        }
        let value: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if key == "Size:" {
            in_guest = value == guest_kb;
        }
        if key == field {
            total += value;
            if in_guest {
                guest += value;
            }
        }
    }
    (total, guest)
}

/// (RSS overhead, anonymous overhead, guest RSS) in KiB while the guest waits. The rest of
/// the RSS overhead is file-backed: the omnicloud binary's text and the shared libraries,
/// page cache shared with every other process running them.
fn memory_overhead(dir: &Path, kernel: &Path) -> (u64, u64, u64) {
    let mut spec = VmSpec::new(1, GUEST_MIB, kernel);
    spec.cmdline = "omnicloud.wait".into();
    spec.serial_stdout = true;
    let mut child = spawn(dir, &spec);
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("waiting for a serial byte") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the guest never waited"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    let guest_kb = GUEST_MIB * 1024;
    let (rss, guest_rss) = smaps(pid, "Rss:", guest_kb);
    let (anon, guest_anon) = smaps(pid, "Anonymous:", guest_kb);
    child.kill().unwrap();
    child.wait().unwrap();
    (rss - guest_rss, anon - guest_anon, guest_rss)
}

/// VMs started per second: `n` VMM processes launched at once, each counted as started at
/// its guest's first serial byte; the rate is n over the time until the last one. Each VM
/// holds (halted, no CPU) until it is killed, so all `n` run together.
fn starts_per_second(dir: &Path, kernel: &Path, n: usize) -> f64 {
    let t = Instant::now();
    let mut children: Vec<Child> = (0..n)
        .map(|i| {
            let sub = dir.join(format!("rate-{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            let mut spec = VmSpec::new(1, 16, kernel);
            spec.cmdline = "omnicloud.hold".into();
            spec.serial_stdout = true;
            spawn(&sub, &spec)
        })
        .collect();
    for child in children.iter_mut() {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let mut byte = [0u8; 1];
        out.read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], b'o');
    }
    let took = t.elapsed();
    for mut c in children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    n as f64 / took.as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (starts, samples) = if full { (20, 5) } else { (3, 1) };
    let dir = tempfile::tempdir().unwrap();
    let kernel = match common::guest::build() {
        Ok(k) => k,
        Err(why) => {
            if std::env::var("OMNICLOUD_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("the VMM bench needs /dev/kvm, gcc and ld: {why}");
            }
            eprintln!("\n!!! SKIPPED: the VMM bench needs /dev/kvm, gcc and ld: {why}\n");
            return;
        }
    };

    first_byte(dir.path(), &kernel); // warm the page cache
    let mut lat: Vec<Duration> = (0..starts)
        .map(|_| first_byte(dir.path(), &kernel))
        .collect();
    lat.sort();
    println!(
        "vmm: process start -> first serial byte, {starts} runs: median {:.2} ms   p90 {:.2} ms   (target <= 10 ms)",
        ms(lat[lat.len() / 2]),
        ms(lat[((lat.len() - 1) as f64 * 0.9).round() as usize]),
    );

    let batch = if full { 50 } else { 5 };
    let mut rates: Vec<f64> = (0..samples)
        .map(|_| starts_per_second(dir.path(), &kernel, batch))
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "vmm: VMs started per second ({batch} launched at once, 16 MiB guests, until every guest's first serial byte): median {:.0}/s",
        rates[rates.len() / 2]
    );

    let mut rss = Vec::new();
    let mut anon = Vec::new();
    let mut guest = 0;
    for _ in 0..samples {
        let (r, p, g) = memory_overhead(dir.path(), &kernel);
        rss.push(r);
        anon.push(p);
        guest = g;
    }
    rss.sort();
    anon.sort();
    println!(
        "vmm: memory overhead beyond guest memory ({GUEST_MIB} MiB guest, {guest} KiB of it touched): \
         RSS {:.2} MiB (of which anonymous {:.2} MiB; the rest is the binary's and libraries' \
         text, page cache shared by all VM processes)   (target <= 3 MiB)",
        rss[rss.len() / 2] as f64 / 1024.0,
        anon[anon.len() / 2] as f64 / 1024.0,
    );
}
