//! Users, RBAC, revocation, audit and rate limits against real `omnicloud node` processes:
//! a `view` user lists but may not delete (403 naming the verb), an `edit` user of one
//! namespace cannot touch another, a revoked token stops at once on another node, the audit
//! log shows each, and a user over its rate gets 429 while the nodes stay Ready.

mod common;

use std::time::Duration;

use common::{eventually, Api, Cluster, TestNode, FAST_CLUSTER};
use serde_json::Value;

/// `omnicloud token create` through the CLI: the token, printed once.
fn new_token(node: &TestNode, user: &str) -> (String, String) {
    let (ok, out, err) = node.cli(&["token", "create", "--user", user, "-o", "json"]);
    assert!(ok, "token create: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("oct_"), "{v}");
    (v["id"].as_str().unwrap().to_string(), token)
}

fn as_user(node: &TestNode, token: &str) -> Api {
    Api {
        base: node.api.clone(),
        token: Some(token.to_string()),
        agent: node.http(),
    }
}

fn bind(node: &TestNode, yaml: &str) {
    let (status, body) = node.api().apply(yaml);
    assert_eq!(status, 200, "{body}");
}

/// Records of `omnicloud audit --user U -o json`, gathered from every node.
fn audit(node: &TestNode, user: &str) -> Vec<Value> {
    let (ok, out, err) = node.cli(&["audit", "--user", user, "--since", "10m", "-o", "json"]);
    assert!(ok, "audit: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

const DEPLOYMENT_A: &str = "apiVersion: omnicloud.io/v1
kind: Deployment
metadata:
  name: web
  namespace: NS
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: busybox
";

#[test]
fn view_user_lists_but_may_not_delete() {
    let node = TestNode::start("rbac-view");
    let admin = node.api();
    let (status, body) = admin.apply(&DEPLOYMENT_A.replace("NS", "default"));
    assert_eq!(status, 200, "{body}");
    let (_, token) = new_token(&node, "vic");
    let vic = as_user(&node, &token);
    // No binding yet: nothing is allowed.
    let (status, body) = vic.get("/v1/namespaces/default/deployments");
    assert_eq!(status, 403, "{body}");
    bind(
        &node,
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: vic-view}
subjects: [{kind: User, name: vic}]
roleRef: {kind: ClusterRole, name: view}
",
    );
    let (status, body) = vic.get("/v1/namespaces/default/deployments");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["metadata"]["name"], "web", "{body}");
    let (status, body) = vic.delete("/v1/namespaces/default/deployments/web");
    assert_eq!(status, 403, "{body}");
    let message = body["message"].as_str().unwrap();
    for part in ["\"vic\"", "delete", "deployments", "\"default\""] {
        assert!(message.contains(part), "{message} names {part}");
    }
    assert_eq!(admin.get("/v1/namespaces/default/deployments/web").0, 200);
    // Secrets are not in view.
    assert_eq!(vic.get("/v1/namespaces/default/secrets").0, 403);
    // Tokens: listed without any secret or hash, and not by vic.
    let (ok, out, _) = node.cli(&["token", "list"]);
    assert!(ok && out.contains("vic"), "{out}");
    assert!(!out.contains(token.rsplit('_').next().unwrap()), "{out}");
    assert_eq!(vic.get("/v1/auth/tokens").0, 403);

    let records = audit(&node, "vic");
    assert!(
        records.iter().any(|r| r["verb"] == "delete"
            && r["object"] == "deployments/default/web"
            && r["code"] == 403
            && r["result"] == "forbidden"),
        "{records:?}"
    );
    // The client's address is recorded (through the HTTPS front's relay).
    assert!(
        records.iter().all(|r| r["source"]
            .as_str()
            .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
            .is_some()),
        "{records:?}"
    );
}

#[test]
fn edit_user_in_one_namespace_cannot_touch_another() {
    let node = TestNode::start("rbac-edit");
    for ns in ["a", "b"] {
        bind(
            &node,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        );
    }
    let (status, body) = node.api().apply(&DEPLOYMENT_A.replace("NS", "b"));
    assert_eq!(status, 200, "{body}");
    let (_, token) = new_token(&node, "ed");
    bind(
        &node,
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ed-edit, namespace: a}
subjects: [{kind: User, name: ed}]
roleRef: {kind: ClusterRole, name: edit}
",
    );
    let ed = as_user(&node, &token);
    let (status, body) = ed.apply(&DEPLOYMENT_A.replace("NS", "a"));
    assert_eq!(status, 200, "{body}");
    // The same document in b: refused, and nothing stored.
    let (status, body) = ed.apply(&DEPLOYMENT_A.replace("NS", "b").replace("web", "web2"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"b\""),
        "{body}"
    );
    assert_eq!(node.api().get("/v1/namespaces/b/deployments/web2").0, 404);
    // The short create path takes the namespace from the body: still refused.
    let doc = common::yaml_to_json(&DEPLOYMENT_A.replace("NS", "b").replace("web", "web3"));
    let (status, body) = ed.send("POST", "/v1/deployments", &doc.to_string());
    assert_eq!(status, 403, "{body}");
    let (status, body) = ed.delete("/v1/namespaces/b/deployments/web");
    assert_eq!(status, 403, "{body}");
    assert_eq!(ed.get("/v1/namespaces/b/deployments").0, 403);
    // Across all namespaces needs a cluster-wide binding.
    assert_eq!(ed.get("/v1/deployments").0, 403);
    assert_eq!(ed.get("/v1/namespaces/a/deployments").0, 200);
    // edit may not grant itself more.
    let (status, _) = ed.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ed-admin, namespace: a}
subjects: [{kind: User, name: ed}]
roleRef: {kind: ClusterRole, name: admin}
",
    );
    assert_eq!(status, 403);

    let records = audit(&node, "ed");
    let forbidden_in_b = records
        .iter()
        .filter(|r| r["code"] == 403 && r["object"].as_str().unwrap_or("").contains("/b"))
        .count();
    assert!(forbidden_in_b >= 2, "{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r["code"] == 200 && r["verb"] == "create"),
        "the allowed apply is recorded too: {records:?}"
    );
}

#[test]
fn revoked_token_stops_at_once_on_another_node() {
    let cluster = Cluster::start(3, FAST_CLUSTER);
    let seed = &cluster.nodes[0];
    let (id, token) = new_token(seed, "carol");
    bind(
        seed,
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: carol-view}
subjects: [{kind: User, name: carol}]
roleRef: {kind: ClusterRole, name: view}
",
    );
    let far = &cluster.nodes[2];
    let carol = as_user(far, &token);
    // Replication reaches the far node; then carol's token works there.
    eventually(Duration::from_secs(10), || {
        (carol.get("/v1/namespaces/default/deployments").0 == 200).then_some(())
    })
    .expect("carol's token works on node 3");
    let (ok, out, err) = seed.cli(&["token", "revoke", &id]);
    assert!(ok, "revoke: {err}");
    assert!(out.contains("revoked on every node"), "{out}");
    // No waiting: the very next request on another node is refused.
    let (status, body) = carol.get("/v1/namespaces/default/deployments");
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        as_user(&cluster.nodes[1], &token)
            .get("/v1/namespaces/default/deployments")
            .0,
        401
    );
    // The refusal is in node 3's audit log, under the token's id (never its secret).
    let records = audit(seed, &format!("token:{id}"));
    assert!(
        records
            .iter()
            .any(|r| r["node"] == far.name.as_str() && r["code"] == 401),
        "{records:?}"
    );
    let revokes = audit(seed, "admin");
    assert!(
        revokes
            .iter()
            .any(|r| r["verb"] == "delete" && r["object"] == format!("tokens/{id}")),
        "{revokes:?}"
    );
}

#[test]
fn user_over_its_rate_gets_429_while_nodes_stay_ready() {
    let config = format!("{FAST_CLUSTER}[api]\nrate_per_user = 2.0\nburst_per_user = 5\n");
    let cluster = Cluster::start(3, &config);
    let seed = &cluster.nodes[0];
    let (_, token) = new_token(seed, "dave");
    bind(
        seed,
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dave-view}
subjects: [{kind: User, name: dave}]
roleRef: {kind: ClusterRole, name: view}
",
    );
    let url = format!("{}/v1/namespaces/default/deployments", seed.api);
    let mut limited = None;
    let mut ok = 0;
    let http = seed.http();
    for _ in 0..50 {
        match http
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(_) => ok += 1,
            Err(ureq::Error::Status(429, r)) => {
                let retry = r.header("Retry-After").map(str::to_string);
                let body: Value = r.into_json().unwrap();
                limited = Some((retry, body));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (retry, body) = limited.expect("dave went over 2/s with a burst of 5 and got 429");
    assert!(ok >= 1, "the burst was served first");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    assert!(body["message"].as_str().unwrap().contains("dave"), "{body}");
    // While dave is held back, every node stays Ready and members see each other alive; the
    // admin (system class) is not limited by dave's bucket or its own.
    for _ in 0..20 {
        let _ = ureq::get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call();
    }
    for node in &cluster.nodes {
        let (status, body) = node.api().get("/readyz");
        assert_eq!(status, 200, "{}: {body}", node.name);
        for _ in 0..20 {
            assert_eq!(node.api().get("/v1/namespaces/default/deployments").0, 200);
        }
    }
    let members = cluster.members(1);
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.values().all(|s| s == "alive"), "{members:?}");
    let records = audit(seed, "dave");
    assert!(
        records
            .iter()
            .any(|r| r["code"] == 429 && r["result"] == "rate-limited"),
        "{records:?}"
    );
}
