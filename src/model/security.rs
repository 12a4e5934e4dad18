//! `securityContext` of a pod and of its containers, typed from the free-form manifest
//! field: the user and group to run as, a read-only root filesystem, capabilities to add and
//! drop, privileged. A container's own fields override the pod's. Fields this node does not
//! act on (seLinuxOptions, fsGroup, ...) are listed so the agent can warn about them.

use serde_json::Value;

use super::workload::{Container, PodSpec};
use super::{invalid, ModelError};

/// What a container runs with, merged from the pod's and its own `securityContext`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityContext {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: bool,
    pub read_only_root_filesystem: bool,
    pub privileged: bool,
    /// Capability names without `CAP_`, upper case (`NET_ADMIN`); `ALL` in drop drops all.
    pub add: Vec<String>,
    pub drop: Vec<String>,
    /// Fields given but not acted on, by path (warned about).
    pub ignored: Vec<String>,
}

const CONTAINER_FIELDS: [&str; 7] = [
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "privileged",
    "capabilities",
    "allowPrivilegeEscalation",
];
const POD_FIELDS: [&str; 3] = ["runAsUser", "runAsGroup", "runAsNonRoot"];

fn id(field: &str, v: &Value) -> Result<u32, ModelError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= i32::MAX as u32)
        .ok_or_else(|| {
            invalid(
                field,
                format!("must be an integer from 0 to 2147483647, got {v}"),
            )
        })
}

fn flag(field: &str, v: &Value) -> Result<bool, ModelError> {
    v.as_bool()
        .ok_or_else(|| invalid(field, format!("must be true or false, got {v}")))
}

fn capabilities(field: &str, v: &Value) -> Result<Vec<String>, ModelError> {
    let Some(list) = v.as_array() else {
        return Err(invalid(
            field,
            "must be a list of capability names like NET_ADMIN",
        ));
    };
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let name = c.as_str().ok_or_else(|| invalid(&f, "must be a string"))?;
        let name = name.trim().to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name).to_string();
        let known = name == "ALL"
            || <oci_spec::runtime::Capability as std::str::FromStr>::from_str(&name).is_ok();
        if !known {
            return Err(invalid(
                &f,
                format!("\"{name}\" is not a Linux capability (like NET_ADMIN, SYS_TIME) or ALL"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// Applies one `securityContext` object (`field` names it) onto `out`.
fn apply(
    field: &str,
    v: &Value,
    container: bool,
    out: &mut SecurityContext,
) -> Result<(), ModelError> {
    let Some(map) = v.as_object() else {
        return Err(invalid(field, "must be an object"));
    };
    let known: &[&str] = if container {
        &CONTAINER_FIELDS
    } else {
        &POD_FIELDS
    };
    for (k, v) in map {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "runAsUser" => out.run_as_user = Some(id(&f, v)?),
            "runAsGroup" => out.run_as_group = Some(id(&f, v)?),
            "runAsNonRoot" => out.run_as_non_root = flag(&f, v)?,
            "readOnlyRootFilesystem" if container => out.read_only_root_filesystem = flag(&f, v)?,
            "privileged" if container => out.privileged = flag(&f, v)?,
            // No setuid binary gains anything: containers always run with no_new_privs.
            "allowPrivilegeEscalation" if container => {
                flag(&f, v)?;
            }
            "capabilities" if container => {
                let Some(caps) = v.as_object() else {
                    return Err(invalid(&f, "must be an object with add and drop lists"));
                };
                for (ck, cv) in caps {
                    let cf = format!("{f}.{ck}");
                    match ck.as_str() {
                        "add" => out.add = capabilities(&cf, cv)?,
                        "drop" => out.drop = capabilities(&cf, cv)?,
                        _ => return Err(invalid(&cf, "is not add or drop")),
                    }
                }
            }
            _ if !known.contains(&k.as_str()) => out.ignored.push(f),
            _ => {}
        }
    }
    Ok(())
}

/// The security context container `c` (at `path`) runs with: the pod's, then its own.
pub fn effective(
    pod_field: &str,
    pod: &PodSpec,
    path: &str,
    c: &Container,
) -> Result<SecurityContext, ModelError> {
    let mut out = SecurityContext::default();
    if let Some(v) = &pod.security_context {
        apply(&format!("{pod_field}.securityContext"), v, false, &mut out)?;
    }
    if let Some(v) = &c.security_context {
        apply(&format!("{path}.securityContext"), v, true, &mut out)?;
    }
    if out.run_as_non_root && out.run_as_user == Some(0) {
        return Err(invalid(
            &format!("{path}.securityContext.runAsNonRoot"),
            "is true but runAsUser is 0 (root)",
        ));
    }
    if out.privileged && out.add.iter().chain(&out.drop).next().is_some() {
        return Err(invalid(
            &format!("{path}.securityContext.capabilities"),
            "a privileged container has every capability: drop privileged or the list",
        ));
    }
    Ok(out)
}

/// Every container's security context checked (at apply).
pub(super) fn validate(field: &str, spec: &PodSpec) -> Result<(), ModelError> {
    for (path, c) in spec.containers_with_paths(field) {
        effective(field, spec, &path, c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_containers_fields_override_the_pods_and_bad_ones_are_named() {
        let p = pod(serde_json::json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 5},
            "containers": [{"name": "a", "image": "x", "securityContext": {
                "runAsUser": 2000, "readOnlyRootFilesystem": true,
                "capabilities": {"add": ["net_admin"], "drop": ["CAP_CHOWN"]}}}]
        }));
        let s = effective("spec", &p, "spec.containers[0]", &p.containers[0]).unwrap();
        assert_eq!((s.run_as_user, s.run_as_group), (Some(2000), Some(100)));
        assert!(s.read_only_root_filesystem && !s.privileged);
        assert_eq!(
            (s.add.clone(), s.drop.clone()),
            (vec!["NET_ADMIN".to_string()], vec!["CHOWN".to_string()])
        );
        assert_eq!(s.ignored, ["spec.securityContext.fsGroup"]);
        let bad = |c: serde_json::Value| {
            let p = pod(
                serde_json::json!({"containers": [{"name": "a", "image": "x", "securityContext": c}]}),
            );
            effective("spec", &p, "spec.containers[0]", &p.containers[0]).unwrap_err()
        };
        let e = bad(serde_json::json!({"runAsUser": -1}));
        assert_eq!(e.field, "spec.containers[0].securityContext.runAsUser");
        let e = bad(serde_json::json!({"capabilities": {"add": ["FLY"]}}));
        assert_eq!(
            e.field,
            "spec.containers[0].securityContext.capabilities.add[0]"
        );
        assert!(e.message.contains("FLY"), "{e}");
        let e = bad(serde_json::json!({"runAsNonRoot": true, "runAsUser": 0}));
        assert!(e.field.ends_with("runAsNonRoot"), "{e}");
        let e = bad(serde_json::json!({"privileged": "yes"}));
        assert!(e.field.ends_with("privileged"), "{e}");
    }
}
