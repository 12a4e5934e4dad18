//! Node core against a real `omnicloud node` process: the seed's manifests round-trip, bad
//! input (out-of-bounds counts, non-finite quantities, alias bombs, deep nesting) is refused
//! with the field named and nothing stored, optimistic concurrency, watch,
//! snapshots with log compaction, kill -9 with no acknowledged write lost, and shell completion.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{eventually, fixture, yaml_to_json, TestNode};
use serde_json::Value;

const DEPLOY: &str = "/v1/namespaces/default/deployments";

#[test]
fn seed_manifests_round_trip() {
    let node = TestNode::start("roundtrip");
    let api = node.api();
    for (file, path) in [
        (
            "deployment.yaml",
            "/v1/namespaces/default/deployments/web-frontend",
        ),
        (
            "statefulset.yaml",
            "/v1/namespaces/default/statefulsets/database-cluster",
        ),
        (
            "hpa.yaml",
            "/v1/namespaces/default/horizontalpodautoscalers/web-frontend-hpa",
        ),
    ] {
        let text = fixture(file);
        let (status, body) = api.apply(&text);
        assert_eq!(status, 200, "{file}: {body}");
        assert_eq!(body["items"][0]["action"], "created", "{file}: {body}");
        let (status, stored) = api.get(path);
        assert_eq!(status, 200, "{file}: {stored}");
        let sent = yaml_to_json(&text);
        assert_eq!(
            stored["spec"], sent["spec"],
            "{file}: spec must read back as written"
        );
        assert_eq!(stored["kind"], sent["kind"]);
        assert_eq!(stored["apiVersion"], sent["apiVersion"]);
        assert_eq!(stored["metadata"]["name"], sent["metadata"]["name"]);
        assert_eq!(stored["metadata"]["generation"], 1);
        assert!(stored["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36));

        // Applying the same manifest again changes nothing.
        let (_, again) = api.apply(&text);
        assert_eq!(again["items"][0]["action"], "unchanged", "{file}");
    }
}

#[test]
fn kubernetes_manifests_are_accepted() {
    let node = TestNode::start("k8s");
    let api = node.api();
    for file in ["k8s-deployment.yaml", "k8s-hpa.yaml"] {
        let (status, body) = api.apply(&fixture(file));
        assert_eq!(status, 200, "{file}: {body}");
    }
    let (_, list) = api.get(DEPLOY);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// Every bad input: 4xx, the field and the expectation named, the store unchanged.
#[test]
fn bad_input_is_rejected_and_nothing_is_stored() {
    let node = TestNode::start("badinput");
    let api = node.api();
    let good = fixture("deployment.yaml");
    let revision = || api.get(DEPLOY).1["metadata"]["revision"].clone();
    let before = revision();

    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "wrong apiVersion",
            good.replace("omnicloud.io/v1", "gizmo.io/v9"),
            422,
            "apiVersion",
            "gizmo.io/v9",
        ),
        (
            "wrong kind",
            good.replace("kind: Deployment", "kind: Deploymint"),
            422,
            "kind",
            "Deploymint",
        ),
        (
            "missing name",
            good.replace("  name: web-frontend\n", ""),
            422,
            "metadata.name",
            "",
        ),
        (
            "bad quantity",
            good.replace("cpu: 100m", "cpu: lots"),
            422,
            "spec.template.spec.containers[0].resources.requests.cpu",
            "lots",
        ),
        (
            "negative replicas",
            good.replace("replicas: 10", "replicas: -3"),
            422,
            "spec.replicas",
            ">= 0",
        ),
        (
            "replicas past the maximum",
            good.replace("replicas: 10", "replicas: 2147483648"),
            422,
            "spec.replicas",
            "must be at most 10000, got 2147483648",
        ),
        (
            "non-finite cpu",
            good.replace("cpu: 100m", "cpu: .inf"),
            422,
            "spec.template.spec.containers[0].resources.requests.cpu",
            "finite",
        ),
        (
            "half a byte",
            good.replace("memory: 128Mi", "memory: \"0.5\""),
            422,
            "spec.template.spec.containers[0].resources.requests.memory",
            "whole number of bytes",
        ),
        (
            "unknown field",
            good.replace("        resources:", "        resorces:"),
            422,
            "spec.template.spec.containers[0].resorces",
            "resorces",
        ),
        (
            "name not DNS-1123",
            good.replace("name: web-frontend\nspec", "name: Web_Frontend\nspec"),
            422,
            "metadata.name",
            "",
        ),
    ];
    for (what, body, status, field, mention) in cases {
        let (got, err) = api.apply(&body);
        assert_eq!(got, status, "{what}: {err}");
        assert_eq!(err["field"], field, "{what}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(mention),
            "{what}: message {message:?} should mention {mention:?}"
        );
        assert_eq!(err["code"], status, "{what}");
    }

    // Invalid YAML: 400 with line and column.
    let (got, err) =
        api.apply("apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: [unclosed\n");
    assert_eq!(got, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("line"), "{err}");
    assert!(err["message"].as_str().unwrap().contains("column"), "{err}");

    // A flat alias bomb (92 KB, one anchor referenced 29,000 times) and 100k levels of
    // nesting: refused before they are built (they took the node to GBs, or 42 s of CPU).
    let bomb = format!(
        "x: &a [{}]\ny: [{}]\n",
        vec!["lol"; 2_000].join(","),
        vec!["*a"; 29_000].join(",")
    );
    let deep = format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    for (body, mention) in [
        (bomb, "YAML aliases expand"),
        (deep, "nests deeper than 64"),
    ] {
        let (got, err) = api.apply(&body);
        assert_eq!(got, 400, "{err}");
        assert!(err["message"].as_str().unwrap().contains(mention), "{err}");
    }

    // Too large a body: 413.
    let huge = format!("{good}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    let (got, err) = api.apply(&huge);
    assert_eq!(got, 413, "{err}");

    // A multi-document apply whose second document is bad stores neither.
    let both = format!(
        "{good}\n---\n{}",
        good.replace("web-frontend", "web-two")
            .replace("cpu: 100m", "cpu: x")
    );
    let (got, _) = api.apply(&both);
    assert_eq!(got, 422);

    // Negative replicas through the scale subresource and the CLI.
    api.apply(&good);
    let (got, err) = api.send(
        "PUT",
        &format!("{DEPLOY}/web-frontend/scale"),
        r#"{"spec":{"replicas":-1}}"#,
    );
    assert_eq!(
        (got, err["field"].as_str()),
        (422, Some("spec.replicas")),
        "{err}"
    );
    for n in ["2147483648", "9223372036854775807"] {
        let (got, err) = api.send(
            "PUT",
            &format!("{DEPLOY}/web-frontend/scale"),
            &format!(r#"{{"spec":{{"replicas":{n}}}}}"#),
        );
        assert_eq!(
            (got, err["field"].as_str()),
            (422, Some("spec.replicas")),
            "{err}"
        );
        assert!(
            err["message"].as_str().unwrap().contains("at most 10000"),
            "{err}"
        );
    }
    let (ok, _, stderr) = node.cli(&["scale", "deployment/web-frontend", "--replicas=-2"]);
    assert!(!ok && stderr.contains("--replicas"), "{stderr}");

    let (_, list) = api.get(DEPLOY);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-frontend"], "only the one good apply is stored");
    assert_ne!(before, revision());
}

#[test]
fn api_requires_the_token() {
    let node = TestNode::start("auth");
    let mut anon = node.api();
    anon.token = None;
    assert_eq!(anon.get(DEPLOY).0, 401);
    anon.token = Some("wrong".into());
    assert_eq!(anon.get(DEPLOY).0, 401);
    anon.token = None;
    assert_eq!(anon.raw_get("/healthz").0, 200);
    assert_eq!(anon.raw_get("/readyz").0, 200);
    let (status, metrics) = anon.raw_get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "api_requests_total",
        "api_request_duration_seconds_bucket",
        "raft_term",
        "raft_commit_index",
        "raft_is_leader",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert_eq!(node.api().metric("raft_is_leader"), Some(1.0));
    let mode = std::fs::metadata(node.dir.join("admin.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn concurrent_updates_exactly_one_wins() {
    let node = TestNode::start("occ");
    let api = node.api();
    assert_eq!(api.apply(&fixture("deployment.yaml")).0, 200);
    for round in 0..5 {
        // The workload loop writes the Deployment's status (a new resourceVersion) after
        // each change; read once it has settled, so only the two writers race.
        let current = eventually(Duration::from_secs(10), || {
            let (_, d) = api.get(&format!("{DEPLOY}/web-frontend"));
            let settled = d["status"]["observedGeneration"] == d["metadata"]["generation"]
                && d["status"]["replicas"] == d["spec"]["replicas"];
            settled.then_some(d)
        })
        .expect("the deployment status settles");
        let rv = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [11, 12]
            .into_iter()
            .map(|replicas| {
                let api = api.clone();
                let barrier = barrier.clone();
                let mut obj = current.clone();
                // Distinct from every earlier value, so neither write is a no-op.
                obj["spec"]["replicas"] = Value::from(replicas + 10 * round);
                obj["metadata"]["resourceVersion"] = Value::from(rv.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    api.send("PUT", &format!("{DEPLOY}/web-frontend"), &obj.to_string())
                })
            })
            .collect();
        let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap().0).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}");
    }
    // A stale version is refused with the field named.
    let (_, current) = api.get(&format!("{DEPLOY}/web-frontend"));
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = Value::from("1");
    let (status, err) = api.send("PUT", &format!("{DEPLOY}/web-frontend"), &stale.to_string());
    assert_eq!(status, 409);
    assert_eq!(err["field"], "metadata.resourceVersion");
    assert_eq!(
        current["metadata"]["generation"], 6,
        "five spec changes after creation"
    );
}

#[test]
fn cli_apply_get_scale_describe_delete() {
    let node = TestNode::start("cli");
    let path = format!(
        "{}/tests/fixtures/deployment.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (ok, out, err) = node.cli(&["apply", "-f", &path]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment/web-frontend created");

    let (ok, out, err) = node.cli(&["scale", "deployment/web-frontend", "--replicas=15"]);
    assert!(ok, "{err}");
    assert!(out.contains("scaled to 15"));
    let (ok, out, _) = node.cli(&["scale", "deployment", "web-frontend", "--replicas=16"]);
    assert!(ok, "{out}");

    let (ok, out, _) = node.cli(&["get", "deployments"]);
    assert!(ok);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["web-frontend", "16"]);

    let (ok, out, _) = node.cli(&["get", "deploy", "web-frontend", "-o", "json"]);
    assert!(ok);
    let obj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(obj["spec"]["replicas"], 16);
    assert_eq!(obj["metadata"]["generation"], 3);

    let k8s = format!(
        "{}/tests/fixtures/k8s-deployment.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(node.cli(&["apply", "-f", &k8s]).0);
    let (ok, out, _) = node.cli(&["get", "deployments", "-l", "app=api", "-o", "json"]);
    assert!(ok);
    let items = serde_json::from_str::<Value>(&out).unwrap()["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "api");
    let (ok, out, _) = node.cli(&["get", "deployments", "-l", "app=other", "-o", "json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let (ok, out, _) = node.cli(&["get", "deployments", "-o", "yaml"]);
    assert!(ok && out.contains("kind: DeploymentList"), "{out}");

    let (ok, out, _) = node.cli(&["describe", "deployment/web-frontend"]);
    assert!(ok);
    assert!(
        out.contains("Name:") && out.contains("web-frontend") && out.contains("replicas: 16"),
        "{out}"
    );

    let stdin = fixture("statefulset.yaml");
    let (ok, out, err) = node.cli_with_stdin(&["apply", "-f", "-"], Some(&stdin));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "statefulset/database-cluster created");

    let (ok, _, err) = node.cli(&["delete", "deployment/web-frontend"]);
    assert!(ok, "{err}");
    let (ok, _, err) = node.cli(&["get", "deployment", "web-frontend"]);
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, out, _) = node.cli(&["version", "-o", "json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["server"],
        env!("CARGO_PKG_VERSION")
    );

    let (ok, _, err) = node.cli(&["get", "gizmos"]);
    assert!(!ok && err.contains("unknown kind"), "{err}");
}

#[test]
fn watch_streams_changes_since_a_revision() {
    let node = TestNode::start("watch");
    let api = node.api();
    let (_, list) = api.get(DEPLOY);
    let since: u64 = list["metadata"]["revision"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1;
    api.apply(&fixture("deployment.yaml"));
    api.send(
        "PUT",
        &format!("{DEPLOY}/web-frontend/scale"),
        r#"{"spec":{"replicas":4}}"#,
    );
    api.delete(&format!("{DEPLOY}/web-frontend"));

    // History replay, then live, until the delete. The workload loop's status writes
    // (MODIFIED) may interleave with ours.
    let url = format!("{}/v1/watch?since={since}&kind=deployments", node.api);
    let resp = node
        .http()
        .get(&url)
        .set("Authorization", &format!("Bearer {}", node.token))
        .call()
        .unwrap();
    let mut reader = std::io::BufReader::new(resp.into_reader());
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &Value| e["type"] != "DELETED") && events.len() < 50 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"ADDED"), "{types:?}");
    assert_eq!(types.last(), Some(&"DELETED"), "{types:?}");
    assert!(
        types[1..types.len() - 1].iter().all(|t| *t == "MODIFIED"),
        "{types:?}"
    );
    assert!(
        events.iter().any(|e| e["object"]["spec"]["replicas"] == 4),
        "the scale shows up"
    );
    let revs: Vec<u64> = events
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");

    // A live change arrives on an open watch.
    let url = format!("{}/v1/watch?kind=deployments", node.api);
    let resp = node
        .http()
        .get(&url)
        .set("Authorization", &format!("Bearer {}", node.token))
        .call()
        .unwrap();
    api.apply(&fixture("deployment.yaml"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(resp.into_reader()), &mut line)
        .unwrap();
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["name"], "web-frontend");
}

/// A small snapshot threshold forces snapshots and log purges; a restart rebuilds the same state.
#[test]
fn snapshots_compact_the_log_and_survive_restart() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "[raft]\nsnapshot_after_logs = 20\nkeep_logs_after_snapshot = 5\n",
    )
    .unwrap();
    let mut node = TestNode::start_with("snap", &["--config", cfg.path().to_str().unwrap()]);
    let api = node.api();
    let template = fixture("deployment.yaml");
    for i in 0..60 {
        let (status, body) = api.apply(&template.replace("web-frontend", &format!("web-{i}")));
        assert_eq!(status, 200, "{body}");
    }
    let purged = common::eventually(Duration::from_secs(10), || {
        api.metric("raft_purged_index").filter(|p| *p >= 20.0)
    });
    assert!(
        purged.is_some(),
        "log was never compacted: {:?}",
        api.metric("raft_purged_index")
    );
    assert!(api.metric("raft_snapshot_index").unwrap() >= 20.0);

    node.stop();
    node.restart();
    let (_, list) = node.api().get(DEPLOY);
    assert_eq!(list["items"].as_array().unwrap().len(), 60);
}

/// kill -9 in the middle of a stream of writes: every acknowledged write survives, nothing torn.
#[test]
fn kill9_loses_no_acknowledged_write() {
    let mut node = TestNode::start("crash");
    let template = fixture("deployment.yaml");
    for round in 0..3 {
        // The restarted node listens on a new port: take its address each round.
        let api = node.api();
        let writer = {
            let api = api.clone();
            let template = template.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{i}");
                    match api.try_send(
                        "POST",
                        "/v1/apply",
                        &template.replace("web-frontend", &name),
                    ) {
                        Ok((200, _)) => acked.push(name),
                        Ok((status, body)) => panic!("write {name} refused: {status} {body}"),
                        Err(_) => break, // the node died mid-request: not acknowledged
                    }
                }
                acked
            })
        };
        std::thread::sleep(Duration::from_millis(400 + round * 150));
        node.kill9();
        let acked = writer.join().unwrap();
        assert!(
            acked.len() > 5,
            "round {round}: too few writes before the kill ({})",
            acked.len()
        );
        node.restart();
        let (_, list) = node.api().get(DEPLOY);
        let stored: Vec<&Value> = list["items"].as_array().unwrap().iter().collect();
        for name in &acked {
            let obj = stored
                .iter()
                .find(|o| o["metadata"]["name"] == name.as_str());
            let obj = obj.unwrap_or_else(|| panic!("round {round}: acknowledged {name} lost"));
            assert_eq!(
                obj["spec"],
                yaml_to_json(&template.replace("web-frontend", name))["spec"],
                "torn {name}"
            );
        }
    }
}

/// `get -w` lists, then prints each change as a row with its event type.
#[test]
fn cli_get_watch_prints_changes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let node = TestNode::start("cliwatch");
    node.api().apply(&fixture("deployment.yaml"));
    let mut child = Command::new(common::BIN)
        .args(["get", "deployments", "-w"])
        .env("OMNICLOUD_SERVER", &node.api)
        .env("OMNICLOUD_TOKEN", &node.token)
        .env("OMNICLOUD_CA", node.dir.join("tls/ca.crt"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(header.starts_with("NAME"), "{header}");
    assert!(lines.next().unwrap().unwrap().starts_with("web-frontend"));
    let (status, _) = node.api().send(
        "PUT",
        &format!("{DEPLOY}/web-frontend/scale"),
        r#"{"spec":{"replicas":7}}"#,
    );
    assert_eq!(status, 200);
    // The controller's status writes after the apply are changes too (MODIFIED rows with
    // the old 10 replicas, printed before or after the scale under load): skip those.
    let mut seen = Vec::new();
    let event = loop {
        let event = lines.next().unwrap().unwrap();
        let cols: Vec<String> = event.split_whitespace().map(str::to_string).collect();
        assert!(
            cols[0] == "web-frontend" && cols.last().unwrap() == "MODIFIED",
            "{event}"
        );
        if cols[1] != "10" || seen.len() > 50 {
            break cols;
        }
        seen.push(event);
    };
    assert_eq!(event[1], "7", "{event:?} after {seen:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn quotas_and_scaling_policies_refuse_growth_and_name_the_limit() {
    let node = TestNode::start("quota");
    let api = node.api();
    let setup = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: team-quota, namespace: team-a}
spec:
  hard: {pods: "10", requests.cpu: "2"}
---
apiVersion: omnicloud.io/v1
kind: ClusterScalingPolicy
metadata: {name: limits}
spec:
  applicationLimits: {maxReplicasPerDeployment: 8}
"#;
    assert_eq!(api.apply(setup).0, 200);
    let web = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: team-a}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: c, image: toolbox, resources: {{requests: {{cpu: 500m}}}}}}]\n"
        )
    };
    assert_eq!(api.apply(&web(4)).0, 200, "4 x 500m fits 2 cores");
    let (code, body) = api.apply(&web(5));
    assert_eq!(code, 403, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("team-quota") && msg.contains("requests.cpu"),
        "{msg}"
    );
    let (ok, _, err) = node.cli(&["scale", "deployment/web", "-n", "team-a", "--replicas=6"]);
    assert!(!ok && err.contains("team-quota"), "{err}");
    let (_, d) = api.get("/v1/namespaces/team-a/deployments/web");
    assert_eq!(d["spec"]["replicas"], 4, "nothing half-written");
    // The cluster-wide cap, in a namespace without a quota.
    let (code, body) = api.apply(&web(9).replace("namespace: team-a", "namespace: default"));
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("maxReplicasPerDeployment is 8"),
        "{body}"
    );
    assert_eq!(api.apply(&web(2)).0, 200, "scaling down is always allowed");
}

#[test]
fn prometheus_config_and_alert_rules_check_and_metrics_are_served() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match promtool {
        Some(promtool) => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
            for args in [
                vec!["check", "config", "--syntax-only", "prometheus.yml"],
                vec!["check", "rules", "alerts.yml"],
            ] {
                let out = std::process::Command::new(promtool)
                    .args(&args)
                    .current_dir(&dir)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "promtool {args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        None => common::netns::require("promtool", "apt-get install prometheus".into()),
    }
    // Every series the rules use is served (this node has no agent, so its one
    // Deployment stays Pending: a scaling decision and a pending instance).
    let node = TestNode::start("metrics");
    assert_eq!(node.api().apply(&fixture("deployment.yaml")).0, 200);
    let pending = eventually(Duration::from_secs(10), || {
        node.api()
            .metric("orchestrator_pending_instances")
            .filter(|n| *n == 10.0)
    });
    assert_eq!(pending, Some(10.0), "10 replicas, no agent to run them");
    let (_, text) = node.api().raw_get("/metrics");
    for name in [
        "orchestrator_scaling_decisions_count_total{kind=\"Deployment\",reason=\"ScalingUp\"}",
        "orchestrator_controller_pass_duration_seconds_count",
        "gossip_members{status=\"down\"}",
        "raft_is_leader 1",
        "node_memory_available_bytes",
        "node_memory_capacity_bytes",
        "node_cpu_usage_millicores",
        "node_cpu_capacity_millicores",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
}

#[test]
fn shell_completion_offers_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(common::BIN)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for verb in [
            "apply",
            "scale",
            "scaling-headroom",
            "top",
            "rollout",
            "completion",
        ] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
        assert!(
            !script.contains("__container"),
            "{shell}: hidden helpers are offered"
        );
    }
    // Loaded into bash, it completes a partial verb.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completion bash) && COMP_WORDS=(omnicloud sca) COMP_CWORD=1 \
             && _omnicloud omnicloud sca omnicloud && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            common::BIN
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    let offered: Vec<&str> = offered.lines().collect();
    assert_eq!(
        offered,
        ["scale", "scaling-capacity", "scaling-headroom", "scaling"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `omnicloud install --root DIR` writes the binary, a config the node runs with, the token
/// (0600), a data dir (0700) and a systemd unit; a differing config is kept unless --force;
/// `uninstall` removes exactly those files, and the data dir only with --purge.
#[test]
fn install_writes_a_runnable_service_and_uninstall_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let token = r.join("cluster.token");
    std::fs::write(&token, "secret-token\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let root_arg = r.to_str().unwrap();
    // Refused before anything is written.
    let (ok, out) = run(&[
        "install",
        "--root",
        root_arg,
        "--join",
        "10.0.0.1:7946",
        "--no-start",
    ]);
    assert!(!ok && out.contains("--join needs --token-file"), "{out}");
    let (ok, out) = run(&[
        "install",
        "--root",
        root_arg,
        "--roles",
        "agent,boss",
        "--no-start",
    ]);
    assert!(
        !ok && out.contains("--roles: unknown role \"boss\""),
        "{out}"
    );
    assert!(!r.join("etc").exists(), "a refused install wrote files");

    let (ok, out) = run(&[
        "install",
        "--root",
        root_arg,
        "--name",
        "box-1",
        "--roles",
        "orchestrator",
        "--token-file",
        token.to_str().unwrap(),
        "--no-start",
    ]);
    assert!(ok, "{out}");
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        std::fs::read(r.join("usr/local/bin/omnicloud")).unwrap(),
        std::fs::read(common::BIN).unwrap()
    );
    assert_eq!(mode("usr/local/bin/omnicloud"), 0o755);
    assert_eq!(mode("etc/omnicloud/join.token"), 0o600);
    assert_eq!(mode("var/lib/omnicloud"), 0o700);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/omnicloud/join.token")).unwrap(),
        "secret-token"
    );
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/omnicloud.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/omnicloud node --config /etc/omnicloud/node.toml")
    );
    assert!(unit.contains("KillMode=process"), "{unit}");
    // The node runs with the written config.
    let config = r.join("etc/omnicloud/node.toml");
    let node = TestNode::start_with("box-1", &["--config", config.to_str().unwrap()]);
    let (code, v) = node.api().get("/v1/cluster/status");
    assert_eq!(code, 200, "{v}");

    // The same install again is fine; a hand-edited config is kept unless --force.
    let again = [
        "install",
        "--root",
        root_arg,
        "--name",
        "box-1",
        "--roles",
        "orchestrator",
        "--token-file",
        token.to_str().unwrap(),
        "--no-start",
    ];
    assert!(run(&again).0);
    let edited = std::fs::read_to_string(&config).unwrap() + "log = \"debug\"\n";
    std::fs::write(&config, &edited).unwrap();
    let (ok, out) = run(&again);
    assert!(
        !ok && out.contains("differs") && out.contains("--force"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    let mut forced = again.to_vec();
    forced.push("--force");
    assert!(run(&forced).0);

    std::fs::write(r.join("var/lib/omnicloud/state"), "x").unwrap();
    let (ok, out) = run(&["uninstall", "--root", root_arg]);
    assert!(ok, "{out}");
    for gone in [
        "usr/local/bin/omnicloud",
        "etc/omnicloud",
        "etc/systemd/system/omnicloud.service",
    ] {
        assert!(!r.join(gone).exists(), "{gone} left after uninstall");
    }
    assert!(
        r.join("var/lib/omnicloud/state").exists(),
        "data kept without --purge"
    );
    let (ok, out) = run(&["uninstall", "--root", root_arg]);
    assert!(
        !ok && out.contains("was omnicloud installed here?"),
        "{out}"
    );
    // Installed again, uninstall --purge takes the data dir too.
    assert!(run(&forced).0);
    let (ok, out) = run(&["uninstall", "--root", root_arg, "--purge"]);
    assert!(ok, "{out}");
    assert!(
        !r.join("var/lib/omnicloud").exists(),
        "data dir left after --purge"
    );
}

/// One raw HTTP/1.1 request, bytes as given (no client normalises the path): the status.
fn raw_status(node: &TestNode, request_line: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = common::raw_connect(&node.api, &node.dir, Duration::from_secs(10));
    let req = format!(
        "{request_line} HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 13.1: the router matches the percent-decoded path, so access is decided on what
/// the router serves, not on a prefix of the raw string. Every spelling of `/v1/` needs
/// the token; only the listed open paths are open, and only in their plain spelling.
#[test]
fn percent_encoded_paths_need_the_token_too() {
    let node = TestNode::start("authpath");
    let ns = "apiVersion: omnicloud.io/v1\nkind: Namespace\nmetadata:\n  name: sneaky\n";
    for path in [
        "/%76%31/namespaces",
        "/%761/namespaces",
        "/v%31/namespaces",
        "/%56%31/namespaces",
        "/v1%2Fnamespaces",
        "//v1/namespaces",
        "/./v1/namespaces",
        "/v1/../v1/namespaces",
        "/%76%31/nodes",
        "/%76%31/cluster/status",
        "/%76%31/watch?since=1",
        "/%76%31/registry/v2/_catalog",
        "/%76%31/namespaces/default/instances/x/log",
        "/%68ealthz",
        "/nonexistent",
    ] {
        let status = raw_status(&node, &format!("GET {path}"), "");
        assert_eq!(status, 401, "GET {path} without a token answered {status}");
    }
    for path in ["/%76%31/apply", "/v%31/apply", "/%2Fv1/apply"] {
        let status = raw_status(&node, &format!("POST {path}"), ns);
        assert_eq!(status, 401, "POST {path} without a token answered {status}");
    }
    let (status, _) = node.api().get("/v1/namespaces/sneaky");
    assert_eq!(status, 404, "nothing was created without a token");
    for open in ["/healthz", "/readyz", "/metrics", "/ui/", "/ui/app.js"] {
        assert_eq!(raw_status(&node, &format!("GET {open}"), ""), 200, "{open}");
    }
    // The open paths are open to reads only.
    assert_eq!(raw_status(&node, "POST /healthz", ""), 401);
}

/// A tmpfs of `mib` MiB mounted on a temp dir, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("omni-disk-")
            .tempdir()
            .unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

/// A node process on `data_dir` (no harness: the data dir is given): (child, api, token).
fn spawn_node_at(data_dir: &std::path::Path) -> (std::process::Child, String, String) {
    let endpoints = data_dir.join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.parent().unwrap().join("node.log"))
        .unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["node", "--name", "full", "--roles", "orchestrator"])
        .args(["--bind", "127.0.0.1", "--advertise", "127.0.0.1"])
        .args(["--api-port", "0", "--rpc-port", "0", "--gossip-port", "0"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let api = eventually(Duration::from_secs(30), || {
        let v: Value = serde_json::from_slice(&std::fs::read(&endpoints).ok()?).ok()?;
        (v["pid"].as_u64() == Some(child.id() as u64))
            .then(|| v["apiUrl"].as_str().unwrap().to_string())
    })
    .unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the node did not start")
    });
    let token = std::fs::read_to_string(data_dir.join("admin.token")).unwrap();
    let ready = eventually(Duration::from_secs(30), || {
        common::ca_agent(data_dir)
            .get(&format!("{api}/readyz"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
    });
    assert!(ready.is_some(), "the node never became ready");
    (child, api, token.trim().to_string())
}

/// Issue 13.10: at ENOSPC writes answered 500 although one was committed, Raft failed for
/// good and /healthz and /readyz still said ready. Now a write whose fate is unknown says
/// so, the node reports itself failed and exits (its service manager restarts it), and
/// after space returns it starts with every acknowledged write.
#[test]
fn a_full_disk_is_reported_and_no_acknowledged_write_is_lost() {
    let Some(disk) = SmallDisk::new(48) else {
        common::netns::require("root (a tmpfs mount)", "mount -t tmpfs failed".into());
        return;
    };
    let data = disk.dir.path().join("data");
    let (mut child, api, token) = spawn_node_at(&data);
    let client = common::Api {
        base: api.clone(),
        token: Some(token),
        agent: common::ca_agent(&data),
    };
    // Leave a little room, then write until the disk is full.
    let filler = disk.dir.path().join("filler");
    let room = disk.free_bytes().saturating_sub(3 << 20);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();
    let note = "x".repeat(100_000);
    let mut acknowledged = Vec::new();
    let mut last = None;
    for i in 0..200 {
        let yaml = format!(
            "apiVersion: omnicloud.io/v1\nkind: Namespace\nmetadata:\n  name: ns-{i}\n  annotations:\n    note: {note}\n"
        );
        match client.try_send("POST", "/v1/apply", &yaml) {
            Ok((200, _)) => acknowledged.push(format!("ns-{i}")),
            other => {
                last = Some(other);
                break;
            }
        }
    }
    let last = last.expect("the disk never filled up");
    eprintln!("acknowledged {} writes; then {last:?}", acknowledged.len());
    if let Ok((status, body)) = &last {
        assert_eq!(
            (*status, body["reason"].as_str()),
            (503, Some("UnknownOutcome")),
            "a write at ENOSPC must not claim to have failed: {body}"
        );
    }
    // The node does not stay up pretending to be ready: it reports the failure and exits.
    let exited = eventually(Duration::from_secs(30), || child.try_wait().unwrap());
    let log = std::fs::read_to_string(disk.dir.path().join("node.log")).unwrap_or_default();
    let Some(status) = exited else {
        let health = common::ca_agent(&data)
            .get(&format!("{api}/readyz"))
            .call()
            .map(|r| r.status());
        let _ = child.kill();
        panic!("the node kept running after its storage failed (readyz {health:?}):\n{log}");
    };
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains("raft stopped"), "{log}");

    // Space returns: the node starts again with every write it acknowledged.
    std::fs::remove_file(&filler).unwrap();
    let (mut child, api, token) = spawn_node_at(&data);
    let client = common::Api {
        base: api,
        token: Some(token),
        agent: common::ca_agent(&data),
    };
    for ns in &acknowledged {
        let (status, _) = client.get(&format!("/v1/namespaces/{ns}"));
        assert_eq!(status, 200, "acknowledged {ns} was lost");
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Issue 13.8: every watcher loaded the whole change history, and objects could carry
/// ~1 MB annotations: 8 watchers from `since=1` held gigabytes. Annotations are capped at
/// 256 KiB, objects at 1.5 MiB, and a watch holds one page of history at a time.
#[test]
fn watch_history_is_paged_and_objects_are_capped() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "[api]\nmax_body_bytes = 4194304\n").unwrap();
    let node = TestNode::start_with("watchmem", &["--config", cfg.path().to_str().unwrap()]);
    let api = node.api();
    let ns = |name: &str, note: usize| {
        format!(
            "apiVersion: omnicloud.io/v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations:\n    note: {}\n",
            "x".repeat(note)
        )
    };
    let (status, body) = api.apply(&ns("too-noted", 300_000));
    assert_ne!(status, 200);
    assert_eq!(body["field"], "metadata.annotations", "{body}");
    let big = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: huge\nspec:\n  selector:\n    matchLabels: {{app: huge}}\n  template:\n    metadata:\n      labels: {{app: huge}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n        args: [\"{}\"]\n",
        "y".repeat(1_700_000)
    );
    let (status, body) = api.apply(&big);
    assert_ne!(status, 200, "a 1.7 MB object was stored");
    assert!(
        body["message"].as_str().unwrap().contains("1.5 MiB"),
        "{body}"
    );

    for i in 0..100 {
        assert_eq!(api.apply(&ns(&format!("ns-{i}"), 200_000)).0, 200);
    }
    let before = rss_bytes(node.pid());
    let open = || {
        let url = format!("{}/v1/watch?since=1&kind=namespaces", node.api);
        node.http()
            .get(&url)
            .set("Authorization", &format!("Bearer {}", node.token))
            .call()
            .unwrap()
    };
    // Eight watchers of ~20 MB of history that read nothing.
    let idle: Vec<_> = (0..8).map(|_| open()).collect();
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_bytes(node.pid()).saturating_sub(before);
    assert!(
        grown < 80 << 20,
        "8 idle watchers grew the node by {} MiB",
        grown >> 20
    );
    drop(idle);
    // And a watcher that reads gets the whole history, in order, across pages.
    let mut reader = std::io::BufReader::new(open().into_reader());
    let mut names = Vec::new();
    while names.len() < 100 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let ev: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(ev["type"], "ERROR", "{ev}");
        let name = ev["object"]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        if name.starts_with("ns-") {
            names.push(name);
        }
    }
    let want: Vec<String> = (0..100).map(|i| format!("ns-{i}")).collect();
    assert_eq!(names, want);
}

/// Issue 13.12: a request body sent slowly was held forever. A pause over the idle limit
/// ends the request with 408, and the node answers others meanwhile.
#[test]
fn a_slow_request_body_times_out() {
    use std::io::{Read, Write};
    let node = TestNode::start("slowbody");
    let mut s = common::raw_connect(&node.api, &node.dir, Duration::from_secs(60));
    let head = format!(
        "POST /v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/yaml\r\nContent-Length: 1000\r\n\r\napiVersion",
        node.token
    );
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(node.api().raw_get("/healthz").0, 200);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer to a stalled body: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// A restart reuses the node's ports (peers remember them). One taken by another process
/// while the node was down: the node exits naming it, and the harness starts it again
/// until the port is free, instead of failing the test.
#[test]
fn a_restart_waits_for_a_port_another_process_holds() {
    let mut node = TestNode::start("portheld");
    let api = node.api.clone();
    let port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    node.kill9();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(holder);
    });
    node.restart();
    released.join().unwrap();
    assert_eq!(node.api, api, "the same port");
    let log = node.log();
    assert!(
        log.contains(&format!("cannot bind api on 127.0.0.1:{port}")),
        "the node said which port was taken; log:\n{log}"
    );
    assert_eq!(node.api().get("/readyz").0, 200);
}
