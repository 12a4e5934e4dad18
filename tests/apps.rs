//! Third-party software nobody on this project wrote, run from manifests written the way
//! its users write them, as root with real containers: Debian's redis as a StatefulSet
//! whose password comes from a Secret (`$(REDIS_PASSWORD)` in its args) and whose data
//! survives its instance being deleted and recreated, queried with `exec redis-cli`; a
//! client whose init container waits for the database port before the client starts;
//! Debian's nginx serving a ConfigMap page with a log-shipping sidecar that tails the
//! access log from a shared emptyDir (`logs -c shipper`). The images come from
//! scripts/build-debian-images.sh. Skips loudly without root, the test images or umoci.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, TestNode};
use serde_json::Value;

/// One node with containers at a time: they share the bridge name and the host's iptables.
static SERIAL: Mutex<()> = Mutex::new(());

/// A one-node cluster with the agent role, busybox and the Debian images imported; on
/// drop its containers and bridge go too.
struct AppNode {
    node: TestNode,
    bridge: String,
}

impl AppNode {
    fn start() -> Option<AppNode> {
        let layout = common::images::layout()?;
        let debian = common::images::debian_layout()?;
        let bridge = "octapps".to_string();
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[network]\ncluster_cidr = \"10.71.0.0/16\"\nbridge = \"{bridge}\"\ndns_upstreams = [\"127.0.0.1:9\"]\n"
            ),
        )
        .unwrap();
        let node = TestNode::start_with(
            "apps",
            &[
                "--roles",
                "auto",
                "--config",
                config.path().to_str().unwrap(),
            ],
        );
        std::mem::forget(config);
        common::images::import(&node.dir, &layout);
        common::images::import(&node.dir, &debian);
        Some(AppNode { node, bridge })
    }

    fn instance(&self, name: &str) -> Value {
        let (code, v) = self
            .node
            .api()
            .get(&format!("/v1/namespaces/default/instances/{name}"));
        if code == 200 {
            v
        } else {
            Value::Null
        }
    }

    /// The first instance owned by `owner` (a Deployment's instance name is generated).
    fn owned(&self, owner: &str) -> Option<Value> {
        let (_, v) = self.node.api().get(&format!(
            "/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3D{owner}"
        ));
        v["items"].as_array()?.first().cloned()
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
        self.node.cli(&["logs", instance, "-c", container]).1
    }

    /// `omnicloud exec INSTANCE -- CMD...`: (success, stdout + stderr).
    fn exec(&self, instance: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", instance, "--"];
        args.extend_from_slice(cmd);
        let (ok, out, err) = self.node.cli(&args);
        (ok, format!("{out}{err}"))
    }

    /// Waits until `name` is ready; its status.
    fn ready(&self, name: &str, within: Duration) -> Value {
        eventually(within, || {
            let v = self.instance(name);
            (v["status"]["ready"] == true).then_some(v)
        })
        .unwrap_or_else(|| panic!("{name} never became ready: {:#}", self.instance(name)))
    }
}

impl Drop for AppNode {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

const PASSWORD: &str = "correct-horse-battery";

/// The database's password.
const AUTH: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: db-auth
type: Opaque
stringData:
  password: correct-horse-battery
"#;

/// Redis as its users deploy it: the password from [`AUTH`], a headless Service, one
/// member with its own claim for /data.
const REDIS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: db
  ports:
  - name: redis
    port: 6379
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: redis
        image: redis
        args: ["--requirepass", "$(REDIS_PASSWORD)", "--dir", "/data"]
        env:
        - name: REDIS_PASSWORD
          valueFrom:
            secretKeyRef:
              name: db-auth
              key: password
        ports:
        - name: redis
          containerPort: 6379
        readinessProbe:
          tcpSocket:
            port: redis
          periodSeconds: 1
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"#;

/// `redis-cli` in db-0 with `password` (or none): (success, output).
fn redis_cli(a: &AppNode, password: Option<&str>, cmd: &[&str]) -> (bool, String) {
    let mut args = vec!["redis-cli", "--no-auth-warning"];
    if let Some(pw) = password {
        args.extend(["-a", pw]);
    }
    args.extend_from_slice(cmd);
    a.exec("db-0", &args)
}

#[test]
fn redis_takes_its_password_from_a_secret_and_keeps_its_data_across_a_new_instance() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = AppNode::start() else { return };
    for doc in [AUTH, REDIS] {
        let (code, body) = a.node.api().apply(doc);
        assert_eq!(code, 200, "{body}");
    }
    let first = a.ready("db-0", Duration::from_secs(60));

    // Write with the Secret's password, and persist it (SAVE writes /data/dump.rdb).
    assert_eq!(
        redis_cli(&a, Some(PASSWORD), &["set", "greeting", "hello-from-redis"]),
        (true, "OK\n".to_string())
    );
    assert_eq!(
        redis_cli(&a, Some(PASSWORD), &["save"]),
        (true, "OK\n".to_string())
    );
    // A wrong password and none at all are refused.
    let (_, wrong) = redis_cli(&a, Some("not-the-password"), &["get", "greeting"]);
    assert!(wrong.contains("WRONGPASS"), "{wrong}");
    assert!(!wrong.contains("hello-from-redis"), "{wrong}");
    let (_, none) = redis_cli(&a, None, &["get", "greeting"]);
    assert!(none.contains("NOAUTH"), "{none}");
    assert!(!none.contains("hello-from-redis"), "{none}");
    // The password reached redis through the args, never written into the spec.
    let (_, config) = redis_cli(&a, Some(PASSWORD), &["config", "get", "requirepass"]);
    assert!(config.contains(PASSWORD), "{config}");
    let (_, stored) = a.node.api().get("/v1/namespaces/default/instances/db-0");
    assert!(
        !stored.to_string().contains(PASSWORD),
        "the instance shows the secret: {stored}"
    );

    // Delete the instance: the StatefulSet makes a new db-0 on the same claim.
    let uid = first["metadata"]["uid"].as_str().unwrap().to_string();
    let (code, body) = a.node.api().delete("/v1/namespaces/default/instances/db-0");
    assert!(code < 300, "{body}");
    let again = eventually(Duration::from_secs(60), || {
        let v = a.instance("db-0");
        (v["status"]["ready"] == true && v["metadata"]["uid"] != uid.as_str()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no new db-0 became ready: {:#}", a.instance("db-0")));
    assert_ne!(first["status"]["pid"], again["status"]["pid"]);
    let (ok, value) = redis_cli(&a, Some(PASSWORD), &["get", "greeting"]);
    assert_eq!(
        (ok, value.as_str()),
        (true, "hello-from-redis\n"),
        "the data came back"
    );
}

/// A client that needs the database: its init container waits for db-0's port (with
/// Debian's busybox nc, which has no `-z`).
const CLIENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
spec:
  replicas: 1
  selector:
    matchLabels:
      app: client
  template:
    metadata:
      labels:
        app: client
    spec:
      terminationGracePeriodSeconds: 1
      initContainers:
      - name: wait-for-db
        image: busybox
        command: ['sh', '-c', 'until nc -w 1 db-0.db 6379 </dev/null; do echo waiting for db; sleep 1; done; echo db is up']
      containers:
      - name: app
        image: redis
        command: ['sh', '-c']
        args: ['redis-cli -h db-0.db --no-auth-warning -a "$REDIS_PASSWORD" ping; exec sleep 3600']
        env:
        - name: REDIS_PASSWORD
          valueFrom:
            secretKeyRef:
              name: db-auth
              key: password
"#;

#[test]
fn an_init_container_holds_the_client_until_the_database_port_answers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = AppNode::start() else { return };
    // The password and the client first, with no database yet: the client waits in its
    // init container.
    for doc in [AUTH, CLIENT] {
        let (code, body) = a.node.api().apply(doc);
        assert_eq!(code, 200, "{body}");
    }
    let name = eventually(Duration::from_secs(60), || {
        let i = a.owned("client")?;
        let name = i["metadata"]["name"].as_str()?.to_string();
        (i["status"]["reason"] == "Init:0/1"
            && a.logs(&name, "wait-for-db").contains("waiting for db"))
        .then_some(name)
    })
    .unwrap_or_else(|| {
        panic!(
            "the client never waited in Init:0/1: {:#}",
            a.owned("client").unwrap_or_default()
        )
    });
    let app = a.container_status(&name, "app");
    assert!(
        app["state"]["running"].is_null() && app["state"]["terminated"].is_null(),
        "app started before its init container finished: {app:#}"
    );
    assert_eq!(
        a.logs(&name, "app"),
        "",
        "app ran before the database existed"
    );

    // Then the database: the init container sees the port, the app starts and reaches it.
    let (code, body) = a.node.api().apply(REDIS);
    assert_eq!(code, 200, "{body}");
    let logs = eventually(Duration::from_secs(60), || {
        Some(a.logs(&name, "app")).filter(|l| !l.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "the app never started: {:#}\ninit: {}\ndb-0: {:#}",
            a.instance(&name)["status"],
            a.logs(&name, "wait-for-db"),
            a.instance("db-0")["status"]
        )
    });
    assert_eq!(
        logs.lines().next(),
        Some("PONG"),
        "the app's first connection found the database ready: {logs}"
    );
    let init = a.logs(&name, "wait-for-db");
    assert!(init.trim_end().ends_with("db is up"), "{init}");
    // It waited because nc could not reach the port (busybox's nc has no -z: it connects,
    // sends nothing, and redis closes).
    assert!(
        ["bad address", "can't connect", "timed out"]
            .iter()
            .any(|e| init.contains(&format!("nc: {e}"))),
        "{init}"
    );
    assert!(!init.contains("Usage:"), "{init}");
    let done = a.container_status(&name, "wait-for-db");
    assert_eq!(done["state"]["terminated"]["exitCode"], 0, "{done:#}");
    let db = a.instance("db-0");
    assert_eq!(db["status"]["ready"], true, "{db:#}");
}

/// nginx serving a ConfigMap page, its access log shipped by a sidecar from an emptyDir.
const WEB: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: site
data:
  index.html: |
    <h1>hello from a ConfigMap</h1>
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: nginx
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet:
            path: /
            port: 80
          periodSeconds: 1
        volumeMounts:
        - name: site
          mountPath: /var/www/html
        - name: logs
          mountPath: /var/log/nginx
      - name: shipper
        image: busybox
        command: ['sh', '-c', 'exec tail -n +1 -F /var/log/nginx/access.log']
        volumeMounts:
        - name: logs
          mountPath: /var/log/nginx
          readOnly: true
      volumes:
      - name: site
        configMap:
          name: site
      - name: logs
        emptyDir: {}
"#;

#[test]
fn nginx_serves_a_configmap_page_and_a_sidecar_ships_its_access_log() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = AppNode::start() else { return };
    let (code, body) = a.node.api().apply(WEB);
    assert_eq!(code, 200, "{body}");
    let inst = eventually(Duration::from_secs(60), || {
        let i = a.owned("web")?;
        (i["status"]["ready"] == true).then_some(i)
    })
    .unwrap_or_else(|| {
        panic!(
            "nginx never ready: {:#}",
            a.owned("web").unwrap_or_default()
        )
    });
    let name = inst["metadata"]["name"].as_str().unwrap().to_string();
    let ip = inst["status"]["ip"].as_str().unwrap().to_string();
    for n in 1..=3 {
        let page = common::http_get(&format!("http://{ip}/?visit={n}")).unwrap();
        assert_eq!(page, "<h1>hello from a ConfigMap</h1>", "(trimmed)");
    }
    let shipped = eventually(Duration::from_secs(30), || {
        let l = a.logs(&name, "shipper");
        (1..=3)
            .all(|n| l.contains(&format!("\"GET /?visit={n} HTTP/1.1\" 200")))
            .then_some(l)
    })
    .unwrap_or_else(|| {
        panic!(
            "the shipper never showed the requests: {}\nnginx: {}",
            a.logs(&name, "shipper"),
            a.logs(&name, "nginx")
        )
    });
    // Debian's combined format: the client address first, as a log shipper expects.
    let line = shipped.lines().find(|l| l.contains("/?visit=1 ")).unwrap();
    assert!(
        line.split(' ')
            .next()
            .unwrap()
            .parse::<std::net::Ipv4Addr>()
            .is_ok(),
        "{line}"
    );
    // The access log went to the emptyDir, not nginx's own stdout.
    assert!(
        !a.logs(&name, "nginx").contains("/?visit="),
        "nginx's stdout has the access log"
    );
}
