//! The director on this machine's /dev/kvm: VirtualMachines become VM replicas
//! `<name>-<index>`, each an `omnicloud __vmm run` process booting the purpose-built test
//! guest, restarted by policy when killed, scaled, stopped and started, refused clearly when
//! the spec cannot run, and adopted (not rebooted) across a kill -9 of the node process.
//! Without /dev/kvm, gcc or ld every test skips loudly (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use common::vms::{alive, vmm_processes, KillVmms};
use common::{eventually, TestNode};
use serde_json::Value;

/// One director node at a time: the tests count VMM processes on the host.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A single-node cluster with the orchestrator and director roles.
fn director_node(name: &str) -> (TestNode, KillVmms) {
    director_node_with(name, "")
}

fn director_node_with(name: &str, config_extra: &str) -> (TestNode, KillVmms) {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[agent]\nusage_report_ms = 500\n{config_extra}"),
    )
    .unwrap();
    let node = TestNode::start_with(
        name,
        &[
            "--roles",
            "orchestrator,director",
            "--config",
            config.path().to_str().unwrap(),
        ],
    );
    std::mem::forget(config); // read again on restart
    let cleanup = KillVmms {
        dir: node.dir.clone(),
        links: Vec::new(),
    };
    (node, cleanup)
}

fn vm_yaml(name: &str, kernel: &Path, replicas: i64, extra: &str) -> String {
    format!(
        "apiVersion: omnicloud.io/v1\nkind: VirtualMachine\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\n\
         spec:\n  replicas: {replicas}\n  cpu: {{cores: 1}}\n  memory: {{guest: 32Mi}}\n  kernel: {}\n{extra}",
        kernel.display()
    )
}

/// `vms list --json` through the CLI.
fn vms(node: &TestNode, vm: &str) -> Vec<Value> {
    let (ok, out, err) = node.cli(&["vms", "list", "--vm", vm, "--json"]);
    assert!(ok, "vms list failed: {err}");
    match serde_json::from_str(&out) {
        Ok(Value::Array(list)) => list,
        other => panic!("vms list --json printed {out:?}: {other:?}"),
    }
}

/// The VM replicas of `vm`, once there are `n` and every one is ready.
fn wait_ready(node: &TestNode, vm: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), || {
        let list = vms(node, vm);
        (list.len() == n && list.iter().all(|v| v["ready"] == true && v["pid"].is_i64()))
            .then_some(list)
    })
    .unwrap_or_else(|| {
        panic!(
            "{vm} never had {n} ready replicas: {:?}\n{}",
            vms(node, vm),
            node.log()
        )
    })
}

fn get(node: &TestNode, path: &str) -> Value {
    let (code, v) = node.api().get(path);
    assert_eq!(code, 200, "{path}: {v}");
    v
}

#[test]
fn vm_replicas_boot_restart_when_killed_scale_stop_and_start() {
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let _g = serial();
    let (node, _cleanup) = director_node("dir1");
    let (code, body) = node
        .api()
        .apply(&vm_yaml("db", &kernel, 2, "  cmdline: omnicloud.hold\n"));
    assert_eq!(code, 200, "{body}");

    // Two replicas, each its own VMM process, ready at the guest's first serial byte.
    let list = wait_ready(&node, "db", 2);
    let names: Vec<&str> = list.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["db-0", "db-1"]);
    assert!(list
        .iter()
        .all(|v| v["node"] == "dir1" && v["phase"] == "Running"));
    let pids = vmm_processes(&node.dir);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let vm_ready = eventually(Duration::from_secs(10), || {
        let vm = get(&node, "/v1/namespaces/default/virtualmachines/db");
        (vm["status"]["readyReplicas"] == 2).then_some(())
    });
    assert!(
        vm_ready.is_some(),
        "the VirtualMachine status counts 2 ready"
    );

    // The serial console is the instance log, from the CLI.
    let log = eventually(Duration::from_secs(10), || {
        let (ok, out, _) = node.cli(&["vms", "logs", "db-0"]);
        (ok && out.contains("holding")).then_some(out)
    })
    .expect("the guest's serial output in vms logs");
    assert!(log.contains("cmdline: omnicloud.hold"), "{log}");
    assert!(log.contains("e820 entries: 2"), "{log}");

    // kill -9 of a VMM: the director boots it again (Always) and records why it ended.
    let old_pid = list[0]["pid"].as_i64().unwrap();
    unsafe { libc::kill(old_pid as i32, libc::SIGKILL) };
    let restarted = eventually(Duration::from_secs(30), || {
        let v = vms(&node, "db").into_iter().find(|v| v["name"] == "db-0")?;
        (v["restarts"] == 1 && v["ready"] == true && v["pid"].as_i64() != Some(old_pid))
            .then_some(v)
    })
    .unwrap_or_else(|| panic!("db-0 was not restarted: {:?}", vms(&node, "db")));
    assert_eq!(restarted["lastExit"], "killed", "{restarted}");
    let inst = get(&node, "/v1/namespaces/default/instances/db-0");
    let term = &inst["status"]["lastTermination"];
    assert_eq!(term["exitCode"], 137, "{inst}");
    assert!(
        term["message"].as_str().unwrap().contains("signal 9"),
        "{inst}"
    );

    // Metrics: boots timed, the kill counted, guest memory shown.
    let api = node.api();
    let boots = eventually(Duration::from_secs(5), || {
        api.metric("director_vm_boot_duration_seconds_count")
            .filter(|n| *n >= 3.0)
    });
    assert!(boots.is_some(), "3 boots timed");
    assert_eq!(
        api.metric("director_vm_exits_total{reason=\"killed\"}"),
        Some(1.0)
    );
    assert_eq!(api.metric("director_vm_restarts_total"), Some(1.0));
    assert_eq!(
        api.metric("director_vm_guest_memory_bytes{namespace=\"default\",instance=\"db-0\"}"),
        Some((32u64 << 20) as f64)
    );

    // Scale down: the highest index goes, and its VMM with it.
    let (ok, _, err) = node.cli(&["scale", "virtualmachine/db", "--replicas", "1", "--wait"]);
    assert!(ok, "{err}");
    let db1_pid = list[1]["pid"].as_i64().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || (!alive(db1_pid)).then_some(())).is_some(),
        "db-1's VMM still runs"
    );
    assert_eq!(vms(&node, "db").len(), 1);

    // Stop keeps the object and ends every VMM; start boots them again.
    let (ok, out, err) = node.cli(&["vms", "stop", "db", "--wait", "--timeout", "30s"]);
    assert!(ok, "{out}{err}");
    assert!(
        eventually(Duration::from_secs(15), || vmm_processes(&node.dir)
            .is_empty()
            .then_some(()))
        .is_some(),
        "VMMs left after stop: {:?}",
        vmm_processes(&node.dir)
    );
    let (ok, out, err) = node.cli(&["get", "virtualmachines"]);
    assert!(
        ok && out.contains("false") && out.contains("0/0"),
        "{out}{err}"
    );
    let (ok, out, err) = node.cli(&["vms", "start", "db", "--wait", "--timeout", "30s"]);
    assert!(ok, "{out}{err}");
    wait_ready(&node, "db", 1);

    // Deleting the VirtualMachine ends its VMMs and removes their files.
    let (code, _) = node
        .api()
        .delete("/v1/namespaces/default/virtualmachines/db");
    assert_eq!(code, 200);
    assert!(
        eventually(Duration::from_secs(15), || (vmm_processes(&node.dir)
            .is_empty()
            && !node.dir.join("vms/default/db-0").exists())
        .then_some(()))
        .is_some(),
        "a VMM or its files outlived the VirtualMachine"
    );
}

#[test]
fn bad_vm_specs_are_refused_clearly_and_start_nothing() {
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let _g = serial();
    let (node, _cleanup) = director_node("dir2");
    let api = node.api();
    // Refused at the API, naming the field.
    for (yaml, field) in [
        (
            vm_yaml("big", &kernel, 1, "").replace("cores: 1", "cores: 1000"),
            "spec.cpu.cores",
        ),
        (
            vm_yaml("zero", &kernel, 1, "").replace("guest: 32Mi", "guest: 0"),
            "spec.memory.guest",
        ),
    ] {
        let (code, body) = api.apply(&yaml);
        assert_eq!(code, 422, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    // A kernel that is not on the director: the replica fails with the field named, and
    // no VMM process is left.
    let (code, body) = api.apply(&vm_yaml("ghost", Path::new("/no/such/vmlinux"), 1, ""));
    assert_eq!(code, 200, "{body}");
    let failed = eventually(Duration::from_secs(20), || {
        let v = vms(&node, "ghost").into_iter().next()?;
        (v["phase"] == "Failed").then_some(v)
    })
    .expect("the replica fails");
    assert_eq!(failed["reason"], "InvalidSpec", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.kernel: /no/such/vmlinux"),
        "{failed}"
    );
    assert!(vmm_processes(&node.dir).is_empty());
    let (ok, _, _) = node.cli(&["get", "virtualmachines", "big"]);
    assert!(!ok, "a refused VirtualMachine was stored");
}

#[test]
fn powered_off_vms_follow_the_restart_policy() {
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let _g = serial();
    let (node, _cleanup) = director_node("dir3");
    let api = node.api();
    // The guest prints and powers off at once.
    let (code, body) = api.apply(&vm_yaml("once", &kernel, 1, "  restartPolicy: OnFailure\n"));
    assert_eq!(code, 200, "{body}");
    let done = eventually(Duration::from_secs(30), || {
        let v = vms(&node, "once").into_iter().next()?;
        (v["phase"] == "Succeeded").then_some(v)
    })
    .unwrap_or_else(|| panic!("never Succeeded: {:?}", vms(&node, "once")));
    assert_eq!(done["restarts"], 0, "{done}");
    assert_eq!(done["lastExit"], "poweroff");
    // A reset is a reboot under Always: it boots again and again.
    let (code, body) = api.apply(&vm_yaml("loop", &kernel, 1, "  cmdline: omnicloud.reset\n"));
    assert_eq!(code, 200, "{body}");
    let rebooted = eventually(Duration::from_secs(30), || {
        let v = vms(&node, "loop").into_iter().next()?;
        (v["restarts"].as_u64()? >= 2).then_some(v)
    });
    assert!(rebooted.is_some(), "{:?}", vms(&node, "loop"));
    let resets = eventually(Duration::from_secs(5), || {
        api.metric("director_vm_exits_total{reason=\"reset\"}")
            .filter(|n| *n >= 2.0)
    });
    assert!(resets.is_some(), "resets counted");
}

#[test]
fn a_killed_node_process_adopts_its_running_vms() {
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let _g = serial();
    let (mut node, _cleanup) = director_node("dir4");
    let (code, body) =
        node.api()
            .apply(&vm_yaml("keep", &kernel, 1, "  cmdline: omnicloud.hold\n"));
    assert_eq!(code, 200, "{body}");
    let before = wait_ready(&node, "keep", 1);
    let pid = before[0]["pid"].as_i64().unwrap();
    node.kill9();
    assert!(alive(pid), "the VM died with the node process");
    node.restart();
    // Same VMM, not a reboot.
    let after = eventually(Duration::from_secs(30), || {
        let v = vms(&node, "keep").into_iter().next()?;
        (v["ready"] == true && v["pid"] == pid).then_some(v)
    });
    assert!(after.is_some(), "not adopted: {:?}", vms(&node, "keep"));
    assert_eq!(after.unwrap()["restarts"], 0);
    assert_eq!(vmm_processes(&node.dir), vec![pid]);
    let (code, _) = node
        .api()
        .delete("/v1/namespaces/default/virtualmachines/keep");
    assert_eq!(code, 200);
    assert!(eventually(Duration::from_secs(15), || (!alive(pid)).then_some(())).is_some());
}

/// The worker image (scripts/build-worker-image.sh with this test's binary), once.
fn worker_image() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("worker-image");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-worker-image.sh");
            let run = std::process::Command::new("sh")
                .arg(&script)
                .arg(&out)
                .env("OMNICLOUD_BIN", common::BIN)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "build-worker-image.sh: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            out
        })
        .clone()
}

#[test]
fn the_worker_image_holds_this_binary_as_init_with_everything_it_needs() {
    if common::guest::elf().is_none() {
        return;
    }
    let out = worker_image();
    let contents = std::fs::read_to_string(out.join("contents.txt")).unwrap();
    for entry in [
        "./init",
        "./etc/modules",
        "./bin/modprobe",
        "./bin/busybox",
        "./bin/ip",
        "./bin/udhcpc",
        "./bin/sh",
        "./etc/udhcpc.script",
        "./var/lib/omnicloud",
    ] {
        assert!(
            contents.lines().any(|l| l == entry),
            "{entry} missing:\n{contents}"
        );
    }
    // Unpacked, the image runs its /init in a chroot: the binary and its libraries are all
    // there, and it plans a joining agent from a worker command line.
    let root = tempfile::tempdir().unwrap();
    let unpack = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | busybox cpio -i -d 2>/dev/null",
            out.join("initramfs.cpio.gz").display()
        ))
        .current_dir(root.path())
        .status()
        .unwrap();
    assert!(unpack.success());
    assert_eq!(
        std::fs::read(root.path().join("init")).unwrap(),
        std::fs::read(common::BIN).unwrap(),
        "/init is this binary"
    );
    let cmdline = "console=ttyS0 omnicloud.name=workers-0 omnicloud.roles=agent \
                   omnicloud.join=10.88.0.1:7946 omnicloud.token=t0k omnicloud.ip=dhcp";
    let plan = std::process::Command::new("chroot")
        .arg(root.path())
        .args(["/init", "init", "--dry-run", "--cmdline", cmdline])
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["plan"]["name"], "workers-0");
    assert_eq!(plan["plan"]["join"][0], "10.88.0.1:7946");
    let steps = plan["steps"].as_array().unwrap();
    let node = steps.last().unwrap();
    assert_eq!(node["step"], "node");
    assert_eq!(node["argv"][0], "/init");
    // The kernel modules it needs (Debian's kernel has virtio and ext4 as modules) are in
    // the image with their dependencies, and /init loads them before the network.
    assert!(
        contents
            .lines()
            .any(|l| l.ends_with("/drivers/net/virtio_net.ko")),
        "{contents}"
    );
    assert!(
        contents.lines().any(|l| l.ends_with("/fs/jbd2/jbd2.ko")),
        "ext4's dependency"
    );
    assert!(contents.lines().any(|l| l.ends_with("/modules.dep")));
    let modprobe = steps
        .iter()
        .position(|s| s["argv"][1] == "modprobe")
        .expect("a modprobe step from /etc/modules");
    let argv = steps[modprobe]["argv"].as_array().unwrap();
    assert!(argv.iter().any(|a| a == "virtio_net") && argv.iter().any(|a| a == "virtio_mmio"));
    let link_up = steps.iter().position(|s| s["argv"][2] == "link").unwrap();
    assert!(modprobe < link_up, "modules before the network");
    // The DHCP step runs the image's busybox with the image's lease script.
    assert!(steps.iter().any(|s| s["argv"][1] == "udhcpc"
        && s["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "/etc/udhcpc.script")));
    let busybox = std::process::Command::new("chroot")
        .arg(root.path())
        .args(["/bin/ip", "link", "show", "lo"])
        .output()
        .unwrap();
    assert!(busybox.status.success(), "the image's ip applet runs");
    // The kernel is a bzImage the VMM accepts with this initramfs.
    let kernel = std::fs::read(out.join("vmlinuz")).unwrap();
    assert_eq!(&kernel[0x202..0x206], b"HdrS", "a bzImage");
    let spec = serde_json::json!({"vcpus": 1, "memory_mib": 512,
        "kernel": out.join("vmlinuz"), "initrd": out.join("initramfs.cpio.gz")});
    let check = std::process::Command::new(common::BIN)
        .args(["__vmm", "check"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(spec.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn a_worker_vm_boots_the_worker_image_with_this_clusters_join_address_and_token() {
    if common::guest::elf().is_none() {
        return;
    }
    let out = worker_image();
    let _g = serial();
    let (node, _cleanup) = director_node_with(
        "dir5",
        &format!(
            "[director]\nworker_kernel = \"{}\"\nworker_initrd = \"{}\"\n",
            out.join("vmlinuz").display(),
            out.join("initramfs.cpio.gz").display()
        ),
    );
    let yaml = "apiVersion: omnicloud.io/v1\nkind: VirtualMachine\nmetadata: {name: workers}\n\
                spec: {worker: true, cpu: {cores: 1}, memory: {guest: 512Mi}}\n";
    let (code, body) = node.api().apply(yaml);
    assert_eq!(code, 200, "{body}");
    // The Linux guest does not finish booting under this machine's nested KVM, so this
    // checks what the director started: the VMM process and the spec it was given.
    let running = eventually(Duration::from_secs(30), || {
        let v = vms(&node, "workers").into_iter().next()?;
        (v["phase"] == "Running").then_some(v)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", vms(&node, "workers"), node.log()));
    let pid = running["pid"].as_i64().unwrap();
    let spec_path = node.dir.join("vms/default/workers-0/spec.json");
    let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["kernel"], out.join("vmlinuz").to_str().unwrap());
    assert_eq!(
        spec["initrd"],
        out.join("initramfs.cpio.gz").to_str().unwrap()
    );
    let token = std::fs::read_to_string(node.dir.join("join.token")).unwrap();
    let cmdline = spec["cmdline"].as_str().unwrap();
    for want in [
        "omnicloud.name=workers-0".to_string(),
        "omnicloud.roles=agent".to_string(),
        format!("omnicloud.join={}", node.gossip),
        format!("omnicloud.token={}", token.trim()),
    ] {
        assert!(cmdline.contains(&want), "{want} not in {cmdline}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&spec_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the spec holds the token: owner-only");
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&argv).contains(token.trim()),
        "the token is not in the VMM's argv"
    );
    let (code, _) = node
        .api()
        .delete("/v1/namespaces/default/virtualmachines/workers");
    assert_eq!(code, 200);
    assert!(eventually(Duration::from_secs(15), || (!alive(pid)).then_some(())).is_some());
}

/// `network.bridge: true`: the replica gets an address from the node subnet, a tap on the
/// node bridge and a MAC derived from the address; its frames reach the bridge and the
/// bridge's reach it.
#[test]
fn a_networked_vm_gets_an_address_and_a_tap_on_the_node_bridge() {
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let _g = serial();
    let bridge = "odirnet5";
    // Made up front so the test can listen before the guest's first frame; the director
    // gives it the subnet's gateway address (setting up an existing bridge is idempotent).
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .output();
    common::packet::ip(&["link", "add", bridge, "type", "bridge"]).unwrap();
    let _del = common::packet::DeleteLink(bridge.into());
    common::packet::ip(&["link", "set", bridge, "up"]).unwrap();
    const ETHERTYPE: u16 = 0x88b5;
    let socket = common::packet::PacketSocket::bind(bridge, ETHERTYPE).unwrap();
    let (node, _cleanup) = director_node_with(
        "dir6",
        &format!("[network]\ncluster_cidr = \"10.96.0.0/16\"\nbridge = \"{bridge}\"\n"),
    );
    let yaml = vm_yaml(
        "net",
        &kernel,
        1,
        "  cmdline: omnicloud.net omnicloud.hold\n  network: {bridge: true}\n",
    );
    let (code, body) = node.api().apply(&yaml);
    assert_eq!(code, 200, "{body}");
    let frame = socket.recv(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "no frame from the guest: {:?}\n{}",
            vms(&node, "net"),
            node.log()
        )
    });
    let inst = eventually(Duration::from_secs(10), || {
        let (_, v) = node.api().get("/v1/namespaces/default/instances/net-0");
        let has_ip = v["status"]["ip"].as_str().is_some_and(|s| !s.is_empty());
        has_ip.then_some(v)
    })
    .expect("the replica's address in its status");
    let ip: std::net::Ipv4Addr = inst["status"]["ip"].as_str().unwrap().parse().unwrap();
    let o = ip.octets();
    assert_eq!(&o[..2], &[10, 96], "an address of the node subnet: {ip}");
    let mac = [0x02, 0x0c, o[0], o[1], o[2], o[3]];
    assert_eq!(
        frame[6..12],
        mac,
        "the guest's source MAC is derived from its address"
    );
    assert_eq!(frame[12..14], ETHERTYPE.to_be_bytes());
    // The tap is on the node bridge.
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(links.contains("ovm"), "no VM tap on {bridge}: {links}");
    // A frame back to the guest.
    let mut reply = mac.to_vec();
    reply.extend_from_slice(&[0x02, 0xfe, 0, 0, 0, 1]);
    reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
    reply.extend_from_slice(b"hello from the director test");
    socket.send(&reply).unwrap();
    let log = eventually(Duration::from_secs(15), || {
        let (ok, out, _) = node.cli(&["vms", "logs", "net-0"]);
        (ok && out.contains("holding")).then_some(out)
    })
    .expect("the guest got past its network check");
    assert!(
        log.contains("net rx: hello from the director test"),
        "{log}"
    );
    let spec: Value = serde_json::from_slice(
        &std::fs::read(node.dir.join("vms/default/net-0/spec.json")).unwrap(),
    )
    .unwrap();
    assert!(
        spec["cmdline"]
            .as_str()
            .unwrap()
            .contains(&format!("ip={ip}::")),
        "{spec}"
    );
    // Deleted: the VMM ends and the kernel removes its tap.
    let (code, _) = node
        .api()
        .delete("/v1/namespaces/default/virtualmachines/net");
    assert_eq!(code, 200);
    let gone = eventually(Duration::from_secs(15), || {
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", bridge])
            .output()
            .unwrap();
        (!String::from_utf8_lossy(&out.stdout).contains("ovm")).then_some(())
    });
    assert!(gone.is_some(), "the tap outlived its VM");
}

/// Service `name`'s endpoint addresses with their first port: `IP:PORT`.
fn endpoints(node: &TestNode, name: &str) -> Vec<String> {
    let e = get(node, &format!("/v1/namespaces/default/endpoints/{name}"));
    let mut all = Vec::new();
    for s in e["spec"]["subsets"].as_array().into_iter().flatten() {
        let port = &s["ports"][0]["port"];
        for a in s["addresses"].as_array().into_iter().flatten() {
            all.push(format!("{}:{port}", a["ip"].as_str().unwrap_or_default()));
        }
    }
    all
}

/// Connects to `to` from network namespace `ns` (attempts that nothing answers) while
/// watching `tap` there for a TCP SYN to `ip:port` sent to `mac`: that frame, if any.
fn syn_on_tap(
    ns: &str,
    tap: &str,
    to: std::net::SocketAddr,
    mac: [u8; 6],
    ip: std::net::Ipv4Addr,
    port: u16,
) -> Option<Vec<u8>> {
    // ETH_P_ALL: a socket for one ethertype sees only frames coming in, not those the tap
    // transmits to the guest.
    let socket = common::packet::PacketSocket::bind_in(
        &format!("/run/netns/{ns}"),
        tap,
        libc::ETH_P_ALL as u16,
    )
    .expect("a packet socket on the VM's tap");
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let connecting = std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        for _ in 0..5 {
            let _ = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1));
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let syn = std::iter::from_fn(|| {
        socket.recv(deadline.saturating_duration_since(std::time::Instant::now()))
    })
    .find(|f| common::packet::is_tcp_syn_to(f, &mac, ip, port));
    connecting.join().unwrap();
    syn
}

/// A VM replica with `network.bridge: true` is an endpoint of a Service, and the Service's
/// traffic reaches it: a director node in a test network namespace (with a /sys of its
/// own, where the VMM finds the bridge) runs the replica; the Service selecting the VM's
/// labels lists the replica's address in its Endpoints, the node's rules DNAT the cluster
/// IP to it, and a connection from the node to `VIP:80` arrives on the VM's tap as a SYN to
/// `VM-IP:8080` (captured with a packet socket on the tap). The test guest has no IP stack
/// (it answers neither ARP nor TCP), so the test stands in for its ARP reply with a
/// permanent neighbour entry (its MAC is derived from its address) and checks the frame
/// delivered to it rather than an answer; the test host has no default route, so the
/// service CIDR gets a route on the bridge (a node needs some route to cluster IPs, as
/// with kube-proxy). Deleting the VM takes it out of the Endpoints and the rules.
#[test]
fn a_networked_vm_replica_is_a_service_endpoint_and_gets_the_services_traffic() {
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let _g = serial();
    let Some(net) = common::netns::TestNet::new(1) else {
        return;
    };
    let (ns, ip) = (net.ns(0), net.ip(0));
    let bridge = "odirsvc0";
    let (node, _cleanup) = {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[agent]\nusage_report_ms = 500\n[network]\ncluster_cidr = \"10.86.0.0/16\"\n\
                 bridge = \"{bridge}\"\nservice_cidr = \"10.98.0.0/24\"\n"
            ),
        )
        .unwrap();
        let node = TestNode::start_director_in(
            "dirsvc",
            &[
                "--roles",
                "orchestrator,director",
                "--bind",
                &ip,
                "--advertise",
                &ip,
            ]
            .into_iter()
            .chain(["--config", config.path().to_str().unwrap()])
            .collect::<Vec<_>>(),
            &ns,
        );
        let dir = node.dir.clone();
        (
            node,
            KillVmms {
                dir,
                links: Vec::new(),
            },
        )
    };
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: vmweb}}\nspec:\n  \
         selector: {{app: vmweb}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n",
        vm_yaml(
            "vmweb",
            &kernel,
            1,
            "  cmdline: omnicloud.net omnicloud.hold\n  network: {bridge: true}\n"
        )
    );
    let (code, body) = node.api().apply(&yaml);
    assert_eq!(code, 200, "{body}");
    wait_ready(&node, "vmweb", 1);
    let vm_ip: std::net::Ipv4Addr = eventually(Duration::from_secs(15), || {
        get(&node, "/v1/namespaces/default/instances/vmweb-0")["status"]["ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
    })
    .expect("the replica's address");
    let vip = get(&node, "/v1/namespaces/default/services/vmweb")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();

    // The replica is a ready endpoint, and the node's rules DNAT the cluster IP to it.
    let target = format!("{vm_ip}:8080");
    eventually(Duration::from_secs(30), || {
        (endpoints(&node, "vmweb") == [target.clone()]).then_some(())
    })
    .unwrap_or_else(|| panic!("vmweb's endpoints: {:?}", endpoints(&node, "vmweb")));
    let rule = format!("default/vmweb:http -> {target}\"");
    let nat = || common::netns::run_in(&ns, &["iptables-save", "-t", "nat"]);
    eventually(Duration::from_secs(30), || {
        nat().contains(&rule).then_some(())
    })
    .unwrap_or_else(|| panic!("no rule to {target}:\n{}", nat()));

    // A connection to the cluster IP from the node arrives on the VM's tap.
    let o = vm_ip.octets();
    let mac = [0x02, 0x0c, o[0], o[1], o[2], o[3]];
    let lladdr = mac.map(|b| format!("{b:02x}")).join(":");
    let vm = vm_ip.to_string();
    let neigh = [
        "ip", "neigh", "replace", &vm, "lladdr", &lladdr, "dev", bridge,
    ];
    common::netns::run_in(&ns, &[&neigh[..], &["nud", "permanent"]].concat());
    common::netns::run_in(
        &ns,
        &["ip", "route", "replace", "10.98.0.0/24", "dev", bridge],
    );
    let links = common::netns::run_in(&ns, &["ip", "-o", "link", "show", "master", bridge]);
    let tap = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .find(|n| n.starts_with("ovm"))
        .unwrap_or_else(|| panic!("no VM tap on {bridge}: {links}"));
    let to = format!("{vip}:80").parse().unwrap();
    let syn = syn_on_tap(&ns, &tap, to, mac, vm_ip, 8080).unwrap_or_else(|| {
        panic!(
            "no SYN to {target} on the VM's tap:\n{}\n{}",
            common::netns::run_in(&ns, &["iptables-save", "-c", "-t", "nat"]),
            common::netns::run_in(&ns, &["ip", "-s", "link"])
        )
    });
    eprintln!(
        "a connection to {vip}:80 from the node reached the VM's tap as a SYN from {}.{}.{}.{} \
         to {target}",
        syn[26], syn[27], syn[28], syn[29]
    );

    // Deleted: the replica leaves the Endpoints and the rules.
    let (code, _) = node
        .api()
        .delete("/v1/namespaces/default/virtualmachines/vmweb");
    assert_eq!(code, 200);
    eventually(Duration::from_secs(30), || {
        (endpoints(&node, "vmweb").is_empty() && !nat().contains(&rule)).then_some(())
    })
    .unwrap_or_else(|| panic!("still an endpoint: {:?}", endpoints(&node, "vmweb")));
}
