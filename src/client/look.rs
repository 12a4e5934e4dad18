//! What the client gathers to say why a workload is not there yet: its instances, the
//! recent events of its namespace, the nodes (for `why`), and the one-line verdict built
//! from them (`describe`'s "Replicas:" line, a chaos run's report).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::why::{self, Facts};
use super::Client;
use crate::model::Kind;

/// The instances of `t` (label and owner kind).
pub fn instances_of(client: &Client, kind: Kind, ns: &str, name: &str) -> Vec<Value> {
    let path = format!(
        "/v1/namespaces/{ns}/instances?labelSelector={}",
        super::urlencode(&format!("{}={name}", crate::model::instance::OWNER_LABEL))
    );
    let list = client.get_json(&path).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["spec"]["owner"]["kind"] == kind.as_str())
        .cloned()
        .collect()
}

/// The `/v1/nodes` items; none when the API does not answer.
pub fn nodes(client: &Client) -> Vec<Value> {
    let v = client.get_json("/v1/nodes").unwrap_or(Value::Null);
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The events in `ns` last seen at or after `since`.
pub fn events(client: &Client, ns: &str, since: SystemTime) -> Vec<Value> {
    let v = client
        .get_json(&format!("/v1/namespaces/{ns}/events"))
        .unwrap_or(Value::Null);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["spec"]["lastTimestamp"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .is_some_and(|t| t >= since)
        })
        .cloned()
        .collect()
}

/// `describe`'s "Replicas:" line (and a chaos run's verdict) for the workload `o`: "0/2
/// ready: 2 Failed (image pull failed: ...)", with the Warning events about it and its
/// instances of the last hour.
pub fn replicas_line(client: &Client, kind: Kind, o: &Value) -> String {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    let instances = instances_of(client, kind, ns, name);
    let since = SystemTime::now() - Duration::from_secs(3600);
    let (events, nodes) = (events(client, ns, since), nodes(client));
    let facts = Facts {
        instances: &instances,
        events: &events,
        nodes: &nodes,
    };
    why::summary(o, &facts).0
}
