//! Node networking: LoadBalancer addresses (pool, allocation, announcer choice in `lb`; the
//! address on the interface plus gratuitous ARP in `announce`). Driven by committed state;
//! pure decisions are separate from the thin, idempotent glue that applies them.

pub mod announce;
pub mod announce_task;
pub mod lb;
