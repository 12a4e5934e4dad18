//! A blocking HTTP client for the API, with the token found the way users expect:
//! `--token`, `OMNICLOUD_TOKEN`, then `<data-dir>/admin.token` of `--data-dir` or the
//! default data dir; and what a client reads back to say why a workload is not there yet
//! (`why`, `look`). Below both `cli` and `chaos`, which drive nodes through it.

pub mod config;
pub mod look;
pub mod why;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How a command prints what it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        reason: String,
        message: String,
        field: String,
    },
    #[error("cannot reach {server}: {message} (is `omnicloud node` running? set --server or OMNICLOUD_SERVER; over https the client trusts only the cluster CA: --ca FILE, OMNICLOUD_CA, `omnicloud login`, or a local node's <data-dir>/tls/ca.crt)")]
    Unreachable { server: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct Client {
    server: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// The cluster CA this client trusts (PEM).
    ca: Option<String>,
}

/// Finds the API token without asking the user: given, the client config's, or a local
/// node's admin token.
pub fn discover_token(explicit: Option<String>, data_dir: Option<PathBuf>) -> Option<String> {
    if let Some(t) = explicit.filter(|t| !t.is_empty()) {
        return Some(t);
    }
    if data_dir.is_none() {
        if let Some(c) = config::ClientConfig::load().filter(|c| !c.token.is_empty()) {
            return Some(c.token);
        }
    }
    let dir = data_dir.unwrap_or_else(crate::config::default_data_dir);
    std::fs::read_to_string(crate::node::admin_token_path(&dir))
        .ok()
        .map(|t| t.trim().to_string())
}

impl Client {
    /// A client trusting the CA found by [`config::discover_ca`] (`OMNICLOUD_CA`, the
    /// client config, the default data dir).
    pub fn new(server: &str, token: Option<String>) -> Client {
        let explicit = std::env::var_os("OMNICLOUD_CA").filter(|v| !v.is_empty());
        let ca = config::discover_ca(explicit.as_deref().map(std::path::Path::new), None)
            .unwrap_or_else(|e| {
                eprintln!("warning: {e}");
                None
            });
        Self::with_ca(server, token, ca)
    }

    /// A client trusting only the CA `ca` (PEM).
    pub fn with_ca(server: &str, token: Option<String>, ca: Option<String>) -> Client {
        let builder = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5));
        let agent = config::agent(ca.as_deref(), builder).expect("a TLS config of a checked CA");
        Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            agent,
            ca,
        }
    }

    /// The same client with a limit on each whole request (connect, send, read).
    pub fn with_timeout(mut self, limit: Duration) -> Client {
        let builder = ureq::AgentBuilder::new()
            .timeout_connect(limit.min(Duration::from_secs(5)))
            .timeout(limit);
        self.agent =
            config::agent(self.ca.as_deref(), builder).expect("a TLS config of a checked CA");
        self
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.server, path));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        req
    }

    fn finish(
        &self,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ClientError> {
        match result {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
                let message = if text("message").is_empty() {
                    format!("HTTP {status}")
                } else {
                    text("message")
                };
                Err(ClientError::Api {
                    status,
                    reason: text("reason"),
                    message,
                    field: text("field"),
                })
            }
            Err(e) => Err(ClientError::Unreachable {
                server: self.server.clone(),
                message: e.to_string(),
            }),
        }
    }

    pub fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let r = self.finish(self.request("GET", path).call())?;
        r.into_json()
            .map_err(|e| ClientError::Other(format!("bad response: {e}")))
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<Value, ClientError> {
        let r = self.finish(
            self.request(method, path)
                .set("Content-Type", content_type)
                .send_string(body),
        )?;
        r.into_json()
            .map_err(|e| ClientError::Other(format!("bad response: {e}")))
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let r = self.finish(self.request("DELETE", path).call())?;
        r.into_json()
            .map_err(|e| ClientError::Other(format!("bad response: {e}")))
    }

    /// Copies a plain-text (possibly endless) response to `out` as it arrives.
    pub fn copy_to(&self, path: &str, out: &mut impl std::io::Write) -> Result<(), ClientError> {
        let r = self.finish(self.request("GET", path).call())?;
        let mut reader = r.into_reader();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)
                .map_err(|e| ClientError::Other(format!("stream: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            // A closed stdout (`| head`) ends the copy quietly.
            if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                return Ok(());
            }
        }
    }

    /// Follows a newline-delimited JSON stream, calling `each` per line until it returns false
    /// or the stream ends.
    pub fn stream(
        &self,
        path: &str,
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), ClientError> {
        let r = self.finish(self.request("GET", path).call())?;
        for line in BufReader::new(r.into_reader()).lines() {
            let line = line.map_err(|e| ClientError::Other(format!("stream: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(&line).map_err(|e| ClientError::Other(e.to_string()))?;
            if !each(value) {
                break;
            }
        }
        Ok(())
    }
}
