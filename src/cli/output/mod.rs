//! How objects look on a terminal: kubectl-like tables per kind, `describe` text, and the
//! machine formats (json, yaml).

use std::time::SystemTime;

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use serde_json::Value;

use crate::model::Kind;

pub use crate::client::Format;
use services::service_row;
pub use services::{endpoints_list, service_section};

mod services;

pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

pub fn print_yaml(v: &Value) {
    print!(
        "{}",
        serde_norway::to_string(v).expect("JSON values serialize as YAML")
    );
}

/// A table without borders, columns separated by three spaces, as users know from kubectl.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 3));
        col.set_cell_alignment(CellAlignment::Left);
    }
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn or_none(v: &Value) -> String {
    match v.as_str() {
        Some(x) if !x.is_empty() => x.to_string(),
        _ => "<none>".into(),
    }
}

fn n(v: &Value) -> String {
    v.as_i64()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "0".into())
}

/// "5s", "3m", "2h", "4d", like kubectl.
pub fn age(created: &Value) -> String {
    let Some(ts) = created.as_str() else {
        return "<unknown>".into();
    };
    let Ok(t) = humantime::parse_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// Columns for one kind; `wide` adds the detail columns.
pub fn columns(kind: Kind, wide: bool) -> Vec<&'static str> {
    let mut c: Vec<&str> = match kind {
        Kind::Deployment | Kind::StatefulSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::HorizontalPodAutoscaler => vec![
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE",
        ],
        Kind::VerticalPodAutoscaler => vec!["NAME", "MODE", "TARGET", "AGE"],
        Kind::VirtualMachine => vec!["NAME", "RUNNING", "CPU", "MEMORY", "READY", "AGE"],
        Kind::PriorityClass => vec!["NAME", "VALUE", "AGE"],
        Kind::NodeClass => vec!["NAME", "CPU", "MEMORY", "AGE"],
        Kind::ClusterAutoscaler => vec!["NAME", "NODEGROUPS", "AGE"],
        Kind::ClusterScalingPolicy => vec!["NAME", "MAX-REPLICAS", "MAX-PODS-PER-NODE", "AGE"],
        Kind::PredictiveBootstrapScaler => vec!["NAME", "ENTRIES", "ACTIVE", "AGE"],
        Kind::ResourceQuota => vec!["NAME", "HARD", "AGE"],
        Kind::Namespace => vec!["NAME", "AGE"],
        Kind::Instance => vec!["NAME", "READY", "STATUS", "RESTARTS", "IP", "NODE", "AGE"],
        Kind::NodeSubnet => vec!["NAME", "CIDR", "AGE"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"],
        Kind::Service => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        Kind::Endpoints => vec!["NAME", "ENDPOINTS", "AGE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::Role | Kind::ClusterRole => vec!["NAME", "RULES", "AGE"],
        Kind::RoleBinding | Kind::ClusterRoleBinding => vec!["NAME", "ROLE", "SUBJECTS", "AGE"],
        Kind::Token => vec!["ID", "USER", "EXPIRES", "AGE"],
    };
    if wide {
        match kind {
            Kind::Deployment | Kind::StatefulSet => c.extend(["IMAGES", "SELECTOR"]),
            Kind::Instance => c.extend(["REASON", "CPU", "MEMORY"]),
            _ => c.push("GENERATION"),
        }
    }
    c
}

/// READY of an instance: its ready containers of its containers (`2/3`), as kubectl.
fn ready_column(spec: &Value, status: &Value) -> String {
    let total = spec["pod"]["containers"]
        .as_array()
        .map_or(1, |c| c.len().max(1));
    let ready = match status["containerStatuses"].as_array() {
        Some(list) => list.iter().filter(|c| c["ready"] == true).count(),
        None if status["ready"] == true => total,
        None => 0,
    };
    format!("{ready}/{total}")
}

pub fn row(kind: Kind, o: &Value, wide: bool) -> Vec<String> {
    let spec = &o["spec"];
    let status = &o["status"];
    let name = s(&o["metadata"]["name"]);
    let age = age(&o["metadata"]["creationTimestamp"]);
    let mut r = match kind {
        Kind::Deployment | Kind::StatefulSet => {
            vec![
                name,
                n(&spec["replicas"]),
                n(&status["replicas"]),
                format!("{}/{}", n(&status["readyReplicas"]), n(&spec["replicas"])),
                age,
            ]
        }
        Kind::HorizontalPodAutoscaler => {
            let target = &spec["scaleTargetRef"];
            vec![
                name,
                format!("{}/{}", s(&target["kind"]), s(&target["name"])),
                hpa_targets(o),
                spec["minReplicas"]
                    .as_i64()
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "1".into()),
                n(&spec["maxReplicas"]),
                n(&status["currentReplicas"]),
                age,
            ]
        }
        Kind::VerticalPodAutoscaler => vec![
            name,
            spec["updatePolicy"]["updateMode"]
                .as_str()
                .unwrap_or("Auto")
                .to_string(),
            format!(
                "{}/{}",
                s(&spec["targetRef"]["kind"]),
                s(&spec["targetRef"]["name"])
            ),
            age,
        ],
        Kind::VirtualMachine => vec![
            name,
            spec["running"]
                .as_bool()
                .map(|b| b.to_string())
                .unwrap_or_else(|| "true".into()),
            s(&spec["cpu"]["cores"]),
            s(&spec["memory"]["guest"]),
            format!(
                "{}/{}",
                n(&status["readyReplicas"]),
                if spec["running"] == false {
                    0
                } else {
                    spec["replicas"].as_i64().unwrap_or(1)
                }
            ),
            age,
        ],
        Kind::PriorityClass => vec![name, s(&spec["value"]), age],
        Kind::NodeClass => vec![
            name,
            s(&spec["resources"]["cpu"]),
            s(&spec["resources"]["memory"]),
            age,
        ],
        Kind::ClusterAutoscaler => {
            let groups: Vec<String> = spec["nodeGroups"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .map(|g| {
                            format!(
                                "{}({}-{})",
                                s(&g["name"]),
                                n(&g["minSize"]),
                                n(&g["maxSize"])
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![name, groups.join(","), age]
        }
        Kind::ClusterScalingPolicy => vec![
            name,
            s(&spec["applicationLimits"]["maxReplicasPerDeployment"]),
            s(&spec["applicationLimits"]["maxPodsPerNode"]),
            age,
        ],
        Kind::PredictiveBootstrapScaler => vec![
            name,
            spec["schedule"]
                .as_array()
                .map_or(0, |a| a.len())
                .to_string(),
            status["active"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| n(&e["entry"]))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into()),
            age,
        ],
        Kind::ResourceQuota => {
            let hard: Vec<String> = spec["hard"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
                .unwrap_or_default();
            vec![name, hard.join(", "), age]
        }
        Kind::Namespace => vec![name, age],
        Kind::Instance => {
            let phase = status["phase"].as_str().unwrap_or("Pending");
            // As kubectl: init containers at work or failing show in STATUS.
            let shown = match status["reason"].as_str() {
                Some(r) if r.starts_with("Init:") => r,
                _ => phase,
            };
            vec![
                name,
                ready_column(spec, status),
                shown.into(),
                n(&status["restarts"]),
                or_none(&status["ip"]),
                or_none(if status["node"].is_null() {
                    &spec["nodeName"]
                } else {
                    &status["node"]
                }),
                age,
            ]
        }
        Kind::NodeSubnet => vec![name, s(&spec["cidr"]), age],
        Kind::Event => vec![
            crate::cli::output::age(&spec["lastTimestamp"]),
            s(&spec["type"]),
            s(&spec["reason"]),
            format!(
                "{}/{}",
                s(&spec["involvedObject"]["kind"]).to_lowercase(),
                s(&spec["involvedObject"]["name"])
            ),
            n(&spec["count"]),
            s(&spec["message"]),
        ],
        Kind::Service => service_row(name, o, age),
        Kind::Endpoints => vec![name, endpoints_list(o, 3), age],
        Kind::ConfigMap => vec![name, key_count(o, &["data", "binaryData"]), age],
        // Never a value: the type and how many keys.
        Kind::Secret => vec![
            name,
            o["type"].as_str().unwrap_or("Opaque").to_string(),
            key_count(o, &["data", "stringData"]),
            age,
        ],
        Kind::Role | Kind::ClusterRole => {
            let rules = o["rules"].as_array().map(Vec::len).unwrap_or(0);
            vec![name, rules.to_string(), age]
        }
        Kind::RoleBinding | Kind::ClusterRoleBinding => {
            let role = format!("{}/{}", s(&o["roleRef"]["kind"]), s(&o["roleRef"]["name"]));
            let subjects: Vec<String> = o["subjects"]
                .as_array()
                .map(|a| a.iter().map(|x| s(&x["name"])).collect())
                .unwrap_or_default();
            vec![name, role, subjects.join(","), age]
        }
        Kind::Token => vec![name, s(&spec["user"]), or_none(&spec["expiresMs"]), age],
    };
    if wide {
        match kind {
            Kind::Deployment | Kind::StatefulSet => {
                let images: Vec<String> = spec["template"]["spec"]["containers"]
                    .as_array()
                    .map(|c| c.iter().map(|c| s(&c["image"])).collect())
                    .unwrap_or_default();
                let selector: Vec<String> = spec["selector"]["matchLabels"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
                    .unwrap_or_default();
                r.push(images.join(","));
                r.push(selector.join(","));
            }
            Kind::Instance => {
                let usage = &status["usage"];
                r.push(or_none(&status["reason"]));
                r.push(match usage["cpuMillis"].as_u64() {
                    Some(m) => format!("{m}m"),
                    None => "<none>".into(),
                });
                r.push(match usage["memoryBytes"].as_u64() {
                    Some(b) => bytes(b),
                    None => "<none>".into(),
                });
            }
            _ => r.push(n(&o["metadata"]["generation"])),
        }
    }
    r
}

/// Keys in the object's top-level maps `fields`.
fn key_count(o: &Value, fields: &[&str]) -> String {
    fields
        .iter()
        .filter_map(|f| o[*f].as_object())
        .map(|m| m.len())
        .sum::<usize>()
        .to_string()
}

/// `describe` of a ConfigMap (its data, as kubectl shows it) or a Secret (its type, and
/// each key with its size: never a value).
fn data_section(o: &Value) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    if o["kind"] == "Secret" {
        out.push_str(&format!(
            "{:<20}{}
",
            "Type:",
            o["type"].as_str().unwrap_or("Opaque")
        ));
        out.push_str(
            "Data:
",
        );
        for (k, v) in o["data"].as_object().into_iter().flatten() {
            let size = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .map_or(0, |b| b.len());
            out.push_str(&format!(
                "  {k}:  {size} bytes
"
            ));
        }
    } else {
        out.push_str(
            "Data:
",
        );
        for (k, v) in o["data"].as_object().into_iter().flatten() {
            out.push_str(&format!(
                "  {k}:
{}",
                indent(&indent(&s(v)))
            ));
        }
        for k in o["binaryData"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            out.push_str(&format!("  {k}:  (binary)\n"));
        }
    }
    if o["immutable"] == true {
        out.push_str("Immutable:          true\n");
    }
    out
}

/// "cpu: 45%/70%, http_requests_per_second: <unknown>/100" from spec targets and status.
fn hpa_targets(o: &Value) -> String {
    super::autoscale::targets_text(o)
}

/// "1.5Gi", "512Mi": binary units as users write them.
pub fn bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if b >= size {
            let v = b as f64 / size as f64;
            return if v.fract() < 0.05 {
                format!("{v:.0}{unit}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
    }
    format!("{b}")
}

pub fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

pub fn age_ms(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return "<unknown>".into();
    };
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    age(&Value::String(
        humantime::format_rfc3339_seconds(t).to_string(),
    ))
}

/// `omnicloud nodes`: NAME ADDRESS ROLES STATUS RAFT CPU MEMORY AGE CONDITIONS.
pub fn nodes_table(v: &Value) -> String {
    let rows = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let roles: Vec<&str> = n["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                s(&n["name"]),
                s(&n["address"]),
                if roles.is_empty() {
                    "-".into()
                } else {
                    roles.join(",")
                },
                s(&n["status"]),
                s(&n["raft"]),
                cpu(n["cpuMillis"].as_u64().unwrap_or(0)),
                bytes(n["memoryBytes"].as_u64().unwrap_or(0)),
                age_ms(&n["startedAtMs"]),
                conditions(&n["conditions"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ADDRESS",
            "ROLES",
            "STATUS",
            "RAFT",
            "CPU",
            "MEMORY",
            "AGE",
            "CONDITIONS",
        ],
        rows,
    )
}

/// "NoOutboundNAT,KvmUnavailable", or "<none>".
fn conditions(c: &Value) -> String {
    let reasons: Vec<&str> = c
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    if reasons.is_empty() {
        "<none>".into()
    } else {
        reasons.join(",")
    }
}

/// `omnicloud bootstrap status`.
pub fn bootstrap_status(v: &Value) -> String {
    let raft = &v["raft"];
    let roles = &v["roles"];
    let mut out = format!(
        "Leader:        {} (id {})\nTerm:          {}\nCommit index:  {}\nLast log:      {}\n",
        s(&raft["leader"]),
        s(&raft["leaderId"]),
        n(&raft["term"]),
        n(&raft["commitIndex"]),
        n(&raft["lastLogIndex"]),
    );
    out.push_str(&format!(
        "Orchestrators: {} voting / {} wanted ({} eligible alive)\nDirectors:     {}\nAgents:        {}\nMembers:       {} alive, {} suspect, {} down\n\n",
        n(&roles["orchestrators"]["voters"]),
        n(&roles["orchestrators"]["wanted"]),
        n(&roles["orchestrators"]["eligibleAlive"]),
        n(&roles["directors"]),
        n(&roles["agents"]),
        n(&v["members"]["alive"]),
        n(&v["members"]["suspect"]),
        n(&v["members"]["down"]),
    ));
    let rows = raft["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let opt = |x: &Value| {
                x.as_u64()
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "-".into())
            };
            vec![
                s(&m["name"]),
                s(&m["role"]),
                opt(&m["matched"]),
                opt(&m["lag"]),
            ]
        })
        .collect();
    out.push_str(&table(&["MEMBER", "RAFT", "MATCHED", "LAG"], rows));
    out.push('\n');
    out
}

/// `describe`: the identity first, then spec and status as YAML.
pub fn describe(o: &Value) -> String {
    let m = &o["metadata"];
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{:<20}{}\n", format!("{k}:"), v));
    line("Name", s(&m["name"]));
    if !m["namespace"].is_null() {
        line("Namespace", s(&m["namespace"]));
    }
    line(
        "Kind",
        format!("{} ({})", s(&o["kind"]), s(&o["apiVersion"])),
    );
    let kv = |v: &Value| -> String {
        v.as_object()
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "<none>".into())
    };
    line("Labels", kv(&m["labels"]));
    line("Annotations", kv(&m["annotations"]));
    line(
        "Created",
        format!(
            "{} ({} ago)",
            s(&m["creationTimestamp"]),
            age(&m["creationTimestamp"])
        ),
    );
    line("UID", s(&m["uid"]));
    line("Generation", n(&m["generation"]));
    line("ResourceVersion", s(&m["resourceVersion"]));
    if o["kind"] == "Secret" || o["kind"] == "ConfigMap" {
        out.push_str(&data_section(o));
        return out;
    }
    out.push_str("Spec:\n");
    out.push_str(&indent(
        &serde_norway::to_string(&o["spec"]).unwrap_or_default(),
    ));
    out.push_str("Status:\n");
    if o["status"].is_null() {
        out.push_str("  <none reported yet>\n");
    } else {
        out.push_str(&indent(
            &serde_norway::to_string(&o["status"]).unwrap_or_default(),
        ));
    }
    out
}

/// The "Events:" part of `describe`, oldest first.
pub fn events_section(events: &[&Value]) -> String {
    if events.is_empty() {
        return "Events: <none>\n".into();
    }
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| {
        e["spec"]["lastTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    let rows = sorted
        .iter()
        .map(|e| {
            let spec = &e["spec"];
            vec![
                s(&spec["type"]),
                s(&spec["reason"]),
                age(&spec["lastTimestamp"]),
                n(&spec["count"]),
                s(&spec["message"]),
            ]
        })
        .collect();
    format!(
        "Events:\n{}",
        indent(&table(&["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"], rows))
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_instance_row_counts_ready_containers_and_shows_init_states() {
        let pod = json!({"metadata": {"name": "duo-0"},
            "spec": {"pod": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}},
            "status": {"phase": "Running", "ready": false, "restarts": 4,
                       "containerStatuses": [{"name": "a", "ready": true}, {"name": "b", "ready": true},
                                             {"name": "c", "ready": false}]}});
        let r = row(Kind::Instance, &pod, false);
        assert_eq!(&r[..4], &["duo-0", "2/3", "Running", "4"]);
        let init = json!({"metadata": {"name": "s-0"},
            "spec": {"pod": {"containers": [{"name": "a"}]}},
            "status": {"phase": "Failed", "reason": "Init:CrashLoopBackOff", "restarts": 2}});
        assert_eq!(
            &row(Kind::Instance, &init, false)[..3],
            &["s-0", "0/1", "Init:CrashLoopBackOff"]
        );
        let one = json!({"metadata": {"name": "w-0"}, "spec": {"pod": {"containers": [{"name": "a"}]}},
                         "status": {"phase": "Running", "ready": true}});
        assert_eq!(
            &row(Kind::Instance, &one, false)[..3],
            &["w-0", "1/1", "Running"]
        );
    }

    #[test]
    fn deployment_row_and_table_shape() {
        let o = json!({"metadata": {"name": "web", "creationTimestamp": "2000-01-01T00:00:00Z"},
                       "spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1}});
        let r = row(Kind::Deployment, &o, false);
        assert_eq!(&r[..4], &["web", "3", "2", "1/3"]);
        assert!(r[4].ends_with('d'));
        let t = table(&columns(Kind::Deployment, false), vec![r]);
        let first = t.lines().next().unwrap();
        assert!(
            first.starts_with("NAME   DESIRED   CURRENT   READY   AGE"),
            "{first:?}"
        );
    }

    #[test]
    fn secrets_show_keys_and_sizes_never_values() {
        let o = json!({"kind": "Secret", "type": "Opaque",
                       "metadata": {"name": "db", "creationTimestamp": "2000-01-01T00:00:00Z"},
                       "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}});
        let r = row(Kind::Secret, &o, false);
        assert_eq!(&r[..3], &["db", "Opaque", "2"]);
        let d = describe(&o);
        assert!(d.contains("password:  7 bytes"), "{d}");
        for leak in ["hunter2", "aHVudGVyMg", "admin", "YWRtaW4"] {
            assert!(!d.contains(leak) && !r.join(" ").contains(leak), "{d}");
        }
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c"},
                        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(row(Kind::ConfigMap, &cm, false)[1], "3");
    }

    #[test]
    fn age_formats() {
        let ts = |secs: u64| {
            let t = SystemTime::now() - std::time::Duration::from_secs(secs);
            Value::String(humantime::format_rfc3339_seconds(t).to_string())
        };
        assert_eq!(age(&ts(5)), "5s");
        assert_eq!(age(&ts(600)), "10m");
        assert_eq!(age(&ts(3 * 3600)), "3h");
        assert_eq!(age(&Value::Null), "<unknown>");
    }

    #[test]
    fn service_and_endpoints_rows_and_describe() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.2",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]},
            "status": {"warnings": [{"reason": "SelectorMatchesNothing", "message": "spec.selector app=x matches no instance"}]}});
        let r = row(Kind::Service, &svc, false);
        assert_eq!(
            &r[..5],
            &[
                "web",
                "NodePort",
                "10.96.0.2",
                "<none>",
                "80:30080/TCP,53/UDP"
            ]
        );
        let ep = json!({"metadata": {"name": "web"}, "spec": {"subsets": [{
            "addresses": [{"ip": "10.88.0.2"}, {"ip": "10.88.0.3"}, {"ip": "10.88.0.4"}, {"ip": "10.88.0.5"}],
            "notReadyAddresses": [{"ip": "10.88.0.6"}],
            "ports": [{"port": 8080}]}]}});
        assert_eq!(
            row(Kind::Endpoints, &ep, false)[1],
            "10.88.0.2:8080,10.88.0.3:8080,10.88.0.4:8080 + 1 more..."
        );
        let d = service_section(&svc, Some(&ep));
        assert!(
            d.contains("10.88.0.5:8080") && d.contains("NotReady:           10.88.0.6"),
            "{d}"
        );
        assert!(
            d.contains("Warning SelectorMatchesNothing: spec.selector app=x"),
            "{d}"
        );
    }
}
