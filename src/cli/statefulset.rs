//! `omnicloud statefulset scale NAME --replicas=N [--max-unavailable=1]` (the seed's form):
//! the replica count and, optionally, how many ordinals a rolling update may take down at
//! once, in one write guarded by the object's resourceVersion.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{wait, Conn};
use crate::client::ClientError;
use crate::model::Kind;

#[derive(Debug, Subcommand)]
pub enum StatefulSetCommand {
    /// Set replicas (and the rolling update's maxUnavailable).
    Scale {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(long)]
        replicas: i64,
        /// Ordinals a rolling update may replace at once (a number or a percentage).
        #[arg(long)]
        max_unavailable: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
}

pub fn run(cmd: StatefulSetCommand) -> Result<(), ClientError> {
    let StatefulSetCommand::Scale {
        conn,
        name,
        replicas,
        max_unavailable,
        namespace,
        wait,
    } = cmd;
    if replicas < 0 {
        return Err(ClientError::Other(format!(
            "--replicas must be >= 0, got {replicas}"
        )));
    }
    let ns = namespace.unwrap_or_else(|| "default".into());
    let client = conn.client();
    let path = format!("/v1/namespaces/{ns}/statefulsets/{name}");
    let mut s = client.get_json(&path)?;
    s["spec"]["replicas"] = json!(replicas);
    if let Some(m) = max_unavailable {
        let value: Value = match m.parse::<i64>() {
            Ok(n) if n >= 1 => json!(n),
            Ok(_) => {
                return Err(ClientError::Other(
                    "--max-unavailable must be at least 1".into(),
                ))
            }
            Err(_) if m.ends_with('%') => json!(m),
            Err(_) => {
                return Err(ClientError::Other(format!(
                    "--max-unavailable: {m:?} is not a number or a percentage like 25%"
                )))
            }
        };
        s["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = value;
    }
    if let Some(o) = s.as_object_mut() {
        o.remove("status");
    }
    client.send("PUT", &path, "application/json", &s.to_string())?;
    println!("statefulset/{name} scaled to {replicas}");
    if wait.wait {
        let target = wait::Target {
            kind: Kind::StatefulSet,
            namespace: ns,
            name,
        };
        wait::wait(&client, &[target], wait.timeout)?;
    }
    Ok(())
}
