//! The cluster CA and TLS with real processes: the API refuses plain HTTP, a client that
//! does not trust the cluster CA gets nothing, a join token pinning another CA (or not in
//! the K10 format) is refused with the reason, a right token joins over TLS, and
//! `omnicloud login` writes a client config the CLI then uses on its own.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, TestNode, BIN};

/// Runs `omnicloud node` expected to fail at start: (exit success, its output).
fn node_that_fails(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["node", "--name", "stranger", "--roles", "orchestrator"])
        .args(["--bind", "127.0.0.1", "--advertise", "127.0.0.1"])
        .args(["--api-port", "0", "--rpc-port", "0", "--gossip-port", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node neither joined nor exited");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("tls/node.crt").exists(),
        "a refused node got a certificate"
    );
    (out.status.success(), text)
}

#[test]
fn plain_http_to_the_api_gets_a_refusal_and_no_data() {
    let node = TestNode::start("plain");
    assert!(node.api.starts_with("https://"), "{}", node.api);
    // Over HTTPS the same request answers with data.
    let (code, body) = node.api().get("/v1/namespaces");
    assert_eq!(code, 200, "{body}");
    assert!(body.to_string().contains("default"), "{body}");

    let addr = node.api.trim_start_matches("https://");
    for path in ["/v1/namespaces", "/healthz", "/metrics"] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            node.token
        );
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("HTTPS only"), "{path}: {answer}");
        assert!(!answer.contains("default"), "{path} leaked data: {answer}");
    }
}

#[test]
fn a_client_that_does_not_trust_the_cluster_ca_gets_nothing() {
    let node = TestNode::start("untrusting");
    // ureq's own roots (Mozilla's): the cluster CA is not among them.
    let err = ureq::get(&format!("{}/v1/namespaces", node.api))
        .set("Authorization", &format!("Bearer {}", node.token))
        .call()
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
    // The CLI given another cluster's CA refuses the server and says what to trust.
    let other = tempfile::tempdir().unwrap();
    let tls = omnicloud::cluster::pki::TlsDir::of(other.path());
    omnicloud::cluster::pki::ensure_ca(&tls).unwrap();
    let (ok, _, err) = node.cli(&["nodes", "--ca", tls.ca_crt().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("cluster CA"), "{err}");
    // Trusting the node's CA (the harness sets it), the CLI works.
    let (ok, out, err) = node.cli(&["nodes"]);
    assert!(ok, "{err}");
    assert!(out.contains("untrusting"), "{out}");
}

#[test]
fn a_token_pinning_another_ca_is_refused_and_a_right_token_joins_over_tls() {
    let mut c = Cluster::start(1, "");
    let seed = &c.nodes[0];
    let token = omnicloud::cluster::pki::JoinToken::parse(&c.token).unwrap();
    let wrong = format!("K10{}::{}", "0".repeat(64), token.secret);
    let (ok, out) = node_that_fails(&["--join", &seed.gossip, "--token", &wrong]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&"0".repeat(64)) && out.contains(&token.ca_hash) && out.contains("pins"),
        "the refusal names both hashes: {out}"
    );
    // The old format (a bare secret) is refused naming the one expected.
    let (ok, out) = node_that_fails(&["--join", &seed.gossip, "--token", &token.secret]);
    assert!(!ok, "{out}");
    assert!(out.contains("K10<64 hex digits"), "{out}");

    // The right token: the node gets a certificate of the cluster CA and joins; RPC and
    // Raft run over TLS (the harness's cluster replicates through it).
    let i = c.add();
    let joined = &c.nodes[i];
    let tls = omnicloud::cluster::pki::TlsDir::of(&joined.dir);
    assert!(tls.has_node_cert());
    assert!(!tls.ca_key().exists(), "the CA key stays on the seed");
    token.check_ca(&tls).unwrap();
    let ready = common::eventually(Duration::from_secs(60), || {
        let roles = c.raft_roles(1);
        (roles.len() == 2).then_some(roles)
    });
    assert!(ready.is_some(), "the joined node never showed up in Raft");
    let ns = "apiVersion: omnicloud.io/v1\nkind: Namespace\nmetadata:\n  name: over-tls\n";
    // A write through the joined node is forwarded to the leader over the RPC.
    assert_eq!(c.nodes[i].api().apply(ns).0, 200);
    assert_eq!(c.nodes[0].api().get("/v1/namespaces/over-tls").0, 200);
}

#[test]
fn login_writes_a_client_config_the_cli_uses_alone() {
    let node = TestNode::start("login");
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("client.toml");
    let ca = node.dir.join("tls/ca.crt");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("OMNICLOUD_SERVER")
            .env_remove("OMNICLOUD_TOKEN")
            .env_remove("OMNICLOUD_CA")
            .env_remove("OMNICLOUD_DATA_DIR")
            .env("OMNICLOUD_CLIENT_CONFIG", &config)
            .env("HOME", home.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // A wrong token writes nothing.
    let (ok, _, err) = run(&[
        "login",
        "--server",
        &node.api,
        "--token",
        "nope",
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(!ok && !config.exists(), "{err}");
    let (ok, _, err) = run(&[
        "login",
        "--server",
        &node.api,
        "--token",
        &node.token,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&node.api) && text.contains("BEGIN CERTIFICATE"),
        "{text}"
    );
    // The node's data dir is not needed: the config alone (a copy, as on a laptop).
    let (ok, out, err) = run(&["nodes"]);
    assert!(ok, "{err}");
    assert!(out.contains("login"), "{out}");
}

#[test]
fn certs_status_shows_expiry_and_rotate_renews_the_seeds_certificate() {
    let mut node = TestNode::start("certs");
    let dir = node.dir.to_str().unwrap().to_string();
    let (ok, out, err) = node.cli(&["certs", "status", "--data-dir", &dir]);
    assert!(ok, "{err}");
    assert!(out.contains("ca.crt") && out.contains("node.crt"), "{out}");
    // A node certificate lasts a year: 364 or 365 days left.
    assert!(out.contains(" 364") || out.contains(" 365"), "{out}");
    let before = std::fs::read_to_string(node.dir.join("tls/node.crt")).unwrap();
    let (ok, out, err) = node.cli(&["certs", "rotate", "--data-dir", &dir]);
    assert!(ok, "{err}");
    assert!(out.contains("renewed"), "{out}");
    let after = std::fs::read_to_string(node.dir.join("tls/node.crt")).unwrap();
    assert_ne!(before, after, "a new certificate");
    node.stop();
    node.restart();
    assert_eq!(
        node.api().get("/v1/namespaces").0,
        200,
        "served with the new one"
    );
}
