//! The operator's view of a running node: the web dashboard driven in headless Chromium
//! (log in, see the node and a running Deployment, scale it from the page and from the CLI
//! and watch the page follow without a reload; screenshots under
//! target/test-artifacts/dashboard/), and `/metrics` after a Deployment ran: every series
//! the seed names (but the director's, tested with it) and node, instance, Raft and gossip
//! health, with sane values. The browser
//! and container tests need root, the test images and Debian's chromium; they skip loudly
//! elsewhere (and fail under OMNICLOUD_REQUIRE_ALL=1).

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, TestNode};
use serde_json::Value;

/// One node with containers at a time: they share the host's cgroups and iptables.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A single-node cluster with the agent role, the test images, its own bridge and CIDR;
/// on drop every container it ran is removed.
struct AgentNode {
    node: TestNode,
    bridge: String,
    _config: tempfile::NamedTempFile,
}

impl AgentNode {
    fn start(tag: u8) -> Option<AgentNode> {
        let layout = common::images::layout()?;
        let bridge = format!("ocdash{tag}");
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[network]\ncluster_cidr = \"10.{}.0.0/16\"\nbridge = \"{bridge}\"\n[agent]\nusage_report_ms = 1000\n",
                76 + tag
            ),
        )
        .unwrap();
        let path = config.path().to_str().unwrap().to_string();
        let node = TestNode::start_with("dash", &["--roles", "auto", "--config", &path]);
        common::images::import(&node.dir, &layout);
        Some(AgentNode {
            node,
            bridge,
            _config: config,
        })
    }

    fn deployment(&self, name: &str) -> Value {
        self.node
            .api()
            .get(&format!("/v1/namespaces/default/deployments/{name}"))
            .1
    }

    fn wait_ready(&self, name: &str, n: i64) {
        eventually(Duration::from_secs(60), || {
            (self.deployment(name)["status"]["readyReplicas"].as_i64() == Some(n)).then_some(())
        })
        .unwrap_or_else(|| panic!("{name} never had {n} ready: {}", self.deployment(name)));
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.node.kill9();
        common::remove_containers(&self.node.dir);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn web(replicas: u32) -> String {
    format!(
        r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: http
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        ports: [{{name: http, containerPort: 8080}}]
        resources:
          requests: {{cpu: 100m, memory: 32Mi}}
          limits: {{cpu: "1", memory: 128Mi}}
        readinessProbe:
          httpGet: {{path: /health, port: http}}
          periodSeconds: 1
"#
    )
}

fn artifacts() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts/dashboard")
}

#[test]
fn the_dashboard_is_embedded_and_open_while_the_api_keeps_its_token() {
    let node = TestNode::start("ui");
    let agent = omnicloud::client::config::agent(
        std::fs::read_to_string(node.dir.join("tls/ca.crt"))
            .ok()
            .as_deref(),
        ureq::AgentBuilder::new().redirects(0),
    )
    .unwrap();
    let root = agent.get(&format!("{}/", node.api)).call().unwrap();
    assert_eq!(root.status(), 302);
    assert_eq!(root.header("location"), Some("/ui/"));

    let get = |path: &str| {
        let r = node
            .http()
            .get(&format!("{}{path}", node.api))
            .call()
            .unwrap();
        let csp = r
            .header("content-security-policy")
            .unwrap_or("")
            .to_string();
        let ct = r.header("content-type").unwrap_or("").to_string();
        (ct, csp, r.into_string().unwrap())
    };
    let (ct, csp, html) = get("/ui/");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(html.contains(r#"<script src="app.js""#), "{html}");
    let (ct, _, js) = get("/ui/app.js");
    assert!(ct.starts_with("text/javascript"), "{ct}");
    assert!(js.contains("/v1/watch") && js.contains("sessionStorage"));
    let (_, _, charts) = get("/ui/charts.js");
    assert!(charts.contains("function chart("), "{charts}");
    let (ct, _, css) = get("/ui/style.css");
    assert!(
        ct.starts_with("text/css") && css.contains("svg.chart"),
        "{ct}"
    );
    for body in [&html, &js, &charts, &css] {
        assert!(!body.contains(&node.token), "an asset holds the token");
    }

    // The page is open; the data behind it is not.
    let anon = common::Api {
        base: node.api.clone(),
        token: None,
        agent: node.http(),
    };
    assert_eq!(anon.get("/v1/nodes").0, 401);
    assert_eq!(node.api().get("/v1/nodes").0, 200);
}

/// JavaScript: the trimmed text of the first element matching `selector`, or "".
fn text(selector: &str) -> String {
    format!(
        "(document.querySelector({}) || {{textContent: ''}}).textContent.trim()",
        serde_json::to_string(selector).unwrap()
    )
}

#[test]
fn the_dashboard_logs_in_shows_the_cluster_and_follows_a_scale_live() {
    let _serial = serial();
    let Some(a) = AgentNode::start(1) else { return };
    let cert = std::fs::read_to_string(a.node.dir.join("tls/node.crt")).unwrap();
    let Some(mut b) = cdp::Browser::launch(1400, 1000, &cert) else {
        common::netns::require(
            "chromium (headless browser test)",
            format!("{} is missing: apt-get install chromium", cdp::CHROMIUM),
        );
        return;
    };
    let api = a.node.api();
    assert_eq!(api.apply(&web(1)).0, 200);
    a.wait_ready("web", 1);
    let wait = Duration::from_secs(30);
    let dir = artifacts();
    let mut shots = Vec::new();

    // The root redirects to the login form.
    b.navigate(&format!("{}/", a.node.api));
    b.wait_for("!document.querySelector('#login').hidden", wait)
        .expect("the login form shows");
    assert_eq!(b.eval("location.pathname").unwrap(), "/ui/");

    // A wrong token is refused with a message.
    b.eval("document.querySelector('#token').focus()").unwrap();
    b.insert_text("not-the-token");
    b.eval("document.querySelector('#login-button').click()")
        .unwrap();
    let refused = b
        .wait_for(&text("#login-error"), wait)
        .expect("an error shows");
    assert!(
        refused.as_str().unwrap().contains("Wrong token"),
        "{refused}"
    );
    assert!(b.eval("document.querySelector('#app').hidden").unwrap() == true);
    shots.push(b.screenshot(&dir.join("01-login-refused.png")));

    // The right token: in this tab's sessionStorage, never in the URL.
    b.eval("document.querySelector('#token').value = ''; document.querySelector('#token').focus()")
        .unwrap();
    b.insert_text(&a.node.token);
    b.eval("document.querySelector('#login-button').click()")
        .unwrap();
    b.wait_for("!document.querySelector('#app').hidden", wait)
        .expect("logged in");
    let href = b.eval("location.href").unwrap();
    assert!(!href.as_str().unwrap().contains(&a.node.token), "{href}");
    assert_eq!(
        b.eval("sessionStorage.getItem('omnicloud.token')").unwrap(),
        a.node.token.as_str()
    );
    assert_eq!(
        b.eval("document.querySelector('#token').value").unwrap(),
        ""
    );
    // Set once; a reload would lose it.
    b.eval("window.__sameDocument = true").unwrap();

    // The cluster: the node, its roles, the Raft leader, the running Deployment.
    let node_row = format!("#nodes tr[data-key=\"{}\"]", a.node.name);
    let row = b
        .wait_for(
            &format!("{0}.includes('leader') && {0}", text(&node_row)),
            wait,
        )
        .expect("the node is listed as leader");
    let row = row.as_str().unwrap();
    assert!(row.contains("alive") && row.contains("agent"), "{row}");
    let leader = b
        .wait_for(&text("[data-card='Raft leader'] .value"), wait)
        .unwrap();
    assert_eq!(leader, a.node.name.as_str());
    let web_row = "#deployments tr[data-key=\"default/web\"]";
    let ready = format!("{web_row} td.ready");
    b.wait_for(&format!("{} === '1/1'", text(&ready)), wait)
        .unwrap_or_else(|| panic!("web shows 1/1 ready: {:?}", b.eval(&text(web_row))));
    assert!(b
        .eval(&text(web_row))
        .unwrap()
        .as_str()
        .unwrap()
        .contains("Complete"));
    b.wait_for(
        &format!(
            "{}.includes('Running')",
            text("#instance-table tr[data-key=\"default/web-0\"]")
        ),
        wait,
    )
    .expect("web-0 is listed running");
    // Usage arrives with the agent's reports (every second here).
    b.wait_for(
        &format!(
            "/MiB|KiB/.test({})",
            text("#instance-table tr[data-key=\"default/web-0\"] td:nth-child(10)")
        ),
        wait,
    )
    .expect("web-0 shows its memory use");
    shots.push(b.screenshot(&dir.join("02-overview.png")));

    // Scale from the page: the API takes it, the page follows.
    b.eval(&format!(
        "document.querySelector('{web_row} .scale input').focus()"
    ))
    .unwrap();
    b.insert_text("3");
    b.eval(&format!(
        "document.querySelector('{web_row} .scale button').click()"
    ))
    .unwrap();
    eventually(wait, || {
        (a.deployment("web")["spec"]["replicas"] == 3).then_some(())
    })
    .expect("the page's scale reached the API");
    b.wait_for(
        &format!("{} === '3/3'", text(&ready)),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|| {
        panic!(
            "web shows 3/3 ready: {:?}; the API says {}; instances {:?}",
            b.eval(&text(web_row)),
            a.deployment("web")["status"],
            b.eval(&text("#instance-table"))
        )
    });
    b.wait_for(
        &text("#instance-table tr[data-key=\"default/web-2\"]"),
        wait,
    )
    .expect("web-2 is listed");
    shots.push(b.screenshot(&dir.join("03-scaled-from-page.png")));

    // Scale with the CLI: the page follows that too.
    let (ok, _, err) = a.node.cli(&["scale", "deployment/web", "--replicas=2"]);
    assert!(ok, "{err}");
    b.wait_for(
        &format!(
            "{} === '2/2' && !document.querySelector('#instance-table tr[data-key=\"default/web-2\"]')",
            text(&ready)
        ),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|| panic!("web shows 2/2 ready: {:?}", b.eval(&text(web_row))));
    assert_eq!(
        b.eval(&text(&format!("{web_row} td.desired"))).unwrap(),
        "2"
    );

    // The live event stream and the charts carry both decisions.
    let reasons = b
        .wait_for(
            "(() => { const r = [...document.querySelectorAll('#event-list li')].map(li => li.dataset.reason); \
             return r.includes('ScalingUp') && r.includes('DeletingInstance') && r; })()",
            wait,
        )
        .expect("the events list shows the scale up and down");
    let group = ".chart-group[data-key=\"default/web\"]";
    let markers = b
        .wait_for(
            &format!(
                "(() => {{ const m = [...document.querySelectorAll('{group} [data-chart=replicas] .marker-group')].map(g => g.dataset.reason); \
                 return m.includes('ScalingUp') && m.includes('ScalingDown') && m; }})()"
            ),
            wait,
        )
        .unwrap_or_else(|| panic!("scaling markers on the replicas chart; events: {reasons}"));
    assert!(markers.as_array().unwrap().len() >= 2, "{markers}");
    for chart in ["replicas", "cpu", "memory"] {
        let points = b
            .eval(&format!(
                "document.querySelector('{group} [data-chart={chart}] polyline.series').getAttribute('points').split(' ').length"
            ))
            .unwrap();
        assert!(points.as_u64().unwrap() >= 2, "{chart}: {points}");
    }
    assert_eq!(
        b.eval("window.__sameDocument === true").unwrap(),
        true,
        "the page was reloaded"
    );
    shots.push(b.screenshot(&dir.join("04-scaled-from-cli.png")));

    // An HPA on web: its range in the row, its cpu target on the chart. A VirtualMachine
    // (whose kernel no director has): listed, with its replica among the instances.
    let manifests = r#"apiVersion: omnicloud.io/v1
kind: HorizontalPodAutoscaler
metadata: {name: web-hpa}
spec:
  scaleTargetRef: {kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}
---
apiVersion: omnicloud.io/v1
kind: VirtualMachine
metadata: {name: db}
spec:
  replicas: 1
  cpu: {cores: 1}
  memory: {guest: 64Mi}
  kernel: /nonexistent/vmlinux
"#;
    let (code, body) = api.apply(manifests);
    assert_eq!(code, 200, "{body}");
    b.wait_for(
        &format!(
            "{} === 'web-hpa (2-5)'",
            text(&format!("{web_row} td:nth-child(9)"))
        ),
        wait,
    )
    .expect("the HPA shows on its deployment");
    b.wait_for(
        &format!("document.querySelector('{group} [data-chart=cpu] line.target')"),
        wait,
    )
    .expect("the cpu chart marks the HPA target");
    b.wait_for(
        &format!(
            "{}.includes('1/1') || {}.includes('0/1')",
            text("#vm-table tr[data-key=\"default/db\"]"),
            text("#vm-table tr[data-key=\"default/db\"]")
        ),
        wait,
    )
    .expect("the VM is listed");
    b.wait_for(
        &format!(
            "{}.includes('virtualmachine/db')",
            text("#instance-table tr[data-key=\"default/db-0\"]")
        ),
        wait,
    )
    .expect("the VM's replica is an instance");
    shots.push(b.screenshot(&dir.join("05-hpa-and-vm.png")));

    assert!(
        b.exceptions.is_empty(),
        "the page threw: {:?}",
        b.exceptions
    );
    assert!(
        !a.node.log().contains(&a.node.token),
        "the token is in the node log"
    );
    for shot in &shots {
        println!("screenshot: {}", shot.display());
    }
}

/// Every sample of a scrape, by name with labels (`name{a="b"}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_after_a_deployment_ran_are_named_as_the_seed_and_sane() {
    let _serial = serial();
    let Some(a) = AgentNode::start(2) else { return };
    let api = a.node.api();
    assert_eq!(api.apply(&web(2)).0, 200);
    a.wait_ready("web", 2);
    // Usage is sampled after a start; wait until both instances report memory.
    let scrape = eventually(Duration::from_secs(30), || {
        let (_, text) = api.raw_get("/metrics");
        let m = samples(&text);
        let mem = |i: &str| {
            m.get(&format!(
                "agent_instance_memory_working_set_bytes{{namespace=\"default\",instance=\"{i}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
        };
        (mem("web-0") > 0.0 && mem("web-1") > 0.0).then_some((text, m))
    });
    let (text, m) = scrape.expect("both instances report memory");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let get = |name: &str| {
        *m.get(name)
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{text}"))
    };

    // Named as the seed names them.
    assert!(
        get("orchestrator_scaling_decisions_count_total{kind=\"Deployment\",reason=\"ScalingUp\"}")
            >= 1.0
    );
    let starts = get("agent_container_start_duration_seconds_count");
    let sum = get("agent_container_start_duration_seconds_sum");
    assert!(starts >= 2.0, "two containers started: {starts}");
    assert!(
        sum > 0.0 && sum / starts < 60.0,
        "mean start {}s",
        sum / starts
    );
    let buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("agent_container_start_duration_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                *v,
            ))
        })
        .collect();
    let mut buckets = buckets;
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert!(buckets.len() >= 2, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, starts));

    // Instance cpu and memory: within the node and the limits.
    for i in ["web-0", "web-1"] {
        let labels = format!("{{namespace=\"default\",instance=\"{i}\"}}");
        let cpu = get(&format!("agent_instance_cpu_millicores{labels}"));
        let mem = get(&format!("agent_instance_memory_working_set_bytes{labels}"));
        assert!(
            (0.0..=1000.0).contains(&cpu),
            "{i} cpu {cpu}m over its 1-core limit"
        );
        assert!(mem > 0.0 && mem <= 128.0 * 1048576.0, "{i} memory {mem}");
    }
    assert_eq!(get("agent_instances"), 2.0);

    // Node cpu and memory: capacity as announced, use within it. The usage covers the time
    // since the previous scrape, so scrape again.
    let nodes = api.get("/v1/nodes").1;
    let announced = &nodes["items"][0];
    assert_eq!(
        get("node_cpu_capacity_millicores"),
        announced["cpuMillis"].as_f64().unwrap()
    );
    let memory = get("node_memory_capacity_bytes");
    assert_eq!(memory, announced["memoryBytes"].as_f64().unwrap());
    let available = get("node_memory_available_bytes");
    assert!(
        available > 0.0 && available <= memory,
        "{available} of {memory}"
    );
    let again = samples(&api.raw_get("/metrics").1);
    let used = again["node_cpu_usage_millicores"];
    assert!(
        (0.0..=get("node_cpu_capacity_millicores")).contains(&used),
        "node cpu {used}m"
    );
    assert_eq!(get("agent_container_restarts_total"), 0.0);
    assert_eq!(get("orchestrator_pending_instances"), 0.0);
    assert!(get("orchestrator_controller_pass_duration_seconds_count") >= 1.0);

    // Raft and gossip health of a one-node cluster.
    assert_eq!(get("raft_is_leader"), 1.0);
    assert_eq!(get("raft_voters"), 1.0);
    assert!(get("raft_term") >= 1.0);
    let (applied, committed, last) = (
        get("raft_last_applied"),
        get("raft_commit_index"),
        get("raft_last_log_index"),
    );
    assert!(
        applied >= 1.0 && applied <= committed && committed <= last,
        "{applied} {committed} {last}"
    );
    assert!(
        get("raft_leader_id") > 0.0,
        "a node id, not a wrapped integer"
    );
    assert_eq!(get("gossip_members{status=\"alive\"}"), 1.0);
    assert_eq!(get("gossip_members{status=\"down\"}"), 0.0);
    assert_eq!(get("gossip_rejected_packets"), 0.0);
    assert!(
        m.keys().any(|k| k
            .starts_with("api_requests_total{route=\"/v1/apply\",method=\"POST\",status=\"200\"}")),
        "requests are counted by route"
    );
}
