//! What an instance takes from ConfigMaps, Secrets and itself, on this node: environment
//! variables (`env[].valueFrom`, `envFrom`) and the files of `configMap` and `secret`
//! volumes. The objects are read from the node's local replica of the store ([`fetch`]);
//! the decisions (which key becomes which variable or file, with which mode, and what is
//! missing) are pure functions of what was read ([`env`], [`volume_files`]), so they are
//! tested without a node. A missing object or key that is not `optional` is a
//! `CreateContainerConfigError` naming it; the instance waits and starts once it appears.
//!
//! [`secret_data`] is the one way other parts of the node read a Secret; registry pulls
//! take their credentials from [`image_pull_auths`] (`imagePullSecrets`). Values never go into a log line or an error.

use std::collections::{BTreeMap, BTreeSet};

use crate::container::volume::VolumeFile;
use crate::container::EnvVar;
use crate::model::sources::KeyToPath;
use crate::model::workload::{Container, PodSpec, Volume};
use crate::model::{Kind, Resource, Spec};
use crate::orchestrator::ControlPlane;
use crate::store::ObjectKey;

/// The reason an instance waits for a ConfigMap or Secret, as Kubernetes names it.
pub const WAITING_REASON: &str = crate::model::instance::reasons::CREATE_CONTAINER_CONFIG_ERROR;
/// A file's mode when neither `items[].mode` nor `defaultMode` gives one.
pub const DEFAULT_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{kind} \"{namespace}/{name}\" not found")]
    NotFound {
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("{kind} \"{namespace}/{name}\" cannot be read: {message}")]
    Unreadable {
        kind: Kind,
        namespace: String,
        name: String,
        message: String,
    },
}

/// The data of one ConfigMap or Secret: each key's bytes.
pub type Data = BTreeMap<String, Vec<u8>>;

/// The keys and bytes of ConfigMap or Secret `namespace/name` from this node's store.
pub fn read(
    control: &ControlPlane,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Data, ConfigError> {
    let unreadable = |message: String| ConfigError::Unreadable {
        kind,
        namespace: namespace.into(),
        name: name.into(),
        message,
    };
    let key = ObjectKey::new(kind, namespace, name);
    let bytes = control
        .reader()
        .get(&key)
        .map_err(|e| unreadable(e.to_string()))?
        .ok_or_else(|| ConfigError::NotFound {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    let resource = Resource::from_stored(value).map_err(|e| unreadable(e.field))?;
    let entries = match &resource.spec {
        Some(Spec::ConfigMap(c)) => c.entries(),
        Some(Spec::Secret(s)) => s.entries(),
        _ => return Err(unreadable("not a ConfigMap or Secret".into())),
    };
    // The error names the key only (the field), never the value.
    entries.map_err(|e| unreadable(format!("{} is not valid", e.field)))
}

/// A Secret's keys and decoded bytes, e.g. `.dockerconfigjson` of an `imagePullSecrets`
/// entry (parse it with [`crate::model::config::parse_docker_config`]).
pub fn secret_data(
    control: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, ConfigError> {
    read(control, Kind::Secret, namespace, name)
}

/// The ConfigMaps and Secrets an instance's pod names, as read (None: not there).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources {
    pub config_maps: BTreeMap<String, Option<Data>>,
    pub secrets: BTreeMap<String, Option<Data>>,
}

impl Sources {
    fn get(&self, kind: Kind, name: &str) -> Option<&Data> {
        let map = if kind == Kind::Secret {
            &self.secrets
        } else {
            &self.config_maps
        };
        map.get(name).and_then(Option::as_ref)
    }
}

/// The names of the ConfigMaps and Secrets `pod` refers to.
pub fn referenced(pod: &PodSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for v in pod.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.insert(s.secret_name.clone());
        }
    }
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &e.config_map_key_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// Reads every ConfigMap and Secret `pod` refers to from this node's store. An object
/// that cannot be read counts as missing (the reason is logged without values).
pub fn fetch(control: &ControlPlane, namespace: &str, pod: &PodSpec) -> Sources {
    let (cms, secrets) = referenced(pod);
    let mut out = Sources::default();
    for (kind, names) in [(Kind::ConfigMap, cms), (Kind::Secret, secrets)] {
        for name in names {
            let data = match read(control, kind, namespace, &name) {
                Ok(d) => Some(d),
                Err(ConfigError::NotFound { .. }) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a pod's config source");
                    None
                }
            };
            if kind == Kind::Secret {
                out.secrets.insert(name, data);
            } else {
                out.config_maps.insert(name, data);
            }
        }
    }
    out
}

/// What `fieldRef` may read.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pub name: String,
    pub namespace: String,
    pub pod_ip: String,
    pub node_name: String,
}

fn text(kind: Kind, name: &str, key: &str, bytes: &[u8]) -> Result<String, String> {
    match String::from_utf8(bytes.to_vec()) {
        Ok(t) if !t.contains('\0') => Ok(t),
        _ => Err(format!(
            "key \"{key}\" of {kind} \"{name}\" is not text for an environment variable (UTF-8 without NUL)"
        )),
    }
}

/// The container's environment: `envFrom` first (each key with its prefix), then `env`
/// (a later name replaces an earlier one), as Kubernetes orders them. `field` is the
/// container's path for messages, e.g. `containers[0]`.
pub fn env(c: &Container, sources: &Sources, fields: &Fields) -> Result<Vec<EnvVar>, String> {
    let mut out: Vec<EnvVar> = Vec::new();
    let mut set = |name: String, value: String| {
        out.retain(|e| e.name != name);
        out.push(EnvVar { name, value });
    };
    for e in c.env_from.iter().flatten() {
        let (kind, r) = match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, r),
            (None, Some(r)) => (Kind::Secret, r),
            (None, None) => continue,
        };
        let Some(data) = sources.get(kind, &r.name) else {
            if r.optional == Some(true) {
                continue;
            }
            return Err(format!(
                "{kind} \"{}\" not found (container {}, envFrom)",
                r.name, c.name
            ));
        };
        let prefix = e.prefix.clone().unwrap_or_default();
        for (k, v) in data {
            set(format!("{prefix}{k}"), text(kind, &r.name, k, v)?);
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else {
            set(e.name.clone(), e.value.clone().unwrap_or_default());
            continue;
        };
        let keyed = match (&from.config_map_key_ref, &from.secret_key_ref) {
            (Some(r), _) => Some((Kind::ConfigMap, r)),
            (None, Some(r)) => Some((Kind::Secret, r)),
            _ => None,
        };
        if let Some((kind, r)) = keyed {
            let optional = r.optional == Some(true);
            match sources.get(kind, &r.name) {
                None if optional => {}
                None => {
                    return Err(format!(
                        "{kind} \"{}\" not found (container {}, env {})",
                        r.name, c.name, e.name
                    ))
                }
                Some(data) => match data.get(&r.key) {
                    Some(v) => set(e.name.clone(), text(kind, &r.name, &r.key, v)?),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "key \"{}\" not found in {kind} \"{}\" (container {}, env {})",
                            r.key, r.name, c.name, e.name
                        ))
                    }
                },
            }
        } else if let Some(f) = &from.field_ref {
            let value = match f.field_path.as_str() {
                "metadata.name" => &fields.name,
                "metadata.namespace" => &fields.namespace,
                "status.podIP" => &fields.pod_ip,
                "spec.nodeName" => &fields.node_name,
                other => {
                    return Err(format!(
                        "env {}: fieldPath {other} is not supported",
                        e.name
                    ))
                }
            };
            set(e.name.clone(), value.clone());
        }
    }
    Ok(out)
}

/// A ConfigMap or Secret volume's files; None for other volumes. A missing object or
/// `items` key that is not optional is an error naming it; an optional one gives an empty
/// volume (or leaves the key out).
pub fn volume_files(v: &Volume, sources: &Sources) -> Result<Option<Vec<VolumeFile>>, String> {
    let (kind, name, items, default_mode, optional) = match (&v.config_map, &v.secret) {
        (Some(c), _) => (
            Kind::ConfigMap,
            &c.name,
            &c.items,
            c.default_mode,
            c.optional,
        ),
        (None, Some(s)) => (
            Kind::Secret,
            &s.secret_name,
            &s.items,
            s.default_mode,
            s.optional,
        ),
        (None, None) => return Ok(None),
    };
    let optional = optional == Some(true);
    let mode = |m: Option<i64>| {
        m.or(default_mode)
            .map_or(DEFAULT_MODE, |m| m as u32 & 0o777)
    };
    let Some(data) = sources.get(kind, name) else {
        if optional {
            return Ok(Some(Vec::new()));
        }
        return Err(format!("{kind} \"{name}\" not found (volume {})", v.name));
    };
    let files = match items {
        None => data
            .iter()
            .map(|(k, d)| VolumeFile {
                path: k.clone(),
                data: d.clone(),
                mode: mode(None),
            })
            .collect(),
        Some(items) => {
            let mut files = Vec::new();
            for KeyToPath { key, path, mode: m } in items {
                match data.get(key) {
                    Some(d) => files.push(VolumeFile {
                        path: path.clone(),
                        data: d.clone(),
                        mode: mode(*m),
                    }),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "key \"{key}\" not found in {kind} \"{name}\" (volume {})",
                            v.name
                        ))
                    }
                }
            }
            files
        }
    };
    Ok(Some(files))
}

/// Whether a volume's files must stay off disk: a Secret, or an emptyDir in Memory.
pub fn on_tmpfs(v: &Volume) -> bool {
    v.secret.is_some()
        || v.empty_dir
            .as_ref()
            .is_some_and(|e| e.medium.as_deref() == Some("Memory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceSpec;

    fn pod(v: serde_json::Value) -> PodSpec {
        let spec: InstanceSpec = serde_json::from_value(serde_json::json!({ "pod": v })).unwrap();
        spec.pod
    }

    fn data(pairs: &[(&str, &str)]) -> Option<Data> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn env_orders_env_from_then_env_and_reads_fields() {
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "x",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "APP_"}],
            "env": [{"name": "APP_MODE", "value": "override"},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "none", "key": "k", "optional": true}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}]}),
        );
        let (cms, secrets) = referenced(&p);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cfg"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["db", "none"]);
        let sources = Sources {
            config_maps: [("cfg".into(), data(&[("MODE", "a"), ("LEVEL", "3")]))].into(),
            secrets: [
                ("db".into(), data(&[("password", "hunter2")])),
                ("none".into(), None),
            ]
            .into(),
        };
        let fields = Fields {
            pod_ip: "10.1.0.5".into(),
            node_name: "n1".into(),
            ..Default::default()
        };
        let e = env(&p.containers[0], &sources, &fields).unwrap();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("APP_LEVEL", "3"),
                ("APP_MODE", "override"),
                ("PW", "hunter2"),
                ("IP", "10.1.0.5"),
                ("NODE", "n1")
            ]
        );
    }

    #[test]
    fn a_missing_key_or_object_is_named_without_values() {
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "x",
            "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]}),
        );
        let sources = Sources {
            secrets: [("db".into(), data(&[("user", "s3cr3t-user")]))].into(),
            ..Default::default()
        };
        let e = env(&p.containers[0], &sources, &Fields::default()).unwrap_err();
        assert!(
            e.contains("key \"password\"") && e.contains("Secret \"db\""),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = env(&p.containers[0], &Sources::default(), &Fields::default()).unwrap_err();
        assert!(e.contains("Secret \"db\" not found"), "{e}");
    }

    #[test]
    fn volume_files_follow_items_and_modes() {
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "x"}],
            "volumes": [
                {"name": "all", "configMap": {"name": "cfg", "defaultMode": 0o600}},
                {"name": "some", "secret": {"secretName": "db",
                    "items": [{"key": "password", "path": "creds/pw", "mode": 0o400}]}},
                {"name": "gone", "configMap": {"name": "missing", "optional": true}},
                {"name": "need", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "n"}]}},
                {"name": "scratch", "emptyDir": {"medium": "Memory"}}]}),
        );
        let sources = Sources {
            config_maps: [
                ("cfg".into(), data(&[("a", "1"), ("b", "2")])),
                ("missing".into(), None),
            ]
            .into(),
            secrets: [("db".into(), data(&[("password", "pw"), ("user", "u")]))].into(),
        };
        let vols = p.volumes.unwrap();
        let all = volume_files(&vols[0], &sources).unwrap().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|f| f.mode == 0o600));
        let some = volume_files(&vols[1], &sources).unwrap().unwrap();
        assert_eq!((some[0].path.as_str(), some[0].mode), ("creds/pw", 0o400));
        assert_eq!(some.len(), 1);
        assert!(volume_files(&vols[2], &sources)
            .unwrap()
            .unwrap()
            .is_empty());
        let e = volume_files(&vols[3], &sources).unwrap_err();
        assert!(
            e.contains("key \"nope\"") && e.contains("volume need"),
            "{e}"
        );
        assert_eq!(volume_files(&vols[4], &sources).unwrap(), None);
        assert!(on_tmpfs(&vols[1]) && on_tmpfs(&vols[4]) && !on_tmpfs(&vols[0]));
    }
}
