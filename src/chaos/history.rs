//! The register/CAS workload of a campaign and the history it records, in the Jepsen
//! shape: several client threads, each one process doing one operation at a time against a
//! random node's API (reads with `?consistent=true`, writes, compare-and-set through a
//! `resourceVersion` precondition) on a few registers (ConfigMaps `chaos-reg-K`, value in
//! `data.v`), with a timeout. Every operation is written as an `invoke` line and then one
//! of `ok`, `fail` (it certainly did not happen) or `unknown` (a timeout or an answer that
//! does not say: it may have happened), with monotonic nanoseconds since the start. The
//! file (JSON lines) is what `checker/` (Porcupine) judges; the in-memory copy gives the
//! availability figures.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{Client, ClientError};

/// Values written and compared: a small domain, so that CASes succeed now and then.
const VALUES: i64 = 5;

/// One line of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub index: u64,
    pub process: usize,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub f: &'static str,
    pub key: String,
    pub value: Value,
    /// Nanoseconds since the workload started (monotonic).
    pub time: u64,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cluster gave a definite answer (ok, or a refusal such as a failed
    /// precondition): what availability counts. Not in the file.
    #[serde(skip)]
    pub answered: bool,
}

/// Where the clients send their operations.
pub struct Target {
    pub name: String,
    pub api: String,
    /// The cluster CA (PEM) the client trusts.
    pub ca: Option<String>,
}

struct Shared {
    targets: Vec<Target>,
    token: String,
    keys: usize,
    timeout: Duration,
    started: Instant,
    stop: AtomicBool,
    next: AtomicU64,
    out: Mutex<(BufWriter<File>, Vec<Event>)>,
    /// resourceVersions of acknowledged writes and CASes (what watchers must see).
    acknowledged: Mutex<std::collections::BTreeSet<u64>>,
}

impl Shared {
    fn record(&self, mut e: Event) -> u64 {
        let mut out = self.out.lock().unwrap();
        // Time and index are taken under the lock, so the file is in time order.
        e.time = self.started.elapsed().as_nanos() as u64;
        e.index = self.next.fetch_add(1, Ordering::Relaxed);
        let _ = serde_json::to_writer(&mut out.0, &e);
        let _ = out.0.write_all(b"\n");
        let time = e.time;
        out.1.push(e);
        time
    }

    fn acknowledge(&self, object: &Value) {
        if let Some((_, rv)) = parse_register(object) {
            if let Ok(rv) = rv.parse() {
                self.acknowledged.lock().unwrap().insert(rv);
            }
        }
    }

    fn client(&self, node: usize) -> Client {
        let t = &self.targets[node];
        Client::with_ca(&t.api, Some(self.token.clone()), t.ca.clone()).with_timeout(self.timeout)
    }
}

/// The running workload.
pub struct Workload {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn register_path(key: &str) -> String {
    format!("/v1/namespaces/default/configmaps/{key}")
}

fn register_body(key: &str, value: i64, resource_version: Option<&str>) -> String {
    let mut metadata = json!({"name": key, "namespace": "default"});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({"apiVersion": crate::model::API_VERSION, "kind": "ConfigMap",
           "metadata": metadata, "data": {"v": value.to_string()}})
    .to_string()
}

/// The register's value and resourceVersion in a read answer.
fn parse_register(object: &Value) -> Option<(i64, String)> {
    let v = object["data"]["v"].as_str()?.parse().ok()?;
    let rv = object["metadata"]["resourceVersion"].as_str()?.to_string();
    Some((v, rv))
}

/// The start of the error of an operation the cluster refused with a definite answer.
const REFUSED: &str = "refused: ";

/// The error text of a failed operation: [`REFUSED`] first when the cluster answered.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, .. } if *status < 500 => format!("{REFUSED}{e}"),
        _ => e.to_string(),
    }
}

/// What a write's error says of its outcome: `fail` when it certainly did not apply (a
/// refusal, a failed precondition, a connection that was never made), else `unknown`.
pub fn outcome_of(e: &ClientError) -> &'static str {
    match e {
        ClientError::Api { status, .. } if *status < 500 => "fail",
        ClientError::Unreachable { message, .. } if message.contains("onnection refused") => "fail",
        _ => "unknown",
    }
}

impl Workload {
    /// Sets every register to 0 (through any target that answers, retrying for up to a
    /// minute), then starts `clients` threads writing the history to `path`.
    pub fn start(
        targets: Vec<Target>,
        token: &str,
        clients: usize,
        keys: usize,
        timeout: Duration,
        seed: u64,
        path: &Path,
    ) -> Result<Workload, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let shared = Arc::new(Shared {
            targets,
            token: token.to_string(),
            keys,
            timeout,
            started: Instant::now(),
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            out: Mutex::new((BufWriter::new(file), Vec::new())),
            acknowledged: Mutex::new(Default::default()),
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        for k in 0..keys {
            let key = format!("chaos-reg-{k}");
            let body = register_body(&key, 0, None);
            let set = || {
                (0..shared.targets.len()).any(|i| {
                    shared
                        .client(i)
                        .send("POST", "/v1/apply", "application/json", &body)
                        .is_ok()
                })
            };
            while !set() {
                if Instant::now() > deadline {
                    return Err(format!("could not set register {key} to 0 for 60s"));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let threads = (0..clients)
            .map(|p| {
                let s = shared.clone();
                std::thread::spawn(move || client_loop(&s, p, seed))
            })
            .collect();
        Ok(Workload { shared, threads })
    }

    /// Nanoseconds since the workload started (the history's clock).
    pub fn now(&self) -> u64 {
        self.shared.started.elapsed().as_nanos() as u64
    }

    /// The resourceVersions acknowledged to writes and CASes so far.
    pub fn acknowledged(&self) -> std::collections::BTreeSet<u64> {
        self.shared.acknowledged.lock().unwrap().clone()
    }

    /// Stops the clients (each finishes its operation) and returns the history.
    pub fn stop(self) -> Vec<Event> {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut out = self.shared.out.lock().unwrap();
        let _ = out.0.flush();
        std::mem::take(&mut out.1)
    }
}

fn client_loop(s: &Shared, process: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(process as u64));
    while !s.stop.load(Ordering::Relaxed) {
        let node = rng.random_range(0..s.targets.len());
        let key = format!("chaos-reg-{}", rng.random_range(0..s.keys));
        let roll = rng.random_range(0..4);
        let (f, value) = match roll {
            0 | 1 => ("read", Value::Null),
            2 => ("write", json!(rng.random_range(0..VALUES))),
            _ => (
                "cas",
                json!([rng.random_range(0..VALUES), rng.random_range(0..VALUES)]),
            ),
        };
        let event = |kind, value: Value, error: Option<String>, answered| Event {
            index: 0,
            process,
            kind,
            f,
            key: key.clone(),
            value,
            time: 0,
            node: s.targets[node].name.clone(),
            error,
            answered,
        };
        s.record(event("invoke", value.clone(), None, false));
        let (kind, value, error) = perform(s, node, f, &key, value);
        // A refusal below 500 (a failed precondition, a CAS whose value differed) is an
        // answer too.
        let answered = kind == "ok"
            || (kind == "fail" && error.as_deref().is_some_and(|e| e.starts_with(REFUSED)));
        s.record(event(kind, value, error, answered));
        // A short breath so that a few clients do not saturate a debug build.
        std::thread::sleep(Duration::from_millis(rng.random_range(5..30)));
    }
}

/// Does one operation; (outcome, value, error).
fn perform(
    s: &Shared,
    node: usize,
    f: &str,
    key: &str,
    value: Value,
) -> (&'static str, Value, Option<String>) {
    let client = s.client(node);
    let read = || -> Result<(i64, String), (&'static str, String)> {
        let o = client
            .get_json(&format!("{}?consistent=true", register_path(key)))
            .map_err(|e| ("fail", describe(&e)))?;
        parse_register(&o).ok_or(("fail", format!("no integer data.v in {o}")))
    };
    match f {
        "read" => match read() {
            Ok((v, _)) => ("ok", json!(v), None),
            // A read changes nothing: whatever happened, it is dropped by the checker.
            Err((_, e)) => ("fail", value, Some(e)),
        },
        "write" => {
            let v = value.as_i64().unwrap_or_default();
            let body = register_body(key, v, None);
            match client.send("PUT", &register_path(key), "application/json", &body) {
                Ok(o) => {
                    s.acknowledge(&o);
                    ("ok", value, None)
                }
                Err(e) => (outcome_of(&e), value, Some(describe(&e))),
            }
        }
        _ => {
            let expected = value[0].as_i64().unwrap_or_default();
            let new = value[1].as_i64().unwrap_or_default();
            let (current, rv) = match read() {
                Ok(r) => r,
                Err((kind, e)) => return (kind, value, Some(e)),
            };
            if current != expected {
                return ("fail", value, Some(format!("{REFUSED}value is {current}")));
            }
            let body = register_body(key, new, Some(&rv));
            match client.send("PUT", &register_path(key), "application/json", &body) {
                Ok(o) => {
                    s.acknowledge(&o);
                    ("ok", value, None)
                }
                Err(e) => (outcome_of(&e), value, Some(describe(&e))),
            }
        }
    }
}

/// Operations invoked within `[from, to)` (nanoseconds) on a node not in `skip`, and
/// completed, and how many of them the cluster answered (ok, or a definite refusal).
pub fn availability(history: &[Event], from: u64, to: u64, skip: &[String]) -> (u64, u64) {
    let mut invoked = std::collections::HashMap::new();
    let (mut done, mut ok) = (0, 0);
    for e in history {
        if e.kind == "invoke" {
            invoked.insert(e.process, e.time);
            continue;
        }
        let Some(at) = invoked.remove(&e.process) else {
            continue;
        };
        if at >= from && at < to && !skip.contains(&e.node) {
            done += 1;
            ok += u64::from(e.answered);
        }
    }
    (done, ok)
}

/// The completion time of the first successful write or CAS invoked at or after `from`.
pub fn first_write_after(history: &[Event], from: u64) -> Option<u64> {
    let mut invoked = std::collections::HashMap::new();
    history
        .iter()
        .filter_map(|e| {
            if e.kind == "invoke" {
                invoked.insert(e.process, e.time);
                return None;
            }
            let at = invoked.remove(&e.process)?;
            (at >= from && e.kind == "ok" && e.f != "read").then_some(e.time)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: usize, kind: &'static str, f: &'static str, time: u64) -> Event {
        Event {
            index: 0,
            process,
            kind,
            f,
            key: "k".into(),
            value: Value::Null,
            time,
            node: "n".into(),
            error: None,
            answered: kind == "ok",
        }
    }

    #[test]
    fn availability_counts_operations_by_invocation_time() {
        let h = vec![
            ev(0, "invoke", "write", 10),
            ev(1, "invoke", "read", 12),
            ev(0, "ok", "write", 20),
            ev(1, "unknown", "read", 40),
            ev(0, "invoke", "cas", 50),
            ev(0, "ok", "cas", 60),
        ];
        assert_eq!(availability(&h, 0, 100, &[]), (3, 2));
        assert_eq!(availability(&h, 11, 50, &[]), (1, 0));
        assert_eq!(availability(&h, 0, 100, &["n".to_string()]), (0, 0));
        assert_eq!(first_write_after(&h, 11), Some(60));
        assert_eq!(first_write_after(&h, 0), Some(20));
        assert_eq!(first_write_after(&h, 61), None);
    }

    #[test]
    fn refusals_fail_and_timeouts_are_unknown() {
        let api = |status| ClientError::Api {
            status,
            reason: String::new(),
            message: String::new(),
            field: String::new(),
        };
        assert_eq!(outcome_of(&api(409)), "fail");
        assert_eq!(outcome_of(&api(503)), "unknown");
        let gone = |m: &str| ClientError::Unreachable {
            server: "s".into(),
            message: m.into(),
        };
        assert_eq!(
            outcome_of(&gone("Connection refused (os error 111)")),
            "fail"
        );
        assert_eq!(outcome_of(&gone("timed out reading response")), "unknown");
        let body = register_body("r", 3, Some("17"));
        let o: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parse_register(&o), Some((3, "17".into())));
    }
}
