//! Upper bounds on every count, size and duration a manifest may ask for, in one place
//! (in the manner of Kubernetes' documented limits: 5,000 nodes, 110 pods per node,
//! int32 replicas). Controllers loop over or allocate by these numbers, and a stored
//! object is re-read by every future leader, so an unbounded one (`replicas: 2147483648`)
//! would take down each leader in turn. Each bound is far above real use and low enough
//! that sums and products over it (replicas × containers × quantity) stay inside `u64`.
//!
//! Errors name the field and the bound: `spec.replicas: must be at most 10000, got
//! 2147483648`.

use super::{invalid, ModelError};

/// Replicas of a Deployment, StatefulSet or VirtualMachine (also through the scale
/// subresource), an HPA's min/maxReplicas, a VPA's minReplicas, scheduled targets, and
/// any other count of workload copies.
pub const MAX_REPLICAS: i64 = 10_000;

/// Containers (and, separately, init containers) in one pod: with [`MAX_REPLICAS`] and
/// [`MAX_MEMORY_BYTES`] this keeps a workload's total request inside `u64`.
pub const MAX_CONTAINERS_PER_POD: usize = 100;

/// Nodes: a ClusterAutoscaler group's min/maxSize, a scheduled vmPool, orchestrator and
/// director targets (Kubernetes supports 5,000 nodes per cluster).
pub const MAX_NODES: i64 = 5_000;

/// revisionHistoryLimit: each kept revision stores a whole pod template in the status.
pub const MAX_REVISION_HISTORY: i64 = 100;

/// Seconds in any `...Seconds` field (probes, grace periods, minReadySeconds, progress
/// deadlines, stabilization windows): one week.
pub const MAX_SECONDS: i64 = 7 * 24 * 3600;

/// Any duration written as `30s`, `10m`, `1h`: one year.
pub const MAX_DURATION_MS: u64 = 366 * 24 * 3600 * 1000;

/// Probe failure/success thresholds.
pub const MAX_PROBE_THRESHOLD: i64 = 1_000;

/// A percentage that may exceed 100 (HPA utilization targets, scaling policies in
/// Percent): ten times the request.
pub const MAX_PERCENT: i64 = 1_000;

/// Per-pod and per-node counts of a ClusterScalingPolicy (maxPodsPerNode,
/// maxContainersPerPod), rates per minute, and each side of a ratio like `1:100`.
pub const MAX_POLICY_COUNT: i64 = MAX_REPLICAS;

/// A container's cpu (requests or limits): 10,000 cores, in millicores.
pub const MAX_CPU_MILLIS: u64 = 10_000 * 1000;

/// A container's or VM's memory: 4 TiB.
pub const MAX_MEMORY_BYTES: u64 = 4 << 40;

/// Storage-like quantities (ephemeral-storage, storage, hugepages, emptyDir sizeLimit):
/// 1 PiB.
pub const MAX_STORAGE_BYTES: u64 = 1 << 50;

/// A PriorityClass value: Kubernetes' int32 range (user classes stop at 1e9).
pub const MIN_PRIORITY: i64 = i32::MIN as i64;

/// Checks `min <= v <= max`, naming `field` and the bound that was crossed.
pub fn range(field: &str, v: i64, min: i64, max: i64) -> Result<(), ModelError> {
    if v < min {
        Err(invalid(field, format!("must be >= {min}, got {v}")))
    } else if v > max {
        Err(invalid(field, format!("must be at most {max}, got {v}")))
    } else {
        Ok(())
    }
}

/// [`range`] for an optional field.
pub fn opt_range(field: &str, v: Option<i64>, min: i64, max: i64) -> Result<(), ModelError> {
    v.map_or(Ok(()), |v| range(field, v, min, max))
}

/// A replica count: 0..=[`MAX_REPLICAS`].
pub fn replicas(field: &str, v: Option<i64>) -> Result<(), ModelError> {
    opt_range(field, v, 0, MAX_REPLICAS)
}

/// Checks an unsigned amount against `max`, printing both with `unit`.
pub fn amount(field: &str, v: u64, max: u64, unit: &str) -> Result<(), ModelError> {
    if v > max {
        return Err(invalid(
            field,
            format!("must be at most {max}{unit}, got {v}{unit}"),
        ));
    }
    Ok(())
}
