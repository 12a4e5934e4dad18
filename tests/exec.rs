//! `omnicloud exec` with real containers, as root: a command's output and exit code, stdin
//! piped through, a terminal with `-it`, the command in the container's cgroups, an exec
//! readiness probe on the same path, from the node that runs the instance and from one
//! that does not; and the errors (a missing instance, container or command, a wrong
//! token). Skips loudly without root or the test images.

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, TestNode, BIN};

/// A node with the agent role (seed), a node without it that joined, and on drop every
/// container the agent ran removed.
struct Pair {
    agent: TestNode,
    other: TestNode,
    bridge: String,
}

/// One pair at a time: they share the bridge name and the host's iptables.
static SERIAL: Mutex<()> = Mutex::new(());

impl Pair {
    /// With `debian`, the images of scripts/build-debian-images.sh imported too.
    fn start(debian: bool) -> Option<Pair> {
        let layout = common::images::layout()?;
        let debian = match debian {
            true => Some(common::images::debian_layout()?),
            false => None,
        };
        let bridge = "octestx".to_string();
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[network]\ncluster_cidr = \"10.89.0.0/16\"\nbridge = \"{bridge}\"\ndns_upstreams = [\"127.0.0.1:9\"]\n"
            ),
        )
        .unwrap();
        let cfg = config.path().to_str().unwrap().to_string();
        let agent = TestNode::start_with("exec-a", &["--roles", "auto", "--config", &cfg]);
        common::images::import(&agent.dir, &layout);
        if let Some(d) = debian {
            common::images::import(&agent.dir, &d);
        }
        let token = agent.dir.join("join.token");
        let other = TestNode::start_with(
            "exec-b",
            &[
                "--roles",
                "orchestrator",
                "--join",
                &agent.gossip,
                "--token-file",
                token.to_str().unwrap(),
            ],
        );
        std::mem::forget(config);
        Some(Pair {
            agent,
            other,
            bridge,
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.other.kill9();
        self.agent.kill9();
        common::remove_containers(&self.agent.dir);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

const BOX: &str = r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata:
  name: box
spec:
  replicas: 1
  selector:
    matchLabels: {app: box}
  template:
    metadata:
      labels: {app: box}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:latest
        command: [sh, -c, "exec sleep 3600"]
        readinessProbe:
          exec: {command: [test, -e, /tmp/ready]}
          periodSeconds: 1
"#;

/// (exit code, stdout, stderr) of `omnicloud exec ARGS` against `node`.
fn exec(node: &TestNode, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    exec_with_token(node, &node.token, args, stdin)
}

fn exec_with_token(
    node: &TestNode,
    token: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("exec")
        .args(args)
        .env("OMNICLOUD_SERVER", &node.api)
        .env("OMNICLOUD_TOKEN", token)
        .env("OMNICLOUD_CA", node.dir.join("tls/ca.crt"))
        .env("OMNICLOUD_CLIENT_CONFIG", node.dir.join("no-client.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ready(node: &TestNode) -> i64 {
    let (_, d) = node.api().get("/v1/namespaces/default/deployments/box");
    d["status"]["readyReplicas"].as_i64().unwrap_or(0)
}

#[test]
fn exec_runs_commands_in_a_container_from_any_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pair) = Pair::start(false) else {
        return;
    };
    let (a, b) = (&pair.agent, &pair.other);
    let (code, body) = a.api().apply(BOX);
    assert!(code < 300, "{body}");
    let mut last = String::new();
    let instance = eventually(Duration::from_secs(60), || {
        let (_, v) = a
            .api()
            .get("/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3Dbox");
        let item = v["items"].as_array()?.first()?.clone();
        let name = item["metadata"]["name"].as_str()?.to_string();
        let (code, out, err) = exec(a, &[&name, "--", "true"], None);
        last = format!("exit {code}: {out}{err}");
        (code == 0).then_some(name)
    })
    .unwrap_or_else(|| panic!("the instance never ran a command: {last}"));
    let inst = instance.as_str();
    assert_eq!(
        b.api()
            .get(&format!("/v1/namespaces/default/instances/{inst}"))
            .1["spec"]["nodeName"],
        "exec-a",
        "the instance runs on the agent node"
    );

    // Output, stderr and the exit code, on the owner node and through the other one.
    for node in [a, b] {
        let (code, out, err) = exec(
            node,
            &[inst, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"],
            None,
        );
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (3, "hi\n", "oops\n"),
            "via {}",
            node.name
        );
    }

    // stdin, piped through (from the other node, so the relay carries it both ways).
    let input = "line one\nline two\n".repeat(500);
    let (code, out, err) = exec(b, &["-i", inst, "--", "cat"], Some(&input));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, input);

    // The command runs in the container's cgroups (pid 1 is the container's init there).
    let (_, mine, _) = exec(a, &[inst, "--", "cat", "/proc/self/cgroup"], None);
    let (_, init, _) = exec(a, &[inst, "--", "cat", "/proc/1/cgroup"], None);
    let memory = |s: &str| s.lines().find(|l| l.contains(":memory:")).map(String::from);
    assert!(memory(&init).is_some(), "{init}");
    assert_eq!(memory(&mine), memory(&init));

    // The exec readiness probe sees what an exec wrote: the same container.
    assert_eq!(ready(a), 0, "not ready before /tmp/ready exists");
    let (code, _, err) = exec(b, &[inst, "--", "touch", "/tmp/ready"], None);
    assert_eq!(code, 0, "{err}");
    eventually(Duration::from_secs(20), || (ready(a) == 1).then_some(()))
        .expect("the exec readiness probe never passed");

    // A terminal: `tty` names a pty of the container; the default size reaches it.
    let script = |node: &TestNode, cmd: &str| -> String {
        let line = format!("{BIN} exec -it {inst} -- {cmd}");
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("OMNICLOUD_SERVER", &node.api)
            .env("OMNICLOUD_TOKEN", &node.token)
            .env("OMNICLOUD_CA", node.dir.join("tls/ca.crt"))
            .env("OMNICLOUD_CLIENT_CONFIG", node.dir.join("no-client.toml"))
            .stdin(Stdio::null())
            .output()
            .expect("script(1) from util-linux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = script(b, "tty");
    assert!(tty.contains("/dev/pts/"), "{tty:?}");
    // script(1)'s terminal has no size (stdin is not a terminal): 24 rows, 80 columns.
    let size = script(a, "stty size");
    assert!(size.contains("24 80"), "{size:?}");
    let (_, piped, _) = exec(a, &[inst, "--", "tty"], None);
    assert!(piped.contains("not a tty"), "without -t: {piped:?}");

    // Errors: a missing command, one that cannot run, a missing container or instance.
    let (code, _, err) = exec(b, &[inst, "--", "nosuchcmd"], None);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("\"nosuchcmd\": executable file not found"),
        "{err}"
    );
    let (code, _, err) = exec(a, &[inst, "--", "/etc/passwd"], None);
    assert_eq!(code, 126, "{err}");
    for node in [a, b] {
        let (code, _, err) = exec(node, &[inst, "-c", "db", "--", "true"], None);
        assert_eq!(code, 1);
        assert!(
            err.contains("container \"db\" is not in instance") && err.contains("it has: main"),
            "{err}"
        );
    }
    let (code, _, err) = exec(b, &["nosuch-0", "--", "true"], None);
    assert_eq!(code, 1);
    assert!(err.contains("nosuch-0 not found"), "{err}");
    let (code, _, err) = exec_with_token(b, "wrong", &[inst, "--", "true"], None);
    assert_eq!(code, 1);
    assert!(err.contains("token"), "{err}");
}

const NGINX: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: site
data:
  index.html: "<h1>served by Debian's nginx</h1>"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:latest
        ports: [{containerPort: 80}]
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
        volumeMounts:
        - {name: site, mountPath: /var/www/html}
      volumes:
      - {name: site, configMap: {name: site}}
"#;

#[test]
fn debian_nginx_serves_a_configmap_page_and_takes_an_exec() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pair) = Pair::start(true) else {
        return;
    };
    let a = &pair.agent;
    let (code, body) = a.api().apply(NGINX);
    assert!(code < 300, "{body}");
    let ready = eventually(Duration::from_secs(60), || {
        let (_, d) = a.api().get("/v1/namespaces/default/deployments/web");
        (d["status"]["readyReplicas"].as_i64() == Some(1)).then_some(())
    });
    let (_, list) = a
        .api()
        .get("/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3Dweb");
    let inst = list["items"][0].clone();
    assert!(ready.is_some(), "nginx never became ready: {inst:#}");
    let ip = inst["status"]["ip"].as_str().unwrap().to_string();
    let page = common::http_get(&format!("http://{ip}/")).unwrap();
    assert_eq!(page, "<h1>served by Debian's nginx</h1>");
    let name = inst["metadata"]["name"].as_str().unwrap();
    let (code, _, err) = exec(&pair.other, &[name, "--", "nginx", "-v"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nginx version: nginx/"), "{err}");
}
