//! The cluster a chaos run works on: N `omnicloud node` processes on loopback, each with
//! its own data dir, ports, bridge and log, killed with SIGKILL and started again on the
//! same data dir and ports, as a crashed machine comes back.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::client::Client;

pub struct LocalNode {
    pub name: String,
    pub dir: PathBuf,
    pub api: String,
    pub gossip: u16,
    args: Vec<String>,
    child: Option<Child>,
    pub bridge: String,
}

impl LocalNode {
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn launch(&mut self, exe: &Path) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .map_err(|e| format!("{}: node.log: {e}", self.name))?;
        let child = Command::new(exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.name))?;
        self.child = Some(child);
        Ok(())
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

pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    pub token: String,
    exe: PathBuf,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

impl LocalCluster {
    /// Starts `n` nodes under `base` (node 0 seeds, the rest join it) and waits until every
    /// one serves the API. `cidr` is the cluster CIDR; bridges are `<bridge_prefix><i>`.
    pub fn start(
        n: usize,
        base: &Path,
        roles: &str,
        cidr: &str,
        bridge_prefix: &str,
        import: Option<&Path>,
    ) -> Result<LocalCluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            token: String::new(),
            exe,
        };
        for i in 0..n {
            let name = format!("chaos-{i}");
            let dir = base.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let bridge = format!("{bridge_prefix}{i}");
            let config = dir.join("node.toml");
            let text = format!(
                "[network]\ncluster_cidr = \"{cidr}\"\nbridge = \"{bridge}\"\n[agent]\nusage_report_ms = 1000\n"
            );
            std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
            let (api, rpc, gossip) = (free_port()?, free_port()?, free_port()?);
            let mut args: Vec<String> = vec![
                "node".into(),
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--advertise".into(),
                "127.0.0.1".into(),
                "--api-port".into(),
                api.to_string(),
                "--rpc-port".into(),
                rpc.to_string(),
                "--gossip-port".into(),
                gossip.to_string(),
                "--roles".into(),
                roles.into(),
                "--config".into(),
                config.display().to_string(),
            ];
            if i > 0 {
                let seed = &cluster.nodes[0];
                args.extend([
                    "--join".into(),
                    format!("127.0.0.1:{}", seed.gossip),
                    "--token-file".into(),
                    seed.dir.join("join.token").display().to_string(),
                ]);
            }
            let mut node = LocalNode {
                name,
                dir,
                api: format!("http://127.0.0.1:{api}"),
                gossip,
                args,
                child: None,
                bridge,
            };
            node.launch(&cluster.exe)?;
            if let Some(layout) = import {
                cluster.import(&node, layout)?;
            }
            cluster.wait_ready(&node, Duration::from_secs(60))?;
            if i == 0 {
                let token = std::fs::read_to_string(node.dir.join("admin.token"))
                    .map_err(|e| format!("reading the admin token: {e}"))?;
                cluster.token = token.trim().to_string();
            }
            cluster.nodes.push(node);
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
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
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
        Client::new(&self.nodes[i].api, Some(self.token.clone()))
            .with_timeout(Duration::from_secs(3))
    }

    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let exe = self.exe.clone();
        self.nodes[i].launch(&exe)
    }

    /// Stops every node and removes what they left on the host: containers and VMs (they
    /// outlive their node by design), watchdogs and bridges. The data dirs stay (the caller decides).
    pub fn shutdown(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        for n in &self.nodes {
            crate::appliance::install::end_workloads(&n.dir);
            let _ = Command::new("ip").args(["link", "del", &n.bridge]).output();
        }
    }
}
