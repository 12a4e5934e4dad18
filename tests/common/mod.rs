//! Test harness: real `omnicloud node` processes on loopback with free ports and temp data
//! dirs, killed with SIGKILL or stopped with SIGTERM, and a small HTTP client for the API.
//! Shared by every integration test file (`mod common;`). Several hosts: `netns::TestNet`
//! (one segment) and `hosts::Hosts` (two segments behind a router, and a LAN client), both
//! accepted by `Cluster::start_on`.
#![allow(dead_code)]

pub mod guest;
pub mod hosts;
pub mod images;
pub mod netns;
pub mod packet;
pub mod registry;
pub mod token;
pub mod vms;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_omnicloud");

pub struct TestNode {
    pub name: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub(crate) child: Option<Child>,
    pub api: String,
    pub token: String,
    /// Gossip address (`127.0.0.1:port`) of the running process.
    pub gossip: String,
    pub node_id: String,
    extra: Vec<String>,
    wait_ready: bool,
    /// Runs the node inside this network namespace (`nsenter --net`).
    pub netns: Option<String>,
    /// With `netns`: `ip netns exec` instead, whose mount namespace has a /sys of that
    /// network namespace (what the VMM reads interfaces from) but no cgroup hierarchy
    /// (so no containers): for director-only nodes.
    own_sys: bool,
    /// api, rpc and gossip ports of the first start, reused on restart.
    ports: Option<[u16; 3]>,
    /// Environment variables set for the node process (e.g. a PATH without a tool).
    pub env: Vec<(String, String)>,
}

impl TestNode {
    /// Starts a fresh single-node cluster.
    pub fn start(name: &str) -> TestNode {
        Self::start_with(name, &[])
    }

    /// Starts a fresh node with extra `omnicloud node` arguments.
    pub fn start_with(name: &str, extra: &[&str]) -> TestNode {
        Self::start_opts(name, extra, true, None)
    }

    /// Full control: `wait_ready` false returns as soon as the process has bound its
    /// ports (for nodes that are expected never to join), `netns` runs it in a namespace.
    pub fn start_opts(
        name: &str,
        extra: &[&str],
        wait_ready: bool,
        netns: Option<&str>,
    ) -> TestNode {
        Self::start_full(name, extra, wait_ready, netns, &[], false)
    }

    /// A fresh director-only node in network namespace `netns` with a /sys of its own
    /// (see `own_sys`).
    pub fn start_director_in(name: &str, extra: &[&str], netns: &str) -> TestNode {
        Self::start_full(name, extra, true, Some(netns), &[], true)
    }

    /// A fresh node with extra arguments and environment variables for its process.
    pub fn start_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> TestNode {
        Self::start_full(name, extra, true, None, env, false)
    }

    /// A node expected to be refused at start (it exits): the node, not running, and its
    /// log.
    pub fn start_refused(name: &str, extra: &[&str]) -> (TestNode, String) {
        let mut node = Self::unstarted(name, extra, false, None, &[]);
        let log = node.run_to_exit();
        (node, log)
    }

    /// Starts the node expecting it to exit within 60 s (a refused join): its log.
    pub fn run_to_exit(&mut self) -> String {
        assert!(self.child.is_none(), "stop or kill the node first");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning omnicloud node");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} kept running; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "node {} exited with success", self.name);
        self.log()
    }

    fn start_full(
        name: &str,
        extra: &[&str],
        wait_ready: bool,
        netns: Option<&str>,
        env: &[(&str, &str)],
        own_sys: bool,
    ) -> TestNode {
        let mut node = Self::unstarted(name, extra, wait_ready, netns, env);
        node.own_sys = own_sys;
        node.launch();
        node
    }

    fn unstarted(
        name: &str,
        extra: &[&str],
        wait_ready: bool,
        netns: Option<&str>,
        env: &[(&str, &str)],
    ) -> TestNode {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("omni-{name}-"))
            .tempdir()
            .unwrap();
        TestNode {
            name: name.to_string(),
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            child: None,
            api: String::new(),
            token: String::new(),
            gossip: String::new(),
            node_id: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            wait_ready,
            netns: netns.map(str::to_string),
            own_sys: false,
            ports: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts the node process and waits until it has bound its ports (and, with
    /// `wait_ready`, until it serves). A restart reuses the ports of the first start: peers
    /// and the Raft membership remember them, as they would a real node's fixed ports. While
    /// the node was down another process may have taken one (an ephemeral port of a client,
    /// or a port 0 bind of a test running in parallel): the node then exits with "Address
    /// already in use" and is started again until the port is free, for up to 30 s; then
    /// the test fails naming the port.
    fn launch(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log_from = std::fs::metadata(self.dir.join("node.log")).map_or(0, |m| m.len());
            match self.spawn_and_wait_bound(deadline) {
                Ok(()) => break,
                Err(why) => {
                    let log = self.log();
                    let this_run = log.get(log_from as usize..).unwrap_or_default();
                    let taken = this_run.contains("Address already in use");
                    assert!(
                        taken && self.ports.is_some() && Instant::now() < deadline,
                        "node {} {why}; log:\n{log}",
                        self.name
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        self.token = std::fs::read_to_string(self.dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        if self.wait_ready {
            self.wait_ready();
        }
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) if self.own_sys => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(BIN);
                c
            }
            // nsenter switches only the network namespace; `ip netns exec` would also
            // remount /sys, hiding the cgroup hierarchy containers need.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let has = |flag: &str| self.extra.iter().any(|a| a == flag);
        cmd.args(["node", "--name", &self.name]);
        // Nodes run no containers unless a test asks for the agent role (`--roles auto`).
        if !has("--roles") {
            cmd.args(["--roles", "orchestrator"]);
        }
        if !has("--bind") {
            cmd.args(["--bind", "127.0.0.1", "--advertise", "127.0.0.1"]);
        }
        if !has("--api-port") {
            // First start: port 0, the node binds free ports and reports them in
            // endpoints.json. A restart keeps them (see `launch`).
            let [api, rpc, gossip] = self.ports.unwrap_or([0, 0, 0]).map(|p| p.to_string());
            cmd.args([
                "--api-port",
                &api,
                "--rpc-port",
                &rpc,
                "--gossip-port",
                &gossip,
            ]);
        }
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(&self.extra)
            // OMNICLOUD_TEST_LOG overrides the nodes' log filter when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("OMNICLOUD_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            // Names without a registry host come from the store and peers only: tests
            // never reach Docker Hub (a test may set its own list through `env`).
            .env("OMNICLOUD_UNQUALIFIED_SEARCH", "none")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// One start: Ok once the process reports its bound ports in endpoints.json; Err
    /// (the reaped process's exit, or a timeout) otherwise.
    fn spawn_and_wait_bound(&mut self, deadline: Instant) -> Result<(), String> {
        let endpoints = self.dir.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning omnicloud node");
        let pid = child.id();
        self.child = Some(child);
        loop {
            if let Ok(text) = std::fs::read_to_string(&endpoints) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    // nsenter execs the node: it keeps the pid we spawned.
                    if v["pid"].as_u64() == Some(pid as u64) {
                        self.api = v["apiUrl"].as_str().unwrap().to_string();
                        self.gossip = v["gossip"].as_str().unwrap_or_default().to_string();
                        self.node_id = v["nodeId"].as_str().unwrap_or_default().to_string();
                        let port = |k: &str| {
                            v[k].as_str()
                                .and_then(|a| a.rsplit(':').next())
                                .and_then(|p| p.parse().ok())
                                .unwrap_or(0)
                        };
                        self.ports = Some([port("api"), port("rpc"), port("gossip")]);
                        return Ok(());
                    }
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited early ({status})"));
            }
            if Instant::now() >= deadline {
                return Err("did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 (a leader is known and state applied).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.http().get(&format!("{}/readyz", self.api)).call() {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "node {} never became ready; log:\n{}",
            self.name,
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("node is running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    /// The extra `omnicloud node` arguments (as given, or as last set).
    pub fn args(&self) -> Vec<String> {
        self.extra.clone()
    }

    /// Replaces the extra `omnicloud node` arguments used by the next `restart`.
    pub fn set_args(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the same node again on the same data dir and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        self.launch();
    }

    pub fn api(&self) -> Api {
        Api {
            base: self.api.clone(),
            token: Some(self.token.clone()),
            agent: self.http(),
        }
    }

    /// An HTTP client trusting this node's cluster CA (and nothing else).
    pub fn http(&self) -> ureq::Agent {
        ca_agent(&self.dir)
    }

    /// Runs the CLI against this node and returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .env("OMNICLOUD_SERVER", &self.api)
            .env("OMNICLOUD_TOKEN", &self.token)
            .env("OMNICLOUD_CA", self.dir.join("tls/ca.crt"))
            .env("OMNICLOUD_CLIENT_CONFIG", self.dir.join("no-client.toml"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- log of node {} ----\n{}", self.name, self.log());
        }
        // Containers, VMMs and the fencing watchdog outlive their node by design: end them
        // and unmount what is still mounted under the data dir, pass or fail (a panicking
        // test unwinds through here), so nothing outlives the test and its dir can go too.
        omnicloud::appliance::install::end_workloads_with(&self.dir, Path::new(BIN));
    }
}

/// Several nodes forming one cluster: a seed and joiners with the seed's join token.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    pub token: String,
    /// `--config` file shared by all nodes.
    pub config: tempfile::NamedTempFile,
}

/// Settings that make failure handling fast enough for tests.
pub const FAST_CLUSTER: &str =
    "[cluster]\ngossip_probe_ms = 200\norchestrator_replace_after = \"3s\"\n";

impl Cluster {
    pub fn start(n: usize, config: &str) -> Cluster {
        Self::start_on(n, config, None)
    }

    /// Node i runs on host i of `net` (its own address, default ports) when given.
    pub fn start_on(n: usize, config: &str, net: Option<&dyn netns::Hosting>) -> Cluster {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), config).unwrap();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            token: String::new(),
            config: file,
        };
        for i in 0..n {
            cluster.add_on(net, i);
        }
        cluster
    }

    fn add_on(&mut self, net: Option<&dyn netns::Hosting>, host: usize) -> usize {
        let name = format!("node-{}", self.nodes.len() + 1);
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.config.path().to_str().unwrap().into(),
        ];
        // A config that sets roles wants them (TestNode defaults to orchestrator only).
        let config = std::fs::read_to_string(self.config.path()).unwrap_or_default();
        if config.lines().any(|l| l.trim_start().starts_with("roles")) {
            args.extend(["--roles".into(), "auto".into()]);
        }
        if let Some(seed) = self.nodes.first() {
            args.extend([
                "--join".into(),
                seed.gossip.clone(),
                "--token".into(),
                self.token.clone(),
            ]);
        }
        if let Some(net) = net {
            let ip = net.ip(host);
            args.extend(["--bind".into(), ip.clone(), "--advertise".into(), ip]);
            args.extend(
                [
                    "--api-port",
                    "7070",
                    "--rpc-port",
                    "7071",
                    "--gossip-port",
                    "7946",
                ]
                .map(String::from),
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ns = net.map(|n| n.ns(host));
        let node = TestNode::start_opts(&name, &args, true, ns.as_deref());
        if self.nodes.is_empty() {
            self.token = std::fs::read_to_string(node.dir.join("join.token"))
                .unwrap()
                .trim()
                .to_string();
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts one more node on host `host` of `net`, joining through the seed.
    pub fn add_on_host(&mut self, net: &dyn netns::Hosting, host: usize) -> usize {
        self.add_on(Some(net), host)
    }

    /// Starts one more node on loopback, joining through the seed.
    pub fn add(&mut self) -> usize {
        self.add_on(None, 0)
    }

    /// Indexes of running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect()
    }

    /// `/v1/cluster/status` from a running node.
    pub fn status(&self, via: usize) -> Value {
        self.nodes[via].api().get("/v1/cluster/status").1
    }

    /// Raft role by node name, as the leader reports it.
    pub fn raft_roles(&self, via: usize) -> std::collections::BTreeMap<String, String> {
        let status = self.status(via);
        status["raft"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["role"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The index of the current leader as seen from `via`.
    pub fn leader(&self, via: usize) -> Option<usize> {
        let name = self.status(via)["raft"]["leader"].as_str()?.to_string();
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Member statuses by name as one node's gossip sees them.
    pub fn members(&self, via: usize) -> std::collections::BTreeMap<String, String> {
        let (_, v) = self.nodes[via].api().get("/v1/nodes");
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

/// A ureq agent trusting only the cluster CA in `data_dir` (none there: trusting nothing).
pub fn ca_agent(data_dir: &Path) -> ureq::Agent {
    let ca = std::fs::read_to_string(data_dir.join("tls/ca.crt")).ok();
    omnicloud::client::config::agent(ca.as_deref(), ureq::AgentBuilder::new())
        .expect("a TLS client config")
}

/// A tiny API client returning (status, JSON body) without treating 4xx as failures.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    /// Trusting the cluster CA ([`TestNode::http`]).
    pub agent: ureq::Agent,
}

impl Api {
    fn req(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self
            .agent
            .request(method, &format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        r
    }

    fn finish(res: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
        match res {
            Ok(r) => {
                let status = r.status();
                (status, r.into_json().unwrap_or(Value::Null))
            }
            Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(self.req("GET", path).call())
    }

    pub fn send(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        Self::finish(
            self.req(method, path)
                .set("Content-Type", "application/yaml")
                .send_string(body),
        )
    }

    pub fn try_send(&self, method: &str, path: &str, body: &str) -> Result<(u16, Value), String> {
        match self.req(method, path).send_string(body) {
            Ok(r) => {
                let s = r.status();
                Ok((s, r.into_json().unwrap_or(Value::Null)))
            }
            Err(ureq::Error::Status(s, r)) => Ok((s, r.into_json().unwrap_or(Value::Null))),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn apply(&self, yaml: &str) -> (u16, Value) {
        self.send("POST", "/v1/apply", yaml)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        Self::finish(self.req("DELETE", path).call())
    }

    pub fn raw_get(&self, path: &str) -> (u16, String) {
        match self.req("GET", path).call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    /// A metric's value from `/metrics` (first sample whose name and labels start so).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.raw_get("/metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML document converted to JSON, for comparisons with what the API returns.
pub fn yaml_to_json(yaml: &str) -> Value {
    serde_norway::from_str(yaml).unwrap()
}

/// Polls `f` until it returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Container ids under a node's runtime root (`<data-dir>/containers`).
pub fn containers(data_dir: &Path) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["__container", "list", "--root"])
        .arg(data_dir.join("containers"))
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes every container a node ran (they outlive their node by design).
pub fn remove_containers(data_dir: &Path) {
    for id in containers(data_dir) {
        let _ = Command::new(BIN)
            .args(["__container", "delete", &id, "--force", "--root"])
            .arg(data_dir.join("containers"))
            .output();
    }
}

/// The host pid of the container running instance `instance` on the node of `data_dir`.
pub fn container_pid(data_dir: &std::path::Path, instance: &str) -> Option<u32> {
    let out = Command::new(BIN)
        .args(["__container", "list", "--root"])
        .arg(data_dir.join("containers"))
        .output()
        .ok()?;
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    let prefix = format!("default.{instance}.");
    list.as_array()?
        .iter()
        .find(|c| {
            c["id"].as_str().is_some_and(|id| id.starts_with(&prefix)) && c["status"] == "running"
        })
        .and_then(|c| c["pid"].as_u64())
        .map(|p| p as u32)
}

/// One HTTP GET on a new connection (never a pooled one to a backend that has gone since):
/// the body, trimmed.
pub fn http_get(url: &str) -> Result<String, String> {
    ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .build()
        .get(url)
        .timeout(Duration::from_secs(3))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map(|s| s.trim().to_string())
        .map_err(|e| e.to_string())
}

/// [`http_get`] from inside the network namespace of process `pid` (an instance's
/// container): a thread of the test enters it (setns) and connects from there.
pub fn http_get_in(pid: u32, url: &str) -> Result<String, String> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
    let url = url.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        http_get(&url)
    })
    .join()
    .unwrap()
}

/// A byte stream to a node's API, for tests that write raw HTTP.
pub trait RawStream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> RawStream for T {}

/// A raw connection to `api` (`https://` over TLS trusting the CA in `data_dir`, or plain
/// `http://`), reads timing out after `timeout`.
pub fn raw_connect(api: &str, data_dir: &Path, timeout: Duration) -> Box<dyn RawStream> {
    let (tls, addr) = match api.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (false, api.trim_start_matches("http://")),
    };
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(timeout)).unwrap();
    if !tls {
        return Box::new(tcp);
    }
    let ca = std::fs::read_to_string(data_dir.join("tls/ca.crt")).unwrap();
    let config = omnicloud::cluster::pki::client_config(&ca, None).unwrap();
    let ip: std::net::IpAddr = addr.rsplit_once(':').unwrap().0.parse().unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(ip.into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    Box::new(rustls::StreamOwned::new(conn, tcp))
}
