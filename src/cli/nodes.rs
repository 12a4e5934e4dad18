//! Nodes through the resource verbs: `get nodes`, `get node NAME`, `describe node/NAME`
//! (beside `omnicloud nodes`). Nodes are not stored objects: they are gossip members joined
//! with their Raft role and conditions (`/v1/nodes`, `api::cluster`).

use serde_json::Value;

use super::output::{self, Format};
use crate::client::{Client, ClientError};

/// Whether a kind as typed (`nodes`, `node`, `no`, any case) names nodes.
pub fn is_node_kind(kind: &str) -> bool {
    let kind = kind.split('/').next().unwrap_or(kind);
    matches!(kind.to_ascii_lowercase().as_str(), "node" | "nodes" | "no")
}

/// `node/NAME` or `node NAME` -> the name, if one was given.
fn name_of(target: &str, name: Option<String>) -> Result<Option<String>, ClientError> {
    match (target.split_once('/'), name) {
        (Some(_), Some(extra)) => Err(ClientError::Other(format!(
            "unexpected argument \"{extra}\" after {target}"
        ))),
        (Some((_, n)), None) => Ok(Some(n.to_string())),
        (None, n) => Ok(n),
    }
}

fn node_path(name: &str) -> String {
    format!("/v1/nodes/{}", crate::client::urlencode(name))
}

/// `get nodes [-l SELECTOR]` (the list, by node labels) or `get node NAME` (one row).
pub fn get(
    client: &Client,
    target: &str,
    name: Option<String>,
    selector: Option<&str>,
    format: Format,
    watch: bool,
) -> Result<(), ClientError> {
    if watch {
        return Err(ClientError::Other(
            "--watch is not available for nodes (they are not stored objects); use omnicloud nodes"
                .into(),
        ));
    }
    let v = match name_of(target, name)? {
        Some(name) => {
            let node = client.get_json(&node_path(&name))?;
            serde_json::json!({"items": [node]})
        }
        None => client.get_json("/v1/nodes")?,
    };
    let v = match selector {
        Some(sel) => only_labelled(v, sel)?,
        None => v,
    };
    print_list(&v, format);
    Ok(())
}

/// The nodes of the list `v` whose labels match the label selector `sel`.
fn only_labelled(mut v: Value, sel: &str) -> Result<Value, ClientError> {
    let sel = crate::model::parse_label_selector(sel)
        .map_err(|e| ClientError::Other(format!("-l/--selector: {e}")))?;
    if let Some(items) = v["items"].as_array_mut() {
        items.retain(|n| {
            let labels = n["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            crate::model::selector_matches(&sel, &labels)
        });
    }
    Ok(v)
}

/// The node list as `omnicloud nodes` prints it.
pub fn print_list(v: &Value, format: Format) {
    match format {
        Format::Json => output::print_json(v),
        Format::Yaml => output::print_yaml(v),
        _ => println!("{}", output::nodes_table(v)),
    }
}

/// `describe node/NAME`: the node, its conditions, the instances placed on it and the
/// events about it.
pub fn describe(client: &Client, target: &str, name: Option<String>) -> Result<(), ClientError> {
    let name = name_of(target, name)?
        .ok_or_else(|| ClientError::Other("describe needs node/NAME".into()))?;
    let node = client.get_json(&node_path(&name))?;
    let instances = client.get_json("/v1/instances")?;
    let mine: Vec<&Value> = instances["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["spec"]["nodeName"] == name.as_str())
        .collect();
    // Events about nodes are kept in the default namespace.
    let events = client.get_json("/v1/namespaces/default/events")?;
    let about: Vec<&Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["spec"]["involvedObject"]["kind"] == "Node"
                && e["spec"]["involvedObject"]["name"] == name.as_str()
        })
        .collect();
    print!("{}", describe_text(&node, &mine));
    print!("{}", output::events_section(&about));
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => "<none>".into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(",")
    }
}

/// The node's part of `describe node/NAME` (the events follow it).
pub fn describe_text(n: &Value, instances: &[&Value]) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{:<20}{}\n", format!("{k}:"), v));
    line("Name", text(&n["name"]));
    line("Node ID", text(&n["nodeId"]));
    line(
        "Roles",
        format!(
            "{} (eligible: {})",
            list(&n["roles"]),
            list(&n["eligibleRoles"])
        ),
    );
    line("Status", text(&n["status"]));
    line("Raft", text(&n["raft"]));
    line(
        "Addresses",
        format!(
            "api {}, rpc {}, gossip {}",
            text(&n["apiAddr"]),
            text(&n["rpcAddr"]),
            text(&n["gossipAddr"])
        ),
    );
    line(
        "Capacity",
        format!(
            "cpu {}, memory {}",
            output::cpu(n["cpuMillis"].as_u64().unwrap_or(0)),
            output::bytes(n["memoryBytes"].as_u64().unwrap_or(0))
        ),
    );
    let yes = |b: &Value| if *b == true { "yes" } else { "no" };
    line(
        "Can run",
        format!(
            "containers: {}, VMs (/dev/kvm): {}",
            yes(&n["containers"]),
            yes(&n["kvm"])
        ),
    );
    let labels: Vec<String> = n["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    line(
        "Labels",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        },
    );
    line("Age", output::age_ms(&n["startedAtMs"]));
    out.push_str(&conditions_and_instances(n, instances));
    out
}

/// The "Conditions:" and "Instances:" parts of `describe node/NAME`.
fn conditions_and_instances(n: &Value, instances: &[&Value]) -> String {
    let mut out = String::new();
    let conditions: Vec<Vec<String>> = n["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                text(&c["reason"]),
                text(&c["source"]),
                text(&c["since"]),
                text(&c["message"]),
            ]
        })
        .collect();
    if conditions.is_empty() {
        out.push_str("Conditions:         <none>\n");
    } else {
        out.push_str("Conditions:\n");
        out.push_str(&indent(&output::table(
            &["REASON", "SOURCE", "SINCE", "MESSAGE"],
            conditions,
        )));
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let st = &i["status"];
            vec![
                text(&i["metadata"]["namespace"]),
                text(&i["metadata"]["name"]),
                if st["ready"] == true { "1/1" } else { "0/1" }.into(),
                st["phase"].as_str().unwrap_or("Pending").into(),
                text(&st["reason"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("Instances:          <none>\n");
    } else {
        out.push_str(&format!("Instances:          {}\n", rows.len()));
        out.push_str(&indent(&output::table(
            &["NAMESPACE", "NAME", "READY", "STATUS", "REASON"],
            rows,
        )));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_kinds_and_names_parse() {
        for k in ["nodes", "node", "NO", "node/n1", "Nodes/n1"] {
            assert!(is_node_kind(k), "{k}");
        }
        for k in ["nodesubnets", "nodeclass", "ns", "deployment/node"] {
            assert!(!is_node_kind(k), "{k}");
        }
        assert_eq!(name_of("node/n1", None).unwrap().as_deref(), Some("n1"));
        assert_eq!(
            name_of("nodes", Some("n1".into())).unwrap().as_deref(),
            Some("n1")
        );
        assert_eq!(name_of("nodes", None).unwrap(), None);
        assert!(name_of("node/n1", Some("n2".into())).is_err());
    }

    #[test]
    fn a_label_selector_picks_nodes_by_their_labels() {
        let v = json!({"items": [{"name": "a", "labels": {"zone": "x"}},
                                 {"name": "b", "labels": {"zone": "y"}}, {"name": "c"}]});
        let names = |v: Value| -> Vec<String> {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(only_labelled(v.clone(), "zone=x").unwrap()), ["a"]);
        assert_eq!(
            names(only_labelled(v.clone(), "zone!=x").unwrap()),
            ["b", "c"]
        );
        let err = only_labelled(v, "zone in (").unwrap_err().to_string();
        assert!(err.starts_with("-l/--selector: "), "{err}");
    }

    #[test]
    fn describe_shows_conditions_and_the_instances_on_the_node() {
        let n = json!({"name": "n1", "nodeId": "7", "roles": ["agent"], "eligibleRoles": ["auto", "agent"],
            "status": "alive", "raft": "leader", "apiAddr": "127.0.0.1:1", "cpuMillis": 2000,
            "memoryBytes": 1u64 << 30, "containers": true, "kvm": false, "labels": {"zone": "a"},
            "conditions": [{"reason": "NoOutboundNAT", "source": "node-network",
                            "since": "2026-01-01T00:00:00Z", "message": "no iptables"}]});
        let i = json!({"metadata": {"name": "web-0", "namespace": "default"},
            "status": {"phase": "Failed", "ready": false, "reason": "ErrImageNotFound"}});
        let out = describe_text(&n, &[&i]);
        assert!(
            out.contains("Roles:              agent (eligible: auto,agent)"),
            "{out}"
        );
        assert!(out.contains("cpu 2, memory 1Gi"), "{out}");
        assert!(out.contains("containers: yes, VMs (/dev/kvm): no"), "{out}");
        let cond = out.lines().find(|l| l.contains("NoOutboundNAT")).unwrap();
        assert!(
            cond.contains("node-network") && cond.ends_with("no iptables"),
            "{out}"
        );
        let inst = out.lines().find(|l| l.contains("web-0")).unwrap();
        assert!(
            inst.contains("Failed") && inst.contains("ErrImageNotFound"),
            "{out}"
        );
        let bare = json!({"name": "n2", "conditions": []});
        let out = describe_text(&bare, &[]);
        assert!(out.contains("Conditions:         <none>"), "{out}");
        assert!(out.contains("Instances:          <none>"), "{out}");
    }
}
