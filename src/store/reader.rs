//! Local reads of the state machine for the API: get, list by kind and namespace, the
//! revision counter and change history for watches. Reads never go through Raft; they
//! see what this node has applied.

use super::{decode, read_meta, Change, ObjectKey, Store, StoreError, CHANGES, OBJECTS, SM_META};
use crate::model::Kind;

#[derive(Clone)]
pub struct StoreReader {
    store: Store,
}

/// A watch asked for history that was pruned or replaced by a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("revision {requested} is no longer available; the oldest is {oldest}: list again and watch from its revision")]
    Compacted { requested: u64, oldest: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreReader {
    pub(crate) fn new(store: Store) -> Self {
        StoreReader { store }
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(OBJECTS)?;
        Ok(table
            .get(key.storage_key().as_str())?
            .map(|v| v.value().to_vec()))
    }

    /// Objects of one kind (in one namespace, or all), in key order, with the revision the
    /// listing reflects (a watch from `revision + 1` continues it without gaps).
    /// Every stored object of `kind` (in `namespace`, or all), parsed; one that does not
    /// parse (written by another version) is left out.
    pub fn resources(&self, kind: Kind) -> Result<Vec<crate::model::Resource>, StoreError> {
        let (objects, _) = self.list(kind, None)?;
        Ok(objects
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .filter_map(|v| crate::model::Resource::from_stored(v).ok())
            .collect())
    }

    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Vec<u8>>, u64), StoreError> {
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(OBJECTS)?;
        let prefix = ObjectKey::kind_prefix(kind, namespace);
        let mut out = Vec::new();
        for item in table.range(prefix.as_str()..)? {
            let (k, v) = item?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push(v.value().to_vec());
        }
        let revision = meta_u64(&tx, "revision")?;
        Ok((out, revision))
    }

    pub fn revision(&self) -> Result<u64, StoreError> {
        let tx = self.store.db.begin_read()?;
        meta_u64(&tx, "revision")
    }

    /// Recorded changes from revision `from` on: at most `max_items`, and no more once
    /// `max_bytes` of objects are collected (at least one change is always returned when
    /// there is one). The second value says whether more history follows.
    pub fn changes_page(
        &self,
        from: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Change>, bool), HistoryError> {
        let tx = self.store.db.begin_read().map_err(StoreError::from)?;
        let compacted_below = meta_u64(&tx, "compacted_below")?;
        if from < compacted_below {
            return Err(HistoryError::Compacted {
                requested: from,
                oldest: compacted_below,
            });
        }
        let table = tx.open_table(CHANGES).map_err(StoreError::from)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in table.range(from..).map_err(StoreError::from)? {
            if out.len() >= max_items || (bytes >= max_bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            let (_, v) = item.map_err(StoreError::from)?;
            let change: Change = decode("change", v.value())?;
            bytes += change.object.len();
            out.push(change);
        }
        Ok((out, false))
    }
}

fn meta_u64(tx: &redb::ReadTransaction, key: &str) -> Result<u64, StoreError> {
    read_meta(&tx.open_table(SM_META)?, key)
}
