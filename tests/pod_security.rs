//! Pod Security admission against a real `omnicloud node` process: a privileged Deployment
//! in a baseline namespace (the default level) is refused with 403 naming the field, the
//! namespace, the level and the rule; the same Deployment in a namespace labelled
//! privileged is accepted; a hostPath volume is refused under baseline; a restricted
//! namespace refuses a pod without runAsNonRoot and accepts a hardened one; nothing of a
//! refused multi-document apply is written; relabelling a namespace stricter warns about
//! the workloads already there. No root needed: the workloads have no replicas.

mod common;

use common::TestNode;
use serde_json::Value;

/// A Deployment `name` in `ns` with no replicas; `extra` is appended to its pod spec
/// (indented under `spec:`), `sc` is the container's securityContext (flow YAML).
fn deployment(name: &str, ns: &str, sc: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - {{name: box, image: busybox, securityContext: {sc}}}
{extra}"
    )
}

fn namespace(name: &str, level: Option<&str>) -> String {
    let labels = level.map_or(String::new(), |l| {
        format!(", labels: {{pod-security.kubernetes.io/enforce: {l}}}")
    });
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}{labels}}}\n")
}

fn message(body: &Value) -> String {
    body["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn namespaces_enforce_their_pod_security_level() {
    let node = TestNode::start("pod-security");
    let api = node.api();
    for doc in [
        namespace("plain", None),
        namespace("open", Some("privileged")),
        namespace("locked", Some("restricted")),
    ] {
        let (status, body) = api.apply(&doc);
        assert_eq!(status, 200, "{body}");
    }

    // Privileged under baseline (no label: the default level): 403 naming it all.
    let privileged = deployment("mighty", "plain", "{privileged: true}", "");
    let (status, body) = api.apply(&privileged);
    assert_eq!(status, 403, "{body}");
    let m = message(&body);
    for part in [
        "namespace \"plain\"",
        "violates PodSecurity \"baseline:latest\"",
        "privileged (spec.template.spec.containers[0].securityContext.privileged",
        "container \"box\" must not set securityContext.privileged=true",
    ] {
        assert!(m.contains(part), "{part:?} missing from {m}");
    }
    let (status, _) = api.get("/v1/namespaces/plain/deployments/mighty");
    assert_eq!(status, 404, "a refused Deployment was written");

    // The same in a namespace labelled privileged: accepted.
    let (status, body) = api.apply(&privileged.replace("namespace: plain", "namespace: open"));
    assert_eq!(status, 200, "{body}");
    let (status, _) = api.get("/v1/namespaces/open/deployments/mighty");
    assert_eq!(status, 200);

    // hostPath under baseline, through POST as well as apply.
    let host_path = deployment(
        "peek",
        "plain",
        "{}",
        "      volumes:\n      - {name: etc, hostPath: {path: /etc}}\n",
    );
    let (status, body) = api.send("POST", "/v1/namespaces/plain/deployments", &host_path);
    assert_eq!(status, 403, "{body}");
    let m = message(&body);
    assert!(
        m.contains("hostPath volumes (spec.template.spec.volumes[0].hostPath"),
        "{m}"
    );

    // Restricted: no runAsNonRoot is refused; a hardened container is accepted.
    let (status, body) = api.apply(&deployment(
        "loose",
        "locked",
        "{allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}",
        "",
    ));
    assert_eq!(status, 403, "{body}");
    let m = message(&body);
    assert!(
        m.contains("\"restricted:latest\"")
            && m.contains(
                "runAsNonRoot (spec.template.spec.containers[0].securityContext.runAsNonRoot"
            ),
        "{m}"
    );
    let (status, body) = api.apply(&deployment(
        "tight",
        "locked",
        "{runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}",
        "",
    ));
    assert_eq!(status, 200, "{body}");

    // A multi-document apply with one refused document writes nothing.
    let both = format!(
        "{}---\n{}",
        deployment("fine", "plain", "{}", ""),
        deployment("bad", "plain", "{capabilities: {add: [SYS_ADMIN]}}", "")
    );
    let (status, body) = api.apply(&both);
    assert_eq!(status, 403, "{body}");
    let m = message(&body);
    assert!(
        m.starts_with("document 2:") && m.contains("SYS_ADMIN"),
        "{m}"
    );
    let (status, _) = api.get("/v1/namespaces/plain/deployments/fine");
    assert_eq!(status, 404, "half of a refused apply was written");

    // A label that names no level is refused, naming the label.
    let (status, body) = api.apply(&namespace("odd", Some("lenient")));
    assert_eq!(status, 422, "{body}");
    assert!(
        message(&body).contains("pod-security.kubernetes.io/enforce"),
        "{body}"
    );

    // Relabelling a namespace stricter warns about what already runs there.
    let (status, body) = api.apply(&namespace("open", Some("baseline")));
    assert_eq!(status, 200, "{body}");
    let warnings: Vec<&str> = body["items"][0]["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains(
            "existing Deployment \"mighty\" violates PodSecurity \"baseline:latest\": privileged"
        )),
        "{body}"
    );

    // Relabelling a namespace in the same apply as its workload: the new level counts.
    let relabel = format!(
        "{}---\n{}",
        namespace("plain", Some("privileged")),
        privileged
    );
    let (status, body) = api.apply(&relabel);
    assert_eq!(status, 200, "{body}");
}
