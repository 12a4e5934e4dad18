//! Node networking driven by committed state, used on agent and director nodes.
//!
//! - `service`: the Services data plane as a pure function (Services, Endpoints and
//!   hostPorts -> one `iptables-restore` payload over omnicloud's chains). Tested
//!   without root.
//! - `dataplane`: the thin glue that applies it on every node in one step per change,
//!   idempotent across restarts, and removes it all on purge.
//!
//! Threads/actors: one tokio task per node (`dataplane::spawn`). May call: `orchestrator`
//! (the local replica, read only), `config`, `model`.

pub mod dataplane;
pub mod service;
