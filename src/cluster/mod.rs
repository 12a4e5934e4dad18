//! Cluster membership and node-to-node communication: the authenticated RPC transport
//! (`transport`). Gossip membership and roles join here with the cluster issue.
//!
//! Publishes facts (membership, transport); never calls the orchestrator.

pub mod transport;
