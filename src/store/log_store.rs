//! openraft `RaftLogStorage` on redb: entries by index, vote, committed and purge pointers.
//! Every write commits durably before it is reported done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Durability, ReadableTable, ReadableTableMetadata};

use super::{decode, encode, Entry, LogId, NodeId, Store, StoreError, TypeConfig, LOG, LOG_META};

type StorageError = openraft::StorageError<NodeId>;

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: StoreError) -> StorageError {
    StorageIOError::new(subject, verb, &e).into()
}

fn read_logs_err(e: impl Into<StoreError>) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e.into())
}

fn write_logs_err(e: impl Into<StoreError>) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e.into())
}

#[derive(Clone)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    pub(crate) fn new(store: Store) -> Self {
        LogStore { store }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(LOG_META)?;
        let value = table.get(key)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let tx = self.store.db.begin_write()?;
        tx.open_table(LOG_META)?
            .insert(key, encode(value).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(LOG)?;
        let last = table.last()?;
        last.map(|(_, v)| decode::<Entry>("log entry", v.value()).map(|e| e.log_id))
            .transpose()
    }

    /// Number of entries currently kept (after purges); used by tests and metrics.
    pub fn len(&self) -> Result<u64, StoreError> {
        let tx = self.store.db.begin_read()?;
        Ok(tx.open_table(LOG)?.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Whether this node has ever been part of a Raft group (vote or log present).
    pub fn is_initialized(&self) -> Result<bool, StoreError> {
        Ok(self.meta::<Vote<NodeId>>("vote")?.is_some() || !self.is_empty()?)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let tx = self.store.db.begin_read().map_err(read_logs_err)?;
        let table = tx.open_table(LOG).map_err(read_logs_err)?;
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(read_logs_err)? {
            let (_, v) = item.map_err(read_logs_err)?;
            entries.push(decode::<Entry>("log entry", v.value()).map_err(read_logs_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.meta("last_purged").map_err(read_logs_err)?;
        let last = self.last_entry_id().map_err(read_logs_err)?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta("vote", vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta("vote")
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    /// Not fsynced: a lost `committed` only means re-learning it from the leader, and the
    /// next durable log write persists it anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let write = || -> Result<(), StoreError> {
            let mut tx = self.store.db.begin_write()?;
            tx.set_durability(Durability::None);
            tx.open_table(LOG_META)?
                .insert("committed", encode(&committed).as_slice())?;
            tx.commit()?;
            Ok(())
        };
        write().map_err(write_logs_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .meta::<Option<LogId>>("committed")
            .map_err(read_logs_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = (|| -> Result<(), StoreError> {
            let mut tx = self.store.db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            {
                let mut table = tx.open_table(LOG)?;
                for entry in entries {
                    table.insert(entry.log_id.index, encode(&entry).as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let tx = self.store.db.begin_write().map_err(write_logs_err)?;
        {
            let mut table = tx.open_table(LOG).map_err(write_logs_err)?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(write_logs_err)?;
        }
        tx.commit().map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let tx = self.store.db.begin_write().map_err(write_logs_err)?;
        {
            let mut meta = tx.open_table(LOG_META).map_err(write_logs_err)?;
            meta.insert("last_purged", encode(&log_id).as_slice())
                .map_err(write_logs_err)?;
            let mut table = tx.open_table(LOG).map_err(write_logs_err)?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(write_logs_err)?;
        }
        tx.commit().map_err(write_logs_err)
    }
}
