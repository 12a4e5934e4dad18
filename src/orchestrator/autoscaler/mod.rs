//! Application autoscaling on the Raft leader: the HorizontalPodAutoscaler (`hpa`, the
//! pure algorithm).

pub mod hpa;
