//! Model tests: every fixture parses and round-trips; every bad input names its field.

use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const FIXTURES: [(&str, Kind); 17] = [
    ("deployment.yaml", Kind::Deployment),
    ("statefulset.yaml", Kind::StatefulSet),
    ("hpa.yaml", Kind::HorizontalPodAutoscaler),
    ("vpa.yaml", Kind::VerticalPodAutoscaler),
    ("nodeclass.yaml", Kind::NodeClass),
    ("priorityclass.yaml", Kind::PriorityClass),
    ("resourcequota.yaml", Kind::ResourceQuota),
    ("clusterautoscaler.yaml", Kind::ClusterAutoscaler),
    ("clusterscalingpolicy.yaml", Kind::ClusterScalingPolicy),
    ("topology-deployment.yaml", Kind::Deployment),
    ("virtualmachine.yaml", Kind::VirtualMachine),
    ("k8s-deployment.yaml", Kind::Deployment),
    ("k8s-hpa.yaml", Kind::HorizontalPodAutoscaler),
    ("k8s-configmap.yaml", Kind::ConfigMap),
    ("k8s-secret.yaml", Kind::Secret),
    ("k8s-config-deployment.yaml", Kind::Deployment),
    (
        "predictivebootstrapscaler.yaml",
        Kind::PredictiveBootstrapScaler,
    ),
];

#[test]
fn every_fixture_parses_and_round_trips() {
    for (file, kind) in FIXTURES {
        let text = fixture(file);
        let parsed = parse_manifests(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(parsed.len(), 1, "{file}");
        assert_eq!(parsed[0].kind, kind, "{file}");
        let written: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            parsed[0].to_value(),
            written,
            "{file} must read back exactly as written"
        );
    }
}

#[test]
fn multi_document_and_json_bodies() {
    let body = format!(
        "{}\n---\n{}\n---\n",
        fixture("deployment.yaml"),
        fixture("hpa.yaml")
    );
    let docs = parse_manifests(&body).unwrap();
    assert_eq!(
        docs.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [Kind::Deployment, Kind::HorizontalPodAutoscaler]
    );
    let json = serde_json::to_string(&docs[0].to_value()).unwrap();
    assert_eq!(parse_manifests(&json).unwrap()[0], docs[0]);
    let list = format!("{{\"kind\":\"List\",\"items\":[{json},{json}]}}");
    assert_eq!(parse_manifests(&list).unwrap().len(), 2);
    assert!(parse_manifests("").unwrap().is_empty());
}

#[test]
fn accessors_supply_defaults_without_storing_them() {
    let d = &parse_manifests(&fixture("deployment.yaml")).unwrap()[0];
    let Some(Spec::Deployment(spec)) = &d.spec else {
        panic!()
    };
    assert_eq!(spec.replicas(), 10);
    assert_eq!(spec.strategy_type(), "RollingUpdate");
    assert!(spec.strategy.is_none());
    let c = &spec.template.spec.containers[0];
    let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(
        (
            req.cpu.as_ref().unwrap().millis(),
            req.memory.as_ref().unwrap().bytes()
        ),
        (100, 128 << 20)
    );
    let mut d = d.clone();
    d.set_replicas(15).unwrap();
    assert_eq!(d.replicas(), Some(15));
    assert_eq!(d.set_replicas(-1).unwrap_err().field, "spec.replicas");
}

fn error_of(body: &str) -> ModelError {
    parse_manifests(body).expect_err("must be rejected")
}

#[test]
fn bad_inputs_name_their_field() {
    let good = fixture("deployment.yaml");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace("omnicloud.io/v1", "gizmo.io/v9"),
            "apiVersion",
            "expected one of omnicloud.io/v1, apps/v1",
        ),
        (
            good.replace("kind: Deployment", "kind: Deploymint"),
            "kind",
            "unsupported kind \"Deploymint\"",
        ),
        (
            good.replace("kind: Deployment\n", ""),
            "kind",
            "is required",
        ),
        (
            good.replace("  name: web-frontend\n", ""),
            "metadata.name",
            "is required",
        ),
        (
            good.replace("name: web-frontend\nspec", "name: Web_Frontend\nspec"),
            "metadata.name",
            "lowercase",
        ),
        (
            good.replace("cpu: 100m", "cpu: lots"),
            "spec.template.spec.containers[0].resources.requests.cpu",
            "invalid cpu quantity \"lots\"",
        ),
        (
            good.replace("memory: 128Mi", "memory: 12XB"),
            "spec.template.spec.containers[0].resources.requests.memory",
            "invalid memory quantity",
        ),
        (
            good.replace(
                "      containers:",
                "      dnsPolicy: Cluster\n      containers:",
            ),
            "spec.template.spec.dnsPolicy",
            "\"Cluster\" is not ClusterFirst",
        ),
        (
            good.replace(
                "      containers:",
                "      dnsPolicy: None\n      containers:",
            ),
            "spec.template.spec.dnsPolicy",
            "None needs dnsConfig",
        ),
        (
            good.replace("replicas: 10", "replicas: -3"),
            "spec.replicas",
            "must be >= 0, got -3",
        ),
        (
            good.replace("        resources:", "        resorces:"),
            "spec.template.spec.containers[0].resorces",
            "unknown field \"resorces\"",
        ),
        (
            good.replace("cpu: 100m", "cpu: 900m"),
            "spec.template.spec.containers[0].resources.requests.cpu",
            "above the limit",
        ),
        (
            good.replace(
                "      app: web-frontend\n  template",
                "      app: other\n  template",
            ),
            "spec.selector",
            "does not match",
        ),
        (
            good.replace("image: nginx:latest", "image: \"\""),
            "spec.template.spec.containers[0].image",
            "is required",
        ),
        (
            good.replace("spec:\n  replicas", "spec:\n  replica: 3\n  replicas"),
            "spec.replica",
            "unknown field",
        ),
    ];
    for (body, field, mention) in cases {
        let e = error_of(&body);
        assert_eq!(e.field, field, "{e}");
        assert!(
            e.message.contains(mention),
            "{field}: {:?} should mention {mention:?}",
            e.message
        );
    }

    let hpa = fixture("hpa.yaml");
    let e = error_of(&hpa.replace("minReplicas: 3", "minReplicas: 30"));
    assert_eq!(e.field, "spec.minReplicas");
    let e = error_of(&hpa.replace("averageUtilization: 70", "averageUtilization: 0"));
    assert_eq!(
        e.field,
        "spec.metrics[0].resource.target.averageUtilization"
    );
    let e = error_of(&fixture("vpa.yaml").replace("\"Auto\"", "\"Sometimes\""));
    assert_eq!(e.field, "spec.updatePolicy.updateMode");
    let e = error_of(&fixture("clusterautoscaler.yaml").replace("minSize: 3", "minSize: 30"));
    assert_eq!(e.field, "spec.nodeGroups[0].minSize");
    let e = error_of(
        &fixture("clusterautoscaler.yaml").replace("decisionTime: 60s", "decisionTime: soon"),
    );
    assert_eq!(
        e.field,
        "spec.nodeGroups[0].scalingPolicy.scaleUp.decisionTime"
    );
    let e = error_of(&fixture("clusterscalingpolicy.yaml").replace("1:100", "one-per-hundred"));
    assert_eq!(e.field, "spec.bootstrapLimits.orchestratorRatio");
    let e = error_of(&fixture("virtualmachine.yaml").replace("cores: 2", "cores: 0"));
    assert_eq!(e.field, "spec.cpu.cores");
    let e = error_of(&fixture("k8s-deployment.yaml").replace(
        "periodSeconds: 2",
        "periodSeconds: 2\n          exec:\n            command: [\"true\"]",
    ));
    assert_eq!(e.field, "spec.template.spec.containers[0].readinessProbe");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let e = error_of("apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: [unclosed\n");
    assert_eq!(e.field, "");
    assert!(
        e.message.contains("line") && e.message.contains("column"),
        "{e}"
    );
    let e = error_of("{\n  \"apiVersion\": \"omnicloud.io/v1\",\n  oops\n}");
    assert!(e.message.contains("line 3"), "{e}");
    let e = error_of("just a string");
    assert!(e.message.contains("expected an object"), "{e}");
    let e = error_of(&format!(
        "{}\n---\nkind: Gizmo\napiVersion: v1\n",
        fixture("deployment.yaml")
    ));
    assert!(e.message.contains("document 2"), "{e}");
}

#[test]
fn kinds_and_names() {
    for (s, k) in [
        ("deploy", Kind::Deployment),
        ("Deployments", Kind::Deployment),
        ("sts", Kind::StatefulSet),
        ("hpa", Kind::HorizontalPodAutoscaler),
        ("vm", Kind::VirtualMachine),
        ("ns", Kind::Namespace),
        ("clusterscalingpolicies", Kind::ClusterScalingPolicy),
        ("priorityclass", Kind::PriorityClass),
    ] {
        assert_eq!(Kind::parse(s), Some(k), "{s}");
    }
    assert_eq!(Kind::parse("gizmo"), None);
    assert!(validate_name("n", "web-1.prod").is_ok());
    for bad in ["", "Web", "-web", "web-", "web_1", &"a".repeat(254)] {
        assert!(validate_name("n", bad).is_err(), "{bad}");
    }
    let ns =
        parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n").unwrap();
    assert_eq!(ns[0].spec, None);
    let pc = parse_manifests("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\n").unwrap();
    assert!(matches!(&pc[0].spec, Some(Spec::PriorityClass(p)) if p.value == 1000));
}

#[test]
fn hpa_forms_and_bad_hpa_fields() {
    // The seed's omnicloud.io/v1, autoscaling/v2 and autoscaling/v1 all parse.
    let v2 = fixture("k8s-hpa.yaml");
    let v1 = "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 2\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: 60\n";
    for doc in [fixture("hpa.yaml"), v2.clone(), v1.to_string()] {
        assert_eq!(
            parse_manifests(&doc).unwrap()[0].kind,
            Kind::HorizontalPodAutoscaler
        );
    }
    let cases = [
        (
            v2.replace("kind: Deployment", "kind: Service"),
            "spec.scaleTargetRef.kind",
        ),
        (
            v2.replace("name: cpu", "name: gpu"),
            "spec.metrics[0].resource.name",
        ),
        (
            fixture("hpa.yaml").replace("type: AverageValue", "type: Utilization"),
            "spec.metrics[1].pods.target.type",
        ),
        (
            v1.replace("60", "0"),
            "spec.targetCPUUtilizationPercentage",
        ),
        (
            format!("{v1}  metrics: [{{type: Resource, resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 5}}}}}}]\n"),
            "spec.targetCPUUtilizationPercentage",
        ),
        (
            v2.replace("selectPolicy: Min", "selectPolicy: Min\n      tolerance: 1.5"),
            "spec.behavior.scaleDown.tolerance",
        ),
        (
            v2.replace("selectPolicy: Min", "selectPolicy: Most"),
            "spec.behavior.scaleDown.selectPolicy",
        ),
        (
            v2.replace("periodSeconds: 30", "periodSeconds: 0"),
            "spec.behavior.scaleDown.policies[0].periodSeconds",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(error_of(&body).field, field, "{body}");
    }
}

#[test]
fn bad_cluster_autoscaler_and_schedule_fields_are_named() {
    let ca = fixture("clusterautoscaler.yaml");
    let pbs = fixture("predictivebootstrapscaler.yaml");
    let cases = [
        (
            ca.replace("decisionTime: 60s", "decisionTime: soon"),
            "spec.nodeGroups[0].scalingPolicy.scaleUp.decisionTime",
        ),
        (
            ca.replace("emptyTime: 600s", "emptyTime: 600s\n        cooldown: x"),
            "spec.nodeGroups[0].scalingPolicy.scaleDown.cooldown",
        ),
        (
            ca.replace("minSize: 3", "minSize: 30"),
            "spec.nodeGroups[0].minSize",
        ),
        (
            ca.replace("  - name: general-purpose", "  - name: Bad_Name"),
            "spec.nodeGroups[0].name",
        ),
        (
            pbs.replace("Monday-Friday", "Monday-Funday"),
            "spec.schedule[0].dayOfWeek",
        ),
        (
            pbs.replace("\"07:30\"", "\"7.30\""),
            "spec.schedule[0].timeStart",
        ),
        (
            pbs.replace("\"09:30\"", "\"07:30\""),
            "spec.schedule[0].timeEnd",
        ),
        (
            pbs.replace("targetReplicas: 5", "targetReplicas: 0"),
            "spec.schedule[0].bootstrapAction.orchestrators.targetReplicas",
        ),
        (
            pbs.replace("preScaleMinutes: 25", "preScaleMinutes: -1"),
            "spec.schedule[0].bootstrapAction.vmPool.preScaleMinutes",
        ),
        (
            pbs.replace(
                "      vmPool:",
                "      targets: [{kind: Deployment, name: web, minReplicas: 2}]\n      vmPool:",
            ),
            "spec.schedule[0].bootstrapAction.targets[0].replicas",
        ),
        (
            pbs.replace(
                "      vmPool:",
                "      targets: [{kind: Service, name: web, replicas: 2}]\n      vmPool:",
            ),
            "spec.schedule[0].bootstrapAction.targets[0].kind",
        ),
        (
            pbs.replace("1:200", "one per 200"),
            "spec.metricTriggers[0].bootstrapAction.orchestratorRatio",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(error_of(&body).field, field, "{body}");
    }
}

// Regressions of issue 13: each case was accepted (or took the node down) before.

fn kinds_with_replicas() -> [(String, &'static str); 3] {
    [
        (fixture("deployment.yaml"), "replicas: 10"),
        (fixture("statefulset.yaml"), "replicas: 3"),
        (fixture("virtualmachine.yaml"), "replicas: 2"),
    ]
}

#[test]
fn replicas_past_the_maximum_are_refused_at_apply_and_at_scale() {
    for (text, written) in kinds_with_replicas() {
        assert!(text.contains(written), "fixture changed: {written}");
        for n in [2_147_483_648_i64, i64::MAX, limits::MAX_REPLICAS + 1] {
            let e = error_of(&text.replace(written, &format!("replicas: {n}")));
            assert_eq!(
                e.to_string(),
                format!("spec.replicas: must be at most 10000, got {n}")
            );
        }
        let mut r = parse_manifests(&text).unwrap().remove(0);
        let e = r.set_replicas(2_147_483_648).unwrap_err();
        assert_eq!(e.field, "spec.replicas");
        assert!(e.message.contains("at most 10000"), "{e}");
        r.set_replicas(limits::MAX_REPLICAS).unwrap();
        assert_eq!(r.replicas(), Some(limits::MAX_REPLICAS));
    }
}

#[test]
fn every_other_count_is_bounded_by_field() {
    let good = fixture("deployment.yaml");
    let with_strategy = |s: &str| good.replace("  selector:", &format!("{s}\n  selector:"));
    let hpa = fixture("hpa.yaml");
    let ca = fixture("clusterautoscaler.yaml");
    let cases: Vec<(String, &str)> = vec![
        (
            with_strategy("  strategy: {rollingUpdate: {maxSurge: 2147483648}}"),
            "spec.strategy.rollingUpdate.maxSurge",
        ),
        (
            with_strategy("  strategy: {rollingUpdate: {maxUnavailable: \"92233720368547758%\"}}"),
            "spec.strategy.rollingUpdate.maxUnavailable",
        ),
        (
            with_strategy("  revisionHistoryLimit: 1000000"),
            "spec.revisionHistoryLimit",
        ),
        (
            with_strategy("  progressDeadlineSeconds: 9223372036854775807"),
            "spec.progressDeadlineSeconds",
        ),
        (
            hpa.replace("maxReplicas: 20", "maxReplicas: 9223372036854775807"),
            "spec.maxReplicas",
        ),
        (
            ca.replace("maxSize: 20", "maxSize: 2147483648"),
            "spec.nodeGroups[0].maxSize",
        ),
        (
            ca.replace("decisionTime: 60s", "decisionTime: 200000000h"),
            "spec.nodeGroups[0].scalingPolicy.scaleUp.decisionTime",
        ),
        (
            good.replace("cpu: 500m", "cpu: 100000000"),
            "spec.template.spec.containers[0].resources.limits.cpu",
        ),
        (
            good.replace("memory: 256Mi", "memory: 16Pi"),
            "spec.template.spec.containers[0].resources.limits.memory",
        ),
        (
            fixture("clusterscalingpolicy.yaml").replace("1:100", "4000000000:1"),
            "spec.bootstrapLimits.orchestratorRatio",
        ),
    ];
    for (body, field) in cases {
        let e = error_of(&body);
        assert_eq!(e.field, field, "{e}");
    }
}

/// One anchor of `width` short scalars, referenced `refs` times: the shape that took a
/// node to 2-4 GB.
fn alias_bomb(width: usize, refs: usize) -> String {
    format!(
        "apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata:\n  name: bomb\n  annotations: {{}}\nx: &a [{}]\ny: [{}]\n",
        vec!["lol"; width].join(","),
        vec!["*a"; refs].join(",")
    )
}

#[test]
fn a_flat_alias_bomb_is_refused_before_expansion() {
    let bomb = alias_bomb(2_000, 29_000);
    assert!((90_000..100_000).contains(&bomb.len()), "{}", bomb.len());
    let e = error_of(&bomb);
    assert_eq!(e.field, "");
    assert!(
        e.message.contains("YAML aliases expand to more than"),
        "{e}"
    );
    assert!(e.message.contains("*a"), "{e}");
}

#[test]
fn nesting_100k_levels_deep_is_refused() {
    let head = "apiVersion: omnicloud.io/v1\nkind: Deployment\nmetadata: {name: deep}\nspec: ";
    for body in [
        format!("{head}{}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{head}{}{}\n", "{a: ".repeat(100_000), "}".repeat(100_000)),
        format!("{head}\n{}x\n", "- ".repeat(100_000)),
    ] {
        let e = error_of(&body);
        assert!(e.message.contains("nests deeper than 64"), "{e}");
    }
    let json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(error_of(&json).message.contains("recursion limit"));
}

#[test]
fn non_finite_and_fractional_quantities_are_refused_by_field() {
    let good = fixture("deployment.yaml");
    let limits = "spec.template.spec.containers[0].resources.limits";
    for (from, to, field, mention) in [
        ("cpu: 500m", "cpu: .inf", "cpu", "finite"),
        ("cpu: 500m", "cpu: .nan", "cpu", "finite"),
        ("cpu: 500m", "cpu: -.inf", "cpu", "finite"),
        ("memory: 256Mi", "memory: .inf", "memory", "finite"),
        (
            "memory: 256Mi",
            "memory: \"0.5\"",
            "memory",
            "whole number of bytes",
        ),
        (
            "memory: 256Mi",
            "memory: 0.5",
            "memory",
            "whole number of bytes",
        ),
        (
            "memory: 256Mi",
            "memory: 0.1Ki",
            "memory",
            "whole number of bytes",
        ),
        ("cpu: 500m", "cpu: 0.0005", "cpu", "millicore precision"),
    ] {
        let e = error_of(&good.replace(from, to));
        assert_eq!(e.field, format!("{limits}.{field}"), "{to}: {e}");
        assert!(e.message.contains(mention), "{to}: {e}");
    }
    // Anywhere else in a document too (free-form fields such as securityContext).
    let e = error_of(&good.replace(
        "        resources:",
        "        securityContext: {runAsUser: .nan}\n        resources:",
    ));
    assert_eq!(
        e.field,
        "spec.template.spec.containers[0].securityContext.runAsUser"
    );
    let e = error_of(&fixture("hpa.yaml").replace("maxReplicas: 20", "maxReplicas: .inf"));
    assert_eq!(e.field, "spec.maxReplicas");
}

#[test]
fn containers_per_pod_are_bounded() {
    let good = fixture("deployment.yaml");
    let c = "      - name: nginx\n        image: nginx:latest\n";
    assert!(good.contains(c));
    let many: String = (0..=limits::MAX_CONTAINERS_PER_POD)
        .map(|i| format!("      - name: c{i}\n        image: busybox\n"))
        .collect();
    let e = error_of(&good.replace(c, &many));
    assert_eq!(e.field, "spec.template.spec.containers");
    assert!(e.message.contains("at most 100"), "{e}");
}

#[test]
fn image_references_pull_policies_and_pull_secrets() {
    use super::workload::PullPolicy;
    let good = fixture("deployment.yaml");
    let cases = [
        (
            good.replace("image: nginx:latest", "image: Nginx:Latest"),
            "spec.template.spec.containers[0].image",
            "is not an image reference",
        ),
        (
            good.replace(
                "image: nginx:latest",
                "image: nginx:latest\n        imagePullPolicy: Sometimes",
            ),
            "spec.template.spec.containers[0].imagePullPolicy",
            "is not Always, IfNotPresent or Never",
        ),
        (
            good.replace(
                "      containers:",
                "      imagePullSecrets: [{name: Bad_Name}]\n      containers:",
            ),
            "spec.template.spec.imagePullSecrets[0].name",
            "",
        ),
    ];
    for (body, field, message) in cases {
        let e = error_of(&body);
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(message), "{e}");
    }
    let with_secret = good.replace(
        "      containers:",
        "      imagePullSecrets: [{name: regcred}]\n      containers:",
    );
    assert!(parse_manifests(&with_secret).is_ok());

    // Kubernetes' defaults: :latest or no tag pulls always, a tag or digest if absent.
    for (image, written, want) in [
        ("nginx", None, PullPolicy::Always),
        ("nginx:latest", None, PullPolicy::Always),
        ("reg:5000/nginx", None, PullPolicy::Always),
        ("nginx:1.25", None, PullPolicy::IfNotPresent),
        ("reg:5000/nginx:1", None, PullPolicy::IfNotPresent),
        ("nginx@sha256:abc", None, PullPolicy::IfNotPresent),
        ("nginx", Some("Never"), PullPolicy::Never),
        ("nginx:1", Some("Always"), PullPolicy::Always),
    ] {
        assert_eq!(PullPolicy::of(image, written), want, "{image} {written:?}");
    }
}

#[test]
fn containers_of_one_instance_share_names_and_ports_with_nobody() {
    let pod = |containers: &str| {
        format!(
            "apiVersion: omnicloud.io/v1\nkind: Instance\nmetadata: {{name: p}}\nspec:\n  pod:\n    containers:\n{containers}"
        )
    };
    let two = "    - {name: web, image: toolbox, ports: [{containerPort: 8080}]}\n    - {name: side, image: toolbox, ports: [{containerPort: 9090}]}\n";
    parse_manifests(&pod(two)).expect("distinct names and ports");
    let same_name = "    - {name: web, image: toolbox}\n    - {name: web, image: busybox}\n";
    let e = error_of(&pod(same_name));
    assert_eq!(e.field, "spec.pod.containers[1].name", "{e}");
    assert!(e.message.contains("duplicate container name"), "{e}");
    let same_port = "    - {name: web, image: toolbox, ports: [{containerPort: 8080}]}\n    - {name: side, image: toolbox, ports: [{containerPort: 8080}]}\n";
    let e = error_of(&pod(same_port));
    assert_eq!(
        e.field, "spec.pod.containers[1].ports[0].containerPort",
        "{e}"
    );
    assert!(e.message.contains("spec.pod.containers[0].ports[0]"), "{e}");
    // Another protocol on the same number is a different port.
    let udp = "    - {name: web, image: toolbox, ports: [{containerPort: 53}]}\n    - {name: dns, image: toolbox, ports: [{containerPort: 53, protocol: UDP}]}\n";
    parse_manifests(&pod(udp)).expect("TCP and UDP on one number");
}
