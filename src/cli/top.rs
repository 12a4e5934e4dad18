//! `omnicloud top nodes|instances` and `omnicloud debug resources`: capacity, requests and
//! measured usage per node and instance, from `/v1/nodes` (what each node announces) and
//! the instances' specs and statuses (requests, and the usage agents report).

use std::collections::BTreeMap;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{output, Conn, Format};
use crate::client::{Client, ClientError};
use crate::model::instance::InstanceSpec;
use crate::model::InstanceStatus;

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Per node: allocatable, requested and used cpu and memory, instances.
    Nodes {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Per instance: measured cpu and memory against requests.
    Instances {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Total, used and available cpu and memory per node and for the cluster.
    Resources {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Default, Clone, Copy)]
struct Sums {
    cpu_req: u64,
    mem_req: u64,
    cpu_used: u64,
    mem_used: u64,
    instances: u64,
}

fn instances(client: &Client, ns: Option<&str>) -> Result<Vec<Value>, ClientError> {
    let path = match ns {
        Some(ns) => format!("/v1/namespaces/{ns}/instances"),
        None => "/v1/instances".into(),
    };
    Ok(client.get_json(&path)?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn requests(i: &Value) -> (u64, u64) {
    serde_json::from_value::<InstanceSpec>(i["spec"].clone())
        .map(|s| s.pod.requests())
        .unwrap_or((0, 0))
}

/// Per node: (allocatable cpu, allocatable memory, sums).
fn per_node(client: &Client) -> Result<Vec<(String, u64, u64, Sums)>, ClientError> {
    let nodes = client.get_json("/v1/nodes")?;
    let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
    for i in instances(client, None)? {
        let Some(node) = i["spec"]["nodeName"].as_str() else {
            continue;
        };
        let (cpu, mem) = requests(&i);
        let s = sums.entry(node.to_string()).or_default();
        s.cpu_req += cpu;
        s.mem_req += mem;
        let usage = crate::model::status::of::<InstanceStatus>(i.get("status"))
            .usage
            .unwrap_or_default();
        s.cpu_used += usage.cpu_millis;
        s.mem_used += usage.memory_bytes;
        s.instances += 1;
    }
    Ok(nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let name = n["name"].as_str().unwrap_or("").to_string();
            let s = sums.get(&name).copied().unwrap_or_default();
            (
                name,
                n["cpuMillis"].as_u64().unwrap_or(0),
                n["memoryBytes"].as_u64().unwrap_or(0),
                s,
            )
        })
        .collect())
}

fn pct(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(p) => format!("{p}%"),
        None => "-".into(),
    }
}

fn print(format: Format, v: Value, headers: &[&str], rows: Vec<Vec<String>>) {
    match format {
        Format::Json => output::print_json(&v),
        Format::Yaml => output::print_yaml(&v),
        _ => println!("{}", output::table(headers, rows)),
    }
}

pub fn top(cmd: TopCommand) -> Result<(), ClientError> {
    match cmd {
        TopCommand::Nodes { conn, output: f } => {
            let rows = per_node(&conn.client())?;
            let json = json!(rows
                .iter()
                .map(|(n, cpu, mem, s)| json!({"name": n, "cpuMillis": cpu, "memoryBytes": mem,
                    "cpuRequestedMillis": s.cpu_req, "memoryRequestedBytes": s.mem_req,
                    "cpuUsedMillis": s.cpu_used, "memoryUsedBytes": s.mem_used, "instances": s.instances}))
                .collect::<Vec<_>>());
            let table = rows
                .iter()
                .map(|(n, cpu, mem, s)| {
                    vec![
                        n.clone(),
                        format!("{}m", s.cpu_used),
                        format!("{} ({})", format!("{}m", s.cpu_req), pct(s.cpu_req, *cpu)),
                        output::bytes(s.mem_used),
                        format!("{} ({})", output::bytes(s.mem_req), pct(s.mem_req, *mem)),
                        s.instances.to_string(),
                    ]
                })
                .collect();
            let headers = [
                "NAME",
                "CPU",
                "CPU REQUESTED",
                "MEMORY",
                "MEMORY REQUESTED",
                "INSTANCES",
            ];
            print(f, json, &headers, table);
        }
        TopCommand::Instances {
            conn,
            namespace,
            all_namespaces,
            output: f,
        } => {
            let ns = if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| "default".into()))
            };
            let list = instances(&conn.client(), ns.as_deref())?;
            let rows = list
                .iter()
                .map(|i| {
                    let (cpu, mem) = requests(i);
                    let u = &i["status"]["usage"];
                    vec![
                        i["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        i["status"]["node"].as_str().unwrap_or("<none>").to_string(),
                        u["cpuMillis"]
                            .as_u64()
                            .map_or("<none>".into(), |c| format!("{c}m")),
                        format!("{cpu}m"),
                        u["memoryBytes"]
                            .as_u64()
                            .map_or("<none>".into(), output::bytes),
                        output::bytes(mem),
                    ]
                })
                .collect();
            let headers = [
                "NAME",
                "NODE",
                "CPU",
                "CPU REQUEST",
                "MEMORY",
                "MEMORY REQUEST",
            ];
            print(f, Value::Array(list), &headers, rows);
        }
    }
    Ok(())
}

pub fn debug(cmd: DebugCommand) -> Result<(), ClientError> {
    let DebugCommand::Resources { conn, output: f } = cmd;
    let rows = per_node(&conn.client())?;
    let mut total = (0, 0, Sums::default());
    let mut table = Vec::new();
    let mut items = Vec::new();
    for (n, cpu, mem, s) in &rows {
        total.0 += cpu;
        total.1 += mem;
        total.2.cpu_req += s.cpu_req;
        total.2.mem_req += s.mem_req;
        table.push(line(n, *cpu, *mem, s));
        items.push(
            json!({"name": n, "cpu": {"totalMillis": cpu, "requestedMillis": s.cpu_req,
            "availableMillis": cpu.saturating_sub(s.cpu_req)},
            "memory": {"totalBytes": mem, "requestedBytes": s.mem_req,
            "availableBytes": mem.saturating_sub(s.mem_req)}}),
        );
    }
    table.push(line("(cluster)", total.0, total.1, &total.2));
    let headers = [
        "NODE",
        "CPU TOTAL",
        "CPU USED",
        "CPU AVAILABLE",
        "MEMORY TOTAL",
        "MEMORY USED",
        "MEMORY AVAILABLE",
    ];
    print(f, json!({"nodes": items}), &headers, table);
    Ok(())
}

fn line(name: &str, cpu: u64, mem: u64, s: &Sums) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{cpu}m"),
        format!("{}m ({})", s.cpu_req, pct(s.cpu_req, cpu)),
        format!("{}m", cpu.saturating_sub(s.cpu_req)),
        output::bytes(mem),
        format!("{} ({})", output::bytes(s.mem_req), pct(s.mem_req, mem)),
        output::bytes(mem.saturating_sub(s.mem_req)),
    ]
}

/// `scaling-capacity` (free capacity per node and in all) and `scaling-headroom
/// deployment/NAME` (how many more replicas of it fit, by its requests).
pub fn capacity(conn: Conn, target: Option<String>, f: Format) -> Result<(), ClientError> {
    let client = conn.client();
    let rows = per_node(&client)?;
    let per_replica = match &target {
        Some(t) => {
            let (kind, name) = t
                .split_once('/')
                .ok_or_else(|| ClientError::Other(format!("{t:?}: expected deployment/NAME")))?;
            let kind = crate::model::Kind::parse(kind)
                .filter(|k| k.has_replicas())
                .ok_or_else(|| ClientError::Other(format!("{t:?}: not a scalable kind")))?;
            let o = client.get_json(&format!("/v1/namespaces/default/{}/{name}", kind.plural()))?;
            let pod: crate::model::workload::PodSpec =
                serde_json::from_value(o["spec"]["template"]["spec"].clone())
                    .map_err(|e| ClientError::Other(format!("{t}: {e}")))?;
            Some((t.clone(), pod.requests()))
        }
        None => None,
    };
    let mut table = Vec::new();
    let mut items = Vec::new();
    let mut total_fit = 0u64;
    for (n, cpu, mem, s) in &rows {
        let (free_cpu, free_mem) = (cpu.saturating_sub(s.cpu_req), mem.saturating_sub(s.mem_req));
        let mut row = vec![n.clone(), format!("{free_cpu}m"), output::bytes(free_mem)];
        let mut item = json!({"name": n, "freeCpuMillis": free_cpu, "freeMemoryBytes": free_mem});
        if let Some((_, (rc, rm))) = &per_replica {
            let fit = [(free_cpu, *rc), (free_mem, *rm)]
                .iter()
                .filter(|(_, r)| *r > 0)
                .map(|(free, r)| free / r)
                .min()
                .unwrap_or(u64::MAX);
            total_fit = total_fit.saturating_add(fit);
            row.push(if fit == u64::MAX {
                "unbounded".into()
            } else {
                fit.to_string()
            });
            item["replicasThatFit"] = json!(fit);
        }
        table.push(row);
        items.push(item);
    }
    let mut headers = vec!["NODE", "FREE CPU", "FREE MEMORY"];
    if let Some((t, _)) = &per_replica {
        headers.push("REPLICAS THAT FIT");
        if f == Format::Table || f == Format::Wide {
            println!("headroom for {t}: {total_fit} more replica(s) by requests");
        }
    }
    print(
        f,
        json!({"nodes": items, "headroom": per_replica.map(|_| total_fit)}),
        &headers,
        table,
    );
    Ok(())
}
