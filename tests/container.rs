//! Real containers through the `omnicloud __container` helper: busybox and toolbox images
//! built by scripts/build-images.sh (once per test binary), one temporary runtime root per
//! test. Needs root (namespaces, cgroups, overlay mounts); without it every test skips
//! loudly, and fails when OMNICLOUD_REQUIRE_ALL=1.
//!
//! This process makes itself a child subreaper, so container init processes become its
//! children once the helper has exited, and their exit codes can be collected.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use omnicloud::container::runtime::{self, ContainerState};
use omnicloud::container::{
    helper_command_with, ContainerSpec, EnvVar, Network, RunOutput, Status, Verb,
};

const BIN: &str = env!("CARGO_BIN_EXE_omnicloud");

/// Containers run one test at a time (the latency figure means something that way).
static SERIAL: Mutex<()> = Mutex::new(());

/// The image layout, built once; None (after a loud skip) where containers cannot run.
fn images() -> Option<PathBuf> {
    let layout = common::images::layout()?;
    runtime::become_subreaper().expect("becoming a child subreaper");
    Some(layout)
}

/// One runtime root; deletes whatever is left in it and reaps its containers on drop.
struct Rt {
    dir: tempfile::TempDir,
    layout: PathBuf,
    pids: Mutex<Vec<i32>>,
    _serial: MutexGuard<'static, ()>,
}

impl Rt {
    fn new() -> Option<Rt> {
        Rt::with_prefix("containers-")
    }

    fn with_prefix(prefix: &str) -> Option<Rt> {
        let layout = images()?;
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        Some(Rt {
            dir,
            layout,
            pids: Mutex::new(Vec::new()),
            _serial: serial,
        })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn spec(&self, id: &str, image: &str, command: &[&str]) -> ContainerSpec {
        let mut s = ContainerSpec::new(id, &self.layout, image, &self.log(id));
        if !command.is_empty() {
            s.command = Some(command.iter().map(|c| c.to_string()).collect());
        }
        s
    }

    fn log(&self, id: &str) -> PathBuf {
        self.root().join("logs").join(format!("{id}.log"))
    }

    fn helper(&self, verb: Verb, stdin: &str) -> Output {
        let mut cmd = helper_command_with(Path::new(BIN), self.root(), &verb);
        let mut child = cmd.spawn().unwrap();
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// create + start; Err is the helper's stderr.
    fn run(&self, spec: &ContainerSpec) -> Result<i32, String> {
        self.run_json(&serde_json::to_string(spec).unwrap())
    }

    fn run_json(&self, json: &str) -> Result<i32, String> {
        let out = self.helper(Verb::Run, json);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let run: RunOutput = serde_json::from_slice(&out.stdout).unwrap();
        self.pids.lock().unwrap().push(run.pid);
        Ok(run.pid)
    }

    fn state(&self, id: &str) -> Result<ContainerState, String> {
        let out = self.helper(Verb::State { id: id.into() }, "");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    }

    fn kill(&self, id: &str, signal: &str) {
        let out = self.helper(
            Verb::Kill {
                id: id.into(),
                signal: signal.into(),
                all: false,
            },
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), String> {
        let out = self.helper(
            Verb::Delete {
                id: id.into(),
                force,
            },
            "",
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn wait_status(&self, id: &str, want: Status) -> ContainerState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id).unwrap();
            if s.status == want || Instant::now() > deadline {
                assert_eq!(s.status, want, "container {id}: {s:?}");
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn has_state(&self, id: &str) -> bool {
        self.root().join("state").join(id).exists() || self.root().join("bundles").join(id).exists()
    }
}

/// The exit code of a container init process (our child once its helper has exited).
fn reap(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = runtime::try_reap(pid).unwrap() {
            return code;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        for dir in ["state", "bundles"] {
            for e in std::fs::read_dir(self.root().join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = self.delete(&e.file_name().to_string_lossy(), true);
            }
        }
        for pid in self.pids.lock().unwrap().drain(..) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(runtime::try_reap(pid), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn read_log(rt: &Rt, id: &str) -> String {
    std::fs::read_to_string(rt.log(id)).unwrap_or_default()
}

#[test]
fn hello_runs_to_completion_in_its_own_namespaces() {
    let Some(rt) = Rt::new() else { return };
    let mut spec = rt.spec(
        "hello",
        "busybox",
        &[
            "sh",
            "-c",
            "echo hello from $HOSTNAME; echo ifaces=$(tail -n +3 /proc/net/dev | wc -l) \
             lo=$(cat /sys/class/net/lo/operstate); echo pid=$$; exit 0",
        ],
    );
    spec.hostname = Some("hello-host".into());
    let pid = rt.run(&spec).unwrap();
    assert!(pid > 0);
    assert_eq!(reap(pid), 0);
    let state = rt.wait_status("hello", Status::Stopped);
    assert_eq!(state.pid, Some(pid));
    let log = read_log(&rt, "hello");
    assert!(log.contains("hello from hello-host\n"), "log: {log}");
    assert!(
        log.contains("ifaces=1 lo=unknown") || log.contains("ifaces=1 lo=up"),
        "log: {log}"
    );
    assert!(log.contains("pid=1\n"), "log: {log}");
    rt.delete("hello", false).unwrap();
    assert!(!rt.has_state("hello"));

    // The host's network namespace, on request.
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    let spec = ContainerSpec {
        network: Network::Host,
        ..rt.spec(
            "hostnet",
            "busybox",
            &[
                "sh",
                "-c",
                "echo ifaces=$(tail -n +3 /proc/net/dev | wc -l)",
            ],
        )
    };
    assert_eq!(reap(rt.run(&spec).unwrap()), 0);
    let log = read_log(&rt, "hostnet");
    assert!(
        log.contains(&format!("ifaces={host_ifaces}\n")),
        "log: {log}"
    );
}

#[test]
fn a_long_running_container_is_killed_and_deleted_without_a_trace() {
    let Some(rt) = Rt::new() else { return };
    let pid = rt
        .run(&rt.spec("sleeper", "busybox", &["sleep", "30"]))
        .unwrap();
    let state = rt.wait_status("sleeper", Status::Running);
    assert_eq!(state.pid, Some(pid));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let cgroup = runtime::memory_cgroup_dir("sleeper").expect("memory cgroup exists");

    let err = rt.delete("sleeper", false).unwrap_err();
    assert!(err.contains("is running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    rt.kill("sleeper", "KILL");
    assert_eq!(reap(pid), 137);
    rt.wait_status("sleeper", Status::Stopped);
    rt.delete("sleeper", false).unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!rt.has_state("sleeper"));
    assert!(!cgroup.exists(), "cgroup {cgroup:?} removed");
    let err = rt.state("sleeper").unwrap_err();
    assert!(err.contains("does not exist"), "{err}");

    // --force deletes a running container in one step.
    let pid = rt
        .run(&rt.spec("forced", "busybox", &["sleep", "30"]))
        .unwrap();
    rt.delete("forced", true).unwrap();
    assert_eq!(reap(pid), 137);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!rt.has_state("forced"));
}

#[test]
fn the_memory_limit_is_enforced_by_the_oom_killer() {
    let Some(rt) = Rt::new() else { return };
    let mut spec = rt.spec(
        "hog",
        "busybox",
        &["sh", "-c", "sleep 0.3; head -c 200000000 /dev/zero | tail"],
    );
    spec.resources.memory_limit_bytes = Some(16 << 20);
    spec.resources.cpu_limit_millis = Some(500);
    spec.resources.cpu_request_millis = Some(250);
    let pid = rt.run(&spec).unwrap();
    let cgroup = runtime::memory_cgroup_dir("hog").expect("memory cgroup exists");
    let limit = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cgroup.join(f)).ok())
        .unwrap();
    assert_eq!(limit.trim(), "16777216");
    let code = reap(pid);
    assert_eq!(code, 137, "exit code after an OOM kill");
    let state = rt.wait_status("hog", Status::Stopped);
    assert!(state.oom_kills.unwrap_or(0) >= 1, "{state:?}");
    let cpu = Path::new("/sys/fs/cgroup/cpu/omnicloud/hog");
    if cpu.exists() {
        let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
        assert_eq!(quota.trim(), "50000");
        let shares = std::fs::read_to_string(cpu.join("cpu.shares")).unwrap();
        assert_eq!(shares.trim(), "256");
    }
    rt.delete("hog", false).unwrap();
    assert!(!rt.has_state("hog"));
}

#[test]
fn env_working_dir_and_args_override_the_image() {
    let Some(rt) = Rt::new() else { return };
    let mut spec = rt.spec("envy", "busybox", &["sh", "-c"]);
    spec.args = Some(vec![
        "echo cwd=$(pwd) foo=$FOO path=$PATH host=$HOSTNAME; echo argv=$0,$1".into(),
        "zero".into(),
        "one".into(),
    ]);
    spec.env = vec![
        EnvVar {
            name: "FOO".into(),
            value: "bar baz".into(),
        },
        EnvVar {
            name: "PATH".into(),
            value: "/bin:/usr/bin".into(),
        },
    ];
    spec.working_dir = Some("/tmp".into());
    assert_eq!(reap(rt.run(&spec).unwrap()), 0);
    let log = read_log(&rt, "envy");
    assert!(
        log.contains("cwd=/tmp foo=bar baz path=/bin:/usr/bin host=envy\n"),
        "log: {log}"
    );
    assert!(log.contains("argv=zero,one\n"), "log: {log}");

    // args alone keep the image's Entrypoint: the toolbox image runs `omnicloud ARGS`.
    let mut spec = rt.spec("tool", "toolbox", &[]);
    spec.args = Some(vec!["--version".into()]);
    assert_eq!(reap(rt.run(&spec).unwrap()), 0);
    let log = read_log(&rt, "tool");
    assert!(log.starts_with("omnicloud "), "log: {log}");
}

#[test]
fn bad_specs_fail_clearly_and_leave_nothing() {
    let Some(rt) = Rt::new() else { return };
    let one_line = |e: &str| {
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert!(e.starts_with("error: "), "{e}");
    };

    let err = rt
        .run(&rt.spec("noimage", "nosuch:1.0", &["true"]))
        .unwrap_err();
    one_line(&err);
    assert!(err.contains("image nosuch:1.0 not found"), "{err}");
    assert!(!rt.has_state("noimage"));

    let err = rt
        .run(&rt.spec("nocmd", "busybox", &["/no/such/binary"]))
        .unwrap_err();
    one_line(&err);
    assert!(err.contains("\"/no/such/binary\" not found"), "{err}");
    assert!(!rt.has_state("nocmd"));

    let err = rt
        .run(&rt.spec("nopath", "busybox", &["frobnicate"]))
        .unwrap_err();
    assert!(err.contains("not found in the image's PATH"), "{err}");
    assert!(!rt.has_state("nopath"));

    let err = rt.run_json(r#"{"id": "x", "image": {}}"#).unwrap_err();
    one_line(&err);
    assert!(err.contains("invalid container spec: image"), "{err}");

    let err = rt
        .run(&rt.spec("bad/id", "busybox", &["true"]))
        .unwrap_err();
    assert!(err.contains("id \"bad/id\""), "{err}");

    // A second container with a live one's id is refused; the first keeps running.
    let pid = rt
        .run(&rt.spec("twin", "busybox", &["sleep", "30"]))
        .unwrap();
    let err = rt.run(&rt.spec("twin", "busybox", &["true"])).unwrap_err();
    assert!(err.contains("container twin already exists"), "{err}");
    assert_eq!(rt.state("twin").unwrap().status, Status::Running);
    rt.delete("twin", true).unwrap();
    assert_eq!(reap(pid), 137);

    // No cgroups and no mounts leak from failed runs.
    for id in ["noimage", "nocmd", "nopath"] {
        assert!(runtime::memory_cgroup_dir(id).is_none(), "{id}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(rt.root().to_str().unwrap()), "{mounts}");
}

#[test]
fn the_rootfs_is_copied_where_overlay_cannot_be_used() {
    // overlayfs options cannot name a path with a comma, so this root forces the copy.
    let Some(rt) = Rt::with_prefix("containers,copy-") else {
        return;
    };
    let spec = rt.spec(
        "copied",
        "busybox",
        &["sh", "-c", "echo written > /tmp/f; cat /tmp/f; sleep 30"],
    );
    let pid = rt.run(&spec).unwrap();
    rt.wait_status("copied", Status::Running);
    let bundle = rt.root().join("bundles/copied");
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(!bundle.join("upper").exists(), "no overlay upper dir");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("containers,copy-"), "{mounts}");
    rt.delete("copied", true).unwrap();
    assert_eq!(reap(pid), 137);
    assert!(read_log(&rt, "copied").contains("written\n"));
    assert!(!rt.has_state("copied"));
}

#[test]
fn start_latency() {
    let Some(rt) = Rt::new() else { return };
    // The first run unpacks the layer into the cache; measure warm starts.
    let warm = rt.spec("warm", "busybox", &["true"]);
    assert_eq!(reap(rt.run(&warm).unwrap()), 0);
    rt.delete("warm", false).unwrap();
    let mut times = Vec::new();
    for i in 0..20 {
        let id = format!("lat{i}");
        let spec = rt.spec(&id, "busybox", &["true"]);
        let t = Instant::now();
        let pid = rt.run(&spec).unwrap();
        times.push(t.elapsed());
        assert_eq!(reap(pid), 0);
        rt.delete(&id, false).unwrap();
    }
    times.sort();
    eprintln!(
        "container start (helper run: overlay rootfs + create + start), 20 runs: \
         median {:.1} ms, min {:.1} ms, max {:.1} ms",
        times[10].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[19].as_secs_f64() * 1000.0
    );
}

/// Two instances on a node bridge: each gets its own IP in the node subnet; one serves
/// HTTP, the other fetches from it by IP, and the node reaches it through the bridge.
#[test]
fn instances_on_a_node_reach_each_other_by_ip() {
    use omnicloud::container::network::{NodeNetwork, Subnet};
    let Some(rt) = Rt::with_prefix("net-") else {
        return;
    };
    let tag = std::process::id() % 200 + 20;
    let subnet = Subnet::parse(&format!("10.98.{tag}.0/24")).unwrap();
    let net = NodeNetwork::ensure(&format!("ocbrt{tag}"), subnet, subnet).expect("bridge");
    let cleanup = scopeguard(|| net.remove());
    let ip_b = std::net::Ipv4Addr::new(10, 98, tag as u8, 10);
    let ip_a = std::net::Ipv4Addr::new(10, 98, tag as u8, 11);

    let server = rt.spec(
        "srv",
        "busybox:latest",
        &["sh", "-c", "mkdir -p /tmp/www && echo hello-from-b > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
    );
    let pid_b = rt.run(&server).expect("server starts");
    net.attach("srv", pid_b, ip_b).expect("attach server");
    let client_cmd = format!("sleep 1; wget -qO- http://{ip_b}:8080/; sleep 30");
    let client = rt.spec("cli", "busybox:latest", &["sh", "-c", &client_cmd]);
    let pid_a = rt.run(&client).expect("client starts");
    net.attach("cli", pid_a, ip_a).expect("attach client");

    // The node reaches the instance through the bridge.
    let body = common::eventually(Duration::from_secs(10), || {
        ureq::get(&format!("http://{ip_b}:8080/"))
            .timeout(Duration::from_secs(2))
            .call()
            .ok()?
            .into_string()
            .ok()
    });
    assert_eq!(body.as_deref().map(str::trim), Some("hello-from-b"));
    // And the other instance does too.
    let fetched = common::eventually(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(rt.log("cli")).ok()?;
        log.contains("hello-from-b").then_some(())
    });
    assert!(
        fetched.is_some(),
        "client log: {:?}",
        std::fs::read_to_string(rt.log("cli"))
    );

    for id in ["cli", "srv"] {
        rt.kill(id, "KILL");
        net.detach(id);
        rt.delete(id, true).unwrap();
    }
    drop(cleanup);
}

/// Runs `f` when dropped (also when the test panics), so the bridge never outlives it.
fn scopeguard<F: FnMut()>(f: F) -> impl Drop {
    struct Guard<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    Guard(f)
}

/// `omnicloud image import|ls|rm` on a node data dir: an OCI layout directory, the same
/// layout as a tar archive, and a run from the imported store.
#[test]
fn images_import_list_and_remove_through_the_cli() {
    let Some(layout) = images() else { return };
    let data = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("OMNICLOUD_DATA_DIR", data.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&["image", "import", layout.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("busybox:latest") && out.contains("toolbox:latest"),
        "{out}"
    );

    // The same images as one tar archive import idempotently.
    let tarball = data.path().join("images.tar");
    let status = std::process::Command::new("tar")
        .args([
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            "--exclude=.build",
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, _, err) = cli(&["image", "import", tarball.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["image", "ls", "-o", "json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["busybox:latest", "toolbox:latest"]);

    // A container runs from the imported store.
    let store = data.path().join("images");
    if let Some(rt) = Rt::new() {
        let mut spec = rt.spec("from-store", "busybox:latest", &["echo", "from the store"]);
        spec.image.layout = store.clone();
        rt.run(&spec).expect("runs from the imported store");
        rt.wait_status("from-store", Status::Stopped);
        assert!(std::fs::read_to_string(rt.log("from-store"))
            .unwrap()
            .contains("from the store"));
        rt.delete("from-store", true).unwrap();
    }

    let (ok, out, _) = cli(&["image", "rm", "toolbox"]);
    assert!(ok && out.contains("toolbox:latest removed"), "{out}");
    let (_, out, _) = cli(&["image", "ls"]);
    assert!(
        out.contains("busybox:latest") && !out.contains("toolbox"),
        "{out}"
    );
    let (ok, _, err) = cli(&["image", "rm", "toolbox"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = cli(&["image", "import", "/nonexistent.tar"]);
    assert!(!ok && err.contains("/nonexistent.tar"), "{err}");
}
