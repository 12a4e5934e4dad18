//! Validation of a pod spec (a workload's template, an Instance's pod): containers and
//! their names, images, ports, resources and probes; volumes; restart policy. Every count,
//! duration and quantity is held to the bounds in [`super::limits`].

use std::collections::BTreeSet;

use super::limits::{self, MAX_CPU_MILLIS, MAX_MEMORY_BYTES, MAX_PROBE_THRESHOLD, MAX_REPLICAS};
use super::limits::{MAX_CONTAINERS_PER_POD, MAX_SECONDS, MAX_STORAGE_BYTES};
use super::workload::{Container, PodSpec, Probe, ResourceList};
use super::{invalid, ModelError};

pub(super) fn validate_pod_spec(field: &str, spec: &PodSpec) -> Result<(), ModelError> {
    validate_pod_spec_with(field, spec, &[])
}

/// `claims`: volumes added to each instance later (a StatefulSet's claim templates).
pub(super) fn validate_pod_spec_with(
    field: &str,
    spec: &PodSpec,
    claims: &[&str],
) -> Result<(), ModelError> {
    if spec.containers.is_empty() {
        return Err(invalid(
            &format!("{field}.containers"),
            "at least one container is required",
        ));
    }
    for (name, n) in [
        ("containers", spec.containers.len()),
        (
            "initContainers",
            spec.init_containers.as_ref().map_or(0, Vec::len),
        ),
    ] {
        if n > MAX_CONTAINERS_PER_POD {
            return Err(invalid(
                &format!("{field}.{name}"),
                format!("must have at most {MAX_CONTAINERS_PER_POD} entries, got {n}"),
            ));
        }
    }
    match spec.dns_policy.as_deref() {
        None | Some("ClusterFirst" | "ClusterFirstWithHostNet" | "Default") => {}
        Some("None") => {
            return Err(invalid(
                &format!("{field}.dnsPolicy"),
                "None needs dnsConfig, which is not supported; use ClusterFirst (the default) or Default",
            ))
        }
        Some(other) => {
            return Err(invalid(
                &format!("{field}.dnsPolicy"),
                format!("\"{other}\" is not ClusterFirst, ClusterFirstWithHostNet or Default"),
            ))
        }
    }
    let mut names = BTreeSet::new();
    let all = spec.containers_with_paths(field);
    for (path, c) in all {
        validate_container(&path, c)?;
        if !names.insert(c.name.clone()) {
            return Err(invalid(
                &format!("{path}.name"),
                format!("duplicate container name \"{}\"", c.name),
            ));
        }
    }
    unique_ports(field, spec)?;
    super::security::validate(field, spec)?;
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let sources = [
            v.empty_dir.is_some(),
            v.host_path.is_some(),
            v.persistent_volume_claim.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(invalid(
                &format!("{field}.volumes[{i}]"),
                "more than one volume source",
            ));
        }
        if let Some(size) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            let f = format!("{field}.volumes[{i}].emptyDir.sizeLimit");
            limits::amount(&f, size.bytes(), MAX_STORAGE_BYTES, " bytes")?;
        }
    }
    super::sources::validate_pod_sources(field, spec, claims)?;
    for (i, t) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let f = format!("{field}.topologySpreadConstraints[{i}].maxSkew");
        limits::range(&f, t.max_skew, 1, MAX_REPLICAS)?;
    }
    if let Some(a) = &spec.affinity {
        a.validate(&format!("{field}.affinity"))?;
    }
    limits::opt_range(
        &format!("{field}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        0,
        MAX_SECONDS,
    )?;
    for (i, s) in spec.image_pull_secrets.iter().flatten().enumerate() {
        super::validate_name(&format!("{field}.imagePullSecrets[{i}].name"), &s.name)?;
    }
    if let Some(r) = &spec.restart_policy {
        if !["Always", "OnFailure", "Never"].contains(&r.as_str()) {
            return Err(invalid(
                &format!("{field}.restartPolicy"),
                format!("\"{r}\" is not Always, OnFailure or Never"),
            ));
        }
    }
    Ok(())
}

/// The app containers share one network namespace: no two may declare one port and
/// protocol (init containers run before them and may).
fn unique_ports(field: &str, spec: &PodSpec) -> Result<(), ModelError> {
    let mut seen: std::collections::BTreeMap<(i64, String), String> = Default::default();
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let here = format!("{field}.containers[{i}].ports[{j}].containerPort");
            if let Some(first) = seen.insert((p.container_port, proto.clone()), here.clone()) {
                return Err(invalid(
                    &here,
                    format!(
                        "port {}/{proto} is already declared at {first}: an instance's containers share one network namespace",
                        p.container_port
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_container(path: &str, c: &Container) -> Result<(), ModelError> {
    if c.name.is_empty() {
        return Err(invalid(&format!("{path}.name"), "is required"));
    }
    super::validate_label_value(&format!("{path}.name"), &c.name)?;
    if c.image.trim().is_empty() {
        return Err(invalid(
            &format!("{path}.image"),
            "is required (an image reference like busybox:latest)",
        ));
    }
    if let Err(e) = oci_client::Reference::try_from(c.image.trim()) {
        return Err(invalid(
            &format!("{path}.image"),
            format!("\"{}\" is not an image reference: {e}", c.image),
        ));
    }
    if let Some(p) = &c.image_pull_policy {
        if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
            return Err(invalid(
                &format!("{path}.imagePullPolicy"),
                format!("\"{p}\" is not Always, IfNotPresent or Never"),
            ));
        }
    }
    for (j, p) in c.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.container_port) {
            return Err(invalid(
                &format!("{path}.ports[{j}].containerPort"),
                format!("must be between 1 and 65535, got {}", p.container_port),
            ));
        }
        limits::opt_range(
            &format!("{path}.ports[{j}].hostPort"),
            p.host_port,
            0,
            65535,
        )?;
    }
    if let Some(res) = &c.resources {
        let req = res.requests.clone().unwrap_or_default();
        let lim = res.limits.clone().unwrap_or_default();
        validate_resource_list(&format!("{path}.resources.requests"), &req)?;
        validate_resource_list(&format!("{path}.resources.limits"), &lim)?;
        if let (Some(r), Some(l)) = (&req.cpu, &lim.cpu) {
            if r.millis() > l.millis() {
                return Err(invalid(
                    &format!("{path}.resources.requests.cpu"),
                    format!("request {r} is above the limit {l}"),
                ));
            }
        }
        if let (Some(r), Some(l)) = (&req.memory, &lim.memory) {
            if r.bytes() > l.bytes() {
                return Err(invalid(
                    &format!("{path}.resources.requests.memory"),
                    format!("request {r} is above the limit {l}"),
                ));
            }
        }
    }
    for (name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            validate_probe(&format!("{path}.{name}"), p)?;
        }
    }
    Ok(())
}

/// cpu and memory within a container's bounds, storage-like entries within storage's.
pub(super) fn validate_resource_list(field: &str, r: &ResourceList) -> Result<(), ModelError> {
    if let Some(cpu) = &r.cpu {
        if cpu.millis() > MAX_CPU_MILLIS {
            return Err(invalid(
                &format!("{field}.cpu"),
                format!("must be at most {} cores, got {cpu}", MAX_CPU_MILLIS / 1000),
            ));
        }
    }
    if let Some(m) = &r.memory {
        if m.bytes() > MAX_MEMORY_BYTES {
            return Err(invalid(
                &format!("{field}.memory"),
                format!("must be at most {}Gi, got {m}", MAX_MEMORY_BYTES >> 30),
            ));
        }
    }
    for (name, q) in [
        ("ephemeral-storage", &r.ephemeral_storage),
        ("storage", &r.storage),
        ("hugepages-2Mi", &r.hugepages_2mi),
        ("hugepages-1Gi", &r.hugepages_1gi),
    ] {
        if let Some(q) = q {
            limits::amount(
                &format!("{field}.{name}"),
                q.bytes(),
                MAX_STORAGE_BYTES,
                " bytes",
            )?;
        }
    }
    Ok(())
}

fn validate_probe(field: &str, p: &Probe) -> Result<(), ModelError> {
    let handlers = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
        p.grpc.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        return Err(invalid(
            field,
            "needs exactly one handler: httpGet, tcpSocket, exec or grpc",
        ));
    }
    for (f, v, min, max) in [
        (
            "initialDelaySeconds",
            p.initial_delay_seconds,
            0,
            MAX_SECONDS,
        ),
        ("periodSeconds", p.period_seconds, 1, MAX_SECONDS),
        ("timeoutSeconds", p.timeout_seconds, 1, MAX_SECONDS),
        (
            "failureThreshold",
            p.failure_threshold,
            1,
            MAX_PROBE_THRESHOLD,
        ),
        (
            "successThreshold",
            p.success_threshold,
            1,
            MAX_PROBE_THRESHOLD,
        ),
        (
            "terminationGracePeriodSeconds",
            p.termination_grace_period_seconds,
            1,
            MAX_SECONDS,
        ),
    ] {
        limits::opt_range(&format!("{field}.{f}"), v, min, max)?;
    }
    Ok(())
}
