//! The agent role: container workloads on this node. So far: the demo workloads that the
//! `toolbox` image runs (`workload`).

pub mod workload;
