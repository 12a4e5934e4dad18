//! The audit log of one node: every mutating request and every refused one (401, 403,
//! 429), as JSON lines in `<data-dir>/audit.log`. Bounded: when the file passes its size
//! limit it becomes `audit.log.1` (the one before is dropped), so a node keeps between one
//! and two limits' worth. Local and unreplicated, so recording never slows a Raft write;
//! `omnicloud audit` gathers every node's log through the API.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::AuthError;

pub const FILE_NAME: &str = "audit.log";
/// Default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub node: String,
    pub user: String,
    /// The client's address (`ip:port`), as Kubernetes' audit events' `sourceIPs`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub verb: String,
    /// `resource[/namespace][/name]`, or the request path when it names no resource.
    pub object: String,
    /// The HTTP status answered.
    pub code: u16,
    /// `allowed`, `forbidden`, `unauthenticated`, `rate-limited` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<File>>,
}

impl AuditLog {
    pub fn new(data_dir: &Path, max_bytes: u64) -> AuditLog {
        AuditLog {
            path: data_dir.join(FILE_NAME),
            max_bytes: max_bytes.max(4096),
            file: Mutex::new(None),
        }
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    pub fn record(&self, rec: &AuditRecord) -> Result<(), AuthError> {
        let err = |source| AuthError::AuditWrite {
            path: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(rec).expect("records serialize");
        line.push(b'\n');
        let mut guard = self.file.lock().expect("audit lock");
        let size = match guard.as_ref() {
            Some(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
            None => std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
        };
        if size + line.len() as u64 > self.max_bytes {
            *guard = None;
            std::fs::rename(&self.path, self.rotated()).map_err(err)?;
        }
        if guard.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(err)?;
            *guard = Some(f);
        }
        guard
            .as_mut()
            .expect("opened above")
            .write_all(&line)
            .map_err(err)
    }

    /// Records oldest first, narrowed to one user and to those at or after `since_ms`.
    pub fn read(&self, user: Option<&str>, since_ms: u64) -> Vec<AuditRecord> {
        let _guard = self.file.lock().expect("audit lock");
        let mut out = Vec::new();
        for path in [self.rotated(), self.path.clone()] {
            let Ok(f) = File::open(&path) else { continue };
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                let Ok(rec) = serde_json::from_str::<AuditRecord>(&line) else {
                    continue;
                };
                if rec.time_ms >= since_ms && user.is_none_or(|u| rec.user == u) {
                    out.push(rec);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64, user: &str) -> AuditRecord {
        AuditRecord {
            time_ms: i,
            node: "n1".into(),
            user: user.into(),
            source: String::new(),
            verb: "delete".into(),
            object: format!("deployments/a/web{i}"),
            code: 403,
            result: "forbidden".into(),
            message: String::new(),
        }
    }

    #[test]
    fn filters_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path(), 4096);
        for i in 0..200 {
            log.record(&rec(i, if i % 2 == 0 { "alice" } else { "bob" }))
                .unwrap();
        }
        let all = log.read(None, 0);
        assert!(all.len() < 200, "old records were dropped");
        assert_eq!(all.last().unwrap().time_ms, 199);
        let total: u64 = [FILE_NAME, "audit.log.1"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
            .sum();
        assert!(total <= 2 * 4096, "{total} bytes");
        let alice = log.read(Some("alice"), 150);
        assert!(alice.iter().all(|r| r.user == "alice" && r.time_ms >= 150));
        assert_eq!(alice.len(), 25);
    }
}
