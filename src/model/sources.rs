//! What a pod reads from ConfigMaps, Secrets and itself: the `configMap` and `secret`
//! volume sources, `env[].valueFrom` and `envFrom`, and their validation (a mount naming
//! no volume, a duplicate volume, a path that is not absolute or holds `..`, a key that is
//! not a key, each refused naming the field).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::config::validate_key;
use super::workload::{Container, PodSpec};
use super::{invalid, validate_name, ModelError};

/// The `fieldRef` paths an environment variable may take.
pub const FIELD_PATHS: [&str; 4] = [
    "metadata.name",
    "metadata.namespace",
    "status.podIP",
    "spec.nodeName",
];

/// `items[]`: one key to a file path inside the volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub mode: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMapVolume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<KeyToPath>>,
    /// File mode, 0644 when absent (YAML's 0644 and JSON's 420 are the same number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretVolume {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<KeyToPath>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `valueFrom`: exactly one source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// `envFrom[]`: every key of a ConfigMap or Secret as a variable, with an optional prefix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<NamedRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NamedRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A file mode as a number (JSON's 420) or as octal text (YAML's `0400`, which YAML 1.2
/// reads as a string: Kubernetes' YAML 1.1 reads it as octal, and so do we).
fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(i64),
        Text(String),
    }
    match Mode::deserialize(d)? {
        Mode::Number(n) => Ok(Some(n)),
        Mode::Text(t) => {
            let digits = t.strip_prefix("0o").or_else(|| t.strip_prefix('0'));
            digits
                .filter(|d| !d.is_empty())
                .and_then(|d| i64::from_str_radix(d, 8).ok())
                .or_else(|| (t == "0").then_some(0))
                .map(Some)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "\"{t}\" is not a file mode (a number like 420, or octal like 0644)"
                    ))
                })
        }
    }
}

fn validate_mode(field: &str, mode: Option<i64>) -> Result<(), ModelError> {
    match mode {
        Some(m) if !(0..=0o777).contains(&m) => Err(invalid(
            field,
            format!("must be a file mode from 0 to 0777 (511), got {m}"),
        )),
        _ => Ok(()),
    }
}

/// A path inside a volume: relative, no `..` element, not empty.
fn validate_relative(field: &str, path: &str) -> Result<(), ModelError> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(invalid(
            field,
            format!("\"{path}\" must be a relative path without '..'"),
        ));
    }
    Ok(())
}

fn validate_items(field: &str, items: &Option<Vec<KeyToPath>>) -> Result<(), ModelError> {
    let mut paths = BTreeSet::new();
    for (i, item) in items.iter().flatten().enumerate() {
        let f = format!("{field}.items[{i}]");
        validate_key(&format!("{f}.key"), &item.key).map_err(|mut e| {
            e.field = format!("{f}.key");
            e
        })?;
        validate_relative(&format!("{f}.path"), &item.path)?;
        if item.path.starts_with("..") {
            return Err(invalid(&format!("{f}.path"), "must not start with '..'"));
        }
        validate_mode(&format!("{f}.mode"), item.mode)?;
        if !paths.insert(item.path.as_str()) {
            return Err(invalid(
                &format!("{f}.path"),
                format!("\"{}\" is given twice", item.path),
            ));
        }
    }
    Ok(())
}

/// The volumes and what each container takes from them, ConfigMaps, Secrets and fields.
pub(super) fn validate_pod_sources(
    field: &str,
    spec: &PodSpec,
    claims: &[&str],
) -> Result<(), ModelError> {
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("{field}.volumes[{i}]");
        super::validate_label_value(&format!("{f}.name"), &v.name)?;
        if !volumes.insert(v.name.as_str()) {
            return Err(invalid(
                &format!("{f}.name"),
                format!("duplicate volume name \"{}\"", v.name),
            ));
        }
        if let Some(c) = &v.config_map {
            validate_name(&format!("{f}.configMap.name"), &c.name)?;
            validate_items(&format!("{f}.configMap"), &c.items)?;
            validate_mode(&format!("{f}.configMap.defaultMode"), c.default_mode)?;
        }
        if let Some(s) = &v.secret {
            validate_name(&format!("{f}.secret.secretName"), &s.secret_name)?;
            validate_items(&format!("{f}.secret"), &s.items)?;
            validate_mode(&format!("{f}.secret.defaultMode"), s.default_mode)?;
        }
        if let Some(e) = &v.empty_dir {
            if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty()) {
                if m != "Memory" {
                    return Err(invalid(
                        &format!("{f}.emptyDir.medium"),
                        format!("\"{m}\" is not \"\" (the node's disk) or Memory"),
                    ));
                }
            }
        }
    }
    volumes.extend(claims.iter().copied());
    let containers = spec.containers_with_paths(field);
    for (path, c) in containers {
        validate_mounts(&path, c, &volumes)?;
        validate_env(&path, c)?;
    }
    Ok(())
}

fn validate_mounts(path: &str, c: &Container, volumes: &BTreeSet<&str>) -> Result<(), ModelError> {
    let mut targets = BTreeSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let f = format!("{path}.volumeMounts[{j}]");
        if !volumes.contains(m.name.as_str()) {
            return Err(invalid(
                &format!("{f}.name"),
                format!("no volume named \"{}\" in volumes", m.name),
            ));
        }
        if !m.mount_path.starts_with('/') || m.mount_path.split('/').any(|p| p == "..") {
            return Err(invalid(
                &format!("{f}.mountPath"),
                format!("\"{}\" must be an absolute path without '..'", m.mount_path),
            ));
        }
        if !targets.insert(m.mount_path.trim_end_matches('/')) {
            return Err(invalid(
                &format!("{f}.mountPath"),
                format!("\"{}\" is mounted twice", m.mount_path),
            ));
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            validate_relative(&format!("{f}.subPath"), sub)?;
        }
    }
    Ok(())
}

fn validate_env(path: &str, c: &Container) -> Result<(), ModelError> {
    for (j, e) in c.env.iter().flatten().enumerate() {
        let f = format!("{path}.env[{j}]");
        if e.name.is_empty() || e.name.contains('=') {
            return Err(invalid(
                &format!("{f}.name"),
                "must be a non-empty name without '='",
            ));
        }
        let Some(from) = &e.value_from else { continue };
        let f = format!("{f}.valueFrom");
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(invalid(&f, "may not be set together with value"));
        }
        let n = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if n != 1 {
            return Err(invalid(
                &f,
                "needs exactly one of configMapKeyRef, secretKeyRef, fieldRef",
            ));
        }
        for (name, r) in [
            ("configMapKeyRef", &from.config_map_key_ref),
            ("secretKeyRef", &from.secret_key_ref),
        ] {
            if let Some(r) = r {
                validate_name(&format!("{f}.{name}.name"), &r.name)?;
                validate_key(&format!("{f}.{name}.key"), &r.key).map_err(|mut e| {
                    e.field = format!("{f}.{name}.key");
                    e
                })?;
            }
        }
        if let Some(r) = &from.field_ref {
            if !FIELD_PATHS.contains(&r.field_path.as_str()) {
                return Err(invalid(
                    &format!("{f}.fieldRef.fieldPath"),
                    format!(
                        "\"{}\" is not supported; expected one of {}",
                        r.field_path,
                        FIELD_PATHS.join(", ")
                    ),
                ));
            }
        }
    }
    for (j, e) in c.env_from.iter().flatten().enumerate() {
        let f = format!("{path}.envFrom[{j}]");
        match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), None) => validate_name(&format!("{f}.configMapRef.name"), &r.name)?,
            (None, Some(r)) => validate_name(&format!("{f}.secretRef.name"), &r.name)?,
            _ => return Err(invalid(&f, "needs exactly one of configMapRef, secretRef")),
        }
    }
    Ok(())
}
