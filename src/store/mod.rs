//! Durable node state in one redb file: the Raft log and vote (`log_store`), the replicated
//! state machine with its objects, change history and snapshots (`state_machine`), and
//! local read access for the API (`reader`).
//!
//! Log appends commit with `Durability::Immediate` before openraft is told they are flushed;
//! state-machine applies commit without fsync, because a crash only rolls them back together
//! with `last_applied`, and openraft re-applies from the durable log on restart. A durable
//! log commit also persists every earlier non-durable commit.
//!
//! May call: `model` (kinds only). No async tasks of its own.

pub mod limits;
pub mod log_store;
pub mod reader;
pub mod state_machine;
pub mod types;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use log_store::LogStore;
pub use reader::StoreReader;
pub use state_machine::StateMachine;
pub use types::*;

/// Raft log entries by index (bincode `Entry`).
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Log-store scalars: `vote`, `committed`, `last_purged`.
pub(crate) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
/// Objects by `ObjectKey::storage_key()`, JSON.
pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Recent changes by revision (bincode `Change`), for watch streams.
pub(crate) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// State-machine scalars: `last_applied`, `membership`, `revision`, `compacted_below`.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// The current snapshot: `meta` and `data`.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// Node-local facts that are not replicated (node id, tokens' hashes, ...).
pub(crate) const LOCAL: TableDefinition<&str, &[u8]> = TableDefinition::new("local");

/// How many changes a watch can resume from; older revisions answer 410 Gone.
pub const CHANGE_HISTORY: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("database error")]
    Db(#[source] Box<redb::Error>),
    #[error("corrupt record {what}")]
    Decode {
        what: String,
        #[source]
        source: bincode::error::DecodeError,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(Box::new(e))
    }
}
impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Db(Box::new(e.into()))
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Db(Box::new(e.into()))
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Db(Box::new(e.into()))
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Db(Box::new(e.into()))
    }
}

/// The node's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Database>,
}

impl Store {
    pub const FILE_NAME: &'static str = "omnicloud.redb";

    /// Opens (or creates) `<data_dir>/omnicloud.redb` and makes sure every table exists.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(Self::FILE_NAME);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let tx = db.begin_write()?;
        {
            tx.open_table(LOG)?;
            tx.open_table(LOG_META)?;
            tx.open_table(OBJECTS)?;
            tx.open_table(CHANGES)?;
            tx.open_table(SM_META)?;
            tx.open_table(SNAPSHOT)?;
            tx.open_table(LOCAL)?;
        }
        tx.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.clone())
    }

    pub fn reader(&self) -> StoreReader {
        StoreReader::new(self.clone())
    }

    /// A node-local value (not replicated).
    pub fn local_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOCAL)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn local_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOCAL)?.insert(key, value)?;
        tx.commit()?;
        Ok(())
    }

    pub fn local_delete(&self, key: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOCAL)?.remove(key)?;
        tx.commit()?;
        Ok(())
    }

    /// Node-local entries whose key starts with `prefix`, in key order.
    pub fn local_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOCAL)?;
        let mut out = Vec::new();
        for item in table.range(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encoding of an in-memory value cannot fail")
}

/// A bincode value from a `&str -> &[u8]` table, or its default when absent.
pub(crate) fn read_meta<T: DeserializeOwned + Default>(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<T, StoreError> {
    let value = table.get(key)?;
    Ok(value
        .map(|v| decode(key, v.value()))
        .transpose()?
        .unwrap_or_default())
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|source| StoreError::Decode {
            what: what.to_string(),
            source,
        })
}
