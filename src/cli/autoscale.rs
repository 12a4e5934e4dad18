//! Horizontal autoscaling verbs in the seed's form:
//!
//! - `omnicloud autoscale configure deployment/NAME --min=3 --max=20 --cpu-percent=70`
//!   creates the workload's HorizontalPodAutoscaler (named after it) or updates the given
//!   fields of the existing one, keeping its other metrics and behavior;
//! - `omnicloud autoscaling status [-o json]`: per HPA its target, bounds, current and
//!   desired replicas, each metric's current value against its target, the last scale;
//! - `omnicloud autoscaling simulate --target deployment/NAME --metric cpu --value 85`:
//!   what the HPA would do if every instance reported that value, computed here with the
//!   controller's own algorithm (`orchestrator::autoscaler::hpa`, pure) on the HPA and
//!   target fetched from the API; it writes nothing.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{object_path, output, split_target, Conn, Format};
use crate::client::{Client, ClientError};
use crate::model::{HpaSpec, Kind, Resource, Spec, API_VERSION};
use crate::orchestrator::autoscaler::hpa::{self, Metric, Pod, PodState, Sample};

#[derive(Debug, Subcommand)]
pub enum AutoscaleCommand {
    /// Create or update the HorizontalPodAutoscaler of a Deployment or StatefulSet.
    Configure {
        #[command(flatten)]
        conn: Conn,
        /// deployment/NAME or statefulset/NAME.
        target: String,
        /// Fewest replicas (default 1 for a new autoscaler).
        #[arg(long)]
        min: Option<i64>,
        /// Most replicas (required for a new autoscaler).
        #[arg(long)]
        max: Option<i64>,
        /// Target average cpu use, percent of the instances' requests (a new autoscaler
        /// without it targets 80%).
        #[arg(long)]
        cpu_percent: Option<i64>,
        /// The autoscaler's name (default: the workload's).
        #[arg(long)]
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum AutoscalingCommand {
    /// Every HorizontalPodAutoscaler: target, bounds, replicas, metrics, last scale.
    Status {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long)]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Predict the replicas for a metric value (changes nothing).
    Simulate {
        #[command(flatten)]
        conn: Conn,
        /// deployment/NAME or statefulset/NAME.
        #[arg(long)]
        target: String,
        /// cpu, memory, or the name of a Pods metric of its autoscaler.
        #[arg(long)]
        metric: String,
        /// Per instance: percent of the request for a Utilization target, else the
        /// metric's value (memory in bytes).
        #[arg(long)]
        value: f64,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum VpaCommand {
    /// A VerticalPodAutoscaler's recommendations beside the target's current requests.
    Describe {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

fn other(msg: impl Into<String>) -> ClientError {
    ClientError::Other(msg.into())
}

/// (kind, name) of a scalable target given as KIND/NAME.
fn scalable(target: &str) -> Result<(Kind, String), ClientError> {
    let (kind, name) = split_target(target, None)?;
    if kind != Kind::Deployment && kind != Kind::StatefulSet {
        return Err(other(format!(
            "{target}: only a deployment or statefulset can be autoscaled"
        )));
    }
    let name = name.ok_or_else(|| other(format!("{target}: expected KIND/NAME")))?;
    Ok((kind, name))
}

pub fn configure(cmd: AutoscaleCommand) -> Result<(), ClientError> {
    let AutoscaleCommand::Configure {
        conn,
        target,
        min,
        max,
        cpu_percent,
        name,
        namespace,
        output: format,
    } = cmd;
    let (kind, workload) = scalable(&target)?;
    for (flag, v) in [
        ("--min", min),
        ("--max", max),
        ("--cpu-percent", cpu_percent),
    ] {
        if v.is_some_and(|v| v < 1) {
            return Err(other(format!(
                "{flag} must be >= 1, got {}",
                v.unwrap_or(0)
            )));
        }
    }
    let ns = namespace.unwrap_or_else(|| "default".into());
    let name = name.unwrap_or_else(|| workload.clone());
    let client = conn.client();
    let path = object_path(Kind::HorizontalPodAutoscaler, Some(&ns), &name);
    let mut object = match client.get_json(&path) {
        Ok(existing) => existing,
        Err(e) if e.status() == Some(404) => {
            let max = max.ok_or_else(|| other("--max is required to create an autoscaler"))?;
            json!({"apiVersion": API_VERSION, "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"maxReplicas": max}})
        }
        Err(e) => return Err(e),
    };
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    let spec = &mut object["spec"];
    spec["scaleTargetRef"] =
        json!({"apiVersion": API_VERSION, "kind": kind.as_str(), "name": workload});
    if let Some(m) = min {
        spec["minReplicas"] = json!(m);
    }
    if let Some(m) = max {
        spec["maxReplicas"] = json!(m);
    }
    if let Some(p) = cpu_percent {
        set_cpu_target(spec, p);
    }
    let result = client.send(
        "POST",
        &format!("/v1/apply?namespace={ns}"),
        "application/json",
        &object.to_string(),
    )?;
    match format {
        Format::Json => output::print_json(&result),
        Format::Yaml => output::print_yaml(&result),
        _ => {
            let action = result["items"][0]["action"]
                .as_str()
                .unwrap_or("configured");
            println!("horizontalpodautoscaler/{name} {action}");
        }
    }
    Ok(())
}

/// Sets the cpu Utilization target: the v1 field if the HPA uses it, else the Resource
/// cpu metric (replaced, or added first).
fn set_cpu_target(spec: &mut Value, percent: i64) {
    if spec.get("targetCPUUtilizationPercentage").is_some() {
        spec["targetCPUUtilizationPercentage"] = json!(percent);
        return;
    }
    let metric = json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}});
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let mut metrics: Vec<Value> = metrics
        .into_iter()
        .filter(|m| !(m["type"] == "Resource" && m["resource"]["name"] == "cpu"))
        .collect();
    metrics.insert(0, metric);
    spec["metrics"] = Value::Array(metrics);
}

/// Each metric of a stored HPA as (name, current, target): "cpu", "45%", "70%".
pub fn metric_rows(o: &Value) -> Vec<(String, String, String)> {
    let Ok(r) = Resource::from_stored(o.clone()) else {
        return Vec::new();
    };
    let Some(Spec::HorizontalPodAutoscaler(spec)) = &r.spec else {
        return Vec::new();
    };
    let current = o["status"]["currentMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    hpa::metrics_of(spec)
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let text = m.to_string();
            let want = text
                .split_once(": ")
                .map_or(text.clone(), |(_, w)| w.to_string());
            let c = current.get(i).map(|c| {
                let body = ["resource", "pods"]
                    .iter()
                    .map(|k| &c[*k]["current"])
                    .find(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(Value::Null);
                match (&body["averageUtilization"], &body["averageValue"]) {
                    (Value::Number(u), _) if matches!(m, Metric::ResourceUtilization { .. }) => {
                        format!("{u}%")
                    }
                    (_, Value::String(v)) => v.clone(),
                    _ => "<unknown>".into(),
                }
            });
            (
                m.name().to_string(),
                c.unwrap_or_else(|| "<unknown>".into()),
                want,
            )
        })
        .collect()
}

/// "cpu: 45%/70%, http_requests_per_second: <unknown>/100" (the TARGETS column).
pub fn targets_text(o: &Value) -> String {
    let rows = metric_rows(o);
    if rows.is_empty() {
        return "<none>".into();
    }
    rows.iter()
        .map(|(n, c, t)| format!("{n}: {c}/{t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(cmd: AutoscalingCommand) -> Result<(), ClientError> {
    match cmd {
        AutoscalingCommand::Status {
            conn,
            namespace,
            all_namespaces,
            output,
        } => status(&conn.client(), namespace, all_namespaces, output),
        AutoscalingCommand::Simulate {
            conn,
            target,
            metric,
            value,
            namespace,
            output,
        } => simulate(
            &conn.client(),
            &target,
            &metric,
            value,
            &namespace.unwrap_or_else(|| "default".into()),
            output,
        ),
    }
}

fn status(
    client: &Client,
    namespace: Option<String>,
    all: bool,
    format: Format,
) -> Result<(), ClientError> {
    let path = if all {
        "/v1/horizontalpodautoscalers".to_string()
    } else {
        format!(
            "/v1/namespaces/{}/horizontalpodautoscalers",
            namespace.unwrap_or_else(|| "default".into())
        )
    };
    let list = client.get_json(&path)?;
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let (spec, st) = (&o["spec"], &o["status"]);
            let metrics: Vec<Value> = metric_rows(o)
                .into_iter()
                .map(|(n, c, t)| json!({"name": n, "current": c, "target": t}))
                .collect();
            json!({
                "name": o["metadata"]["name"],
                "namespace": o["metadata"]["namespace"],
                "target": format!("{}/{}", spec["scaleTargetRef"]["kind"].as_str().unwrap_or("?").to_lowercase(),
                                  spec["scaleTargetRef"]["name"].as_str().unwrap_or("?")),
                "minReplicas": spec["minReplicas"].as_i64().unwrap_or(1),
                "maxReplicas": spec["maxReplicas"],
                "currentReplicas": st["currentReplicas"],
                "desiredReplicas": st["desiredReplicas"],
                "metrics": metrics,
                "lastScaleTime": st["lastScaleTime"],
                "conditions": st["conditions"],
            })
        })
        .collect();
    match format {
        Format::Json => output::print_json(&Value::Array(items)),
        Format::Yaml => output::print_yaml(&Value::Array(items)),
        _ if items.is_empty() => eprintln!("No horizontalpodautoscalers found."),
        _ => {
            let n = |v: &Value| v.as_i64().map_or("-".to_string(), |x| x.to_string());
            let rows = items
                .iter()
                .map(|i| {
                    let metrics = i["metrics"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| {
                            format!(
                                "{}: {}/{}",
                                m["name"].as_str().unwrap_or(""),
                                m["current"].as_str().unwrap_or(""),
                                m["target"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![
                        i["name"].as_str().unwrap_or("").to_string(),
                        i["target"].as_str().unwrap_or("").to_string(),
                        format!("{}/{}", n(&i["minReplicas"]), n(&i["maxReplicas"])),
                        format!("{}/{}", n(&i["currentReplicas"]), n(&i["desiredReplicas"])),
                        metrics,
                        i["lastScaleTime"].as_str().map_or("<never>".into(), |t| {
                            format!("{} ago", output::age(&json!(t)))
                        }),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(
                    &[
                        "NAME",
                        "TARGET",
                        "MIN/MAX",
                        "CURRENT/DESIRED",
                        "METRICS (CURRENT/TARGET)",
                        "LAST SCALE"
                    ],
                    rows
                )
            );
        }
    }
    Ok(())
}

/// `omnicloud vpa describe NAME`.
pub fn vpa(cmd: VpaCommand) -> Result<(), ClientError> {
    let VpaCommand::Describe {
        conn,
        name,
        namespace,
        output: format,
    } = cmd;
    let ns = namespace.unwrap_or_else(|| "default".into());
    let client = conn.client();
    let v = client.get_json(&object_path(Kind::VerticalPodAutoscaler, Some(&ns), &name))?;
    let target = &v["spec"]["targetRef"];
    let (kind, tname) = (
        target["kind"].as_str().unwrap_or("?"),
        target["name"].as_str().unwrap_or("?"),
    );
    let workload = Kind::parse(kind)
        .and_then(|k| client.get_json(&object_path(k, Some(&ns), tname)).ok())
        .unwrap_or(Value::Null);
    let requests = |container: &str, resource: &str| -> String {
        workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .and_then(|c| {
                c["resources"]["requests"][resource]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        c["resources"]["requests"][resource]
                            .as_f64()
                            .map(|n| n.to_string())
                    })
            })
            .unwrap_or_else(|| "<none>".into())
    };
    let recs = v["status"]["recommendation"]["containerRecommendations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mode = v["spec"]["updatePolicy"]["updateMode"]
        .as_str()
        .unwrap_or("Auto");
    if matches!(format, Format::Json | Format::Yaml) {
        let mut out = json!({
            "name": name, "namespace": ns, "target": format!("{}/{tname}", kind.to_lowercase()),
            "updateMode": mode, "recommendations": recs, "conditions": v["status"]["conditions"],
        });
        for r in out["recommendations"].as_array_mut().into_iter().flatten() {
            let c = r["containerName"].as_str().unwrap_or("").to_string();
            r["currentRequests"] =
                json!({"cpu": requests(&c, "cpu"), "memory": requests(&c, "memory")});
        }
        if format == Format::Json {
            output::print_json(&out)
        } else {
            output::print_yaml(&out)
        }
        return Ok(());
    }
    println!("Name:         {name}");
    println!("Namespace:    {ns}");
    println!("Target:       {}/{tname}", kind.to_lowercase());
    println!("Update mode:  {mode} (recommendations only: applying them is not implemented yet)");
    let mut rows = Vec::new();
    for r in &recs {
        let c = r["containerName"].as_str().unwrap_or("");
        for res in ["cpu", "memory"] {
            if r["target"][res].is_null() {
                continue;
            }
            let q = |k: &str| r[k][res].as_str().unwrap_or("-").to_string();
            rows.push(vec![
                c.to_string(),
                res.to_string(),
                requests(c, res),
                q("lowerBound"),
                q("target"),
                q("upperBound"),
                q("uncappedTarget"),
            ]);
        }
    }
    if rows.is_empty() {
        println!("Recommendations: <none yet>");
    } else {
        println!("Recommendations:");
        let t = output::table(
            &[
                "CONTAINER",
                "RESOURCE",
                "REQUEST",
                "LOWER",
                "TARGET",
                "UPPER",
                "UNCAPPED",
            ],
            rows,
        );
        for line in t.lines() {
            println!("  {line}");
        }
    }
    let status: crate::model::status::VpaStatus = crate::model::status::of(v.get("status"));
    for c in status.conditions {
        println!(
            "Condition:    {} {:?} ({}): {}",
            c.kind, c.status, c.reason, c.message
        );
    }
    Ok(())
}

/// The prediction for `value` of `metric` on every one of `current` instances, with the
/// HPA's other metrics left out.
pub fn predict(
    spec: &HpaSpec,
    current: i64,
    metric: &str,
    value: f64,
) -> Result<hpa::Decision, String> {
    let metrics = hpa::metrics_of(spec);
    let Some(i) = metrics.iter().position(|m| m.name() == metric) else {
        let names: Vec<&str> = metrics.iter().map(|m| m.name()).collect();
        return Err(format!(
            "the autoscaler has no metric \"{metric}\"; it has: {}",
            names.join(", ")
        ));
    };
    let now = crate::orchestrator::membership::now_ms();
    // Instances that started long ago, requesting 1 cpu and 1 GB: a percentage of the
    // request is `value` x 10 milli-units.
    let milli = match &metrics[i] {
        Metric::ResourceUtilization { .. } => (value * 10.0).round() as i64,
        _ => (value * 1000.0).round() as i64,
    };
    let pods: Vec<Pod> = (0..current)
        .map(|n| Pod {
            name: format!("i{n}"),
            state: PodState::Running,
            ready: true,
            started_ms: Some(now.saturating_sub(3_600_000)),
            ready_changed_ms: Some(now.saturating_sub(3_600_000)),
            cpu_request_milli: Some(1000),
            memory_request_milli: Some(1000),
        })
        .collect();
    let samples = pods
        .iter()
        .map(|p| {
            let s = Sample {
                value_milli: milli,
                timestamp_ms: now,
                window_ms: 15_000,
            };
            (p.name.clone(), s)
        })
        .collect();
    let mut one = spec.clone();
    if let Some(m) = spec.metrics.as_ref().and_then(|m| m.get(i)) {
        one.metrics = Some(vec![m.clone()]);
    }
    let mut history = hpa::History::default();
    Ok(hpa::decide(
        &one,
        current,
        &pods,
        &vec![Ok(samples)],
        &mut history,
        hpa::Timing::at(now),
    ))
}

fn simulate(
    client: &Client,
    target: &str,
    metric: &str,
    value: f64,
    ns: &str,
    format: Format,
) -> Result<(), ClientError> {
    let (kind, name) = scalable(target)?;
    if !value.is_finite() || value < 0.0 {
        return Err(other(format!("--value must be a number >= 0, got {value}")));
    }
    let list = client.get_json(&format!("/v1/namespaces/{ns}/horizontalpodautoscalers"))?;
    let hpa = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Resource::from_stored(o.clone()).ok())
        .find(|r| {
            matches!(&r.spec, Some(Spec::HorizontalPodAutoscaler(s))
                if s.scale_target_ref.kind == kind.as_str() && s.scale_target_ref.name == name)
        })
        .ok_or_else(|| {
            other(format!(
                "no HorizontalPodAutoscaler scales {target} in namespace {ns}; create one with `omnicloud autoscale configure {target} --max=N`"
            ))
        })?;
    let Some(Spec::HorizontalPodAutoscaler(spec)) = &hpa.spec else {
        unreachable!("filtered above")
    };
    let workload = client.get_json(&object_path(kind, Some(ns), &name))?;
    let current = workload["spec"]["replicas"].as_i64().unwrap_or(1);
    let d = predict(spec, current, metric, value).map_err(other)?;
    let want = d
        .metrics
        .first()
        .map(|m| m.metric.to_string())
        .unwrap_or_default();
    let limited = d.conditions.iter().find(|c| c.kind == "ScalingLimited");
    let behavior = hpa::Behavior::of(spec);
    let v = json!({
        "autoscaler": hpa.metadata.name,
        "target": target,
        "currentReplicas": current,
        "minReplicas": spec.min_replicas(),
        "maxReplicas": spec.max_replicas,
        "metric": metric,
        "value": value,
        "targetValue": want,
        "proposedReplicas": d.proposed,
        "predictedReplicas": d.desired,
        "reason": d.reason,
        "limit": limited.map(|c| json!({"limited": c.status, "reason": c.reason, "message": c.message})),
        "scaleDownStabilizationSeconds": behavior.down.stabilization_s,
    });
    match format {
        Format::Json => output::print_json(&v),
        Format::Yaml => output::print_yaml(&v),
        _ => {
            let direction = match d.desired.cmp(&current) {
                std::cmp::Ordering::Greater => "scale up",
                std::cmp::Ordering::Less => "scale down",
                std::cmp::Ordering::Equal => "no change",
            };
            println!("autoscaler:  {} ({})", hpa.metadata.name, target);
            println!(
                "now:         {current} replicas (min {}, max {})",
                spec.min_replicas(),
                spec.max_replicas
            );
            println!("metric:      {metric} = {value} per instance, target {want}");
            match d.metrics.first().map(|m| &m.result) {
                Some(Ok(p)) => println!(
                    "proposal:    {} replicas from the metric (tolerance ±{})",
                    p.replicas, behavior.up.tolerance
                ),
                Some(Err(e)) => println!("proposal:    none: {e}"),
                None => {}
            }
            if let Some(c) = limited {
                println!("behavior:    {}: {}", c.reason, c.message);
            }
            println!("predicted:   {} replicas ({direction})", d.desired);
            if !d.reason.is_empty() {
                println!("why:         {}", d.reason);
            }
            if d.desired < current {
                println!(
                    "note:        a scale-down waits for {} s of lower recommendations (stabilization window)",
                    behavior.down.stabilization_s
                );
            }
            println!("(simulated with only this metric; nothing was changed)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_manifests;
    use clap::Parser;

    fn seed_hpa() -> HpaSpec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hpa.yaml");
        match parse_manifests(&std::fs::read_to_string(path).unwrap())
            .unwrap()
            .remove(0)
            .spec
        {
            Some(Spec::HorizontalPodAutoscaler(s)) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn simulate_predicts_with_the_controllers_algorithm() {
        let spec = seed_hpa();
        // The seed's HPA: cpu 70%, 3 replicas at 85%: ceil(3 x 85/70) = 4.
        let d = predict(&spec, 3, "cpu", 85.0).unwrap();
        assert_eq!((d.proposed, d.desired), (Some(4), 4));
        // 10 replicas at 280%: wants 40, but the seed's scale-up is +100% per 60 s: 20.
        let d = predict(&spec, 10, "cpu", 280.0).unwrap();
        assert_eq!((d.proposed, d.desired), (Some(40), 20));
        // Requests per second: 300 against 100 -> x3, capped at max 20 from 5 (+100%: 10).
        let d = predict(&spec, 5, "http_requests_per_second", 300.0).unwrap();
        assert_eq!((d.proposed, d.desired), (Some(15), 10));
        // Within tolerance: 74% of 70% is no change.
        assert!(!predict(&spec, 3, "cpu", 74.0).unwrap().rescale);
        let e = predict(&spec, 3, "gpu", 1.0).unwrap_err();
        assert!(e.contains("has: cpu, http_requests_per_second"), "{e}");
    }

    #[test]
    fn seed_forms_parse_and_cpu_targets_merge() {
        let cli = super::super::Cli::try_parse_from([
            "omnicloud",
            "autoscale",
            "configure",
            "deployment/web-frontend",
            "--min=3",
            "--max=20",
            "--cpu-percent=70",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            super::super::Command::Autoscale(AutoscaleCommand::Configure {
                min: Some(3),
                max: Some(20),
                cpu_percent: Some(70),
                ..
            })
        ));
        let cli = super::super::Cli::try_parse_from([
            "omnicloud",
            "autoscaling",
            "simulate",
            "--target",
            "deployment/web-frontend",
            "--metric",
            "cpu",
            "--value",
            "85",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            super::super::Command::Autoscaling(AutoscalingCommand::Simulate { .. })
        ));
        let mut spec = json!({"metrics": [
            {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": 5}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]});
        set_cpu_target(&mut spec, 70);
        assert_eq!(spec["metrics"].as_array().unwrap().len(), 2);
        assert_eq!(
            spec["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(spec["metrics"][1]["pods"]["metric"]["name"], "rps");
        let mut v1 = json!({"targetCPUUtilizationPercentage": 50});
        set_cpu_target(&mut v1, 65);
        assert_eq!(v1, json!({"targetCPUUtilizationPercentage": 65}));
        assert!(scalable("vm/x")
            .unwrap_err()
            .to_string()
            .contains("only a deployment or statefulset"));
    }

    #[test]
    fn metric_rows_pair_status_with_targets() {
        let o = json!({"apiVersion": "omnicloud.io/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "w"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": 5}}}]},
            "status": {"currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 180, "averageValue": "360m"}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}, "error": "down"}}]}});
        assert_eq!(targets_text(&o), "cpu: 180%/50%, rps: <unknown>/5");
    }
}
