//! The cluster a chaos run works on: N `omnicloud node` processes on loopback, each with
//! its own data dir, ports, bridge and log, killed with SIGKILL and started again on the
//! same data dir and ports, as a crashed machine comes back.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::Client;

pub struct LocalNode {
    pub name: String,
    pub dir: PathBuf,
    pub api: String,
    /// Gossip address (`127.0.0.1:port`) the node bound.
    pub gossip: String,
    args: Vec<String>,
    /// api, rpc and gossip ports of the first start (port 0: the node picks), reused on
    /// every restart: peers and the Raft membership remember them.
    ports: Option<[u16; 3]>,
    child: Option<Child>,
    pub bridge: String,
    /// The command that runs the node in its host's namespace (`nsenter --net=...`), or
    /// empty on loopback.
    prefix: Vec<String>,
    env: Vec<(String, String)>,
}

/// What a node writes to `<data-dir>/endpoints.json` once its sockets are bound.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoints {
    api_url: String,
    api: SocketAddr,
    rpc: SocketAddr,
    gossip: SocketAddr,
    pid: u32,
}

/// How long a (re)started node may take to bind its ports, retries included.
const BIND_LIMIT: Duration = Duration::from_secs(30);

impl LocalNode {
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// The node process's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the node process and waits until it has bound its ports. The first start
    /// passes port 0 and reads the ports back from endpoints.json, so no port is guessed.
    /// A restart passes the same ports; if another process took one while the node was
    /// down, the node exits with "Address already in use" and is started again until the
    /// port is free (up to [`BIND_LIMIT`]), then the run fails naming the port.
    fn launch(&mut self, exe: &Path) -> Result<(), String> {
        let deadline = Instant::now() + BIND_LIMIT;
        loop {
            let log_from = std::fs::metadata(self.dir.join("node.log")).map_or(0, |m| m.len());
            match self.spawn_and_wait_bound(exe, deadline) {
                Ok(()) => return Ok(()),
                Err(why) => {
                    let log =
                        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
                    let this_run = log.get(log_from as usize..).unwrap_or_default();
                    let taken = this_run
                        .lines()
                        .find(|l| l.contains("Address already in use"));
                    match taken {
                        Some(_) if self.ports.is_some() && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Some(line) => return Err(format!("{}: {why}: {}", self.name, line.trim())),
                        None => {
                            return Err(format!(
                                "{}: {why}; see {}",
                                self.name,
                                self.dir.join("node.log").display()
                            ))
                        }
                    }
                }
            }
        }
    }

    fn spawn_and_wait_bound(&mut self, exe: &Path, deadline: Instant) -> Result<(), String> {
        let endpoints = self.dir.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .map_err(|e| format!("{}: node.log: {e}", self.name))?;
        let [api, rpc, gossip] = self.ports.unwrap_or([0, 0, 0]).map(|p| p.to_string());
        let mut command = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args([
                "--api-port",
                &api,
                "--rpc-port",
                &rpc,
                "--gossip-port",
                &gossip,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.name))?;
        let pid = child.id();
        let child = self.child.insert(child);
        loop {
            let bound = std::fs::read(&endpoints)
                .ok()
                .and_then(|b| serde_json::from_slice::<Endpoints>(&b).ok())
                .filter(|e| e.pid == pid);
            if let Some(e) = bound {
                self.api = e.api_url;
                self.gossip = e.gossip.to_string();
                self.ports = Some([e.api.port(), e.rpc.port(), e.gossip.port()]);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("exited at start ({status})"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not bind its ports within {}s",
                    BIND_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: nothing of the node's shutdown runs (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The nodes of a run. Dropping it (a run that failed, or panicked) ends them and all they
/// left, as [`LocalCluster::shutdown`] does.
pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    pub token: String,
    exe: PathBuf,
}

impl LocalCluster {
    /// Starts `n` nodes under `base` (node 0 seeds, the rest join it) and waits until every
    /// one serves the API. `cidr` is the cluster CIDR; bridges are `<bridge_prefix><i>`.
    /// On an error the nodes already started are ended (the cluster is dropped).
    pub fn start(
        n: usize,
        base: &Path,
        roles: &str,
        cidr: &str,
        bridge_prefix: &str,
        import: Option<&Path>,
    ) -> Result<LocalCluster, String> {
        Self::start_on(n, base, roles, cidr, bridge_prefix, import, None, &[])
    }

    /// [`LocalCluster::start`], with node i on host i of `hosts` (bound to its address, run
    /// in its namespace) when given, and `env` set for every node process.
    #[allow(clippy::too_many_arguments)]
    pub fn start_on(
        n: usize,
        base: &Path,
        roles: &str,
        cidr: &str,
        bridge_prefix: &str,
        import: Option<&Path>,
        hosts: Option<&super::hosts::Hosts>,
        env: &[(&str, &str)],
    ) -> Result<LocalCluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            token: String::new(),
            exe,
        };
        for i in 0..n {
            let name = format!("chaos-{i}");
            let ip = hosts.map_or("127.0.0.1".to_string(), |h| h.ip(i));
            let dir = base.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let bridge = format!("{bridge_prefix}{i}");
            let config = dir.join("node.toml");
            let text = format!(
                "[network]\ncluster_cidr = \"{cidr}\"\nbridge = \"{bridge}\"\n[agent]\nusage_report_ms = 1000\n"
            );
            std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
            let mut args: Vec<String> = vec![
                "node".into(),
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--bind".into(),
                ip.clone(),
                "--advertise".into(),
                ip.clone(),
                "--roles".into(),
                roles.into(),
                "--config".into(),
                config.display().to_string(),
            ];
            if i > 0 {
                let seed = &cluster.nodes[0];
                args.extend([
                    "--join".into(),
                    seed.gossip.clone(),
                    "--token-file".into(),
                    seed.dir.join("join.token").display().to_string(),
                ]);
            }
            // In the cluster before it is started: whatever fails next, dropping the
            // cluster ends it too.
            cluster.nodes.push(LocalNode {
                name,
                dir,
                api: String::new(),
                gossip: String::new(),
                args,
                ports: None,
                child: None,
                bridge,
                prefix: hosts.map(|h| h.prefix(i)).unwrap_or_default(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            });
            let exe = cluster.exe.clone();
            cluster.nodes[i].launch(&exe)?;
            if let Some(layout) = import {
                cluster.import(&cluster.nodes[i], layout)?;
            }
            cluster.wait_ready(&cluster.nodes[i], Duration::from_secs(60))?;
            if i == 0 {
                let token = std::fs::read_to_string(cluster.nodes[0].dir.join("admin.token"))
                    .map_err(|e| format!("reading the admin token: {e}"))?;
                cluster.token = token.trim().to_string();
            }
        }
        Ok(cluster)
    }

    fn import(&self, node: &LocalNode, layout: &Path) -> Result<(), String> {
        let out = Command::new(&self.exe)
            .args(["image", "import"])
            .arg(layout)
            .env("OMNICLOUD_DATA_DIR", &node.dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "importing images into {}: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn wait_ready(&self, node: &LocalNode, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let builder = ureq::AgentBuilder::new().timeout(Duration::from_secs(2));
        let ca = crate::client::config::ca_of(&node.dir);
        let agent = crate::client::config::agent(ca.as_deref(), builder)?;
        while Instant::now() < deadline {
            if let Ok(r) = agent.get(&format!("{}/readyz", node.api)).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "{} was not ready after {}s; see {}",
            node.name,
            limit.as_secs(),
            node.dir.join("node.log").display()
        ))
    }

    /// A client for node `i` with a short timeout (a killed node must not stall a run).
    pub fn client(&self, i: usize) -> Client {
        let ca = crate::client::config::ca_of(&self.nodes[i].dir);
        Client::with_ca(&self.nodes[i].api, Some(self.token.clone()), ca)
            .with_timeout(Duration::from_secs(3))
    }

    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let exe = self.exe.clone();
        self.nodes[i].launch(&exe)
    }

    /// Stops every node and removes what they left on the host: containers and VMs (they
    /// outlive their node by design), watchdogs, helpers, mounts and bridges. The data
    /// dirs stay (the caller decides). Safe to call again.
    pub fn shutdown(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        for n in self.nodes.drain(..) {
            crate::appliance::install::end_workloads_with(&n.dir, &self.exe);
            let _ = Command::new("ip").args(["link", "del", &n.bridge]).output();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
