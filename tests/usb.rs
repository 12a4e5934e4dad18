//! End to end: the USB image (scripts/build-usb-image.sh) booted in qemu under software
//! emulation (TCG: KVM here is nested and does not boot a stock kernel) — OVMF's UEFI
//! firmware from the stick on a USB (xHCI) port, systemd-boot, Debian's kernel, `omnicloud
//! init` — as a user would: `omnicloud usb prepare` makes the cluster's CA and join token
//! up front, and each stick is a copy of the image whose config partition got its own
//! `omnicloud.conf` with that token and the CA (`tls/ca.crt`, and `tls/ca.key` on the seed
//! stick only), written with mtools. Three copies on a private bridge the test
//! makes (a tap each, static addresses): the seed, then two joining, form one cluster; a
//! deployment of 3 busybox replicas (pulled from a registry on the bridge) runs, one per
//! machine; a joiner is powered off hard and booted again and comes back as the same node,
//! from its data partition (formatted on the first boot only).
//!
//! Gated: runs with OMNICLOUD_QEMU_TESTS=1 (.ci/run sets it), skips loudly without. With
//! the variable set, missing qemu/OVMF/mtools/root fail under OMNICLOUD_REQUIRE_ALL=1.
//! Each VM's serial console goes to target/tmp/usb/<name>.serial.log.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// The join token's secret (the token itself pins the CA `omnicloud usb prepare` makes).
const TOKEN: &str = "usb-test-token-0123456789abcdef";
/// The loader.conf a test stick gets: the serial-console entry, no menu wait.
const LOADER: &str = "default omnicloud-serial.conf\ntimeout 0\n";

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the test may run: the variable, then the tools.
fn enabled() -> bool {
    if std::env::var("OMNICLOUD_QEMU_TESTS").as_deref() != Ok("1") {
        eprintln!("\n!!! SKIPPED: the qemu USB-image test runs with OMNICLOUD_QEMU_TESTS=1 (.ci/run sets it)\n");
        return false;
    }
    let missing: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mcopy", "mtools"),
        ("sfdisk", "fdisk"),
        ("mkfs.fat", "dosfstools"),
    ]
    .into_iter()
    .filter(|(tool, _)| run(&["sh", "-c", &format!("command -v {tool}")]).is_err())
    .map(|(_, pkg)| pkg)
    .chain((!Path::new(OVMF).exists()).then_some("ovmf"))
    .chain(
        (!Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").exists())
            .then_some("systemd-boot-efi"),
    )
    .collect();
    if !missing.is_empty() {
        common::netns::require(
            "qemu and the USB image's tools",
            format!("apt-get install {}", missing.join(" ")),
        );
        return false;
    }
    if !omnicloud::config::is_root() {
        common::netns::require("root", "the VMs' network is a bridge with taps".into());
        return false;
    }
    true
}

/// A bridge on the host with one tap per VM, removed on drop.
struct Lan {
    bridge: String,
    taps: Vec<String>,
    subnet: u32,
}

impl Lan {
    fn new(vms: usize) -> Lan {
        let tag = format!("ocu{}", std::process::id() % 100000);
        let lan = Lan {
            bridge: format!("{tag}b"),
            taps: (0..vms).map(|i| format!("{tag}t{i}")).collect(),
            // 10.79.S.0/24: apart from tests/common/netns.rs's 10.77.
            subnet: std::process::id() % 200 + 20,
        };
        let host = format!("{}/24", lan.host_ip());
        let mut cmds = vec![
            vec!["ip", "link", "add", &lan.bridge, "type", "bridge"],
            vec!["ip", "addr", "add", &host, "dev", &lan.bridge],
            vec!["ip", "link", "set", &lan.bridge, "up"],
        ];
        for tap in &lan.taps {
            cmds.push(vec!["ip", "tuntap", "add", "dev", tap, "mode", "tap"]);
            cmds.push(vec!["ip", "link", "set", tap, "master", &lan.bridge, "up"]);
        }
        for c in cmds {
            run(&c).unwrap_or_else(|e| panic!("making the VMs' network: {e}"));
        }
        lan
    }

    fn host_ip(&self) -> String {
        format!("10.79.{}.254", self.subnet)
    }

    fn ip(&self, i: usize) -> String {
        format!("10.79.{}.{}", self.subnet, i + 1)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for dev in self.taps.iter().chain([&self.bridge]) {
            let _ = run(&["ip", "link", "del", dev]);
        }
    }
}

/// The image, built once with this test's binary (its kernel and initramfs shared with
/// tests/director.rs's worker image).
fn image(dir: &Path) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let img = dir.join("omnicloud.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-usb-image.sh");
    let t0 = Instant::now();
    let out = Command::new("sh")
        .arg(&script)
        .arg(&img)
        .env("OMNICLOUD_BIN", common::BIN)
        .env("OMNICLOUD_WORKER_DIR", tmp.join("worker-image"))
        .env("OMNICLOUD_USB_DATA_MB", "256")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-usb-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "usb: image built in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    img
}

/// Byte offsets of the ESP and the config partition, from the image's GPT.
fn offsets(img: &Path) -> (u64, u64) {
    let json: Value = serde_json::from_str(&run(&["sfdisk", "-J", img.to_str().unwrap()]).unwrap())
        .expect("sfdisk -J");
    let parts = json["partitiontable"]["partitions"].as_array().unwrap();
    let start = |name: &str| {
        parts
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["start"].as_u64())
            .unwrap_or_else(|| panic!("no partition {name}: {parts:?}"))
            * 512
    };
    (start("EFI system"), start("OMNICONFIG"))
}

/// The sticks' CA and token from `omnicloud usb prepare`: (its output folder, the token).
fn prepare(dir: &Path) -> (PathBuf, String) {
    let out = dir.join("cluster");
    run(&[
        common::BIN,
        "usb",
        "prepare",
        out.to_str().unwrap(),
        "--secret",
        TOKEN,
    ])
    .unwrap();
    let token = std::fs::read_to_string(out.join("join.token")).unwrap();
    let token = token.trim().to_string();
    assert!(
        token.starts_with("K10") && token.ends_with(&format!("::{TOKEN}")),
        "{token}"
    );
    assert!(out.join("seed/tls/ca.key").exists() && !out.join("join/tls/ca.key").exists());
    (out, token)
}

/// A copy of the image made into one machine's stick: its omnicloud.conf, the cluster CA
/// files of its `omnicloud usb prepare` folder (`tls/`), and the serial boot entry.
fn stick(img: &Path, dir: &Path, name: &str, conf: &str, node_toml: &str, tls: &Path) -> PathBuf {
    let copy = dir.join(format!("{name}.img"));
    run(&[
        "cp",
        "--sparse=always",
        img.to_str().unwrap(),
        copy.to_str().unwrap(),
    ])
    .unwrap();
    let (esp, cfg) = offsets(&copy);
    for (offset, file, text) in [
        (esp, "::/loader/loader.conf", LOADER),
        (cfg, "::/omnicloud.conf", conf),
        (cfg, "::/node.toml", node_toml),
    ] {
        let src = dir.join(format!("{name}.{}", file.rsplit('/').next().unwrap()));
        std::fs::write(&src, text).unwrap();
        let target = format!("{}@@{offset}", copy.display());
        run(&["mcopy", "-o", "-i", &target, src.to_str().unwrap(), file]).unwrap();
    }
    let target = format!("{}@@{cfg}", copy.display());
    run(&["mmd", "-i", &target, "::/tls"]).unwrap();
    for entry in std::fs::read_dir(tls).unwrap() {
        let src = entry.unwrap().path();
        let file = format!("::/tls/{}", src.file_name().unwrap().to_string_lossy());
        run(&["mcopy", "-o", "-i", &target, src.to_str().unwrap(), &file]).unwrap();
    }
    copy
}

/// One machine: qemu booting a stick, its serial console in a log file.
struct Vm {
    name: String,
    child: Child,
    serial: PathBuf,
    api: common::Api,
    started: Instant,
}

impl Vm {
    /// `ca_dir`: a folder whose `tls/ca.crt` is the cluster CA the API is trusted by.
    fn boot(
        name: &str,
        stick: &Path,
        tap: &str,
        mac: &str,
        ip: &str,
        boot: usize,
        ca_dir: &Path,
    ) -> Vm {
        let dir = stick.parent().unwrap();
        let serial = dir.join(format!("{name}.boot{boot}.serial.log"));
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1"])
            .args(["-bios", OVMF, "-display", "none", "-no-reboot"])
            .arg("-drive")
            .arg(format!(
                "if=none,id=stick,format=raw,file={}",
                stick.display()
            ))
            .args(["-device", "qemu-xhci", "-device"])
            .arg("usb-storage,drive=stick,bootindex=0")
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting qemu-system-x86_64");
        let admin: String = omnicloud::cluster::transport::derive_key(TOKEN, "admin")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        eprintln!("usb: {name} booting (serial console: {})", serial.display());
        Vm {
            name: name.into(),
            child,
            serial,
            // The CA `omnicloud usb prepare` made: every node of the sticks serves with it.
            api: common::Api {
                base: format!("https://{ip}:7070"),
                token: Some(admin),
                agent: common::ca_agent(ca_dir),
            },
            started: Instant::now(),
        }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// The last lines of the console, for failure messages.
    fn tail(&mut self) -> String {
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        let mut qemu = String::new();
        if let Ok(Some(status)) = self.child.try_wait() {
            use std::io::Read;
            let _ = self
                .child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut qemu));
            qemu = format!("qemu exited ({status}): {qemu}\n");
        }
        format!(
            "{qemu}--- {} console, last lines ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Waits for the node's API (answering with this cluster's admin token).
    fn wait_api(&mut self, timeout: Duration) -> f64 {
        let up = common::eventually(timeout, || {
            self.api
                .try_send("GET", "/v1/nodes", "")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
        if up.is_none() {
            let tail = self.tail();
            panic!(
                "{} did not answer on {} within {} s\n{}",
                self.name,
                self.api.base,
                timeout.as_secs(),
                tail
            );
        }
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "usb: {} answers on its API {secs:.0} s after power-on",
            self.name
        );
        secs
    }

    /// Name -> (status, raft role) as this node sees the cluster.
    fn members(&self) -> Vec<(String, String, String)> {
        let Ok((200, v)) = self.api.try_send("GET", "/v1/nodes", "") else {
            return Vec::new();
        };
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
                (s("name"), s("status"), s("raft"))
            })
            .collect()
    }

    fn node_id(&self, name: &str) -> Option<String> {
        let (_, v) = self.api.try_send("GET", "/v1/nodes", "").ok()?;
        v["items"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["nodeId"].as_str())
            .map(str::to_string)
    }

    /// Pulls the power (the data partition must cope: ext4's journal).
    fn power_cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.power_cut();
    }
}

// Debian's docker-registry on the VMs' bridge: where the sticks pull the busybox image.
use common::registry::Registry;

/// Pushes the test busybox image into `registry`; its reference for the sticks.
fn push_busybox(registry: &Registry) -> Option<String> {
    let layout = common::images::layout()?;
    let scratch = tempfile::tempdir().unwrap();
    let remote = format!("{}/busybox:usb", registry.addr);
    let config = scratch.path().join("client.toml");
    std::fs::write(
        &config,
        format!("[registries]\ninsecure = [\"{}\"]\n", registry.addr),
    )
    .unwrap();
    for args in [
        vec!["import", layout.to_str().unwrap()],
        vec!["push", "busybox:latest", &remote],
    ] {
        let out = Command::new(common::BIN)
            .arg("image")
            .args(&args)
            .env("OMNICLOUD_DATA_DIR", scratch.path())
            .env("OMNICLOUD_CONFIG", &config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "omnicloud image {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(remote)
}

/// Ready replicas of a deployment, and its instances for failure messages.
fn deployment_state(api: &common::Api, name: &str) -> (i64, Value) {
    let ready = api
        .try_send(
            "GET",
            &format!("/v1/namespaces/default/deployments/{name}"),
            "",
        )
        .ok()
        .and_then(|(_, d)| d["status"]["readyReplicas"].as_i64())
        .unwrap_or(0);
    let instances = api
        .try_send(
            "GET",
            &format!("/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3D{name}"),
            "",
        )
        .map(|(_, v)| v["items"].clone())
        .unwrap_or(Value::Null);
    (ready, instances)
}

/// Removes the disk images (hundreds of MiB each) when the test ends, pass or fail; the
/// serial logs stay.
struct RemoveImages(PathBuf);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "img") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn conf(lan: &Lan, i: usize, join: bool, token: &str) -> String {
    let mut c = format!(
        "# written by tests/usb.rs\nname=usb-{i}\nip={}/24\ngw={}\ntoken={token}\nconfig=node.toml\n",
        lan.ip(i),
        lan.host_ip()
    );
    if join {
        c.push_str(&format!("join={}:7946\n", lan.ip(0)));
    }
    c
}

#[test]
fn three_usb_sticks_boot_into_one_cluster_and_keep_their_state_across_a_power_cut() {
    if !enabled() {
        return;
    }
    let t0 = Instant::now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("usb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _remove = RemoveImages(dir.clone());
    let img = image(&dir);
    let (cluster, token) = prepare(&dir);
    let lan = Lan::new(3);
    // Debian's docker-registry on the bridge (plain HTTP: the sticks list it insecure).
    let registry = Registry::start(&lan.host_ip(), "docker-registry (for the deployment)");
    let node_toml = registry.as_ref().map_or(String::new(), |r| {
        format!("[registries]\ninsecure = [\"{}\"]\n", r.addr)
    });
    let sticks: Vec<PathBuf> = (0..3)
        .map(|i| {
            stick(
                &img,
                &dir,
                &format!("usb-{i}"),
                &conf(&lan, i, i > 0, &token),
                &node_toml,
                &cluster.join(if i == 0 { "seed/tls" } else { "join/tls" }),
            )
        })
        .collect();
    let boot = |i: usize, n: usize| {
        Vm::boot(
            &format!("usb-{i}"),
            &sticks[i],
            &lan.taps[i],
            &format!("52:54:00:79:{:02x}:{i:02x}", lan.subnet),
            &lan.ip(i),
            n,
            &cluster.join("join"),
        )
    };

    // The seed: through UEFI and systemd-boot to init, which loads the modules, finds the
    // config partition, formats and mounts the blank data partition, and starts the node.
    let mut seed = boot(0, 1);
    seed.wait_api(Duration::from_secs(240));
    let console = seed.console();
    for want in [
        "EFI stub: Loaded initrd",
        "config partition /dev/sda2 mounted on /run/omnicloud/config",
        "/dev/sda3 (OMNIDATA) is blank: formatting it (ext4), first boot",
        "data partition /dev/sda3 mounted on /var/lib/omnicloud",
        "cluster CA: /var/lib/omnicloud/tls/ca.key copied from the stick",
        "cluster seed usb-0",
    ] {
        assert!(console.contains(want), "{want:?} missing\n{}", seed.tail());
    }

    // Two more join the seed's address from their config partitions.
    let mut joiners = vec![boot(1, 1), boot(2, 1)];
    for vm in &mut joiners {
        vm.wait_api(Duration::from_secs(300));
    }
    let all_alive = |vm: &Vm, n: usize| {
        let m = vm.members();
        (m.len() == n && m.iter().all(|(_, s, _)| s == "alive")).then_some(m)
    };
    let formed = common::eventually(Duration::from_secs(120), || all_alive(&seed, 3));
    let Some(members) = formed else {
        panic!(
            "the seed does not see 3 alive nodes: {:?}\n{}\n{}",
            seed.members(),
            joiners[0].tail(),
            joiners[1].tail()
        );
    };
    let names: Vec<&str> = members.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["usb-0", "usb-1", "usb-2"]);
    let leaders = members.iter().filter(|(_, _, r)| r == "leader").count();
    assert_eq!(leaders, 1, "one Raft leader: {members:?}");
    for vm in &joiners {
        let seen = common::eventually(Duration::from_secs(60), || all_alive(vm, 3));
        assert!(seen.is_some(), "{} sees {:?}", vm.name, vm.members());
    }
    eprintln!(
        "usb: one cluster of 3 after {:.0} s: {members:?}",
        t0.elapsed().as_secs_f64()
    );

    // A deployment: busybox from the registry on the bridge, one replica per machine.
    if let Some(image) = registry.as_ref().and_then(push_busybox) {
        let manifest = format!(
            r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {{name: sleepers}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: sleepers}}}}
  template:
    metadata: {{labels: {{app: sleepers}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: "{image}", command: ["sleep", "100000"]}}
"#
        );
        let (code, body) = seed.api.apply(&manifest);
        assert_eq!(code, 200, "applying the deployment: {body}");
        let ready = common::eventually(Duration::from_secs(240), || {
            (deployment_state(&seed.api, "sleepers").0 == 3).then_some(())
        });
        if ready.is_none() {
            let (n, instances) = deployment_state(&seed.api, "sleepers");
            panic!(
                "sleepers has {n} of 3 ready: {instances:#}\n{}",
                seed.tail()
            );
        }
        let (_, instances) = deployment_state(&seed.api, "sleepers");
        let nodes: std::collections::BTreeSet<String> = instances
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        eprintln!(
            "usb: deployment of 3 ready after {:.0} s, on {nodes:?}",
            t0.elapsed().as_secs_f64()
        );
    }

    // A power cut on usb-1, then the same stick boots again: its data partition is mounted
    // (not formatted again) and it is the same member, not a fourth one.
    let id = seed.node_id("usb-1").expect("usb-1's node id");
    let mut old = joiners.remove(0);
    old.power_cut();
    drop(old);
    let mut again = boot(1, 2);
    again.wait_api(Duration::from_secs(300));
    let console = again.console();
    assert!(
        console.contains("data partition /dev/sda3 mounted on /var/lib/omnicloud")
            && !console.contains("formatting"),
        "the second boot mounts the data partition without formatting\n{}",
        again.tail()
    );
    let back = common::eventually(Duration::from_secs(120), || all_alive(&seed, 3));
    assert!(
        back.is_some(),
        "usb-1 is back as itself: {:?}\n{}",
        seed.members(),
        again.tail()
    );
    assert_eq!(seed.node_id("usb-1"), Some(id), "usb-1 kept its identity");
    eprintln!("usb: done in {:.0} s", t0.elapsed().as_secs_f64());
}
