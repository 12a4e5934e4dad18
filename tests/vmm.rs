//! The built-in VMM on this machine's real /dev/kvm: the purpose-built test guest
//! (images/test-guest, built by scripts/build-test-guest.sh once per test binary) boots
//! through the Linux 64-bit boot protocol in an `omnicloud __vmm run` process and prints
//! what it was given on its serial port (cmdline, e820 map, initrd, virtio-blk sectors,
//! the frame virtio-net received, the line the agent channel carried); the tests assert
//! that output, the process's exit status and that nothing is left behind (processes,
//! sockets, tap interfaces). The guest is built both as an ELF (vmlinux-style) and as a
//! bzImage. The network tests make their own Linux bridge and watch it with an AF_PACKET
//! socket. Without /dev/kvm, gcc or ld (or root and `ip` for the network tests) a test
//! skips loudly, and fails when OMNICLOUD_REQUIRE_ALL=1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::packet::{self, PacketSocket, TestBridge};
use omnicloud::vmm::spec::NetSpec;
use omnicloud::vmm::{ExitReason, VmSpec};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_omnicloud");
const MIB: u64 = 1 << 20;

fn guest() -> Option<PathBuf> {
    common::guest::elf()
}

/// A temp dir with a spec for the test guest in it.
struct Case {
    dir: tempfile::TempDir,
    spec: VmSpec,
}

impl Case {
    fn new(kernel: &Path, memory_mib: u64, cmdline: &str) -> Case {
        let dir = tempfile::Builder::new()
            .prefix("vmm-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let mut spec = VmSpec::new(1, memory_mib, kernel);
        spec.cmdline = cmdline.into();
        spec.serial_log = Some(dir.path().join("serial.log"));
        Case { dir, spec }
    }

    /// A raw disk whose sectors 0 and 1 start with the given lines.
    fn with_disk(mut self, sector0: &str, sector1: &str) -> Case {
        let mut image = vec![0u8; 64 * 1024];
        image[..sector0.len()].copy_from_slice(sector0.as_bytes());
        image[512..512 + sector1.len()].copy_from_slice(sector1.as_bytes());
        let path = self.dir.path().join("disk.img");
        std::fs::write(&path, image).unwrap();
        self.spec.disk = Some(path);
        self.spec.disk_read_only = true;
        self
    }

    fn spec_path(&self) -> PathBuf {
        let path = self.dir.path().join("spec.json");
        std::fs::write(&path, serde_json::to_vec(&self.spec).unwrap()).unwrap();
        path
    }

    fn spawn(&self) -> Child {
        Command::new(BIN)
            .args(["__vmm", "run", "--spec"])
            .arg(self.spec_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs the VM to its end (at most 30 s): exit status, stdout, stderr.
    fn run(&self) -> (ExitStatus, String, String) {
        let child = self.spawn();
        finish(child, Duration::from_secs(30))
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }

    /// Waits until the serial log contains `text`.
    fn wait_serial(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.serial().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the serial log: {}",
                self.serial()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits for a child with a deadline (killing it past the deadline) and collects its output.
fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("the VM process did not end within {limit:?} ({status})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

/// The e820 lines the test guest prints for a VM of `mib` MiB (the VMM's layout).
fn expected_e820(mib: u64) -> Vec<String> {
    let mem = mib * MIB;
    let gap = 0xd000_0000u64;
    let mut entries = vec![(0u64, 0x9fc00u64)];
    if mem <= gap {
        entries.push((0x10_0000, mem - 0x10_0000));
    } else {
        entries.push((0x10_0000, gap - 0x10_0000));
        entries.push((1 << 32, mem - gap));
    }
    let mut lines = vec![format!("e820 entries: {}", entries.len())];
    lines.extend(
        entries
            .iter()
            .map(|(addr, size)| format!("e820: {addr:#018x} {size:#018x} 1")),
    );
    lines
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Processes whose command line mentions `needle` (the spec path of one test).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

fn token() -> String {
    format!("{:x}", rand::random::<u64>())
}

#[test]
fn test_guest_prints_the_cmdline_e820_and_disk_the_vmm_gave_it() {
    let Some(kernel) = guest() else { return };
    let tok = token();
    let sector0 = format!("omnicloud disk sector zero {tok}");
    let sector1 = format!("sector one says {tok}");
    let mut case = Case::new(&kernel, 64, &format!("console=ttyS0 omnicloud.token={tok}"))
        .with_disk(&format!("{sector0}\nrest"), &sector1);
    case.spec.vcpus = 2;
    let (status, out, err) = case.run();
    let serial = case.serial();
    assert!(status.success(), "{status}: {err}\nserial:\n{serial}");

    let lines: Vec<&str> = serial.lines().collect();
    assert_eq!(lines.first(), Some(&"omnicloud test guest"), "{serial}");
    let cmdline =
        format!("cmdline: console=ttyS0 omnicloud.token={tok} virtio_mmio.device=4K@0xd0000000:5");
    assert!(
        lines.contains(&cmdline.as_str()),
        "{cmdline:?} in\n{serial}"
    );
    for line in expected_e820(64) {
        assert!(lines.contains(&line.as_str()), "{line:?} in\n{serial}");
    }
    assert!(
        lines.contains(&"mptable: 2 cpus"),
        "an MP entry per vCPU: {serial}"
    );
    assert!(
        lines.contains(&"virtio-blk: 0x00000000d0000000 capacity 128"),
        "{serial}"
    );
    assert!(
        lines.contains(&format!("sector 0: {sector0}").as_str()),
        "{serial}"
    );
    assert!(
        lines.contains(&format!("sector 1: {sector1}").as_str()),
        "{serial}"
    );
    assert_eq!(lines.last(), Some(&"powering off"), "{serial}");

    let json = json_lines(&out);
    assert_eq!(json.len(), 2, "{out}");
    assert!(json[0]["pid"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(json[0]["vcpus"], 2, "{out}");
    assert_eq!(json[1]["exit"], "poweroff", "{out}");
    assert_eq!(json[1]["metrics"]["block_read_bytes"], 1024, "{out}");
    assert_eq!(
        json[1]["metrics"]["serial_out_bytes"].as_u64().unwrap(),
        serial.len() as u64,
        "{out}"
    );
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_bzimage_with_an_initrd_boots_and_writes_to_a_read_write_disk() {
    let Some(elf) = guest() else { return };
    let kernel = elf.with_extension("bzImage");
    let tok = token();
    let mut case = Case::new(&kernel, 64, "omnicloud.write").with_disk("zero", "one");
    case.spec.disk_read_only = false;
    let initrd_text = format!("initrd says {tok}\nsecond line\n");
    let initrd = case.dir.path().join("initrd.img");
    std::fs::write(&initrd, &initrd_text).unwrap();
    case.spec.initrd = Some(initrd);
    let (status, out, err) = case.run();
    let serial = case.serial();
    assert!(status.success(), "{status}: {err}\n{serial}");
    assert!(serial.starts_with("omnicloud test guest\n"), "{serial}");
    assert!(serial.contains("cmdline: omnicloud.write virtio_mmio.device=4K@0xd0000000:5\n"));
    for line in expected_e820(64) {
        assert!(
            serial.contains(&format!("{line}\n")),
            "{line:?} in\n{serial}"
        );
    }
    assert!(serial.contains("mptable: 1 cpus\n"), "{serial}");
    assert!(serial.contains("sector 1: one\n"), "{serial}");
    assert!(serial.contains("sector 2 written, status 0\n"), "{serial}");
    // The initrd sits page-aligned at the top of guest memory.
    let size = initrd_text.len() as u64;
    let addr = (64 * MIB - size) & !0xfff;
    let line = format!("initrd: {addr:#018x} {size}: initrd says {tok}\n");
    assert!(serial.contains(&line), "{line:?} in\n{serial}");
    let disk = std::fs::read(case.spec.disk.as_ref().unwrap()).unwrap();
    assert_eq!(&disk[1024..1050], b"written by the test guest\n");
    assert_eq!(
        json_lines(&out)[1]["metrics"]["block_write_bytes"],
        512,
        "{out}"
    );
}

#[test]
fn a_read_only_disk_refuses_the_guest_write() {
    let Some(kernel) = guest() else { return };
    let case = Case::new(&kernel, 16, "omnicloud.write").with_disk("zero", "one");
    let (status, _, err) = case.run();
    let serial = case.serial();
    assert!(status.success(), "{status}: {err}\n{serial}");
    assert!(
        serial.contains("sector 2 written, status 1\n"),
        "VIRTIO_BLK_S_IOERR: {serial}"
    );
    let disk = std::fs::read(case.spec.disk.as_ref().unwrap()).unwrap();
    assert!(disk[1024..1536].iter().all(|b| *b == 0));
}

#[test]
fn e820_follows_the_memory_size_including_ram_above_4_gib() {
    let Some(kernel) = guest() else { return };
    for mib in [2, 300, 4096] {
        let case = Case::new(&kernel, mib, "");
        let (status, _, err) = case.run();
        let serial = case.serial();
        assert!(status.success(), "{mib} MiB: {status}: {err}\n{serial}");
        for line in expected_e820(mib) {
            assert!(
                serial.contains(&format!("{line}\n")),
                "{mib} MiB: {line:?} in\n{serial}"
            );
        }
        assert!(serial.contains("virtio-blk: none\n"), "{serial}");
    }
}

#[test]
fn a_guest_reset_ends_the_vm_with_status_3() {
    let Some(kernel) = guest() else { return };
    let case = Case::new(&kernel, 16, "omnicloud.reset");
    let (status, out, err) = case.run();
    assert_eq!(status.code(), Some(3), "{status}: {err}");
    assert!(case.serial().ends_with("resetting\n"), "{}", case.serial());
    assert_eq!(json_lines(&out)[1]["exit"], "reset", "{out}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn the_serial_console_socket_attaches_both_ways() {
    let Some(kernel) = guest() else { return };
    let mut case = Case::new(&kernel, 16, "omnicloud.wait");
    let socket = case.dir.path().join("console.sock");
    case.spec.serial_socket = Some(socket.clone());
    let child = case.spawn();
    case.wait_serial("waiting for a serial byte\n");
    let mut console = UnixStream::connect(&socket).unwrap();
    console.write_all(b"Z").unwrap();
    let (status, _, err) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "{status}: {err}");
    let mut seen = String::new();
    console.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "got Z\npowering off\n");
    assert!(case.serial().ends_with("got Z\npowering off\n"));
    assert!(
        !socket.exists(),
        "the helper removes its socket when the VM ends"
    );
}

#[test]
fn bad_specs_are_refused_naming_the_field_and_leave_no_process() {
    let Some(kernel) = guest() else { return };
    let base = Case::new(&kernel, 16, "");
    type Change = Box<dyn Fn(&mut VmSpec)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "kernel",
            Box::new(|s| s.kernel = "/nonexistent/vmlinux".into()),
        ),
        ("memory_mib", Box::new(|s| s.memory_mib = 0)),
        ("vcpus", Box::new(|s| s.vcpus = 1000)),
        ("vcpus", Box::new(|s| s.vcpus = 0)),
        (
            "disk",
            Box::new(|s| s.disk = Some("/nonexistent/disk.img".into())),
        ),
    ];
    for (field, change) in cases {
        let mut case = Case::new(&kernel, 16, "");
        change(&mut case.spec);
        let started = Instant::now();
        let (status, out, err) = case.run();
        assert_eq!(status.code(), Some(1), "{field}: {status} {out} {err}");
        assert_eq!(err.lines().count(), 1, "{field}: one error line: {err}");
        assert!(
            err.starts_with("error: invalid VM spec: "),
            "{field}: {err}"
        );
        assert!(err.contains(field), "{field}: {err}");
        assert!(out.is_empty(), "{field}: nothing started: {out}");
        assert!(processes_mentioning(&case.spec_path()).is_empty());
        assert!(
            !case.dir.path().join("serial.log").exists(),
            "{field}: no serial log"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // A kernel file that is neither an ELF nor a bzImage passes validation but not loading.
    let mut case = Case::new(&kernel, 16, "");
    let junk = case.dir.path().join("junk-kernel");
    std::fs::write(&junk, vec![0x90u8; 4096]).unwrap();
    case.spec.kernel = junk;
    let (status, _, err) = case.run();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: loading the kernel "), "{err}");
    // A field of the wrong type: still one line naming it.
    let spec = base.dir.path().join("bad.json");
    std::fs::write(
        &spec,
        r#"{"vcpus": 1, "memory_mib": "lots", "kernel": "/k"}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["__vmm", "run", "--spec"])
        .arg(&spec)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("memory_mib"), "{err}");
}

#[test]
fn sigkill_ends_the_vm_process_and_leaves_nothing_running() {
    let Some(kernel) = guest() else { return };
    let mut case = Case::new(&kernel, 32, "omnicloud.wait");
    case.spec.vcpus = 4;
    let spec_path = case.spec_path();
    let mut child = Command::new(BIN)
        .args(["__vmm", "run", "--spec"])
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    case.wait_serial("waiting for a serial byte\n");
    let pid = child.id();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(threads > 4, "one thread per vCPU plus main: {threads}");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(processes_mentioning(&spec_path).is_empty());
}

#[test]
fn the_library_pauses_resumes_and_stops_vcpus() {
    let Some(kernel) = guest() else { return };
    let case = Case::new(&kernel, 16, "omnicloud.wait");
    let mut vm = omnicloud::vmm::build(&case.spec).unwrap();
    vm.start().unwrap();
    case.wait_serial("waiting for a serial byte\n");
    // The guest polls the serial line status port: a running vCPU keeps exiting.
    vm.pause();
    let paused = vm.metrics.snapshot().pio_exits;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        vm.metrics.snapshot().pio_exits,
        paused,
        "a paused vCPU runs nothing"
    );
    vm.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    while vm.metrics.snapshot().pio_exits == paused {
        assert!(Instant::now() < deadline, "the vCPU never resumed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stop = vm.stop_handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        stop.stop();
    });
    assert_eq!(vm.wait(), ExitReason::Stopped);
}

/// The ethertype the test guest sends and listens for (IEEE local experimental 1).
const ETHERTYPE: u16 = 0x88b5;

fn mac_text(mac: &[u8]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[test]
fn virtio_net_frames_cross_a_bridge_both_ways_and_the_tap_goes_with_the_vm() {
    let Some(kernel) = guest() else { return };
    let Some(bridge) = TestBridge::new() else {
        return;
    };
    let socket = PacketSocket::bind(&bridge.name, ETHERTYPE).unwrap();
    let tap = packet::unique_ifname("t");
    let mut mac = [0x02u8, 0, 0, 0, 0, 0];
    mac[1..].copy_from_slice(&rand::random::<[u8; 5]>());
    let mut case = Case::new(&kernel, 16, "omnicloud.net");
    case.spec.net = Some(NetSpec {
        tap: tap.clone(),
        mac: mac_text(&mac),
        bridge: Some(bridge.name.clone()),
    });
    let child = case.spawn();

    // The guest's frame, seen on the bridge.
    let deadline = Instant::now() + Duration::from_secs(20);
    let frame = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = socket
            .recv(left)
            .unwrap_or_else(|| panic!("no frame from the guest: {}", case.serial()));
        if frame.len() >= 14 && frame[6..12] == mac {
            break frame;
        }
    };
    assert_eq!(frame[..6], [0xff; 6], "broadcast");
    assert_eq!(frame[12..14], ETHERTYPE.to_be_bytes());
    assert_eq!(frame.len(), 60, "{frame:?}");
    assert!(
        frame[14..].starts_with(b"hello from the test guest\0"),
        "{:?}",
        String::from_utf8_lossy(&frame[14..])
    );
    let serial = case.serial();
    let line = format!("virtio-net: 0x00000000d0000000 mac {}\n", mac_text(&mac));
    assert!(serial.contains(&line), "{line:?} in\n{serial}");
    assert!(packet::interface_exists(&tap), "the VMM made the tap");
    assert_eq!(packet::master_of(&tap), Some(bridge.name.clone()));

    // A frame back to the guest's MAC.
    let tok = token();
    let mut reply = mac.to_vec();
    reply.extend_from_slice(&[0x02, 0xfe, 0, 0, 0, 1]);
    reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
    reply.extend_from_slice(format!("hello from the test {tok}").as_bytes());
    socket.send(&reply).unwrap();

    let (status, out, err) = finish(child, Duration::from_secs(30));
    let serial = case.serial();
    assert!(status.success(), "{status}: {err}\n{serial}");
    let line = format!("net tx: 60 bytes\nnet rx: hello from the test {tok}\npowering off\n");
    assert!(serial.ends_with(&line), "{line:?} at the end of\n{serial}");
    let metrics = &json_lines(&out)[1]["metrics"];
    assert_eq!(metrics["net_tx_frames"], 1, "{out}");
    assert_eq!(metrics["net_tx_bytes"], 60, "{out}");
    assert!(metrics["net_rx_frames"].as_u64().unwrap() >= 1, "{out}");
    assert!(
        metrics["net_rx_bytes"].as_u64().unwrap() >= reply.len() as u64,
        "{out}"
    );
    assert!(!packet::interface_exists(&tap), "the tap ends with the VM");
}

#[test]
fn the_agent_channel_carries_lines_both_ways_through_its_socket() {
    let Some(kernel) = guest() else { return };
    let mut case = Case::new(&kernel, 16, "omnicloud.agent");
    let path = case.dir.path().join("agent.sock");
    case.spec.agent_socket = Some(path.clone());
    let child = case.spawn();
    // The guest may speak before the host connects: its line waits for the first client.
    case.wait_serial("mptable: ");
    let deadline = Instant::now() + Duration::from_secs(20);
    let agent = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "{}: {e}", path.display()),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    agent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut lines = BufReader::new(agent.try_clone().unwrap());
    let mut hello = String::new();
    lines.read_line(&mut hello).unwrap();
    assert_eq!(hello, "{\"hello\":\"test-guest\"}\n");
    let tok = token();
    let line = format!("{{\"echo\":\"{tok}\"}}");
    (&agent).write_all(format!("{line}\n").as_bytes()).unwrap();
    let (status, out, err) = finish(child, Duration::from_secs(30));
    let serial = case.serial();
    assert!(status.success(), "{status}: {err}\n{serial}");
    assert!(
        serial.ends_with(&format!("agent rx: {line}\npowering off\n")),
        "{serial}"
    );
    assert_eq!(
        json_lines(&out)[1]["metrics"]["agent_out_bytes"],
        23,
        "{out}"
    );
    assert!(!path.exists(), "the helper removes the agent socket");
}

#[test]
fn bad_net_specs_are_refused_naming_the_field_and_leave_no_tap() {
    let Some(kernel) = guest() else { return };
    let Some(bridge) = TestBridge::new() else {
        return;
    };
    let tap = packet::unique_ifname("t");
    let good = NetSpec {
        tap: tap.clone(),
        mac: "02:00:00:00:00:01".into(),
        bridge: Some(bridge.name.clone()),
    };
    type Change = Box<dyn Fn(&mut NetSpec)>;
    let cases: Vec<(&str, Change)> = vec![
        ("net.tap", Box::new(|n| n.tap = "a-name-too-long-1".into())),
        ("net.tap", Box::new(|n| n.tap = "tap%d".into())),
        ("net.tap", Box::new(|n| n.tap = "lo".into())),
        ("net.mac", Box::new(|n| n.mac = "02:00:00:00:01".into())),
        ("net.mac", Box::new(|n| n.mac = "ff:ff:ff:ff:ff:ff".into())),
        (
            "net.bridge",
            Box::new(|n| n.bridge = Some("omnivt-none0".into())),
        ),
        ("net.bridge", Box::new(|n| n.bridge = Some("lo".into()))),
    ];
    for (field, change) in cases {
        let mut case = Case::new(&kernel, 16, "omnicloud.net");
        let mut net = good.clone();
        change(&mut net);
        case.spec.net = Some(net);
        let (status, out, err) = case.run();
        assert_eq!(status.code(), Some(1), "{field}: {status} {out} {err}");
        assert_eq!(err.lines().count(), 1, "{field}: one error line: {err}");
        assert!(
            err.starts_with(&format!("error: invalid VM spec: {field}: ")),
            "{field}: {err}"
        );
        assert!(out.is_empty(), "{field}: nothing started: {out}");
        assert!(!packet::interface_exists(&tap), "{field}: no tap");
    }
    // Valid, but the kernel fails to load after the devices (and the tap) were made: the
    // tap goes with the failed VMM.
    let mut case = Case::new(&kernel, 16, "");
    let junk = case.dir.path().join("junk-kernel");
    std::fs::write(&junk, vec![0x90u8; 4096]).unwrap();
    case.spec.kernel = junk;
    case.spec.net = Some(good);
    let (status, _, err) = case.run();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: loading the kernel "), "{err}");
    assert!(
        !packet::interface_exists(&tap),
        "no tap after a failed build"
    );
}

#[test]
fn the_library_removes_the_tap_it_made_and_leaves_an_existing_one() {
    let Some(kernel) = guest() else { return };
    let made = packet::unique_ifname("t");
    let mut case = Case::new(&kernel, 16, "");
    let net = |tap: &str| NetSpec {
        tap: tap.into(),
        mac: "02:00:00:00:00:02".into(),
        bridge: None,
    };
    case.spec.net = Some(net(&made));
    let vm = omnicloud::vmm::build(&case.spec).unwrap();
    assert!(packet::interface_exists(&made));
    let flags = std::fs::read_to_string(format!("/sys/class/net/{made}/flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & 1, 0, "IFF_UP: {flags:#x}");
    drop(vm);
    assert!(
        !packet::interface_exists(&made),
        "a made tap goes with the VM"
    );

    let existing = packet::unique_ifname("p");
    if let Err(why) = packet::ip(&["tuntap", "add", &existing, "mode", "tap"]) {
        common::netns::require("root and ip (a persistent tap)", why);
        return;
    }
    let _cleanup = packet::DeleteLink(existing.clone());
    case.spec.net = Some(net(&existing));
    let vm = omnicloud::vmm::build(&case.spec).unwrap();
    drop(vm);
    assert!(packet::interface_exists(&existing), "an existing tap stays");
}
