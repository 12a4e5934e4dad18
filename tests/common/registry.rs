//! Debian's docker-registry serving from a temp dir, for pull and push tests.
//!
//! docker-registry takes its address from a config file and cannot be handed a bound
//! socket, so a port is picked and released first. Another process may take it in between:
//! the start is retried on a new port when the registry exits (address in use), and it is
//! taken as up only when our process still runs and the answer carries the registry's API
//! header (not some other server that took the port).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    /// `ip:port` it serves on.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A registry on `ip`; None (after a loud skip, or a failure under
    /// OMNICLOUD_REQUIRE_ALL=1) where docker-registry is not installed.
    pub fn start(ip: &str, why: &str) -> Option<Registry> {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            super::netns::require(why, "apt-get install docker-registry".into());
            return None;
        };
        for _ in 0..5 {
            if let Some(r) = Self::try_start(bin, ip) {
                return Some(r);
            }
        }
        panic!("docker-registry did not start on {ip} in 5 tries");
    }

    fn try_start(bin: &str, ip: &str) -> Option<Registry> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind(format!("{ip}:0"))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("{ip}:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if registry.child.try_wait().unwrap().is_some() {
                return None; // it could not bind: try another port
            }
            let ours = ureq::get(&format!("http://{}/v2/", registry.addr))
                .call()
                .ok()
                .is_some_and(|r| r.header("Docker-Distribution-Api-Version").is_some());
            if ours && registry.child.try_wait().unwrap().is_none() {
                return Some(registry);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not answer on {} within 10s",
            registry.addr
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
