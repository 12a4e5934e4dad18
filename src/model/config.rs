//! ConfigMap and Secret: named key/value data an instance reads as files (volumes) or as
//! environment variables. The core/v1 shape: `data`, `binaryData` (ConfigMap), `type`,
//! `data`, `stringData` (Secret) and `immutable` sit at the top level of the object, as
//! Kubernetes keeps them; [`super::Resource`] lifts them into the typed spec on the way in
//! and puts them back on the way out.
//!
//! A Secret's `stringData` is merged into `data` (base64) when it is written and never
//! stored, as Kubernetes does. Every error names the field and the key, never a value.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{invalid, ModelError};

/// Total bytes of one ConfigMap's or Secret's data, as Kubernetes caps them (1 MiB).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
/// Longest key (a file name in a volume), as Kubernetes.
pub const MAX_KEY_LEN: usize = 253;

/// The top-level fields of a ConfigMap, in the order Kubernetes prints them.
pub const CONFIG_MAP_FIELDS: [&str; 3] = ["data", "binaryData", "immutable"];
/// The top-level fields of a Secret.
pub const SECRET_FIELDS: [&str; 4] = ["type", "data", "stringData", "immutable"];

pub const OPAQUE: &str = "Opaque";
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMapSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
    /// Values in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSpec {
    /// Opaque (the default), kubernetes.io/dockerconfigjson, kubernetes.io/tls, ...
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    /// Values in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
    /// Plain values, merged into `data` when written ([`SecretSpec::merge_string_data`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_data: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// A key in `data`: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn validate_key(field: &str, key: &str) -> Result<(), ModelError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key != "."
        && !key.starts_with("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            &format!("{field}.{key}"),
            format!("is not a valid key: letters, digits, '-', '_' and '.' (at most {MAX_KEY_LEN}, not \".\", not starting with \"..\")"),
        ))
    }
}

/// Decodes one base64 value; the error names the field and key, not the value.
fn decode(field: &str, key: &str, value: &str) -> Result<Vec<u8>, ModelError> {
    STANDARD
        .decode(value.trim_end_matches(['\n', '\r']))
        .map_err(|e| {
            let why = match e {
                base64::DecodeError::InvalidByte(at, _) => {
                    format!("an invalid character at offset {at}")
                }
                base64::DecodeError::InvalidLength(n) => {
                    format!("a length of {n} that is not valid")
                }
                base64::DecodeError::InvalidLastSymbol(at, _) => {
                    format!("an invalid last symbol at offset {at}")
                }
                base64::DecodeError::InvalidPadding => "invalid padding".to_string(),
            };
            invalid(
                &format!("{field}.{key}"),
                format!("is not valid base64 ({why})"),
            )
        })
}

fn check_total(total: usize) -> Result<(), ModelError> {
    if total > MAX_DATA_BYTES {
        return Err(invalid(
            "data",
            format!("holds {total} bytes in all; at most {MAX_DATA_BYTES} (1 MiB) are allowed"),
        ));
    }
    Ok(())
}

impl ConfigMapSpec {
    /// Every key with its bytes (`data` as UTF-8, `binaryData` decoded).
    pub fn entries(&self) -> Result<BTreeMap<String, Vec<u8>>, ModelError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.data.iter().flatten() {
            out.insert(k.clone(), v.as_bytes().to_vec());
        }
        for (k, v) in self.binary_data.iter().flatten() {
            out.insert(k.clone(), decode("binaryData", k, v)?);
        }
        Ok(out)
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        let mut total = 0;
        for (k, v) in self.data.iter().flatten() {
            validate_key("data", k)?;
            total += k.len() + v.len();
        }
        for (k, v) in self.binary_data.iter().flatten() {
            validate_key("binaryData", k)?;
            if self.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                return Err(invalid(
                    &format!("binaryData.{k}"),
                    "is also in data: a key may be in one of data and binaryData",
                ));
            }
            total += k.len() + decode("binaryData", k, v)?.len();
        }
        check_total(total)
    }
}

impl SecretSpec {
    pub fn secret_type(&self) -> &str {
        self.kind.as_deref().unwrap_or(OPAQUE)
    }

    /// `stringData` into `data` (base64; a key in both takes the `stringData` value), as
    /// Kubernetes does on write.
    pub fn merge_string_data(&mut self) {
        if let Some(plain) = self.string_data.take() {
            let data = self.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in plain {
                data.insert(k, STANDARD.encode(v.as_bytes()));
            }
        }
    }

    /// Every key with its decoded bytes (`stringData` included if not merged yet).
    pub fn entries(&self) -> Result<BTreeMap<String, Vec<u8>>, ModelError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.data.iter().flatten() {
            out.insert(k.clone(), decode("data", k, v)?);
        }
        for (k, v) in self.string_data.iter().flatten() {
            out.insert(k.clone(), v.as_bytes().to_vec());
        }
        Ok(out)
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if let Some(t) = &self.kind {
            if t.is_empty() || t.len() > 253 {
                return Err(invalid("type", "must be 1 to 253 characters"));
            }
        }
        for k in self.string_data.iter().flatten().map(|(k, _)| k) {
            validate_key("stringData", k)?;
        }
        for k in self.data.iter().flatten().map(|(k, _)| k) {
            validate_key("data", k)?;
        }
        let entries = self.entries()?;
        check_total(entries.iter().map(|(k, v)| k.len() + v.len()).sum())?;
        let need = |key: &str| -> Result<&Vec<u8>, ModelError> {
            entries.get(key).ok_or_else(|| {
                invalid(
                    &format!("data.{key}"),
                    format!("is required for a Secret of type {}", self.secret_type()),
                )
            })
        };
        match self.secret_type() {
            DOCKER_CONFIG_JSON => {
                let raw = need(DOCKER_CONFIG_JSON_KEY)?;
                let field = format!("data.{DOCKER_CONFIG_JSON_KEY}");
                parse_docker_config(raw).map_err(|why| invalid(&field, why))?;
            }
            "kubernetes.io/dockercfg" => {
                need(".dockercfg")?;
            }
            "kubernetes.io/tls" => {
                need("tls.crt")?;
                need("tls.key")?;
            }
            "kubernetes.io/ssh-auth" => {
                need("ssh-privatekey")?;
            }
            "kubernetes.io/basic-auth"
                if !entries.contains_key("username") && !entries.contains_key("password") =>
            {
                return Err(invalid(
                    "data",
                    "a Secret of type kubernetes.io/basic-auth needs username or password",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// One registry's credentials from a `.dockerconfigjson`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A `.dockerconfigjson` (`{"auths": {"registry": {"username", "password"} or
/// {"auth": base64("user:password")}}}`) to its credentials by registry. The error says
/// what is wrong without quoting the content.
pub fn parse_docker_config(raw: &[u8]) -> Result<BTreeMap<String, RegistryAuth>, String> {
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        format!(
            "is not JSON (line {}, column {}); expected {{\"auths\": {{\"REGISTRY\": {{\"username\": ..., \"password\": ...}}}}}}",
            e.line(),
            e.column()
        )
    })?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Err("has no \"auths\" object".into());
    };
    let mut out = BTreeMap::new();
    for (registry, entry) in auths {
        let s = |k: &str| entry.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let (username, password) = match (s("username"), s("password"), s("auth")) {
            (Some(u), Some(p), _) => (u, p),
            (_, _, Some(auth)) => {
                let bytes = STANDARD
                    .decode(auth.trim())
                    .map_err(|_| format!("auths.{registry}.auth is not valid base64"))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("auths.{registry}.auth is not UTF-8"))?;
                let Some((u, p)) = text.split_once(':') else {
                    return Err(format!(
                        "auths.{registry}.auth must be base64 of \"username:password\""
                    ));
                };
                (u.to_string(), p.to_string())
            }
            _ => {
                return Err(format!(
                    "auths.{registry} needs username and password, or auth"
                ))
            }
        };
        out.insert(registry.clone(), RegistryAuth { username, password });
    }
    Ok(out)
}

/// A Secret's `type` never changes, and an update of a ConfigMap or Secret stored with
/// `immutable: true` may change its metadata only, as Kubernetes holds it (`old` and `new` are whole stored objects; other
/// kinds pass).
pub fn check_immutable(old: &serde_json::Value, new: &serde_json::Value) -> Result<(), ModelError> {
    let kind = old["kind"].as_str().unwrap_or_default();
    let secret_type = |o: &serde_json::Value| o["type"].as_str().unwrap_or(OPAQUE).to_string();
    if kind == "Secret" && secret_type(old) != secret_type(new) {
        return Err(invalid(
            "type",
            format!(
                "a Secret's type cannot change (from {} to {}); delete and create it again",
                secret_type(old),
                secret_type(new)
            ),
        ));
    }
    let fields: &[&str] = match kind {
        "ConfigMap" => &CONFIG_MAP_FIELDS,
        "Secret" => &SECRET_FIELDS,
        _ => return Ok(()),
    };
    if old["immutable"] != true {
        return Ok(());
    }
    for f in fields {
        if old.get(*f) != new.get(*f) {
            return Err(invalid(
                f,
                format!(
                    "{kind} is immutable: only its metadata may change; delete and create it again"
                ),
            ));
        }
    }
    Ok(())
}

/// An error about the lifted spec named by the top-level path the user wrote.
pub fn top_level_error(mut e: ModelError) -> ModelError {
    if let Some(rest) = e.field.strip_prefix("spec.") {
        e.field = rest.to_string();
    } else if e.field == "spec" {
        e.field.clear();
    }
    e
}

/// A parse error of a Secret without the values serde quotes (`invalid type: string
/// "hunter2", expected a map` becomes `invalid type: string "<redacted>", ...`).
pub fn redact_error(mut e: ModelError) -> ModelError {
    const UNEXPECTED: [&str; 5] = [
        "string \"",
        "integer \"",
        "floating point \"",
        "boolean \"",
        "character \"",
    ];
    let mut out = String::new();
    let mut rest = e.message.as_str();
    while let Some((at, prefix)) = UNEXPECTED
        .iter()
        .filter_map(|p| rest.find(p).map(|at| (at, *p)))
        .min()
    {
        let start = at + prefix.len();
        let Some(len) = rest[start..].find('"') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str("<redacted>");
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    e.message = out;
    e
}

/// A Secret as a caller who did not ask for its values sees it: the keys stay (with empty
/// values), the values go. For lists, watches of every kind, and tables.
pub fn redact_secret_object(object: &mut serde_json::Value) {
    for field in ["data", "stringData"] {
        if let Some(map) = object.get_mut(field).and_then(|d| d.as_object_mut()) {
            for v in map.values_mut() {
                *v = serde_json::Value::String(String::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_field() {
        validate_key("data", "app.properties").unwrap();
        validate_key("data", "A_b-1.x").unwrap();
        for bad in ["", ".", "..", "..x", "a/b", "a b", &"k".repeat(254)] {
            let e = validate_key("data", bad).unwrap_err();
            assert_eq!(e.field, format!("data.{bad}"));
        }
    }

    #[test]
    fn string_data_merges_into_data_as_base64() {
        let mut s = SecretSpec {
            data: Some([("a".to_string(), STANDARD.encode("old"))].into()),
            string_data: Some(
                [
                    ("a".to_string(), "new".to_string()),
                    ("b".to_string(), "two".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        s.merge_string_data();
        assert!(s.string_data.is_none());
        let e = s.entries().unwrap();
        assert_eq!(e["a"], b"new");
        assert_eq!(e["b"], b"two");
        assert_eq!(s.data.as_ref().unwrap()["b"], "dHdv");
    }

    #[test]
    fn bad_base64_names_the_key_and_not_the_value() {
        let s = SecretSpec {
            data: Some([("pw".to_string(), "s3cr3t!!".to_string())].into()),
            ..Default::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "data.pw");
        assert!(e.message.contains("base64"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let c = ConfigMapSpec {
            binary_data: Some([("bin".to_string(), "%%%".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "binaryData.bin");
    }

    #[test]
    fn a_key_in_data_and_binary_data_is_refused() {
        let c = ConfigMapSpec {
            data: Some([("k".to_string(), "v".to_string())].into()),
            binary_data: Some([("k".to_string(), "dg==".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "binaryData.k");
    }

    #[test]
    fn more_than_a_mebibyte_is_refused() {
        let c = ConfigMapSpec {
            data: Some([("big".to_string(), "x".repeat(MAX_DATA_BYTES))].into()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "data");
        assert!(e.message.contains("1 MiB"), "{e}");
    }

    #[test]
    fn typed_secrets_need_their_keys() {
        let tls = SecretSpec {
            kind: Some("kubernetes.io/tls".into()),
            string_data: Some([("tls.crt".to_string(), "c".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(tls.validate().unwrap_err().field, "data.tls.key");
        let docker = |json: &str| SecretSpec {
            kind: Some(DOCKER_CONFIG_JSON.into()),
            string_data: Some([(DOCKER_CONFIG_JSON_KEY.to_string(), json.to_string())].into()),
            ..Default::default()
        };
        let e = docker("{not json").validate().unwrap_err();
        assert_eq!(e.field, "data..dockerconfigjson");
        assert!(!e.message.contains("not json"), "{e}");
        assert!(docker("{}")
            .validate()
            .unwrap_err()
            .message
            .contains("auths"));
        docker(r#"{"auths":{"r.example:5000":{"username":"u","password":"p"}}}"#)
            .validate()
            .unwrap();
        let missing = SecretSpec {
            kind: Some(DOCKER_CONFIG_JSON.into()),
            ..Default::default()
        };
        assert_eq!(
            missing.validate().unwrap_err().field,
            "data..dockerconfigjson"
        );
    }

    #[test]
    fn docker_config_reads_both_credential_forms() {
        let auth = STANDARD.encode("bob:pw:with:colons");
        let raw = format!(
            r#"{{"auths":{{"a.example":{{"username":"u","password":"p"}},"b.example":{{"auth":"{auth}"}}}}}}"#
        );
        let m = parse_docker_config(raw.as_bytes()).unwrap();
        assert_eq!(m["a.example"].username, "u");
        assert_eq!(m["b.example"].username, "bob");
        assert_eq!(m["b.example"].password, "pw:with:colons");
        assert!(!format!("{:?}", m["a.example"]).contains("\"p\""));
    }

    #[test]
    fn type_errors_of_a_secret_do_not_quote_values() {
        let e = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: hunter2\n")
            .unwrap_err();
        assert_eq!(e.field, "data");
        assert!(
            !e.message.contains("hunter2") && e.message.contains("<redacted>"),
            "{e}"
        );
        let e = parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {pw: [1234567]}\n",
        )
        .unwrap_err();
        assert!(!e.message.contains("1234567"), "{e}");
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let old = serde_json::json!({"kind": "ConfigMap", "immutable": true, "data": {"a": "1"}});
        let mut new = old.clone();
        new["metadata"] = serde_json::json!({"labels": {"x": "y"}});
        check_immutable(&old, &new).unwrap();
        new["data"]["a"] = "2".into();
        assert_eq!(check_immutable(&old, &new).unwrap_err().field, "data");
        let mut open = old.clone();
        open["immutable"] = false.into();
        check_immutable(&open, &new).unwrap();
        let opaque = serde_json::json!({"kind": "Secret", "data": {}});
        let tls = serde_json::json!({"kind": "Secret", "type": "kubernetes.io/tls", "data": {}});
        assert_eq!(check_immutable(&opaque, &tls).unwrap_err().field, "type");
        check_immutable(
            &opaque,
            &serde_json::json!({"kind": "Secret", "type": "Opaque"}),
        )
        .unwrap();
    }

    #[test]
    fn redaction_keeps_keys_and_drops_values() {
        let mut v = serde_json::json!({"kind": "Secret", "data": {"pw": "c2VjcmV0"}});
        redact_secret_object(&mut v);
        assert_eq!(v["data"]["pw"], "");
    }

    fn parse(yaml: &str) -> Result<crate::model::Resource, ModelError> {
        crate::model::parse_manifests(yaml).map(|mut v| v.remove(0))
    }

    #[test]
    fn core_v1_manifests_round_trip_at_the_top_level() {
        let r = parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ntype: Opaque\n\
             data: {user: YWRtaW4=}\nstringData: {password: hunter2}\n",
        )
        .unwrap();
        let v = r.to_value();
        assert!(v.get("spec").is_none(), "{v}");
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["data"]["password"], "aHVudGVyMg==");
        assert_eq!(v["data"]["user"], "YWRtaW4=");
        assert!(
            v.get("stringData").is_none(),
            "stringData is never stored: {v}"
        );
        let back = crate::model::Resource::from_stored(v.clone()).unwrap();
        assert_eq!(back.to_value(), v);
        let cm = parse(
            "apiVersion: omnicloud.io/v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n",
        )
        .unwrap();
        assert_eq!(cm.to_value()["data"]["a"], "1");
        assert_eq!(
            crate::model::Kind::parse("cm"),
            Some(crate::model::Kind::ConfigMap)
        );
    }

    #[test]
    fn manifest_errors_name_the_field() {
        let e = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'a b': x}\n")
            .unwrap_err();
        assert_eq!(e.field, "data.a b");
        let e =
            parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndatta: {}\n").unwrap_err();
        assert!(e.to_string().contains("datta"), "{e}");
        let e = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nspec: {}\n").unwrap_err();
        assert_eq!(e.field, "spec");
    }

    fn deployment(pod: &str) -> Result<crate::model::Resource, ModelError> {
        parse(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w}}\nspec:\n  \
             selector: {{matchLabels: {{app: w}}}}\n  template:\n    metadata: {{labels: {{app: w}}}}\n    \
             spec: {pod}\n"
        ))
    }

    #[test]
    fn pod_volumes_mounts_and_env_are_checked_by_field() {
        let ok = deployment(
            "{containers: [{name: c, image: x, volumeMounts: [{name: cfg, mountPath: /etc/app}], \
             env: [{name: A, valueFrom: {secretKeyRef: {name: s, key: pw}}}, \
                   {name: B, valueFrom: {fieldRef: {fieldPath: status.podIP}}}], \
             envFrom: [{prefix: X_, configMapRef: {name: c}}]}], \
             volumes: [{name: cfg, configMap: {name: c, items: [{key: a, path: dir/a}], defaultMode: 0400}}]}",
        )
        .unwrap();
        let Some(crate::model::Spec::Deployment(d)) = &ok.spec else {
            panic!()
        };
        let cm = d.template.spec.volumes.as_ref().unwrap()[0]
            .config_map
            .as_ref()
            .unwrap();
        assert_eq!(
            cm.default_mode,
            Some(0o400),
            "YAML's 0400 is octal, as Kubernetes reads it"
        );
        let cases = [
            ("{containers: [{name: c, image: x, volumeMounts: [{name: nope, mountPath: /n}]}]}",
             "spec.template.spec.containers[0].volumeMounts[0].name"),
            ("{containers: [{name: c, image: x}], volumes: [{name: v, emptyDir: {}}, {name: v, emptyDir: {}}]}",
             "spec.template.spec.volumes[1].name"),
            ("{containers: [{name: c, image: x, volumeMounts: [{name: v, mountPath: rel}]}], volumes: [{name: v, emptyDir: {}}]}",
             "spec.template.spec.containers[0].volumeMounts[0].mountPath"),
            ("{containers: [{name: c, image: x, volumeMounts: [{name: v, mountPath: /m, subPath: ../x}]}], volumes: [{name: v, emptyDir: {}}]}",
             "spec.template.spec.containers[0].volumeMounts[0].subPath"),
            ("{containers: [{name: c, image: x}], volumes: [{name: v, secret: {secretName: s, items: [{key: k, path: ../k}]}}]}",
             "spec.template.spec.volumes[0].secret.items[0].path"),
            ("{containers: [{name: c, image: x}], volumes: [{name: v, configMap: {name: c, defaultMode: 4095}}]}",
             "spec.template.spec.volumes[0].configMap.defaultMode"),
            ("{containers: [{name: c, image: x}], volumes: [{name: v, emptyDir: {medium: Disk}}]}",
             "spec.template.spec.volumes[0].emptyDir.medium"),
            ("{containers: [{name: c, image: x, env: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}]}]}",
             "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"),
            ("{containers: [{name: c, image: x, env: [{name: A, valueFrom: {}}]}]}",
             "spec.template.spec.containers[0].env[0].valueFrom"),
            ("{containers: [{name: c, image: x, env: [{name: A, valueFrom: {configMapKeyRef: {name: c, key: 'a/b'}}}]}]}",
             "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef.key"),
            ("{containers: [{name: c, image: x, envFrom: [{prefix: P}]}]}",
             "spec.template.spec.containers[0].envFrom[0]"),
        ];
        for (pod, field) in cases {
            let e = deployment(pod).unwrap_err();
            assert_eq!(e.field, field, "{pod}: {e}");
        }
    }
}
