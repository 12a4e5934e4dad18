//! The replicated state machine: applies committed commands to the objects table, keeps the
//! revision counter and a bounded change history, builds and installs snapshots.
//!
//! Apply is deterministic: it only reads the command and the current tables. A `Batch`
//! is all-or-nothing, so a multi-document apply never leaves half its objects behind.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageIOError,
};
use redb::{Durability, ReadableTable, WriteTransaction};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{
    decode, encode, read_meta, Applied, Change, ChangeType, Command, CommandResult, Entry, LogId,
    NodeId, ObjectKey, PutMode, RaftNode, Rejection, SnapshotPayload, Store, StoreError,
    StoredMembership, TypeConfig, CHANGES, CHANGE_HISTORY, OBJECTS, SM_META, SNAPSHOT,
};
use crate::model::Kind;

type StorageError = openraft::StorageError<NodeId>;

fn sm_err(verb: ErrorVerb, e: impl Into<StoreError>) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, &e.into()).into()
}

fn snap_err(verb: ErrorVerb, e: impl Into<StoreError>) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, &e.into()).into()
}

/// The namespace that exists without being created.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Largest object (and status) stored, as etcd caps a request: 1.5 MiB. Checked inside the
/// apply, so every replica decides the same.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

pub struct StateMachine {
    store: Store,
    changes: broadcast::Sender<Arc<Change>>,
}

impl StateMachine {
    pub fn new(store: Store) -> Self {
        let (changes, _) = broadcast::channel(4096);
        StateMachine { store, changes }
    }

    /// Live changes, sent after they are committed to the local database.
    pub fn change_feed(&self) -> broadcast::Sender<Arc<Change>> {
        self.changes.clone()
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
    ) -> Result<(Vec<CommandResult>, Vec<Arc<Change>>), StoreError> {
        let mut tx = self.store.db.begin_write()?;
        tx.set_durability(Durability::None);
        let mut results = Vec::with_capacity(entries.len());
        let mut published = Vec::new();
        {
            let mut revision: u64 = read_meta(&tx.open_table(SM_META)?, "revision")?;
            let mut last_applied = None;
            let mut membership = None;
            for entry in entries {
                last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(CommandResult::default()),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        results.push(CommandResult::default());
                    }
                    EntryPayload::Normal(cmd) => {
                        let mut overlay = Overlay::new(&tx, revision);
                        match overlay.run(&cmd) {
                            Ok(applied) => {
                                revision = overlay.revision;
                                for change in overlay.flush(&tx)? {
                                    published.push(Arc::new(change));
                                }
                                results.push(CommandResult {
                                    applied,
                                    rejection: None,
                                });
                            }
                            Err(Reject::Rejected(r)) => results.push(CommandResult {
                                applied: Vec::new(),
                                rejection: Some(r),
                            }),
                            Err(Reject::Store(e)) => return Err(e),
                        }
                    }
                }
            }
            let mut meta = tx.open_table(SM_META)?;
            meta.insert("revision", encode(&revision).as_slice())?;
            if let Some(id) = last_applied {
                meta.insert("last_applied", encode(&Some(id)).as_slice())?;
            }
            if let Some(m) = membership {
                meta.insert("membership", encode(&m).as_slice())?;
            }
            drop(meta);
            prune_changes(&tx, revision)?;
        }
        tx.commit()?;
        Ok((results, published))
    }

    fn install(
        &mut self,
        meta: &SnapshotMeta<NodeId, RaftNode>,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let payload: SnapshotPayload = decode("snapshot", data)?;
        let tx = self.store.db.begin_write()?;
        {
            let mut objects = tx.open_table(OBJECTS)?;
            objects.retain(|_, _| false)?;
            for (k, v) in &payload.objects {
                objects.insert(k.as_str(), v.as_slice())?;
            }
            tx.open_table(CHANGES)?.retain(|_, _| false)?;
            let mut sm = tx.open_table(SM_META)?;
            sm.insert("revision", encode(&payload.revision).as_slice())?;
            sm.insert(
                "compacted_below",
                encode(&(payload.revision + 1)).as_slice(),
            )?;
            sm.insert("last_applied", encode(&meta.last_log_id).as_slice())?;
            sm.insert("membership", encode(&meta.last_membership).as_slice())?;
            let mut snap = tx.open_table(SNAPSHOT)?;
            snap.insert("meta", encode(meta).as_slice())?;
            snap.insert("data", data)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn current(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(SNAPSHOT)?;
        let (Some(meta), Some(data)) = (table.get("meta")?, table.get("data")?) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, RaftNode> = decode("snapshot meta", meta.value())?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.value().to_vec())),
        }))
    }
}

/// Keeps the change history bounded; watches from before the cut get 410 Gone.
fn prune_changes(tx: &WriteTransaction, revision: u64) -> Result<(), StoreError> {
    if revision <= CHANGE_HISTORY {
        return Ok(());
    }
    let cut = revision - CHANGE_HISTORY;
    let mut changes = tx.open_table(CHANGES)?;
    let oldest = changes.first()?.map(|(k, _)| k.value());
    if matches!(oldest, Some(o) if o < cut) {
        changes.retain_in(..cut, |_, _| false)?;
        drop(changes);
        tx.open_table(SM_META)?
            .insert("compacted_below", encode(&cut).as_slice())?;
    }
    Ok(())
}

/// Serializes the state machine at its last applied entry and keeps it as the current
/// snapshot (a durable commit, which also persists earlier unsynced applies).
fn build_snapshot(store: &Store) -> Result<Snapshot<TypeConfig>, StoreError> {
    let tx = store.db.begin_read()?;
    let meta_table = tx.open_table(SM_META)?;
    let last_applied: Option<LogId> = read_meta(&meta_table, "last_applied")?;
    let membership: StoredMembership = read_meta(&meta_table, "membership")?;
    let revision: u64 = read_meta(&meta_table, "revision")?;
    let mut payload = SnapshotPayload {
        revision,
        objects: BTreeMap::new(),
    };
    for item in tx.open_table(OBJECTS)?.iter()? {
        let (k, v) = item?;
        payload
            .objects
            .insert(k.value().to_string(), v.value().to_vec());
    }
    drop(meta_table);
    drop(tx);

    let snapshot_id = match last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, revision),
        None => format!("0-0-{revision}"),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    };
    let data = encode(&payload);
    let tx = store.db.begin_write()?;
    {
        let mut table = tx.open_table(SNAPSHOT)?;
        table.insert("meta", encode(&meta).as_slice())?;
        table.insert("data", data.as_slice())?;
    }
    tx.commit()?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    })
}

enum Reject {
    Rejected(Rejection),
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for Reject {
    fn from(e: E) -> Self {
        Reject::Store(e.into())
    }
}

fn rejected<T>(r: Rejection) -> Result<T, Reject> {
    Err(Reject::Rejected(r))
}

/// Pending writes of one command, applied to the tables only if the whole command succeeds.
struct Overlay<'a> {
    tx: &'a WriteTransaction,
    revision: u64,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    changes: Vec<Change>,
}

impl<'a> Overlay<'a> {
    fn new(tx: &'a WriteTransaction, revision: u64) -> Self {
        Overlay {
            tx,
            revision,
            writes: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Reject> {
        let skey = key.storage_key();
        let bytes = match self.writes.get(&skey) {
            Some(pending) => pending.clone(),
            None => self
                .tx
                .open_table(OBJECTS)?
                .get(skey.as_str())?
                .map(|v| v.value().to_vec()),
        };
        Ok(bytes.map(|b| serde_json::from_slice(&b).expect("stored objects are valid JSON")))
    }

    /// The objects of a kind (in a namespace), including pending writes.
    fn objects_of(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Value>, Reject> {
        let mut out = Vec::new();
        for skey in self.keys_with_prefix(&ObjectKey::kind_prefix(kind, namespace))? {
            let name = skey.rsplit('/').next().unwrap_or_default();
            let key = ObjectKey::new(kind, namespace.unwrap_or_default(), name);
            out.extend(self.get(&key)?);
        }
        Ok(out)
    }

    /// Quotas and scaling policies (`limits`) for a workload write.
    fn check_limits(
        &self,
        key: &ObjectKey,
        old: Option<&Value>,
        new: &Value,
    ) -> Result<(), Reject> {
        if !matches!(key.kind, Kind::Deployment | Kind::StatefulSet) {
            return Ok(());
        }
        let ns = Some(key.namespace.as_str());
        let quotas = self.objects_of(Kind::ResourceQuota, ns)?;
        let policies = self.objects_of(Kind::ClusterScalingPolicy, None)?;
        if quotas.is_empty() && policies.is_empty() {
            return Ok(());
        }
        // The namespace's other workloads only matter to a quota.
        let mut others = Vec::new();
        for kind in [Kind::Deployment, Kind::StatefulSet]
            .into_iter()
            .filter(|_| !quotas.is_empty())
        {
            for o in self.objects_of(kind, ns)? {
                if !(kind == key.kind && o["metadata"]["name"] == key.name.as_str()) {
                    others.push(o);
                }
            }
        }
        super::limits::check(key, old, new, &others, &quotas, &policies).map_err(Reject::Rejected)
    }

    /// A Service keeps its allocated clusterIP and node ports across updates, and holds no
    /// address or node port another Service holds (decided here, where writes are
    /// serialized: of two concurrent creates that picked one address, the later is refused).
    fn check_service(
        &self,
        key: &ObjectKey,
        old: Option<&Value>,
        object: &mut Value,
    ) -> Result<(), Reject> {
        use crate::model::service::{check_unique, keep_allocated, ServiceSpec, Taken};
        let invalid = |e: crate::model::ModelError| {
            Reject::Rejected(Rejection::Invalid {
                field: e.field,
                message: e.message,
            })
        };
        let parse = |v: &Value| serde_json::from_value::<ServiceSpec>(v["spec"].clone());
        let Ok(mut spec) = parse(object) else {
            return rejected(Rejection::Invalid {
                field: "spec".into(),
                message: "is not a Service spec".into(),
            });
        };
        if let Some(Ok(old_spec)) = old.map(parse) {
            let before = spec.clone();
            keep_allocated(&mut spec, &old_spec).map_err(invalid)?;
            if spec != before {
                object["spec"] = serde_json::to_value(&spec).expect("specs serialize");
            }
        }
        let mut taken = Taken::default();
        // Every namespace's Services: storage keys are `Service/<ns>/<name>`.
        let mut others = Vec::new();
        for skey in self.keys_with_prefix(&ObjectKey::kind_prefix(Kind::Service, None))? {
            let mut parts = skey.splitn(3, '/').skip(1);
            let (Some(ns), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            others.extend(self.get(&ObjectKey::new(Kind::Service, ns, name))?);
        }
        for other in others {
            let ns = other["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = other["metadata"]["name"].as_str().unwrap_or_default();
            if ns == key.namespace && name == key.name {
                continue;
            }
            if let Ok(o) = parse(&other) {
                taken.add(&format!("{ns}/{name}"), &o);
            }
        }
        check_unique(&spec, &taken).map_err(invalid)
    }

    /// Keys stored under a prefix, including pending writes.
    fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, Reject> {
        let mut keys: Vec<String> = Vec::new();
        for item in self.tx.open_table(OBJECTS)?.range(prefix..)? {
            let (k, _) = item?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if !matches!(self.writes.get(k), Some(None)) {
                keys.push(k.to_string());
            }
        }
        for (k, v) in self.writes.range(prefix.to_string()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if v.is_some() && !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        Ok(keys)
    }

    fn record(&mut self, key: &ObjectKey, change: ChangeType, object: Value) -> Applied {
        self.revision += 1;
        let mut object = object;
        set_meta(
            &mut object,
            "resourceVersion",
            Value::String(self.revision.to_string()),
        );
        let bytes = serde_json::to_vec(&object).expect("JSON values serialize");
        let stored = (change != ChangeType::Deleted).then(|| bytes.clone());
        self.writes.insert(key.storage_key(), stored);
        self.changes.push(Change {
            revision: self.revision,
            change,
            key: key.clone(),
            object: bytes.clone(),
        });
        Applied {
            key: key.clone(),
            object: bytes,
            revision: self.revision,
            change,
        }
    }

    fn run(&mut self, cmd: &Command) -> Result<Vec<Applied>, Reject> {
        match cmd {
            Command::Batch(cmds) => {
                let mut all = Vec::new();
                for c in cmds {
                    all.extend(self.run(c)?);
                }
                Ok(all)
            }
            Command::Barrier => Ok(Vec::new()),
            Command::Put {
                key,
                object,
                mode,
                expected_version,
                uid,
                now,
            } => {
                if object.len() > MAX_OBJECT_BYTES {
                    return rejected(Rejection::Invalid {
                        field: String::new(),
                        message: format!(
                            "the object is {} bytes; at most {MAX_OBJECT_BYTES} (1.5 MiB) may be stored",
                            object.len()
                        ),
                    });
                }
                let object: Value = serde_json::from_slice(object).map_err(|e| {
                    Reject::Rejected(Rejection::Invalid {
                        field: String::new(),
                        message: e.to_string(),
                    })
                })?;
                Ok(vec![self.put(
                    key,
                    object,
                    *mode,
                    *expected_version,
                    uid,
                    now,
                )?])
            }
            Command::Delete {
                key,
                expected_version,
            } => self.delete(key, *expected_version),
            Command::Scale {
                key,
                replicas,
                expected_version,
            } => {
                let Some(mut object) = self.get(key)? else {
                    return rejected(Rejection::NotFound {
                        key: key.to_string(),
                    });
                };
                check_version(key, &object, *expected_version)?;
                if !key.kind.has_replicas() {
                    return rejected(Rejection::Invalid {
                        field: "spec.replicas".into(),
                        message: format!("{} has no replicas to scale", key.kind),
                    });
                }
                // The API checks the same; checked here too, so no path into the log (a
                // forwarded write, an autoscaler) can store more than the model allows.
                let max = crate::model::limits::MAX_REPLICAS;
                if !(0..=max).contains(replicas) {
                    return rejected(Rejection::Invalid {
                        field: "spec.replicas".into(),
                        message: format!("must be between 0 and {max}, got {replicas}"),
                    });
                }
                let old = object.pointer("/spec/replicas").and_then(Value::as_i64);
                if old == Some(*replicas) {
                    return Ok(vec![unchanged(key, &object)]);
                }
                let before = object.clone();
                object["spec"]["replicas"] = Value::from(*replicas);
                self.check_limits(key, Some(&before), &object)?;
                bump_generation(&mut object);
                Ok(vec![self.record(key, ChangeType::Modified, object)])
            }
            Command::SetStatus { key, status, uid } => {
                let Some(mut object) = self.get(key)? else {
                    return rejected(Rejection::NotFound {
                        key: key.to_string(),
                    });
                };
                if uid
                    .as_ref()
                    .is_some_and(|u| object["metadata"]["uid"] != u.as_str())
                {
                    return rejected(Rejection::NotFound {
                        key: format!("{key} (uid {})", uid.as_deref().unwrap_or("")),
                    });
                }
                if status.len() > MAX_OBJECT_BYTES {
                    return rejected(Rejection::Invalid {
                        field: "status".into(),
                        message: format!(
                            "the status is {} bytes; at most {MAX_OBJECT_BYTES} may be stored",
                            status.len()
                        ),
                    });
                }
                let status: Value = serde_json::from_slice(status).map_err(|e| {
                    Reject::Rejected(Rejection::Invalid {
                        field: "status".into(),
                        message: e.to_string(),
                    })
                })?;
                if object.get("status") == Some(&status) {
                    return Ok(vec![unchanged(key, &object)]);
                }
                object["status"] = status;
                Ok(vec![self.record(key, ChangeType::Modified, object)])
            }
        }
    }

    fn put(
        &mut self,
        key: &ObjectKey,
        mut object: Value,
        mode: PutMode,
        expected: Option<u64>,
        uid: &str,
        now: &str,
    ) -> Result<Applied, Reject> {
        if key.kind.namespaced() && key.namespace != DEFAULT_NAMESPACE {
            let ns = ObjectKey::new(Kind::Namespace, "", key.namespace.clone());
            if self.get(&ns)?.is_none() {
                return rejected(Rejection::Invalid {
                    field: "metadata.namespace".into(),
                    message: format!(
                        "namespace \"{}\" does not exist; create it first",
                        key.namespace
                    ),
                });
            }
        }
        let existing = self.get(key)?;
        if let Some(obj) = object.as_object_mut() {
            obj.remove("status");
        }
        match (&existing, mode) {
            (Some(_), PutMode::Create) => {
                return rejected(Rejection::AlreadyExists {
                    key: key.to_string(),
                })
            }
            (None, PutMode::Update) => {
                return rejected(Rejection::NotFound {
                    key: key.to_string(),
                })
            }
            (None, _) if expected.is_some() => {
                return rejected(Rejection::NotFound {
                    key: key.to_string(),
                })
            }
            _ => {}
        }
        self.check_limits(key, existing.as_ref(), &object)?;
        if key.kind == Kind::Service {
            self.check_service(key, existing.as_ref(), &mut object)?;
        }
        let Some(old) = existing else {
            set_meta(&mut object, "uid", Value::String(uid.to_string()));
            set_meta(
                &mut object,
                "creationTimestamp",
                Value::String(now.to_string()),
            );
            set_meta(&mut object, "generation", Value::from(1u64));
            return Ok(self.record(key, ChangeType::Added, object));
        };
        check_version(key, &old, expected)?;
        if let Err(e) = crate::model::config::check_immutable(&old, &object) {
            return rejected(Rejection::Invalid {
                field: e.field,
                message: e.message,
            });
        }
        for field in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            if let Some(v) = old["metadata"].get(field) {
                set_meta(&mut object, field, v.clone());
            }
        }
        if let Some(status) = old.get("status") {
            object["status"] = status.clone();
        }
        if object == old {
            return Ok(unchanged(key, &old));
        }
        if object.get("spec") != old.get("spec") {
            bump_generation(&mut object);
        }
        Ok(self.record(key, ChangeType::Modified, object))
    }

    fn delete(&mut self, key: &ObjectKey, expected: Option<u64>) -> Result<Vec<Applied>, Reject> {
        let Some(object) = self.get(key)? else {
            return rejected(Rejection::NotFound {
                key: key.to_string(),
            });
        };
        check_version(key, &object, expected)?;
        let mut applied = Vec::new();
        if key.kind == Kind::Namespace {
            if key.name == DEFAULT_NAMESPACE {
                return rejected(Rejection::Invalid {
                    field: "metadata.name".into(),
                    message: "the default namespace cannot be deleted".into(),
                });
            }
            // Cascade: a namespace takes its objects with it, in the same commit.
            for kind in Kind::ALL.iter().filter(|k| k.namespaced()) {
                for skey in
                    self.keys_with_prefix(&ObjectKey::kind_prefix(*kind, Some(&key.name)))?
                {
                    let name = skey.rsplit('/').next().unwrap_or_default().to_string();
                    let child = ObjectKey::new(*kind, key.name.clone(), name);
                    if let Some(obj) = self.get(&child)? {
                        applied.push(self.record(&child, ChangeType::Deleted, obj));
                    }
                }
            }
        }
        applied.push(self.record(key, ChangeType::Deleted, object));
        Ok(applied)
    }

    fn flush(self, tx: &WriteTransaction) -> Result<Vec<Change>, StoreError> {
        let mut objects = tx.open_table(OBJECTS)?;
        for (k, v) in &self.writes {
            match v {
                Some(bytes) => objects.insert(k.as_str(), bytes.as_slice())?,
                None => objects.remove(k.as_str())?,
            };
        }
        let mut changes = tx.open_table(CHANGES)?;
        for c in &self.changes {
            changes.insert(c.revision, encode(c).as_slice())?;
        }
        Ok(self.changes)
    }
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Default::default());
    }
    object["metadata"][field] = value;
}

fn bump_generation(object: &mut Value) {
    let gen = object["metadata"]["generation"].as_u64().unwrap_or(0);
    set_meta(object, "generation", Value::from(gen + 1));
}

pub(crate) fn resource_version(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn check_version(key: &ObjectKey, object: &Value, expected: Option<u64>) -> Result<(), Reject> {
    match expected {
        Some(expected) if expected != resource_version(object) => rejected(Rejection::Conflict {
            key: key.to_string(),
            expected,
            actual: resource_version(object),
        }),
        _ => Ok(()),
    }
}

fn unchanged(key: &ObjectKey, object: &Value) -> Applied {
    Applied {
        key: key.clone(),
        object: serde_json::to_vec(object).expect("JSON values serialize"),
        revision: resource_version(object),
        change: ChangeType::Unchanged,
    }
}

pub struct SnapshotBuilder {
    store: Store,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        build_snapshot(&self.store).map_err(|e| snap_err(ErrorVerb::Write, e))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let read = || -> Result<(Option<LogId>, StoredMembership), StoreError> {
            let tx = self.store.db.begin_read()?;
            let table = tx.open_table(SM_META)?;
            let last: Option<LogId> = read_meta(&table, "last_applied")?;
            let membership = read_meta(&table, "membership")?;
            Ok((last, membership))
        };
        read().map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (results, published) = self
            .apply_entries(entries.into_iter().collect())
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        for change in published {
            // No receivers is normal (no watch open).
            let _ = self.changes.send(change);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, RaftNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.get_ref())
            .map_err(|e| snap_err(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current().map_err(|e| snap_err(ErrorVerb::Read, e))
    }
}
