use serde_json::{json, Value};

use super::*;
use crate::orchestrator::controllers::{plan as plan_all, NodeView, World};

fn resource(v: Value) -> Resource {
    let mut v = v;
    v["metadata"]["resourceVersion"] = json!("1");
    v["metadata"]["uid"] = json!(format!("uid-{}", v["metadata"]["name"].as_str().unwrap()));
    Resource::from_stored(v).unwrap()
}

fn service(ports: Value) -> Resource {
    resource(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.2", "ports": ports},
    }))
}

/// A web instance on `node` with `ip`, ready or not, its container port 8080 named http.
fn instance(name: &str, node: &str, ip: &str, ready: bool) -> Resource {
    resource(json!({
        "apiVersion": "omnicloud.io/v1", "kind": "Instance",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "revision": "r1", "pod": {"containers": [{
            "name": "web", "image": "busybox",
            "ports": [{"containerPort": 8080, "name": "http"}],
        }]}},
        "status": {"phase": "Running", "ready": ready, "restarts": 0, "ip": ip, "revision": "r1"},
    }))
}

fn world(instances: Vec<Resource>, ports: Value) -> World {
    let mut dead = NodeView::test_agent("n2");
    dead.alive = false;
    World {
        services: vec![service(ports)],
        instances,
        nodes: vec![NodeView::test_agent("n1"), dead],
        ..Default::default()
    }
}

fn endpoints_of(draft: &Draft) -> Option<EndpointsSpec> {
    draft.commands.iter().find_map(|c| match c {
        Command::Put { key, object, .. } if key.kind == Kind::Endpoints => {
            let v: Value = serde_json::from_slice(object).unwrap();
            Some(serde_json::from_value(v["spec"].clone()).unwrap())
        }
        _ => None,
    })
}

fn service_status(draft: &Draft) -> Option<ServiceStatus> {
    draft.commands.iter().find_map(|c| match c {
        Command::SetStatus { key, status, .. } if key.kind == Kind::Service => {
            Some(serde_json::from_slice(status).unwrap())
        }
        _ => None,
    })
}

#[test]
fn ready_instances_on_live_nodes_are_the_addresses() {
    let w = world(
        vec![
            instance("web-0", "n1", "10.88.0.2", true),
            instance("web-1", "n1", "10.88.0.3", false),
            instance("web-2", "n2", "10.88.1.2", true),
            instance("web-3", "n1", "10.88.0.4", true),
        ],
        json!([{"name": "http", "port": 80, "targetPort": "http"}]),
    );
    let draft = plan_all(&w);
    let e = endpoints_of(&draft).expect("an Endpoints write");
    assert_eq!(e.subsets.len(), 1);
    let s = &e.subsets[0];
    let ips: Vec<&str> = s.addresses.iter().map(|a| a.ip.as_str()).collect();
    assert_eq!(
        ips,
        ["10.88.0.2", "10.88.0.4"],
        "web-2's node is dead, web-1 not ready"
    );
    assert_eq!(s.not_ready_addresses[0].ip, "10.88.0.3");
    assert_eq!(
        s.ports[0].port, 8080,
        "the name http resolves to the container port"
    );
    assert_eq!(
        s.addresses[0].target_ref.as_ref().unwrap().name,
        "web-0",
        "each address names its instance"
    );
    assert!(service_status(&draft).unwrap().warnings.is_empty());
}

#[test]
fn unknown_port_names_and_empty_selections_are_warned() {
    let w = world(
        vec![instance("web-0", "n1", "10.88.0.2", true)],
        json!([{"name": "a", "port": 80, "targetPort": "metrics"}, {"name": "b", "port": 81, "targetPort": 9090}]),
    );
    let draft = plan_all(&w);
    let st = service_status(&draft).unwrap();
    assert_eq!(st.warnings.len(), 1, "{st:?}");
    assert!(st.warnings[0]
        .message
        .starts_with("spec.ports[0].targetPort"));
    assert!(
        draft
            .events
            .iter()
            .any(|e| e.reason == "TargetPortNotFound"),
        "a Warning event too"
    );
    // The numeric port still works.
    assert_eq!(endpoints_of(&draft).unwrap().subsets[0].ports[0].port, 9090);

    let w = world(Vec::new(), json!([{"port": 80}]));
    let draft = plan_all(&w);
    let st = service_status(&draft).unwrap();
    assert_eq!(st.warnings[0].reason, "SelectorMatchesNothing");
    assert!(endpoints_of(&draft).unwrap().subsets.is_empty());
}

#[test]
fn endpoints_of_a_deleted_service_go_and_unchanged_ones_are_not_rewritten() {
    let mut w = world(
        vec![instance("web-0", "n1", "10.88.0.2", true)],
        json!([{"port": 80}]),
    );
    crate::orchestrator::controllers::step(&mut w);
    assert_eq!(w.endpoints.len(), 1);
    let draft = plan_all(&w);
    assert!(
        endpoints_of(&draft).is_none(),
        "nothing changed, nothing written"
    );
    w.services.clear();
    let draft = plan_all(&w);
    assert!(draft
        .commands
        .iter()
        .any(|c| matches!(c, Command::Delete { key, .. } if key.kind == Kind::Endpoints)));
}
