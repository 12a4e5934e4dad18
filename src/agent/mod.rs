//! The agent role: container workloads on this node. So far: health checks and restart
//! backoff (`health`) and the demo workloads that the `toolbox` image runs (`workload`).

pub mod health;
pub mod workload;
