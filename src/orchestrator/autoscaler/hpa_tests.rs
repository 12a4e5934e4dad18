//! The algorithm against Kubernetes' documented cases and its replica calculator tests
//! (`replica_calculator_test.go`: requests 1 cpu unless noted, usage in millicores).

use super::*;
use crate::model::{parse_manifests, Spec};

const NOW: u64 = 10_000_000;

fn t() -> Timing {
    Timing::at(NOW)
}

/// A ready instance that started long ago, requesting `request` millicores.
fn pod(name: &str, request: i64) -> Pod {
    Pod {
        name: name.into(),
        state: PodState::Running,
        ready: true,
        started_ms: Some(NOW - 600_000),
        ready_changed_ms: Some(NOW - 590_000),
        cpu_request_milli: Some(request),
        memory_request_milli: Some(request * 1000),
    }
}

fn pods(n: usize) -> Vec<Pod> {
    (0..n).map(|i| pod(&format!("p{i}"), 1000)).collect()
}

fn samples(levels: &[(usize, i64)]) -> PodMetrics {
    levels
        .iter()
        .map(|(i, v)| {
            (
                format!("p{i}"),
                Sample {
                    value_milli: *v,
                    timestamp_ms: NOW - 1000,
                    window_ms: 15_000,
                },
            )
        })
        .collect()
}

fn all(levels: &[i64]) -> PodMetrics {
    samples(&levels.iter().copied().enumerate().collect::<Vec<_>>())
}

fn cpu(current: i64, target: i64, pods: &[Pod], m: &PodMetrics) -> Proposal {
    resource_utilization_replicas(
        current,
        target,
        ResourceName::Cpu,
        pods,
        m,
        t(),
        Tolerance::default(),
    )
    .unwrap()
}

#[test]
fn documented_case_three_at_80_percent_against_50_is_five() {
    let p = cpu(3, 50, &pods(3), &all(&[800, 800, 800]));
    assert_eq!((p.replicas, p.utilization), (5, Some(80)));
    assert_eq!(p.average_milli, 800);
}

#[test]
fn documented_ratios_double_and_halve() {
    // "200m against 100m doubles; 50m halves" (an AverageValue target).
    let avg = |levels: &[i64]| {
        average_value_replicas(
            4,
            100,
            None,
            &pods(4),
            &all(levels),
            t(),
            Tolerance::default(),
        )
        .unwrap()
        .replicas
    };
    assert_eq!(avg(&[200, 200, 200, 200]), 8);
    assert_eq!(avg(&[50, 50, 50, 50]), 2);
}

#[test]
fn replica_calculator_scale_up_and_down() {
    // TestReplicaCalcScaleUp: 300m, 500m, 700m of 1 cpu at a 30% target -> 5 at 50%.
    let p = cpu(3, 30, &pods(3), &all(&[300, 500, 700]));
    assert_eq!(
        (p.replicas, p.utilization, p.average_milli),
        (5, Some(50), 500)
    );
    // TestReplicaCalcScaleDown: five instances at 28% against 50% -> 3.
    let p = cpu(5, 50, &pods(5), &all(&[100, 300, 500, 250, 250]));
    assert_eq!((p.replicas, p.utilization), (3, Some(28)));
}

#[test]
fn tolerance_keeps_the_count_and_is_configurable() {
    // TestReplicaCalcTolerance: requests 0.9, 1.0, 1.1 cpu, usage 1010m, 1030m, 1020m:
    // 102% of a 100% target is within 10%.
    let ps = vec![pod("p0", 900), pod("p1", 1000), pod("p2", 1100)];
    let p = cpu(3, 100, &ps, &all(&[1010, 1030, 1020]));
    assert_eq!((p.replicas, p.utilization), (3, Some(102)));
    // 109% stays, 111% grows.
    assert_eq!(cpu(10, 100, &pods(10), &all(&[1090; 10])).replicas, 10);
    assert_eq!(cpu(10, 100, &pods(10), &all(&[1110; 10])).replicas, 12);
    assert_eq!(cpu(10, 100, &pods(10), &all(&[910; 10])).replicas, 10);
    assert_eq!(cpu(10, 100, &pods(10), &all(&[890; 10])).replicas, 9);
    // A per-direction tolerance of 1% scales at 102%.
    let tight = Tolerance {
        up: 0.01,
        down: 0.1,
    };
    let p = resource_utilization_replicas(
        10,
        100,
        ResourceName::Cpu,
        &pods(10),
        &all(&[1020; 10]),
        t(),
        tight,
    )
    .unwrap();
    assert_eq!(p.replicas, 11);
}

#[test]
fn unready_instances_count_as_idle_on_scale_up_only() {
    // TestReplicaCalcScaleUpUnreadyLessScale: the unready instance counts as 0% on a
    // scale-up: (0 + 500 + 700) / 3000 = 40% of 30% -> 4, not the 5 the ready two ask.
    let mut ps = pods(3);
    ps[0].ready = false;
    ps[0].ready_changed_ms = None;
    let p = cpu(3, 30, &ps, &all(&[300, 500, 700]));
    assert_eq!((p.replicas, p.utilization, p.unready), (4, Some(60), 1));
    // Scale-down: unready instances are left out; the ready three decide: 33% of 50%.
    let mut ps = pods(5);
    ps[0].ready = false;
    ps[1].ready = false;
    ps[0].ready_changed_ms = None;
    ps[1].ready_changed_ms = None;
    let p = cpu(5, 50, &ps, &all(&[100, 300, 500, 250, 250]));
    assert_eq!((p.replicas, p.utilization), (2, Some(33)));
    // Pending instances are unready too.
    let mut ps = pods(3);
    ps[2].state = PodState::Pending;
    // The two ready ones are at 40% of 30%, but with the pending one idle the three are
    // at 26%: below the target while the sampled ones are above, so nothing changes.
    let p = cpu(3, 30, &ps, &all(&[300, 500]));
    assert_eq!((p.replicas, p.unready), (3, 1));
}

#[test]
fn cpu_of_starting_instances_counts_only_a_window_after_ready() {
    // Started 10 s ago (inside the 5 min initialization), ready 5 s ago: a sample taken
    // 1 s ago over a 15 s window still covers the start, so it is left out.
    let mut ps = pods(2);
    ps[1].started_ms = Some(NOW - 10_000);
    ps[1].ready_changed_ms = Some(NOW - 5_000);
    let p = cpu(2, 50, &ps, &all(&[500, 2000]));
    assert_eq!(p.unready, 1);
    // The other one is exactly at the target; the starting one's 200% does not count.
    assert_eq!(p.replicas, 2);
    // Once a full window has passed since it became ready, it counts.
    ps[1].ready_changed_ms = Some(NOW - 20_000);
    let p = cpu(2, 50, &ps, &all(&[500, 2000]));
    assert_eq!((p.unready, p.replicas), (0, 5));
    // Memory has no initialization rule.
    ps[1].ready_changed_ms = Some(NOW - 5_000);
    let p = resource_utilization_replicas(
        2,
        50,
        ResourceName::Memory,
        &ps,
        &all(&[500_000, 2_000_000]),
        t(),
        Tolerance::default(),
    )
    .unwrap();
    assert_eq!((p.unready, p.replicas), (0, 5));
}

#[test]
fn missing_samples_are_conservative() {
    // TestReplicaCalcMissingMetricsNoChangeEq: one at exactly the target, one missing.
    assert_eq!(cpu(2, 100, &pods(2), &samples(&[(0, 1000)])).replicas, 2);
    // Scale-up: a missing one counts as 0%: (1900 + 0) / 2000 = 95% of 50% -> 4.
    assert_eq!(cpu(2, 50, &pods(2), &samples(&[(0, 1900)])).replicas, 4);
    // With four missing: 1900 / 5000 = 38%, below the target the sampled one is above:
    // crossing the target means no change.
    assert_eq!(cpu(5, 50, &pods(5), &samples(&[(0, 1900)])).replicas, 5);
    // Scale-down: missing ones count as 100% of their request: 4 instances, two at 10%,
    // two missing: (100 + 100 + 1000 + 1000) / 4000 = 55% of 50%: crosses, no change.
    assert_eq!(
        cpu(4, 50, &pods(4), &samples(&[(0, 100), (1, 100)])).replicas,
        4
    );
    // ... of a 20% target: 55% is above, the sampled two are below: crossing, no change.
    assert_eq!(
        cpu(4, 20, &pods(4), &samples(&[(0, 10), (1, 10)])).replicas,
        4
    );
    // Missing ones hold back a scale-down: the sampled one alone (10%) would go to 1 of
    // 4; with three at 100%: 77% of 80% is within tolerance.
    assert_eq!(cpu(4, 80, &pods(4), &samples(&[(0, 100)])).replicas, 4);
    // With a large target (200%) the fallback is the target itself.
    assert_eq!(cpu(3, 200, &pods(3), &samples(&[(0, 100)])).replicas, 3);
    // Pods metric: missing ones use exactly the target on a scale-down.
    let p = average_value_replicas(
        4,
        10_000,
        None,
        &pods(4),
        &samples(&[(0, 1000), (1, 1000)]),
        t(),
        Tolerance::default(),
    )
    .unwrap();
    // (1 + 1 + 10 + 10) / 4 = 5.5 of 10 -> ceil(0.55 x 4) = 3.
    assert_eq!((p.replicas, p.missing), (3, 2));
}

#[test]
fn failed_instances_and_missing_requests() {
    let mut ps = pods(3);
    ps[2].state = PodState::Ignored;
    // The ignored instance's sample is dropped: two at 100% of 50% -> 4.
    assert_eq!(cpu(3, 50, &ps, &all(&[1000, 1000, 5000])).replicas, 4);
    let mut ps = pods(2);
    ps[1].cpu_request_milli = None;
    let e = resource_utilization_replicas(
        2,
        50,
        ResourceName::Cpu,
        &ps,
        &all(&[1000, 1000]),
        t(),
        Tolerance::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "missing request for cpu in instance p1");
    let e = resource_utilization_replicas(
        2,
        50,
        ResourceName::Cpu,
        &pods(2),
        &PodMetrics::new(),
        t(),
        Tolerance::default(),
    )
    .unwrap_err();
    assert!(matches!(e, MetricError::NoMetrics(_)), "{e}");
}

fn spec(yaml_spec: &str) -> HpaSpec {
    let doc = format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: h}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: web}}\n{yaml_spec}"
    );
    match parse_manifests(&doc).unwrap().remove(0).spec {
        Some(Spec::HorizontalPodAutoscaler(s)) => s,
        _ => unreachable!(),
    }
}

const CPU50: &str = "  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n";

/// One sync at `now` with every instance at `level` millicores (requests 1 cpu), and
/// the rescale recorded as the controller does once it is written.
fn sync(s: &HpaSpec, current: i64, level: i64, h: &mut History, now: u64) -> Decision {
    let mut ps = pods(current as usize);
    for p in &mut ps {
        p.started_ms = Some(now - 600_000);
        p.ready_changed_ms = Some(now - 590_000);
    }
    let m: PodMetrics = (0..current as usize)
        .map(|i| {
            (
                format!("p{i}"),
                Sample {
                    value_milli: level,
                    timestamp_ms: now - 1000,
                    window_ms: 15_000,
                },
            )
        })
        .collect();
    let observed = metrics_of(s).iter().map(|_| Ok(m.clone())).collect();
    let d = decide(s, current, &ps, &observed, h, Timing::at(now));
    if d.rescale {
        h.record_scale(&Behavior::of(s), current, d.desired, now);
    }
    d
}

#[test]
fn defaults_limit_scale_up_to_4_pods_or_double_per_15s() {
    let s = spec(&format!("  maxReplicas: 100\n{CPU50}"));
    let b = Behavior::of(&s);
    assert_eq!(b.up.stabilization_s, 0);
    assert_eq!(b.down.stabilization_s, 300);
    assert_eq!(b.up.select, Select::Max);
    let mut h = History::default();
    // 1 instance at 1000%: wants 20; +4 beats +100% -> 5.
    let d = sync(&s, 1, 5000, &mut h, NOW);
    assert_eq!((d.proposed, d.desired), (Some(10), 5));
    assert!(d
        .conditions
        .iter()
        .any(|c| c.kind == "ScalingLimited" && c.status && c.reason == "ScaleUpLimit"));
    assert_eq!(
        d.reason,
        "cpu resource utilization (percentage of request) above target"
    );
    // 5 s later the period started at 1: still at most 5 (no change).
    let d = sync(&s, 5, 5000, &mut h, NOW + 5_000);
    assert_eq!(d.desired, 5);
    assert!(!d.rescale);
    // After 15 s the period starts at 5: +100% -> 10.
    let d = sync(&s, 5, 5000, &mut h, NOW + 16_000);
    assert_eq!(d.desired, 10);
}

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    let s = spec(&format!("  maxReplicas: 10\n{CPU50}"));
    let mut h = History::default();
    // At target: recommendation 4 kept.
    assert_eq!(sync(&s, 4, 500, &mut h, NOW).desired, 4);
    // Load drops to 10%: the recommendation is 1, but 4 was recommended within 300 s.
    let d = sync(&s, 4, 100, &mut h, NOW + 60_000);
    assert_eq!((d.proposed, d.desired), (Some(1), 4));
    assert_eq!(d.conditions[0].reason, "ScaleDownStabilized");
    // Once the 4 is older than 300 s, the highest recent recommendation is 1.
    let d = sync(&s, 4, 100, &mut h, NOW + 301_000);
    assert_eq!(d.desired, 1);
    assert_eq!(d.reason, "All metrics below target");
}

#[test]
fn the_seed_behavior_percent_policies_and_windows() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hpa.yaml");
    let s = parse_manifests(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .remove(0);
    let Some(Spec::HorizontalPodAutoscaler(s)) = s.spec else {
        unreachable!()
    };
    let b = Behavior::of(&s);
    assert_eq!(b.up.stabilization_s, 60);
    assert_eq!(
        b.down.policies,
        vec![Policy {
            kind: PolicyKind::Percent,
            value: 20,
            period_s: 60
        }]
    );
    // Scale-down by 20% per 60 s: 10 -> 8 (int(10 x 0.8)), then 8 -> 6 only 60 s later.
    let mut h = History::default();
    let (d, limited) = limit_rate(&h, &b, 10, 3, 3, 20, NOW);
    assert_eq!((d, limited.reason.as_str()), (8, "ScaleDownLimit"));
    h.record_scale(&b, 10, 8, NOW);
    assert_eq!(limit_rate(&h, &b, 8, 3, 3, 20, NOW + 30_000).0, 8);
    assert_eq!(limit_rate(&h, &b, 8, 3, 3, 20, NOW + 61_000).0, 6);
    // Scale-up: +100% per 60 s; the 60 s stabilization keeps the lowest recent wish.
    let mut h = History::default();
    let (n, _) = stabilize(&mut h, &b, 3, 6, NOW);
    assert_eq!(n, 6);
    let (n, c) = stabilize(&mut h, &b, 3, 9, NOW + 20_000);
    assert_eq!((n, c.reason.as_str()), (6, "ScaleUpStabilized"));
    assert_eq!(limit_rate(&h, &b, 3, 9, 3, 20, NOW).0, 6);
}

#[test]
fn select_policy_min_max_and_disabled() {
    let base = "  maxReplicas: 100\n  behavior:\n    scaleUp:\n      policies:\n      - {type: Pods, value: 4, periodSeconds: 15}\n      - {type: Percent, value: 100, periodSeconds: 15}\n";
    let h = History::default();
    let max = Behavior::of(&spec(base));
    assert_eq!(limit_rate(&h, &max, 10, 50, 1, 100, NOW).0, 20);
    let min = Behavior::of(&spec(&format!("{base}      selectPolicy: Min\n")));
    assert_eq!(limit_rate(&h, &min, 10, 50, 1, 100, NOW).0, 14);
    let off = Behavior::of(&spec(&format!("{base}      selectPolicy: Disabled\n")));
    assert_eq!(limit_rate(&h, &off, 10, 50, 1, 100, NOW).0, 10);
    // Scale-down, Min picks the smallest change (the highest floor).
    let down = "  maxReplicas: 100\n  behavior:\n    scaleDown:\n      selectPolicy: Min\n      policies:\n      - {type: Pods, value: 1, periodSeconds: 30}\n      - {type: Percent, value: 50, periodSeconds: 30}\n";
    let b = Behavior::of(&spec(down));
    assert_eq!(limit_rate(&h, &b, 10, 1, 1, 100, NOW).0, 9);
    // Percent rounds up on the way up: 1 instance +10% is 2, not 1.
    let ten = Behavior::of(&spec("  maxReplicas: 100\n  behavior:\n    scaleUp:\n      policies:\n      - {type: Percent, value: 10, periodSeconds: 15}\n"));
    assert_eq!(limit_rate(&h, &ten, 1, 50, 1, 100, NOW).0, 2);
}

#[test]
fn min_and_max_clamp() {
    let s = spec(&format!("  minReplicas: 2\n  maxReplicas: 6\n{CPU50}"));
    let mut h = History::default();
    // Wants 20 but the max is 6.
    let d = sync(&s, 5, 2000, &mut h, NOW);
    assert_eq!(d.desired, 6);
    assert!(d
        .conditions
        .iter()
        .any(|c| c.reason == "TooManyReplicas" && c.status));
    // Outside the range: brought back first, without metrics.
    let d = sync(&s, 9, 500, &mut h, NOW);
    assert_eq!(
        (d.desired, d.reason.as_str()),
        (6, "Current number of replicas above Spec.MaxReplicas")
    );
    let d = sync(&s, 1, 500, &mut h, NOW);
    assert_eq!(d.desired, 2);
    // A target scaled to zero by hand is left alone.
    let d = sync(&s, 0, 500, &mut h, NOW);
    assert!(!d.rescale);
    assert_eq!(d.conditions[0].reason, "ScalingDisabled");
    // The floor on a scale-down is minReplicas.
    let (n, c) = limit_rate(&History::default(), &Behavior::of(&s), 5, 1, 2, 6, NOW);
    assert_eq!((n, c.reason.as_str()), (2, "TooFewReplicas"));
}

#[test]
fn several_metrics_take_the_largest_and_failures_never_scale_down() {
    let s = spec(
        "  maxReplicas: 50\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n  - type: Pods\n    pods:\n      metric: {name: http_requests_per_second}\n      target: {type: AverageValue, averageValue: 100}\n",
    );
    let ps = pods(4);
    let cpu_at = |v| Ok(all(&[v; 4]));
    let rps_at = |v: i64| Ok(all(&[v * 1000; 4]));
    let run = |observed: Observed| decide(&s, 4, &ps, &observed, &mut History::default(), t());
    // cpu wants 6 (75%), requests want 8 (200/s of 100/s): 8.
    let d = run(vec![cpu_at(750), rps_at(200)]);
    assert_eq!((d.proposed, d.desired), (Some(8), 8));
    assert_eq!(
        d.reason,
        "pods metric http_requests_per_second above target"
    );
    assert_eq!(d.metrics[0].result.as_ref().unwrap().replicas, 6);
    // One metric unavailable, the other scales up: up.
    let d = run(vec![Err("scrape failed".into()), rps_at(200)]);
    assert_eq!(d.desired, 8);
    // One unavailable, the other would scale down: nothing changes.
    let d = run(vec![Err("scrape failed".into()), rps_at(10)]);
    assert!(!d.rescale);
    assert_eq!(d.conditions[0].reason, "InvalidMetricsWouldScaleDown");
    // All unavailable.
    let d = run(vec![Err("a".into()), Err("b".into())]);
    assert!(!d.rescale);
    assert_eq!(d.conditions[0].reason, "FailedGetMetrics");
    assert!(d.conditions[0].message.contains("cpu resource utilization"));
}

#[test]
fn metric_defaults_and_forms() {
    // No metrics: cpu at 80%; the autoscaling/v1 field: its percentage.
    assert_eq!(
        metrics_of(&spec("  maxReplicas: 5\n")),
        vec![Metric::ResourceUtilization {
            resource: ResourceName::Cpu,
            percent: 80
        }]
    );
    let v1 = "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n  scaleTargetRef: {kind: Deployment, name: web}\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: 65\n";
    let Some(Spec::HorizontalPodAutoscaler(s)) = parse_manifests(v1).unwrap().remove(0).spec else {
        unreachable!()
    };
    assert_eq!(
        metrics_of(&s)[0],
        Metric::ResourceUtilization {
            resource: ResourceName::Cpu,
            percent: 65
        }
    );
    let s = spec("  maxReplicas: 5\n  metrics:\n  - type: Resource\n    resource: {name: memory, target: {type: AverageValue, averageValue: 64Mi}}\n  - type: External\n    external:\n      metric: {name: queue}\n      target: {type: Value, value: 3}\n");
    let m = metrics_of(&s);
    assert_eq!(
        m[0],
        Metric::ResourceAverage {
            resource: ResourceName::Memory,
            milli: 64 * 1024 * 1024 * 1000
        }
    );
    assert_eq!(m[0].to_string(), "memory: 67108864");
    assert!(matches!(m[1], Metric::Unsupported { .. }));
    let e = propose(
        &m[1],
        2,
        &pods(2),
        &Ok(all(&[1, 1])),
        t(),
        Tolerance::default(),
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "metric type External is not supported (Resource and Pods are)"
    );
    assert_eq!(format_milli(250), "250m");
    assert_eq!(format_milli(3000), "3");
}
