//! Debian's docker-registry serving from a temp dir, for pull and push tests: plain HTTP
//! ([`Registry::start`]) or HTTPS with a test CA made by openssl at test time and
//! htpasswd basic auth ([`Registry::start_tls`], [`TestCa`]).
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
    /// `--cacert` for curl when it serves HTTPS.
    ca: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

/// A CA and a server certificate it signed for 127.0.0.1 (files in a temp dir).
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    /// None (after a loud skip) without openssl.
    pub fn new(why: &str) -> Option<TestCa> {
        if !Path::new("/usr/bin/openssl").exists() {
            super::netns::require(why, "apt-get install openssl".into());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=omnicloud test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Some(TestCa { dir })
    }

    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
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
            if let Some(r) = Self::try_start(bin, ip, None) {
                return Some(r);
            }
        }
        panic!("docker-registry did not start on {ip} in 5 tries");
    }

    /// A registry on 127.0.0.1 over HTTPS with `ca`'s server certificate, accepting only
    /// `user`/`password` (htpasswd, bcrypt by apache2-utils' htpasswd). None after a loud
    /// skip where docker-registry or htpasswd is missing.
    pub fn start_tls(ca: &TestCa, user: &str, password: &str, why: &str) -> Option<Registry> {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            super::netns::require(why, "apt-get install docker-registry".into());
            return None;
        };
        if !Path::new("/usr/bin/htpasswd").exists() {
            super::netns::require(why, "apt-get install apache2-utils (htpasswd)".into());
            return None;
        }
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        assert!(out.status.success());
        let htpasswd = ca
            .dir
            .path()
            .join(format!("htpasswd-{user}-{}", password.len()));
        std::fs::write(&htpasswd, &out.stdout).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: omnicloud-test\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_tls_with(bin, ca, &auth)
    }

    /// A registry on 127.0.0.1 over HTTPS that takes bearer tokens from `token` (the
    /// Docker Registry v2 token flow). None after a loud skip without docker-registry.
    pub fn start_token(
        ca: &TestCa,
        token: &super::token::TokenServer,
        why: &str,
    ) -> Option<Registry> {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            super::netns::require(why, "apt-get install docker-registry".into());
            return None;
        };
        Self::start_tls_with(bin, ca, &token.registry_auth())
    }

    fn start_tls_with(bin: &str, ca: &TestCa, auth: &str) -> Option<Registry> {
        let d = ca.dir.path();
        let extra = format!(
            "  tls:\n    certificate: {}\n    key: {}\n{auth}",
            d.join("server.pem").display(),
            d.join("server.key").display(),
        );
        for _ in 0..5 {
            if let Some(r) = Self::try_start(bin, "127.0.0.1", Some((&extra, ca.ca()))) {
                return Some(r);
            }
        }
        panic!("docker-registry (TLS) did not start in 5 tries");
    }

    /// Whether the registry's API answers (any status, with its API header).
    fn answers(&self) -> bool {
        let Some(ca) = &self.ca else {
            return ureq::get(&format!("http://{}/v2/", self.addr))
                .call()
                .ok()
                .is_some_and(|r| r.header("Docker-Distribution-Api-Version").is_some());
        };
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(ca)
            .arg(format!("https://{}/v2/", self.addr))
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .to_ascii_lowercase()
                    .contains("docker-distribution-api-version")
            })
    }

    fn try_start(bin: &str, ip: &str, tls: Option<(&str, std::path::PathBuf)>) -> Option<Registry> {
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
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{}",
                dir.path().join("data").display(),
                tls.as_ref().map_or("", |t| t.0)
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
            ca: tls.map(|t| t.1),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if registry.child.try_wait().unwrap().is_some() {
                return None; // it could not bind: try another port
            }
            if registry.answers() && registry.child.try_wait().unwrap().is_none() {
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

/// `skopeo` where installed; None after a loud skip.
pub fn skopeo(why: &str) -> Option<&'static str> {
    if Path::new("/usr/bin/skopeo").exists() {
        return Some("/usr/bin/skopeo");
    }
    super::netns::require(why, "apt-get install skopeo".into());
    None
}

impl Registry {
    /// Copies image `tag` of the OCI layout `layout` to `REPO:TAG` (`dest`) in this
    /// registry with skopeo, logging in as `creds`.
    pub fn push(&self, layout: &Path, tag: &str, dest: &str, creds: Option<(&str, &str)>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet"]);
        match &self.ca {
            Some(ca) => {
                let certs = ca.parent().unwrap().join("certs.d");
                std::fs::create_dir_all(&certs).unwrap();
                std::fs::copy(ca, certs.join("ca.crt")).unwrap();
                cmd.arg("--dest-cert-dir").arg(certs);
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        if let Some((u, p)) = creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {}/{dest}: {}",
            self.addr,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
