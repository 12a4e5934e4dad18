//! A node whose host lacks `iptables` (a fresh Debian) still runs instances: without
//! outbound NAT, which each instance's status says (`status.warnings`), and which the node
//! says once, in one Warning event about the node and one line in its log, not on every
//! pass of the agent; `apply --wait` shows the warning and `omnicloud nodes` and
//! `describe node/NAME` the node's condition. A node whose network cannot be set up at all
//! (no `ip`) says why in `apply --wait`, `describe` and the node's conditions. As root with
//! the test images; skips loudly elsewhere (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{eventually, TestNode};
use serde_json::Value;

const BRIDGE: &str = "ocnonat0";

/// The bridge the node made goes when the test ends, pass or fail.
struct Bridge;

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BRIDGE])
            .output();
    }
}

/// `tool` as found on this process's PATH.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn deployment(name: &str) -> String {
    format!(
        "apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers:\n      - name: http\n        image: toolbox:latest\n        \
         args: [workload, http, --port, \"8080\"]\n        \
         readinessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 1}}\n"
    )
}

/// The ready instance of Deployment `name`, once there is one.
fn ready_instance(node: &TestNode, name: &str) -> Option<Value> {
    let (_, list) = node.api().get(&format!(
        "/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3D{name}"
    ));
    list["items"]
        .as_array()?
        .iter()
        .find(|i| i["status"]["ready"] == true)
        .cloned()
}

#[test]
fn without_iptables_instances_run_and_the_node_says_once_it_has_no_outbound_nat() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    // The node's PATH holds what instance networking cannot do without (`ip`, and
    // `nsenter` to configure the instance's side), and no iptables.
    let tools = tempfile::tempdir().unwrap();
    for tool in ["ip", "nsenter"] {
        let found = which(tool).unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, tools.path().join(tool)).unwrap();
    }
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[network]\ncluster_cidr = \"10.81.0.0/16\"\nbridge = \"{BRIDGE}\"\n"),
    )
    .unwrap();
    let _bridge = Bridge;
    let path = tools.path().to_str().unwrap();
    let node = TestNode::start_env(
        "nonat",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
        &[("PATH", path)],
    );
    common::images::import(&node.dir, &layout);

    let (code, body) = node.api().apply(&deployment("first"));
    assert!(code < 300, "{body}");
    let first = eventually(Duration::from_secs(90), || ready_instance(&node, "first"))
        .unwrap_or_else(|| panic!("no ready instance without iptables; log:\n{}", node.log()));
    let warnings = &first["status"]["warnings"];
    assert_eq!(warnings[0]["reason"], "NoOutboundNAT", "{first}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("apt-get install iptables"),
        "{first}"
    );

    // More passes of the agent and a second instance: still one event and one log line.
    // `apply --wait` says the instance runs without outbound NAT.
    let (ok, _, err) = node.cli_with_stdin(
        &["apply", "-f", "-", "--wait", "--timeout", "90s"],
        Some(&deployment("second")),
    );
    assert!(ok, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("deployment/second 1/1 ready; warning: NoOutboundNAT on 1 instance ("),
        "{err}"
    );
    let second = eventually(Duration::from_secs(90), || ready_instance(&node, "second"))
        .expect("the second instance is ready");
    assert_eq!(second["status"]["warnings"][0]["reason"], "NoOutboundNAT");
    let events = eventually(Duration::from_secs(30), || {
        let (_, v) = node.api().get("/v1/namespaces/default/events");
        let nat: Vec<Value> = v["items"]
            .as_array()?
            .iter()
            .filter(|e| e["spec"]["reason"] == "NoOutboundNAT")
            .cloned()
            .collect();
        (!nat.is_empty()).then_some(nat)
    })
    .expect("a NoOutboundNAT event");
    assert_eq!(events.len(), 1, "{events:?}");
    let spec = &events[0]["spec"];
    assert_eq!(spec["type"], "Warning");
    assert_eq!(spec["count"], 1, "{spec}");
    assert_eq!(spec["involvedObject"]["kind"], "Node");
    assert_eq!(spec["involvedObject"]["name"], "nonat");
    let log = node.log();
    let said = log
        .lines()
        .filter(|l| l.contains("no outbound NAT"))
        .count();
    assert_eq!(said, 1, "log:\n{log}");
    assert!(
        !log.contains("setting up the instance network"),
        "the network setup failed; log:\n{log}"
    );

    // The node's condition: in `omnicloud nodes`, and in `describe node/NAME` with its
    // message.
    let (ok, out, err) = node.cli(&["nodes"]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("nonat "))
        .unwrap_or_default();
    assert!(row.ends_with(" NoOutboundNAT"), "{out}");
    let (ok, out, err) = node.cli(&["describe", "node/nonat"]);
    assert!(ok, "{err}");
    let condition = out
        .lines()
        .skip_while(|l| !l.starts_with("Conditions:"))
        .find(|l| l.contains("NoOutboundNAT"))
        .unwrap_or_else(|| panic!("no NoOutboundNAT condition:\n{out}"));
    assert!(
        condition.contains("node-network") && condition.contains("apt-get install iptables"),
        "{out}"
    );
}

/// Issue 14.2: a workload held by a broken node network says so where the user waits and
/// looks: `apply --wait` names the network failure, `describe` too, and the node carries
/// the condition (one Warning event, not one per pass).
#[test]
fn a_broken_network_is_named_by_apply_wait_describe_and_the_node() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    // No `ip`: the node bridge cannot be made.
    let tools = tempfile::tempdir().unwrap();
    let nsenter = which("nsenter").expect("nsenter is installed");
    std::os::unix::fs::symlink(nsenter, tools.path().join("nsenter")).unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[network]\ncluster_cidr = \"10.82.0.0/16\"\nbridge = \"ocnoip0\"\n",
    )
    .unwrap();
    let node = TestNode::start_env(
        "noip",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
        &[("PATH", tools.path().to_str().unwrap())],
    );
    common::images::import(&node.dir, &layout);
    let (ok, _, err) = node.cli_with_stdin(
        &["apply", "-f", "-", "--wait", "--timeout", "15s"],
        Some(&deployment("stuck")),
    );
    assert!(!ok, "the deployment cannot be ready: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("network setup failed"), "{err}");
    let (ok, out, err) = node.cli(&["describe", "deployment/stuck"]);
    assert!(ok, "{err}");
    assert!(out.contains("network setup failed"), "{out}");
    let (ok, out, _) = node.cli(&["nodes"]);
    assert!(ok);
    let row = out
        .lines()
        .find(|l| l.starts_with("noip "))
        .unwrap_or_default();
    assert!(row.contains("NetworkSetupFailed"), "{out}");
    let (_, v) = node.api().get("/v1/namespaces/default/events");
    let failed = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["spec"]["reason"] == "NetworkSetupFailed")
        .count();
    assert_eq!(failed, 1, "one event, not one per pass: {v}");
}
