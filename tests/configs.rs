//! ConfigMaps and Secrets on a real node with real containers, as root: a ConfigMap
//! mounted as a volume and changed in place without a restart, a Secret through
//! `secretKeyRef` and as a tmpfs volume, an emptyDir in memory, a missing key holding the
//! instance with `CreateContainerConfigError` until it appears, and no secret value in the
//! node log, events, `get` or `describe`. Skips loudly without root or the test images
//! (and fails under OMNICLOUD_REQUIRE_ALL=1).
//!
//! Instances run one container today, so the emptyDir is written and read by one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, TestNode};
use serde_json::Value;

const TAG: u8 = 47;
const PASSWORD: &str = "pw-Zq81-never-shown";
const PASSWORD_B64: &str = "cHctWnE4MS1uZXZlci1zaG93bg==";

struct Node {
    node: TestNode,
    bridge: String,
}

impl Node {
    fn start() -> Option<Node> {
        let layout = common::images::layout()?;
        let bridge = format!("octest{TAG}");
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[network]\ncluster_cidr = \"10.{}.0.0/16\"\nbridge = \"{bridge}\"\n",
                90 + TAG
            ),
        )
        .unwrap();
        let node = TestNode::start_with(
            "agent",
            &[
                "--roles",
                "auto",
                "--config",
                config.path().to_str().unwrap(),
            ],
        );
        std::mem::forget(config);
        common::images::import(&node.dir, &layout);
        Some(Node { node, bridge })
    }

    fn instance(&self, name: &str) -> Value {
        let (_, v) = self
            .node
            .api()
            .get(&format!("/v1/namespaces/default/instances/{name}"));
        v
    }

    fn log(&self, instance: &str) -> String {
        self.node.cli(&["logs", instance]).1
    }

    fn apply(&self, yaml: &str) {
        let (code, body) = self.node.api().apply(yaml);
        assert_eq!(code, 200, "{body}");
    }

    /// Mount points under this node's data dir, from the host's mount table.
    fn mounts(&self) -> Vec<String> {
        let dir = self.node.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir) && !m.contains("/containers/"))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
        for m in self.mounts() {
            let _ = std::process::Command::new("umount")
                .args(["-l", &m])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn deployment(name: &str, script: &str, extra_container: &str, volumes: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:latest
        command: ["sh", "-c", {script:?}]
{extra_container}
{volumes}
"#
    )
}

/// Lines of a watch stream until one contains `until` (the stream is left open).
fn watch_lines(n: &Node, path: &str, until: &str) -> String {
    use std::io::BufRead;
    let r = n
        .node
        .http()
        .get(&format!("{}{path}", n.node.api))
        .set("Authorization", &format!("Bearer {}", n.node.token))
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap();
    let mut out = String::new();
    for line in std::io::BufReader::new(r.into_reader()).lines() {
        let Ok(line) = line else { break };
        out.push_str(&line);
        out.push('\n');
        if line.contains(until) {
            break;
        }
    }
    out
}

fn running(n: &Node, name: &str) -> Value {
    eventually(Duration::from_secs(60), || {
        let v = n.instance(name);
        (v["status"]["phase"] == "Running").then_some(v)
    })
    .unwrap_or_else(|| panic!("{name} never ran: {:#}", n.instance(name)))
}

#[test]
fn config_maps_and_secrets_reach_containers_and_secrets_never_leak() {
    let Some(mut n) = Node::start() else { return };
    n.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: site}}
data:
  index.html: "version-one"
  mode: fast
---
apiVersion: v1
kind: Secret
metadata: {{name: db}}
type: Opaque
stringData:
  password: {PASSWORD}
data:
  username: YWRtaW4=
"#
    ));

    // The secret's values are nowhere a caller did not ask for them.
    let (ok, table, err) = n.node.cli(&["get", "secrets"]);
    assert!(
        ok && table.contains("db") && table.contains("Opaque"),
        "{table}{err}"
    );
    let (ok, described, err) = n.node.cli(&["describe", "secret", "db"]);
    assert!(
        ok && described.contains("password:  19 bytes"),
        "{described}{err}"
    );
    // Kubernetes' -o yaml of one Secret to a caller with the token: data in base64.
    let (ok, yaml, _) = n.node.cli(&["get", "secret", "db", "-o", "yaml"]);
    assert!(
        ok && yaml.contains(PASSWORD_B64) && !yaml.contains(PASSWORD),
        "{yaml}"
    );

    let script = r#"
[ "$PW" = "$(cat /secret/password)" ] && echo SECRET-ENV-MATCHES-FILE
echo "NAME=$ME NS=$NS MODE=$APP_mode NODE=$NODE IP=$IP"
grep ' /secret ' /proc/mounts | cut -d' ' -f3,4 | sed 's/^/SECRET-MOUNT=/'
grep ' /scratch ' /proc/mounts | cut -d' ' -f3 | sed 's/^/SCRATCH-MOUNT=/'
echo kept > /scratch/note && echo "SCRATCH=$(cat /scratch/note)"
touch /config/x 2>/dev/null || echo CONFIG-READ-ONLY
stat -c 'MODE=%a' /secret/..data/password
while true; do echo "CONFIG=$(cat /config/index.html)"; sleep 1; done
"#;
    let env = r#"        env:
        - {name: PW, valueFrom: {secretKeyRef: {name: db, key: password}}}
        - {name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        envFrom: [{prefix: APP_, configMapRef: {name: site}}]
        volumeMounts:
        - {name: config, mountPath: /config}
        - {name: secret, mountPath: /secret}
        - {name: scratch, mountPath: /scratch}"#;
    let volumes = r#"      volumes:
      - {name: config, configMap: {name: site}}
      - {name: secret, secret: {secretName: db, defaultMode: 0400}}
      - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 8Mi}}"#;
    n.apply(&deployment("app", script, env, volumes));
    let inst = running(&n, "app-0");
    let ip = inst["status"]["ip"].as_str().unwrap().to_string();
    let node = inst["status"]["node"].as_str().unwrap().to_string();
    let log = eventually(Duration::from_secs(30), || {
        let l = n.log("app-0");
        l.contains("CONFIG=version-one").then_some(l)
    })
    .unwrap_or_else(|| panic!("the container never read its config: {}", n.log("app-0")));
    for want in [
        "SECRET-ENV-MATCHES-FILE".to_string(),
        format!("NAME=app-0 NS=default MODE=fast NODE={node} IP={ip}"),
        "SECRET-MOUNT=tmpfs ro".to_string(),
        "SCRATCH-MOUNT=tmpfs".to_string(),
        "SCRATCH=kept".to_string(),
        "CONFIG-READ-ONLY".to_string(),
        "MODE=400".to_string(),
    ] {
        assert!(log.contains(&want), "{want} missing from:\n{log}");
    }

    // A change to the ConfigMap reaches the running container in place.
    let pid = inst["status"]["pid"].clone();
    n.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {index.html: version-two, mode: fast}\n",
    );
    eventually(Duration::from_secs(20), || {
        n.log("app-0").contains("CONFIG=version-two").then_some(())
    })
    .unwrap_or_else(|| panic!("the file never changed: {}", n.log("app-0")));
    let after = n.instance("app-0");
    assert_eq!(after["status"]["pid"], pid, "not restarted: {after}");
    assert_eq!(after["status"]["restarts"], 0, "{after}");

    // After a kill -9 of the node, the adopted container's volume is kept up to date.
    n.node.kill9();
    n.node.restart();
    n.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {index.html: version-three, mode: fast}\n",
    );
    eventually(Duration::from_secs(30), || {
        n.log("app-0")
            .contains("CONFIG=version-three")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not updated after the node restart: {}", n.log("app-0")));
    assert_eq!(
        n.instance("app-0")["status"]["pid"],
        pid,
        "adopted, not restarted"
    );

    // A missing key holds the instance with a reason naming it; it starts once added.
    let script = r#"echo "GREETING=$GREETING"; sleep 100000"#;
    let env = "        env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: late, key: greeting}}}]";
    // An emptyDir on disk with a sizeLimit: accepted, not enforced, so a warning.
    let disk = "      volumes: [{name: disk, emptyDir: {sizeLimit: 1Mi}}]";
    n.apply(&deployment("waits", script, env, disk));
    let held = eventually(Duration::from_secs(30), || {
        let v = n.instance("waits-0");
        (v["status"]["reason"] == "CreateContainerConfigError").then_some(v)
    })
    .unwrap_or_else(|| panic!("no CreateContainerConfigError: {:#}", n.instance("waits-0")));
    let message = held["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ConfigMap \"late\" not found"), "{held}");
    assert_eq!(held["status"]["phase"], "Pending", "{held}");
    n.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {other: x}\n");
    eventually(Duration::from_secs(30), || {
        let v = n.instance("waits-0");
        v["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("key \"greeting\" not found in ConfigMap \"late\""))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the missing key is not named: {:#}", n.instance("waits-0")));
    n.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {greeting: hello}\n");
    let started = running(&n, "waits-0");
    assert_eq!(
        started["status"]["restarts"], 0,
        "waiting is no restart: {started}"
    );
    assert!(
        started["status"]["warnings"]
            .to_string()
            .contains("FieldNotEnforced"),
        "{started}"
    );
    eventually(Duration::from_secs(20), || {
        n.log("waits-0").contains("GREETING=hello").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", n.log("waits-0")));

    // Deleting the workload removes its volumes and their tmpfs mounts.
    assert!(!n.mounts().is_empty(), "the tmpfs volumes were mounted");
    let (code, _) = n
        .node
        .api()
        .delete("/v1/namespaces/default/deployments/app");
    assert_eq!(code, 200);
    let scratch = n.node.dir.join("volumes/default/app-0");
    eventually(Duration::from_secs(30), || {
        (!scratch.exists() && n.mounts().is_empty()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "left behind: {:?} {}",
            n.mounts(),
            Path::new(&scratch).exists()
        )
    });

    // An immutable ConfigMap keeps its data; the refusal names the field.
    n.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fixed}\nimmutable: true\ndata: {a: '1'}\n");
    let (code, body) = n
        .node
        .api()
        .apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fixed}\nimmutable: true\ndata: {a: '2'}\n");
    assert!(
        code >= 400 && body.to_string().contains("immutable"),
        "{code} {body}"
    );

    // The kubectl-style verbs make the same objects.
    let (ok, out, err) = n.node.cli(&[
        "create",
        "secret",
        "generic",
        "cli-made",
        "--from-literal=token=abc-XYZ-123",
    ]);
    assert!(ok && out.trim() == "secret/cli-made created", "{out}{err}");
    let (ok, out, err) = n.node.cli(&[
        "create",
        "configmap",
        "cli-cm",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    assert!(ok && out.contains("configmap/cli-cm created"), "{out}{err}");
    let (ok, out, err) = n.node.cli(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "--docker-server",
        "registry.test:5000",
        "--docker-username",
        "u",
        "--docker-password",
        "p-Zq81",
    ]);
    assert!(ok && !out.contains("p-Zq81"), "{out}{err}");
    let (ok, table, err) = n.node.cli(&["get", "secrets"]);
    assert!(
        ok && table.contains("kubernetes.io/dockerconfigjson"),
        "{table}{err}"
    );
    assert!(
        !table.contains("abc-XYZ-123") && !table.contains("p-Zq81"),
        "{table}"
    );
    let (ok, cms, _) = n.node.cli(&["get", "cm"]);
    assert!(
        ok && cms
            .lines()
            .any(|l| l.starts_with("cli-cm") && l.contains(" 2 ")),
        "{cms}"
    );

    // A watch of every kind sees the Secret's keys, not its values; a watch of Secrets
    // asked for them.
    let all = watch_lines(&n, "/v1/watch?since=1", "\"kind\":\"Secret\"");
    assert!(all.contains("\"password\""), "{all}");
    let secrets = watch_lines(&n, "/v1/watch?since=1&kind=secrets", "\"kind\":\"Secret\"");
    assert!(secrets.contains(PASSWORD_B64), "{secrets}");

    // No value in the node log, events or what the CLI printed.
    for leak in [PASSWORD, PASSWORD_B64] {
        assert!(
            !all.contains(leak),
            "the watch of every kind shows the secret:\n{all}"
        );
    }
    let (_, events, _) = n.node.cli(&["get", "events"]);
    let node_log = n.node.log();
    for (what, text) in [
        ("node log", &node_log),
        ("events", &events),
        ("get secrets", &table),
        ("describe", &described),
    ] {
        for leak in [PASSWORD, PASSWORD_B64] {
            assert!(!text.contains(leak), "{what} shows the secret:\n{text}");
        }
    }
}
