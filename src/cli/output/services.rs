//! How Services and Endpoints look: the `get services` row, the Service part of
//! `describe`, and an Endpoints object's address list.

use serde_json::Value;

use super::{n, or_none, s};

/// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, as kubectl prints a Service.
pub(super) fn service_row(name: String, o: &Value, age: String) -> Vec<String> {
    let spec = &o["spec"];
    let ingress: Vec<String> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|a| a.iter().map(|i| s(&i["ip"])).collect())
        .unwrap_or_default();
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    let external = match (ingress.is_empty(), kind) {
        (false, _) => ingress.join(","),
        (true, "LoadBalancer") => "<pending>".into(),
        _ => "<none>".into(),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", n(&p["port"])),
                        None => format!("{}/{proto}", n(&p["port"])),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        name,
        kind.to_string(),
        or_none(&spec["clusterIP"]),
        external,
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        },
        age,
    ]
}

/// `describe service/NAME`: its endpoints (ready and not) and its warnings (fields not
/// acted on, a selector matching nothing, an unknown targetPort name).
pub fn service_section(svc: &Value, endpoints: Option<&Value>) -> String {
    let mut out = String::new();
    let ready = endpoints.map_or_else(|| "<none>".to_string(), |e| endpoints_list(e, 0));
    out.push_str(&format!("{:<20}{ready}\n", "Endpoints:"));
    let not_ready: Vec<String> = endpoints
        .into_iter()
        .flat_map(|e| e["spec"]["subsets"].as_array().into_iter().flatten())
        .flat_map(|s| s["notReadyAddresses"].as_array().into_iter().flatten())
        .map(|a| s(&a["ip"]))
        .collect();
    if !not_ready.is_empty() {
        out.push_str(&format!("{:<20}{}\n", "NotReady:", not_ready.join(",")));
    }
    let warnings: Vec<String> = svc["status"]["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| format!("  Warning {}: {}", s(&w["reason"]), s(&w["message"])))
        .collect();
    if warnings.is_empty() {
        out.push_str("Warnings:           <none>\n");
    } else {
        out.push_str("Warnings:\n");
        for w in warnings {
            out.push_str(&w);
            out.push('\n');
        }
    }
    out
}

/// `ip:port` of an Endpoints object's ready addresses, the first `max` and "+ N more"
/// (`max` 0: all).
pub fn endpoints_list(o: &Value, max: usize) -> String {
    let mut all = Vec::new();
    for subset in o["spec"]["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            if ports.is_empty() {
                all.push(s(&a["ip"]));
            }
            for port in &ports {
                all.push(format!("{}:{port}", s(&a["ip"])));
            }
        }
    }
    if all.is_empty() {
        return "<none>".into();
    }
    if max > 0 && all.len() > max {
        let more = all.len() - max;
        all.truncate(max);
        return format!("{} + {more} more...", all.join(","));
    }
    all.join(",")
}
