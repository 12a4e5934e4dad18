//! `omnicloud vms list|logs|start|stop`: the VM replicas of VirtualMachines (instances a
//! director runs), in the seed's form (`vms list --label app=web --json`).

use clap::Subcommand;
use serde_json::{json, Value};

use super::{output, wait, Conn, Format};
use crate::client::ClientError;
use crate::model::Kind;

#[derive(Debug, Subcommand)]
pub enum VmsCommand {
    /// VM replicas: node, status, restarts, vCPUs, memory, VMM pid.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only the replicas of this VirtualMachine.
        #[arg(long)]
        vm: Option<String>,
        /// Label selector, e.g. app=db.
        #[arg(short = 'l', long = "label")]
        selector: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// One JSON array of {name, namespace, vm, node, phase, ready, ...} (for scripts).
        #[arg(long)]
        json: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// A VM's serial console log, streamed from its director.
    Logs {
        #[command(flatten)]
        conn: Conn,
        /// The VM replica (e.g. db-0).
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Set a VirtualMachine running: its replicas boot.
    Start(RunningArgs),
    /// Set a VirtualMachine not running: its replicas are stopped (the object stays).
    Stop(RunningArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunningArgs {
    #[command(flatten)]
    conn: Conn,
    /// The VirtualMachine.
    name: String,
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    wait: wait::WaitArgs,
}

/// One VM replica as `vms list` shows it.
pub fn summary(o: &Value) -> Option<Value> {
    let vm = o["spec"].get("vm")?;
    let st = &o["status"];
    Some(json!({
        "name": o["metadata"]["name"],
        "namespace": o["metadata"]["namespace"],
        "vm": o["spec"]["owner"]["name"],
        "node": o["spec"]["nodeName"],
        "phase": st["phase"].as_str().unwrap_or("Pending"),
        "ready": st["ready"].as_bool().unwrap_or(false),
        "restarts": st["restarts"].as_u64().unwrap_or(0),
        "vcpus": vm["cpu"]["cores"],
        "memory": vm["memory"]["guest"],
        "pid": st["pid"],
        "reason": st["reason"],
        "message": st["message"],
        "lastExit": st["lastTermination"]["reason"],
        "created": o["metadata"]["creationTimestamp"],
    }))
}

pub fn run(cmd: VmsCommand) -> Result<(), ClientError> {
    match cmd {
        VmsCommand::List {
            conn,
            vm,
            selector,
            namespace,
            json,
            output: format,
        } => {
            let mut path = match &namespace {
                Some(ns) => format!("/v1/namespaces/{ns}/instances"),
                None => "/v1/instances".to_string(),
            };
            if let Some(sel) = &selector {
                path.push_str(&format!("?labelSelector={}", crate::client::urlencode(sel)));
            }
            let list = conn.client().get_json(&path)?;
            let vms: Vec<Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(summary)
                .filter(|v| vm.as_deref().is_none_or(|n| v["vm"] == n))
                .collect();
            if json || matches!(format, Format::Json) {
                output::print_json(&Value::Array(vms));
                return Ok(());
            }
            let rows = vms
                .iter()
                .map(|v| {
                    let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
                    vec![
                        text("name"),
                        text("vm"),
                        text("node"),
                        text("phase"),
                        if v["ready"] == true { "1/1" } else { "0/1" }.into(),
                        v["restarts"].to_string(),
                        v["vcpus"].to_string(),
                        text("memory"),
                        v["pid"].as_i64().map(|p| p.to_string()).unwrap_or_default(),
                        output::age(&v["created"]),
                    ]
                })
                .collect();
            let header = [
                "NAME", "VM", "NODE", "STATUS", "READY", "RESTARTS", "VCPUS", "MEMORY", "PID",
                "AGE",
            ];
            print!("{}", output::table(&header, rows));
            Ok(())
        }
        VmsCommand::Logs {
            conn,
            name,
            namespace,
            follow,
            tail,
        } => {
            let opts = super::LogOptions {
                follow,
                tail,
                container: None,
            };
            super::stream_log(&conn, namespace.as_deref(), &name, &opts)
        }
        VmsCommand::Start(args) => set_running(args, true),
        VmsCommand::Stop(args) => set_running(args, false),
    }
}

/// Flips `spec.running` with the object's resourceVersion as precondition (a concurrent
/// change makes this fail rather than be overwritten), then waits if asked.
fn set_running(args: RunningArgs, running: bool) -> Result<(), ClientError> {
    let ns = args.namespace.unwrap_or_else(|| "default".into());
    let path = format!("/v1/namespaces/{ns}/virtualmachines/{}", args.name);
    let client = args.conn.client();
    let mut o = client.get_json(&path)?;
    let verb = if running { "started" } else { "stopped" };
    if o["spec"]["running"].as_bool().unwrap_or(true) != running {
        o["spec"]["running"] = Value::Bool(running);
        if let Some(m) = o["metadata"].as_object_mut() {
            for server_set in ["uid", "creationTimestamp", "generation"] {
                m.remove(server_set);
            }
        }
        if let Some(map) = o.as_object_mut() {
            map.remove("status");
        }
        client.send("PUT", &path, "application/json", &o.to_string())?;
        println!("virtualmachine/{} {verb}", args.name);
    } else {
        println!("virtualmachine/{} already {verb}", args.name);
    }
    if args.wait.wait {
        let target = wait::Target {
            kind: Kind::VirtualMachine,
            namespace: ns,
            name: args.name,
        };
        wait::wait(&client, &[target], args.wait.timeout)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vm_instances_are_listed_with_their_fields() {
        let vm = json!({"metadata": {"name": "db-0", "namespace": "default"},
            "spec": {"nodeName": "n1", "owner": {"kind": "VirtualMachine", "name": "db"},
                     "vm": {"cpu": {"cores": 2}, "memory": {"guest": "128Mi"}, "kernel": "/k"}},
            "status": {"phase": "Running", "ready": true, "restarts": 1, "pid": 42}});
        let s = summary(&vm).unwrap();
        assert_eq!(s["vm"], "db");
        assert_eq!(s["node"], "n1");
        assert_eq!(s["vcpus"], 2);
        assert_eq!(s["pid"], 42);
        assert_eq!(s["ready"], true);
        let pod = json!({"metadata": {"name": "web-0"}, "spec": {"pod": {"containers": []}}});
        assert!(summary(&pod).is_none());
    }
}
