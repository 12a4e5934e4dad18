//! Raft type configuration and the commands that flow through the replicated log.
//!
//! Commands carry resources as canonical JSON (`Vec<u8>`) because the model types use
//! optional and untagged serde shapes that a non-self-describing format (bincode) cannot
//! round-trip; everything around them is bincode.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::Kind;

/// Raft node id. Random at first start, persisted in the node's redb file.
pub type NodeId = u64;

/// What every Raft member knows about another: enough to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    pub name: String,
    /// `host:port` of the internal RPC listener.
    pub rpc_addr: String,
    /// `host:port` of the public API listener.
    pub api_addr: String,
}

impl fmt::Display for RaftNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = RaftNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, RaftNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;

/// Identifies one object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.namespaced() {
            namespace.into()
        } else {
            String::new()
        };
        ObjectKey {
            kind,
            namespace,
            name: name.into(),
        }
    }

    /// The redb key: `Kind/namespace/name`, so a prefix scan lists one kind (and namespace).
    pub fn storage_key(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    pub fn kind_prefix(kind: Kind, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if kind.namespaced() => format!("{}/{}/", kind.as_str(), ns),
            _ => format!("{}/", kind.as_str()),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.plural(), self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind.plural(), self.namespace, self.name)
        }
    }
}

/// How a `Put` treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutMode {
    /// Fails with 409 when the object exists.
    Create,
    /// Fails with 404 when the object does not exist.
    Update,
    /// Create or update.
    Apply,
}

/// A state machine command. Deterministic: everything time- or randomness-dependent
/// (timestamps, uids) is decided by the proposer and carried in the command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put {
        key: ObjectKey,
        /// The resource as JSON, validated by the API before proposing.
        object: Vec<u8>,
        mode: PutMode,
        /// Optimistic concurrency: the write only applies at this resourceVersion.
        expected_version: Option<u64>,
        /// Used only when the object is created.
        uid: String,
        now: String,
    },
    Delete {
        key: ObjectKey,
        expected_version: Option<u64>,
    },
    Scale {
        key: ObjectKey,
        replicas: i64,
        expected_version: Option<u64>,
    },
    /// Replace the server-owned `status` of an object (controllers, nodes). With `uid`,
    /// only if the object is still that incarnation (a recreated one is left alone).
    SetStatus {
        key: ObjectKey,
        status: Vec<u8>,
        uid: Option<String>,
    },
    /// All or nothing: if one command fails, none applies.
    Batch(Vec<Command>),
    /// No-op, used to wait for the state machine to catch up (consistent reads).
    Barrier,
}

/// Why a command was rejected by the state machine. Mapped 1:1 onto HTTP statuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotFound {
        key: String,
    },
    AlreadyExists {
        key: String,
    },
    Conflict {
        key: String,
        expected: u64,
        actual: u64,
    },
    Invalid {
        field: String,
        message: String,
    },
    /// Valid, but over a limit (ResourceQuota, ClusterScalingPolicy); the message names it.
    Forbidden {
        field: String,
        message: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotFound { key } => write!(f, "{key} not found"),
            Rejection::AlreadyExists { key } => write!(f, "{key} already exists"),
            Rejection::Conflict { key, expected, actual } => write!(
                f,
                "{key} was modified: resourceVersion is {actual}, the request expected {expected}; read it again and retry"
            ),
            Rejection::Invalid { field, message } | Rejection::Forbidden { field, message } => {
                write!(f, "{field}: {message}")
            }
        }
    }
}

/// One object after a successful command: its JSON and the revision that produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub key: ObjectKey,
    pub object: Vec<u8>,
    pub revision: u64,
    pub change: ChangeType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
    /// The command changed nothing (e.g. apply of an identical object).
    Unchanged,
}

impl ChangeType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
            ChangeType::Unchanged => "UNCHANGED",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Empty for membership entries and barriers.
    pub applied: Vec<Applied>,
    pub rejection: Option<Rejection>,
}

/// One recorded change, as served by watch streams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub change: ChangeType,
    pub key: ObjectKey,
    pub object: Vec<u8>,
}

/// Everything in a snapshot: the objects and the revision counter at `last_applied`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub revision: u64,
    pub objects: BTreeMap<String, Vec<u8>>,
}

impl Command {
    /// A `Put` stamped with a fresh uid and the current time (used only if it creates).
    pub fn put(
        key: ObjectKey,
        object: &serde_json::Value,
        mode: PutMode,
        expected_version: Option<u64>,
    ) -> Command {
        let b: [u8; 16] = rand::random();
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Command::Put {
            key,
            object: serde_json::to_vec(object).expect("JSON values serialize"),
            mode,
            expected_version,
            uid: format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ),
            now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }
}
