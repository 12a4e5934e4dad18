//! Node networking driven by committed state: the embedded cluster DNS server
//! (`dns`: hickory-server on every agent or director node), the records it answers
//! (`dns_records`, pure) and the feed that builds them from the store (`dns_feed`).

pub mod dns;
pub mod dns_feed;
pub mod dns_records;
