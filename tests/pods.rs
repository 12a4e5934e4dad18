//! Instances with several containers (pods), as root with real containers: the containers
//! share the instance's network namespace (a sidecar reaches the main container on
//! localhost) and its emptyDir volumes, each has its own log (`logs -c`), restarts and
//! status; init containers run in order before them, and a failing one holds the instance
//! with an `Init:` reason while the app containers never start. Deleting the instance
//! leaves no container, sandbox process, veth, cgroup, volume or log behind. Skips loudly
//! without root or the test images (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, TestNode};
use serde_json::Value;

/// One node with containers at a time: they share the host's cgroups and iptables.
static SERIAL: Mutex<()> = Mutex::new(());

/// A one-node cluster with the agent role, its own bridge and cluster CIDR; on drop its
/// containers and the sandboxes it saw go too (they outlive their node by design).
struct PodNode {
    node: TestNode,
    bridge: String,
    sandboxes: Mutex<Vec<i64>>,
}

impl PodNode {
    fn start(tag: u8) -> Option<PodNode> {
        let layout = common::images::layout()?;
        let bridge = format!("octest{tag}");
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[network]\ncluster_cidr = \"10.{}.0.0/16\"\nbridge = \"{bridge}\"\ndns_upstreams = [\"127.0.0.1:9\"]\n[agent]\nusage_report_ms = 1000\n",
                90 + tag
            ),
        )
        .unwrap();
        let node = TestNode::start_with(
            "pods",
            &[
                "--roles",
                "auto",
                "--config",
                config.path().to_str().unwrap(),
            ],
        );
        std::mem::forget(config);
        common::images::import(&node.dir, &layout);
        Some(PodNode {
            node,
            bridge,
            sandboxes: Mutex::new(Vec::new()),
        })
    }

    fn instance(&self, name: &str) -> Value {
        let (code, v) = self
            .node
            .api()
            .get(&format!("/v1/namespaces/default/instances/{name}"));
        if code == 200 {
            if let Some(pid) = v["status"]["pid"].as_i64() {
                let mut s = self.sandboxes.lock().unwrap();
                if !s.contains(&pid) {
                    s.push(pid);
                }
            }
            v
        } else {
            Value::Null
        }
    }

    fn container_status(&self, instance: &str, container: &str) -> Value {
        let v = self.instance(instance);
        (v["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten())
        .chain(
            v["status"]["initContainerStatuses"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .find(|s| s["name"] == container)
        .cloned()
        .unwrap_or(Value::Null)
    }

    fn logs(&self, instance: &str, container: &str) -> String {
        let (_, out, _) = self.node.cli(&["logs", instance, "-c", container]);
        out
    }

    fn events_of(&self, instance: &str) -> Vec<Value> {
        let (_, v) = self.node.api().get("/v1/namespaces/default/events");
        (v["items"].as_array().into_iter().flatten())
            .filter(|e| e["spec"]["involvedObject"]["name"] == instance)
            .cloned()
            .collect()
    }
}

impl Drop for PodNode {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
        for pid in self.sandboxes.lock().unwrap().iter() {
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains("__pause") {
                // SAFETY: kill(2) on a pause process this test's node started.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn http_get(url: &str) -> Option<String> {
    ureq::get(url)
        .timeout(Duration::from_secs(2))
        .call()
        .ok()?
        .into_string()
        .ok()
}

const DUO: &str = r#"
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: duo}
spec:
  selector: {matchLabels: {app: duo}}
  template:
    metadata: {labels: {app: duo}}
    spec:
      terminationGracePeriodSeconds: 1
      initContainers:
      - name: seed
        image: busybox
        command: [sh, -c, "sleep 2; echo seeded-by-init > /shared/page; echo seed-done"]
        volumeMounts: [{name: shared, mountPath: /shared}]
      containers:
      - name: web
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /health, port: http}, periodSeconds: 1}
      - name: files
        image: busybox
        command: [httpd, -f, -p, "8081", -h, /shared]
        ports: [{containerPort: 8081}]
        volumeMounts: [{name: shared, mountPath: /shared, readOnly: true}]
      - name: side
        image: busybox
        command: [sh, -c, "while true; do wget -q -O - http://127.0.0.1:8080/ && echo side-fetched; sleep 1; done"]
        resources: {limits: {memory: 32Mi}}
      - name: crashy
        image: busybox
        command: [sh, -c, "echo crashy-start; sleep 1; exit 3"]
      volumes: [{name: shared, emptyDir: {}}]
"#;

#[test]
fn a_pod_shares_its_network_and_volumes_restarts_containers_alone_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = PodNode::start(37) else { return };
    let (code, body) = a.node.api().apply(DUO);
    assert_eq!(code, 200, "{body}");

    // The init container runs first, and the instance says so as kubectl does.
    let init = eventually(Duration::from_secs(60), || {
        let v = a.instance("duo-0");
        (v["status"]["reason"] == "Init:0/1").then_some(v)
    });
    assert!(init.is_some(), "never Init:0/1: {:#}", a.instance("duo-0"));

    // Then every container runs in one network namespace with one address.
    let running = eventually(Duration::from_secs(60), || {
        let v = a.instance("duo-0");
        let web = a.container_status("duo-0", "web");
        (web["ready"] == true && v["status"]["ip"].is_string()).then_some(v)
    })
    .unwrap_or_else(|| panic!("web never ready: {:#}", a.instance("duo-0")));
    let ip = running["status"]["ip"].as_str().unwrap().to_string();
    let page = http_get(&format!("http://{ip}:8080/")).expect("web answers on the instance IP");
    assert!(page.contains("hello from duo-0"), "{page}");
    // What the init container wrote into the emptyDir, served by another container.
    let served = http_get(&format!("http://{ip}:8081/page")).expect("files serves the emptyDir");
    assert_eq!(served, "seeded-by-init\n");
    // The sidecar reached web over localhost; each container has its own log.
    let side = eventually(Duration::from_secs(30), || {
        Some(a.logs("duo-0", "side")).filter(|l| l.contains("side-fetched"))
    })
    .expect("the sidecar fetched the main container's page over localhost");
    assert!(side.contains("hello from duo-0"), "{side}");
    assert!(!side.contains("crashy-start"), "{side}");
    let web_log = a.logs("duo-0", "web");
    assert!(web_log.contains("workload http listening"), "{web_log}");
    assert!(!web_log.contains("side-fetched"), "{web_log}");
    assert!(a.logs("duo-0", "seed").contains("seed-done"));
    let (ok, _, err) = a.node.cli(&["logs", "duo-0", "-c", "nope"]);
    assert!(!ok && err.contains("no container \"nope\""), "{err}");

    // crashy restarts on its own; web keeps its one run.
    let web_started = a.container_status("duo-0", "web")["state"]["running"]["startedAt"].clone();
    let crashy = eventually(Duration::from_secs(60), || {
        let s = a.container_status("duo-0", "crashy");
        (s["restartCount"].as_u64() >= Some(2)).then_some(s)
    })
    .unwrap_or_else(|| panic!("crashy never restarted: {:#}", a.instance("duo-0")));
    assert_eq!(crashy["lastTermination"]["exitCode"], 3, "{crashy}");
    let web = a.container_status("duo-0", "web");
    assert_eq!(web["restartCount"], 0, "{web}");
    assert_eq!(web["state"]["running"]["startedAt"], web_started, "{web}");
    assert_eq!(a.container_status("duo-0", "side")["restartCount"], 0);
    let v = eventually(Duration::from_secs(30), || {
        let v = a.instance("duo-0");
        (v["status"]["usage"]["memoryBytes"].as_u64() > Some(0)).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "no usage from the instance's cgroup: {:#}",
            a.instance("duo-0")
        )
    });
    assert!(v["status"]["restarts"].as_u64() >= Some(2), "{v}");
    assert!(
        a.events_of("duo-0")
            .iter()
            .any(|e| e["spec"]["reason"] == "BackOff"
                && e["spec"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("crashy")),
        "{:#?}",
        a.events_of("duo-0")
    );

    // Each container has its cgroup under the instance's; the sandbox holds the netns.
    let id = v["status"]["containerId"].as_str().unwrap().to_string();
    assert!(
        !omnicloud::container::sandbox::instance_cgroups(&id).is_empty(),
        "no cgroup for {id}"
    );
    let side_id = omnicloud::container::spec::member_id(&id, "side");
    assert!(
        omnicloud::container::runtime::memory_cgroup_dir(&side_id)
            .is_some_and(|d| d.to_string_lossy().contains(&format!("{id}/side"))),
        "side's memory cgroup is not under the instance's"
    );
    let sandbox = v["status"]["pid"].as_i64().expect("the sandbox pid");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts.contains(&id),
        "the containers' root filesystems are mounted"
    );

    // Delete: nothing of it is left.
    a.node
        .api()
        .delete("/v1/namespaces/default/deployments/duo");
    eventually(Duration::from_secs(60), || {
        a.instance("duo-0").is_null().then_some(())
    })
    .expect("the instance went");
    let gone = eventually(Duration::from_secs(30), || {
        let ids = common::containers(&a.node.dir);
        let clean = ids.iter().all(|c| !c.starts_with(&id))
            && !std::path::Path::new(&format!("/proc/{sandbox}")).exists()
            && omnicloud::container::sandbox::instance_cgroups(&id).is_empty()
            && !a.node.dir.join("volumes/default/duo-0").exists()
            && !a.node.dir.join("logs/default/duo-0").exists()
            && !std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .contains(&id)
            && std::fs::read_dir(format!("/sys/class/net/{}/brif", a.bridge))
                .map(|d| d.count() == 0)
                .unwrap_or(true);
        clean.then_some(())
    });
    assert!(
        gone.is_some(),
        "left behind: containers {:?}, sandbox alive {}, cgroups {:?}, bridge ports {:?}",
        common::containers(&a.node.dir),
        std::path::Path::new(&format!("/proc/{sandbox}")).exists(),
        omnicloud::container::sandbox::instance_cgroups(&id),
        std::fs::read_dir(format!("/sys/class/net/{}/brif", a.bridge))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

#[test]
fn a_failing_init_container_holds_the_instance_and_its_app_never_starts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = PodNode::start(38) else { return };
    let manifest = r#"
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: stuck}
spec:
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      terminationGracePeriodSeconds: 1
      initContainers:
      - {name: first, image: busybox, command: ["true"]}
      - {name: breaks, image: busybox, command: [sh, -c, "echo init-failing; exit 1"]}
      containers:
      - {name: app, image: busybox, command: [sh, -c, "echo app-ran; sleep 600"]}
"#;
    let (code, body) = a.node.api().apply(manifest);
    assert_eq!(code, 200, "{body}");
    let looping = eventually(Duration::from_secs(60), || {
        let v = a.instance("stuck-0");
        (v["status"]["reason"] == "Init:CrashLoopBackOff").then_some(v)
    })
    .unwrap_or_else(|| panic!("never Init:CrashLoopBackOff: {:#}", a.instance("stuck-0")));
    assert!(
        looping["status"]["message"]
            .as_str()
            .unwrap()
            .contains("init container breaks failed: exit code 1"),
        "{looping}"
    );
    let breaks = a.container_status("stuck-0", "breaks");
    assert!(breaks["restartCount"].as_u64() >= Some(1), "{breaks}");
    assert_eq!(breaks["state"]["terminated"]["exitCode"], 1, "{breaks}");
    assert_eq!(
        a.container_status("stuck-0", "first")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert!(a.logs("stuck-0", "breaks").contains("init-failing"));
    assert!(a
        .events_of("stuck-0")
        .iter()
        .any(|e| e["spec"]["reason"] == "BackOff"
            && e["spec"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("breaks")));
    let (_, table, _) = a.node.cli(&["get", "instances"]);
    assert!(
        table.contains("Init:CrashLoopBackOff") || table.contains("Failed"),
        "{table}"
    );
    // The app container never ran: no log, no container, no status of a run.
    assert!(!a.logs("stuck-0", "app").contains("app-ran"));
    assert!(!a.node.dir.join("logs/default/stuck-0/app.log").exists());
    assert!(
        common::containers(&a.node.dir)
            .iter()
            .all(|c| !c.ends_with("+app")),
        "{:?}",
        common::containers(&a.node.dir)
    );
    assert_eq!(
        a.container_status("stuck-0", "app")["restartCount"]
            .as_u64()
            .unwrap_or(0),
        0
    );

    a.node
        .api()
        .delete("/v1/namespaces/default/deployments/stuck");
    eventually(Duration::from_secs(60), || {
        (a.instance("stuck-0").is_null() && common::containers(&a.node.dir).is_empty())
            .then_some(())
    })
    .expect("the instance and its containers went");
}

#[test]
fn security_context_and_field_refs_reach_the_process() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = PodNode::start(39) else { return };
    let manifest = r#"
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: locked}
spec:
  selector: {matchLabels: {app: locked}}
  template:
    metadata: {labels: {app: locked}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsUser: 1000, runAsGroup: 3000}
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "echo uid=$(id -u) gid=$(id -g); touch /rootfs-file && echo rootfs-writable || echo rootfs-readonly; grep CapEff /proc/self/status; echo me=$ME ns=$NS ip=$IP node=$NODE; sleep 600"]
        securityContext:
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        env:
        - {name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
---
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {pod-security.kubernetes.io/enforce: privileged}}
---
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: mighty}
spec:
  selector: {matchLabels: {app: mighty}}
  template:
    metadata: {labels: {app: mighty}}
    spec:
      containers:
      - {name: c, image: busybox, command: [sleep, "600"], securityContext: {privileged: true}}
"#;
    let (code, body) = a.node.api().apply(manifest);
    assert_eq!(code, 200, "{body}");
    let log = eventually(Duration::from_secs(60), || {
        let (_, out, _) = a.node.cli(&["logs", "locked-0"]);
        out.contains("me=").then_some(out)
    })
    .unwrap_or_else(|| panic!("no output: {:#}", a.instance("locked-0")));
    assert!(log.contains("uid=1000 gid=3000"), "{log}");
    assert!(log.contains("rootfs-readonly"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    let v = a.instance("locked-0");
    let ip = v["status"]["ip"].as_str().unwrap_or("?");
    assert!(
        log.contains(&format!("me=locked-0 ns=default ip={ip} node=pods")),
        "{log}"
    );
    let refused = eventually(Duration::from_secs(60), || {
        let v = a.instance("mighty-0");
        (v["status"]["reason"] == "InvalidSpec").then_some(v)
    })
    .unwrap_or_else(|| panic!("privileged ran: {:#}", a.instance("mighty-0")));
    let message = refused["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.pod.containers[0].securityContext.privileged")
            && message.contains("allow_privileged"),
        "{message}"
    );
    assert!(
        common::containers(&a.node.dir)
            .iter()
            .all(|c| !c.starts_with("default.mighty-0")),
        "{:?}",
        common::containers(&a.node.dir)
    );
    // A bad value is refused at apply, naming the field.
    let bad = manifest.replace("runAsUser: 1000", "runAsUser: -5");
    let (code, body) = a.node.api().apply(&bad);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.to_string()
            .contains("spec.template.spec.securityContext.runAsUser"),
        "{body}"
    );
}

/// The host pid of the running container whose id ends with `+NAME`.
fn member_pid(a: &PodNode, name: &str) -> Option<i64> {
    let out = std::process::Command::new(common::BIN)
        .args(["__container", "list", "--root"])
        .arg(a.node.dir.join("containers"))
        .output()
        .ok()?;
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    let suffix = format!("+{name}");
    list.as_array()?
        .iter()
        .find(|c| {
            c["id"].as_str().is_some_and(|id| id.ends_with(&suffix)) && c["status"] == "running"
        })
        .and_then(|c| c["pid"].as_i64())
}

#[test]
fn a_pod_outlives_a_kill9_of_its_node_and_is_readopted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut a) = PodNode::start(40) else {
        return;
    };
    let manifest = r#"
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {name: keep}
spec:
  selector: {matchLabels: {app: keep}}
  template:
    metadata: {labels: {app: keep}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        readinessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 1}
      - name: side
        image: busybox
        command: [sh, -c, "while true; do wget -q -O - http://127.0.0.1:8080/; sleep 1; done"]
"#;
    let (code, body) = a.node.api().apply(manifest);
    assert_eq!(code, 200, "{body}");
    let v = eventually(Duration::from_secs(60), || {
        let v = a.instance("keep-0");
        (v["status"]["ready"] == true).then_some(v)
    })
    .unwrap_or_else(|| panic!("never ready: {:#}", a.instance("keep-0")));
    let sandbox = v["status"]["pid"].as_i64().unwrap();
    let ip = v["status"]["ip"].as_str().unwrap().to_string();
    let web = member_pid(&a, "web").expect("web runs");
    let side = member_pid(&a, "side").expect("side runs");

    a.node.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let alive = |pid: i64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        alive(sandbox) && alive(web),
        "the pod outlives its node process"
    );
    // One container dies while the node is away.
    // SAFETY: kill(2) on a container process this test's node started.
    unsafe { libc::kill(side as i32, libc::SIGKILL) };
    a.node.restart();

    let back = eventually(Duration::from_secs(60), || {
        let v = a.instance("keep-0");
        let side = a.container_status("keep-0", "side");
        (v["status"]["ready"] == true && side["state"]["running"].is_object()).then_some(v)
    })
    .unwrap_or_else(|| panic!("not ready again: {:#}", a.instance("keep-0")));
    assert_eq!(
        back["status"]["pid"].as_i64(),
        Some(sandbox),
        "the same sandbox"
    );
    assert_eq!(
        member_pid(&a, "web"),
        Some(web),
        "web adopted, not restarted"
    );
    assert_ne!(member_pid(&a, "side"), Some(side), "side started again");
    let page = http_get(&format!("http://{ip}:8080/")).expect("web still serves");
    assert!(page.contains("hello from keep-0"), "{page}");

    a.node
        .api()
        .delete("/v1/namespaces/default/deployments/keep");
    eventually(Duration::from_secs(60), || {
        (common::containers(&a.node.dir).is_empty() && !alive(sandbox)).then_some(())
    })
    .expect("containers and sandbox gone after the delete");
}

#[test]
fn a_pod_whose_containers_all_end_under_never_succeeds_or_fails_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = PodNode::start(41) else { return };
    let pod = |name: &str, second_exit: u8| {
        format!(
            r#"
apiVersion: omnicloud.io/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      restartPolicy: Never
      containers:
      - {{name: a, image: busybox, command: [sh, -c, "echo a-done"]}}
      - {{name: b, image: busybox, command: [sh, -c, "sleep 1; exit {second_exit}"]}}
"#
        )
    };
    let (code, body) = a.node.api().apply(&pod("fine", 0));
    assert_eq!(code, 200, "{body}");
    let (code, body) = a.node.api().apply(&pod("broken", 4));
    assert_eq!(code, 200, "{body}");
    let fine = eventually(Duration::from_secs(60), || {
        let v = a.instance("fine-0");
        (v["status"]["phase"] == "Succeeded").then_some(v)
    })
    .unwrap_or_else(|| panic!("never Succeeded: {:#}", a.instance("fine-0")));
    assert_eq!(fine["status"]["restarts"], 0, "{fine}");
    let broken = eventually(Duration::from_secs(60), || {
        let v = a.instance("broken-0");
        (v["status"]["phase"] == "Failed").then_some(v)
    })
    .unwrap_or_else(|| panic!("never Failed: {:#}", a.instance("broken-0")));
    let b = a.container_status("broken-0", "b");
    assert_eq!(b["state"]["terminated"]["exitCode"], 4, "{b}");
    assert_eq!(b["restartCount"], 0, "{b}");
    assert_eq!(
        a.container_status("broken-0", "a")["state"]["terminated"]["reason"],
        "Completed"
    );
    // Nothing runs on for them: no container, no sandbox.
    let sandboxes: Vec<i64> = [&fine, &broken]
        .iter()
        .filter_map(|v| v["status"]["pid"].as_i64())
        .collect();
    assert!(
        sandboxes.is_empty(),
        "a finished pod reports no running pid: {sandboxes:?}"
    );
    let left = eventually(Duration::from_secs(30), || {
        common::containers(&a.node.dir).is_empty().then_some(())
    });
    assert!(left.is_some(), "{:?}", common::containers(&a.node.dir));
}
