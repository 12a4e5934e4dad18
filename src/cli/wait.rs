//! `--wait`: follow workloads until they converge (every replica created, ready, and of
//! the current generation), with a live status line, or fail at `--timeout` saying what is
//! still missing.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::client::{Client, ClientError};
use crate::model::Kind;

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the workload has converged (all replicas ready).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A workload to wait for.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// "2/3 ready" and whether it has converged.
fn progress(o: &Value) -> (String, bool) {
    let mut want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    // A VirtualMachine that is not running wants none.
    if o["spec"]["running"] == false {
        want = 0;
    }
    let st = &o["status"];
    let ready = st["readyReplicas"].as_i64().unwrap_or(0);
    let current = st["replicas"].as_i64().unwrap_or(0);
    let observed = st["observedGeneration"].as_u64().unwrap_or(0)
        >= o["metadata"]["generation"].as_u64().unwrap_or(0);
    let done = observed && ready == want && current == want;
    (format!("{ready}/{want} ready"), done)
}

/// Polls until every target has converged; prints progress to stderr.
pub fn wait(client: &Client, targets: &[Target], timeout: Duration) -> Result<(), ClientError> {
    let targets: Vec<&Target> = targets
        .iter()
        .filter(|t| matches!(t.kind, Kind::Deployment | Kind::VirtualMachine))
        .collect();
    let live = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let mut parts = Vec::new();
        let mut all = true;
        for t in &targets {
            let path = format!(
                "/v1/namespaces/{}/{}/{}",
                t.namespace,
                t.kind.plural(),
                t.name
            );
            let o = client.get_json(&path)?;
            let (text, done) = progress(&o);
            all &= done;
            parts.push(format!(
                "{}/{} {text}",
                t.kind.as_str().to_lowercase(),
                t.name
            ));
        }
        let line = format!("{} ({}s)", parts.join(", "), start.elapsed().as_secs());
        if live {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if parts.join(", ") != last {
            eprintln!("{line}");
            last = parts.join(", ");
        }
        if all {
            if live {
                eprintln!();
            }
            return Ok(());
        }
        if start.elapsed() >= timeout {
            if live {
                eprintln!();
            }
            return Err(ClientError::Other(format!(
                "timed out after {}: {}",
                humantime::format_duration(timeout),
                parts.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converged_means_current_generation_and_all_ready() {
        let o = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
                       "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3}});
        assert_eq!(progress(&o), ("3/3 ready".to_string(), true));
        let stale = json!({"metadata": {"generation": 3}, "spec": {"replicas": 3},
                           "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3}});
        assert!(!progress(&stale).1);
        let extra = json!({"metadata": {"generation": 2}, "spec": {"replicas": 1},
                           "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1}});
        assert!(
            !progress(&extra).1,
            "scaling down is done when the extra ones are gone"
        );
        let stopped_vm = json!({"metadata": {"generation": 4}, "spec": {"replicas": 2, "running": false},
                           "status": {"observedGeneration": 4, "replicas": 0, "readyReplicas": 0}});
        assert_eq!(progress(&stopped_vm), ("0/0 ready".to_string(), true));
    }
}
