//! Waiting says why: a Deployment held by a missing image names the image pull failure in
//! `apply --wait`'s output (while it waits and in its timeout error) and in `describe`;
//! the node it waits on is visible through `get nodes`, `get node NAME` and
//! `describe node/NAME` with the instances placed on it. As root (containers need it);
//! skips loudly elsewhere (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use common::TestNode;
use serde_json::Value;

const BRIDGE: &str = "ocwhy0";

/// The node with the agent role, its own bridge and cluster CIDR; on drop its bridge goes.
struct AgentNode(TestNode);

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.0.kill9();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BRIDGE])
            .output();
    }
}

fn missing_image(name: &str) -> String {
    format!(
        "apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers:\n      - name: main\n        image: does-not-exist:1\n"
    )
}

#[test]
fn a_missing_image_is_named_by_apply_wait_and_describe() {
    if !omnicloud::config::is_root() {
        common::netns::require("root", "containers need namespaces and cgroups".into());
        return;
    }
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[network]\ncluster_cidr = \"10.77.0.0/16\"\nbridge = \"{BRIDGE}\"\n"),
    )
    .unwrap();
    let node = AgentNode(TestNode::start_with(
        "why",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
    ));
    let node = &node.0;

    let (ok, out, err) = node.cli_with_stdin(
        &["apply", "-f", "-", "--wait", "--timeout", "20s"],
        Some(&missing_image("ghost")),
    );
    assert!(
        !ok,
        "the wait cannot succeed; stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("deployment/ghost created"), "{out}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "error: timed out after 20s: deployment/ghost 0/2 ready: 2 Failed (image pull failed: "
        ) && last.contains("does-not-exist:1"),
        "the timeout names the image pull failure; stderr:\n{err}"
    );
    // The status lines printed while waiting said it too (stderr is not a terminal here:
    // one line per change).
    assert!(
        err.lines()
            .any(|l| l.starts_with("deployment/ghost 0/2 ready: ")
                && l.contains("image pull failed")),
        "{err}"
    );

    let (ok, out, err) = node.cli(&["describe", "deployment/ghost"]);
    assert!(ok, "{err}");
    let replicas = out
        .lines()
        .find(|l| l.starts_with("Replicas:"))
        .unwrap_or_else(|| panic!("no Replicas line:\n{out}"));
    assert!(
        replicas.contains("0/2 ready: 2 Failed (image pull failed: ")
            && replicas.contains("does-not-exist:1"),
        "{out}"
    );

    // The node: listed by `get nodes`, one row by `get node NAME`, described with the
    // instances waiting on it.
    let (ok, out, err) = node.cli(&["get", "nodes"]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ADDRESS",
            "ROLES",
            "STATUS",
            "RAFT",
            "CPU",
            "MEMORY",
            "AGE",
            "CONDITIONS"
        ]
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("why ") && l.contains(" alive ")),
        "{out}"
    );
    let (ok, out, err) = node.cli(&["get", "node", "why", "-o", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"][0]["name"], "why", "{v}");
    assert!(v["items"][0]["conditions"].is_array(), "{v}");
    let (ok, out, err) = node.cli(&["describe", "node/why"]);
    assert!(ok, "{err}");
    assert!(out.contains("Name:               why"), "{out}");
    let placed: Vec<&str> = out.lines().filter(|l| l.contains(" ghost-")).collect();
    assert_eq!(placed.len(), 2, "{out}");
    assert!(
        placed.iter().all(|l| l.contains("ErrImageNotFound")),
        "{out}"
    );
    let (ok, _, err) = node.cli(&["get", "node", "nosuch"]);
    assert!(!ok && err.contains("node nosuch not found"), "{err}");
}

/// A Deployment that asks for more cpu than any node has.
fn hog(name: &str) -> String {
    format!(
        "apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers:\n      - name: main\n        image: busybox:latest\n        \
         resources: {{requests: {{cpu: \"500\"}}}}\n"
    )
}

/// The scheduler's reason reaches every verb that waits: `apply --wait`, `scale --wait`,
/// `rollout status`. Needs no root (nothing is placed).
#[test]
fn the_schedulers_pending_reason_is_named_by_every_verb_that_waits() {
    let node = TestNode::start("whysched");
    let unschedulable = |err: &str| {
        err.lines().last().is_some_and(|l| {
            l.starts_with("error: timed out after ")
                && l.contains("deployment/hog 0/")
                && l.contains(" Pending (unschedulable: 0/1 nodes are available: 1 ")
        })
    };
    let (ok, _, err) = node.cli_with_stdin(
        &["apply", "-f", "-", "--wait", "--timeout", "5s"],
        Some(&hog("hog")),
    );
    assert!(!ok && unschedulable(&err), "apply --wait:\n{err}");
    let (ok, _, err) = node.cli(&[
        "scale",
        "deployment/hog",
        "--replicas",
        "2",
        "--wait",
        "--timeout",
        "3s",
    ]);
    assert!(!ok && unschedulable(&err), "scale --wait:\n{err}");
    assert!(
        err.contains("0/2 ready: 2 Pending (unschedulable: "),
        "{err}"
    );
    let (ok, _, err) = node.cli(&["rollout", "status", "deployment/hog", "--timeout", "3s"]);
    assert!(!ok && unschedulable(&err), "rollout status:\n{err}");
}
