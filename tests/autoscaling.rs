//! Horizontal autoscaling end to end, with real containers (root and the test images;
//! skips loudly elsewhere, fails under OMNICLOUD_REQUIRE_ALL=1): the toolbox http
//! workload under load through its cpu-burning endpoint scales up by cpu, scales down
//! after a short stabilization window once the load stops, scales by a custom metric
//! scraped from its `/metrics`, and a scale past a ResourceQuota is refused and reported;
//! a VerticalPodAutoscaler recommends from the same usage history.
//! Windows are shortened through the config and the HPAs' `behavior`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, TestNode};
use serde_json::Value;

/// The node with the agent role, its bridge removed and containers deleted on drop.
struct AgentNode {
    node: TestNode,
    bridge: String,
    _config: tempfile::NamedTempFile,
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

fn start() -> Option<AgentNode> {
    start_as(40)
}

/// Own bridge and cluster CIDR per tag, so the tests of this file run side by side.
fn start_as(tag: u8) -> Option<AgentNode> {
    let layout = common::images::layout()?;
    let bridge = format!("octest{tag}");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[network]\ncluster_cidr = \"10.{}.0.0/16\"\nbridge = \"{bridge}\"\n\
             [agent]\nusage_report_ms = 500\n\
             [autoscaler]\nsync_period_ms = 1000\nmetric_window_ms = 2000\n",
            90 + tag
        ),
    )
    .unwrap();
    let node = TestNode::start_with(
        "hpa",
        &[
            "--roles",
            "auto",
            "--config",
            config.path().to_str().unwrap(),
        ],
    );
    common::images::import(&node.dir, &layout);
    Some(AgentNode {
        node,
        bridge,
        _config: config,
    })
}

fn deployment(name: &str) -> String {
    format!(
        r#"apiVersion: omnicloud.io/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: http
        image: toolbox:latest
        args: [workload, http, --port, "8080"]
        ports: [{{name: http, containerPort: 8080}}]
        resources:
          requests: {{cpu: 200m, memory: 32Mi}}
          limits: {{cpu: "1", memory: 128Mi}}
        readinessProbe:
          httpGet: {{path: /health, port: http}}
          periodSeconds: 1
"#
    )
}

/// cpu at 50% of requests, 1..3 replicas; a 3 s scale-down stabilization window.
const CPU_HPA: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: burn
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {type: Utilization, averageUtilization: 50}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 3
      policies:
      - {type: Percent, value: 100, periodSeconds: 1}
"#;

/// Recommendations for the same workload from its usage history.
const VPA: &str = r#"apiVersion: omnicloud.io/v1
kind: VerticalPodAutoscaler
metadata:
  name: burn
spec:
  targetRef: {apiVersion: omnicloud.io/v1, kind: Deployment, name: burn}
  updatePolicy: {updateMode: "Off"}
"#;

/// The seed's form with a Pods metric scraped from the workload: 5 requests/s each.
const RPS_HPA: &str = r#"apiVersion: omnicloud.io/v1
kind: HorizontalPodAutoscaler
metadata:
  name: rps
spec:
  scaleTargetRef: {apiVersion: omnicloud.io/v1, kind: Deployment, name: rps}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Pods
    pods:
      metric: {name: http_requests_per_second}
      target: {type: AverageValue, averageValue: 5}
"#;

fn get(a: &AgentNode, path: &str) -> Value {
    a.node.api().get(path).1
}

fn spec_replicas(a: &AgentNode, name: &str) -> i64 {
    get(a, &format!("/v1/namespaces/default/deployments/{name}"))["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

fn hpa(a: &AgentNode, name: &str) -> Value {
    get(
        a,
        &format!("/v1/namespaces/default/horizontalpodautoscalers/{name}"),
    )
}

/// The IP of a ready instance of `owner`.
fn ready_ip(a: &AgentNode, owner: &str) -> String {
    eventually(Duration::from_secs(60), || {
        let v = get(
            a,
            &format!("/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3D{owner}"),
        );
        v["items"].as_array()?.iter().find_map(|i| {
            let s = &i["status"];
            (s["ready"] == true).then(|| s["ip"].as_str().map(str::to_string))?
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no ready instance of {owner}: {:#}",
            get(a, "/v1/namespaces/default/instances")
        )
    })
}

/// Requests to `url` in a loop until the flag drops; `pause` between them.
fn load(url: String, pause: Duration, on: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while on.load(Ordering::Relaxed) {
            let _ = ureq::get(&url).timeout(Duration::from_secs(5)).call();
            std::thread::sleep(pause);
        }
    })
}

fn hpa_events(a: &AgentNode, name: &str) -> Vec<Value> {
    get(a, "/v1/namespaces/default/events")["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["spec"]["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
                && e["spec"]["involvedObject"]["name"] == name
        })
        .cloned()
        .collect()
}

fn has_event(a: &AgentNode, name: &str, reason: &str, text: &str) -> Option<String> {
    hpa_events(a, name).iter().find_map(|e| {
        let m = e["spec"]["message"].as_str()?;
        (e["spec"]["reason"] == reason && m.contains(text)).then(|| m.to_string())
    })
}

#[test]
fn cpu_load_scales_up_then_down_and_a_custom_metric_scales_too() {
    let Some(a) = start() else { return };
    let api = a.node.api();
    for doc in [deployment("burn"), CPU_HPA.to_string(), VPA.to_string()] {
        let (code, body) = api.apply(&doc);
        assert_eq!(code, 200, "{body}");
    }
    let ip = ready_ip(&a, "burn");

    // Load: one core burned in web-0 without pause, 8x its 200m request.
    let on = Arc::new(AtomicBool::new(true));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            load(
                format!("http://{ip}:8080/burn?ms=500"),
                Duration::ZERO,
                on.clone(),
            )
        })
        .collect();
    let up = eventually(Duration::from_secs(90), || {
        (spec_replicas(&a, "burn") == 3).then_some(())
    });
    assert!(
        up.is_some(),
        "never scaled to 3; hpa: {:#}\nevents: {:#?}",
        hpa(&a, "burn"),
        hpa_events(&a, "burn")
    );
    // The event and the status follow the scale in the same sync.
    let msg = eventually(Duration::from_secs(10), || {
        has_event(&a, "burn", "SuccessfulRescale", "above target")
    })
    .expect("a SuccessfulRescale event for the scale-up");
    assert!(
        msg.contains("cpu resource utilization (percentage of request) above target")
            && msg.contains("/50% ("),
        "the event gives its inputs: {msg}"
    );
    // The status: current and desired replicas and metrics, beside the target.
    let st = eventually(Duration::from_secs(10), || {
        let st = hpa(&a, "burn")["status"].clone();
        (st["desiredReplicas"] == 3).then_some(st)
    })
    .expect("the status shows the desired replicas");
    let cpu = &st["currentMetrics"][0]["resource"];
    assert_eq!(cpu["name"], "cpu");
    assert_eq!(cpu["target"]["averageUtilization"], 50);
    assert!(
        cpu["current"]["averageUtilization"]
            .as_i64()
            .is_some_and(|u| u > 50),
        "{st:#}"
    );
    assert!(st["lastScaleTime"].is_string(), "{st:#}");
    let (ok, out, err) = a.node.cli(&["autoscaling", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("deployment/burn") && out.contains("1/3") && out.contains("cpu: "),
        "{out}"
    );

    // The VPA recommends from the same history: under the burst of ~1000m its 90th
    // percentile rises far above the 25m pod minimum.
    let cpu = eventually(Duration::from_secs(30), || {
        let v = get(&a, "/v1/namespaces/default/verticalpodautoscalers/burn");
        let t = v["status"]["recommendation"]["containerRecommendations"][0]["target"]["cpu"]
            .as_str()?
            .strip_suffix('m')?
            .parse::<u64>()
            .ok()?;
        (t > 100).then_some(t)
    });
    assert!(
        cpu.is_some(),
        "no cpu recommendation above 100m under load; vpa: {:#}",
        get(&a, "/v1/namespaces/default/verticalpodautoscalers/burn")
    );
    let (ok, out, err) = a.node.cli(&["vpa", "describe", "burn"]);
    assert!(ok, "{err}");
    let row = out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.starts_with(&["http", "cpu", "200m"])
    });
    assert!(row && out.contains("RecommendationProvided True"), "{out}");

    // The load stops: after the 3 s window the count falls back to the minimum.
    on.store(false, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    let down = eventually(Duration::from_secs(90), || {
        (spec_replicas(&a, "burn") == 1).then_some(())
    });
    assert!(
        down.is_some(),
        "never scaled back to 1; hpa: {:#}",
        hpa(&a, "burn")
    );
    assert!(eventually(Duration::from_secs(10), || {
        has_event(&a, "burn", "SuccessfulRescale", "All metrics below target")
    })
    .is_some());
    let (ok, out, err) = a.node.cli(&["scaling", "history", "--component", "burn"]);
    assert!(ok, "{err}");
    assert!(
        out.matches("SuccessfulRescale").count() >= 2,
        "scaling history shows both decisions: {out}"
    );
    let decisions = api
        .metric("orchestrator_scaling_decisions_count_total{kind=\"HorizontalPodAutoscaler\",reason=\"SuccessfulRescale\"}")
        .unwrap_or(0.0);
    assert!(decisions >= 2.0, "decisions counted: {decisions}");

    // A custom metric: requests per second scraped from the workload's /metrics.
    for doc in [deployment("rps"), RPS_HPA.to_string()] {
        let (code, body) = api.apply(&doc);
        assert_eq!(code, 200, "{body}");
    }
    let ip = ready_ip(&a, "rps");
    let on = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            load(
                format!("http://{ip}:8080/"),
                Duration::from_millis(20),
                on.clone(),
            )
        })
        .collect();
    let up = eventually(Duration::from_secs(60), || {
        (spec_replicas(&a, "rps") == 2).then_some(())
    });
    assert!(
        up.is_some(),
        "never scaled by requests per second; hpa: {:#}",
        hpa(&a, "rps")
    );
    let pods = eventually(Duration::from_secs(10), || {
        let st = hpa(&a, "rps")["status"].clone();
        (st["desiredReplicas"] == 2).then(|| st["currentMetrics"][0]["pods"].clone())
    })
    .expect("the status shows the desired replicas");
    assert_eq!(
        pods["metric"]["name"], "http_requests_per_second",
        "{pods:#}"
    );
    assert!(pods["current"]["averageValue"].is_string(), "{pods:#}");

    // A quota of 3 instances (burn 1 + rps 2) refuses the next scale-up; the refusal is
    // an event and a condition. The CLI raises the maximum, keeping the Pods metric.
    let quota = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: few}\nspec:\n  hard: {pods: \"3\"}\n";
    assert_eq!(api.apply(quota).0, 200);
    let (ok, out, err) = a
        .node
        .cli(&["autoscale", "configure", "deployment/rps", "--max=4"]);
    assert!(
        ok && out.contains("horizontalpodautoscaler/rps"),
        "{out}{err}"
    );
    assert_eq!(
        hpa(&a, "rps")["spec"]["metrics"][0]["type"],
        "Pods",
        "configure kept the metric"
    );
    let refused = eventually(Duration::from_secs(60), || {
        has_event(&a, "rps", "FailedRescale", "exceeded quota")
    });
    assert!(
        refused.is_some(),
        "no FailedRescale event; events: {:#?}",
        hpa_events(&a, "rps")
    );
    assert_eq!(spec_replicas(&a, "rps"), 2);
    let able = eventually(Duration::from_secs(30), || {
        let st = hpa(&a, "rps")["status"].clone();
        st["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "AbleToScale" && c["reason"] == "FailedUpdateScale")
            .cloned()
    });
    assert!(able.is_some_and(|c| c["status"] == "False"));
    on.store(false, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    // Simulation predicts from the same algorithm and changes nothing.
    let (ok, out, err) = a.node.cli(&[
        "autoscaling",
        "simulate",
        "--target",
        "deployment/burn",
        "--metric",
        "cpu",
        "--value",
        "85",
    ]);
    assert!(ok, "{err}");
    // 1 replica at 85% of a 50% target: ceil(1.7) = 2.
    assert!(out.contains("predicted:   2 replicas (scale up)"), "{out}");
    assert_eq!(spec_replicas(&a, "burn"), 1);
    let (ok, _, err) = a.node.cli(&[
        "autoscaling",
        "simulate",
        "--target",
        "deployment/burn",
        "--metric",
        "memory",
        "--value",
        "85",
    ]);
    assert!(!ok && err.contains("has no metric \"memory\""), "{err}");
}

/// VPA in Auto mode with real containers: instances created with too small a request are
/// evicted one at a time and come back with the recommendation (here held up by the
/// policy's minAllowed), and the evictions are scaling decisions with their inputs.
#[test]
fn vpa_auto_replaces_undersized_instances_with_the_recommendation() {
    let Some(a) = start_as(41) else { return };
    let d = deployment("sized")
        .replace("replicas: 1", "replicas: 2")
        .replace(
            "requests: {cpu: 200m, memory: 32Mi}",
            "requests: {cpu: 20m, memory: 32Mi}",
        );
    let (code, body) = a.node.api().apply(&d);
    assert_eq!(code, 200, "{body}");
    let vpa = r#"apiVersion: autoscaling.k8s.io/v1
kind: VerticalPodAutoscaler
metadata: {name: sized}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: sized}
  updatePolicy: {updateMode: Auto}
  resourcePolicy:
    containerPolicies:
    - {containerName: http, minAllowed: {cpu: 300m}, controlledResources: [cpu]}
"#;
    let (code, body) = a.node.api().apply(vpa);
    assert_eq!(code, 200, "{body}");
    let cpu_requests = |a: &AgentNode| -> Vec<String> {
        let list = get(
            a,
            "/v1/namespaces/default/instances?labelSelector=omnicloud.io/owner%3Dsized",
        );
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["status"]["ready"] == true)
            .map(|i| {
                i["spec"]["pod"]["containers"][0]["resources"]["requests"]["cpu"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let resized = eventually(Duration::from_secs(90), || {
        let r = cpu_requests(&a);
        (r.len() == 2 && r.iter().all(|c| c == "300m")).then_some(r)
    });
    assert!(
        resized.is_some(),
        "instances not resized: {:?}; vpa: {}",
        cpu_requests(&a),
        get(&a, "/v1/namespaces/default/verticalpodautoscalers/sized")
    );
    // A workload's metrics endpoint through its node's API (how the leader reads custom
    // metrics of instances on other nodes).
    let (code, text) = a
        .node
        .api()
        .raw_get("/v1/namespaces/default/instances/sized-0/scrape?port=8080&path=/metrics");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("http_requests_per_second"), "{text}");
    let (code, text) = a
        .node
        .api()
        .raw_get("/v1/namespaces/default/instances/sized-0/scrape?port=8080&path=metrics");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("must start with /"), "{text}");
    let (ok, out, err) = a.node.cli(&["scaling", "history", "--component", "sized"]);
    assert!(ok, "{err}");
    assert!(out.contains("EvictedByVPA"), "{out}");
    assert!(out.contains("outside the recommended"), "{out}");
}
