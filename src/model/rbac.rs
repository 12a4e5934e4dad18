//! Access-control kinds, Kubernetes' RBAC without API groups: `Role` / `ClusterRole` hold
//! `rules` (resources × verbs, optionally only some `resourceNames`), `RoleBinding` /
//! `ClusterRoleBinding` grant a role to `subjects` (users or groups); `Token` records one
//! API token: its user, the SHA-256 of its secret (never the secret), and its expiry.
//!
//! Like Kubernetes, a role's and a binding's fields sit at the top level of the object
//! (`rules`, `subjects`, `roleRef`). The decisions over these kinds live in `auth`.

use serde::{Deserialize, Serialize};

use super::{invalid, Kind, ModelError};

/// The top-level fields of a Role or ClusterRole.
pub const ROLE_FIELDS: [&str; 1] = ["rules"];
/// The top-level fields of a RoleBinding or ClusterRoleBinding.
pub const BINDING_FIELDS: [&str; 2] = ["subjects", "roleRef"];

/// The verbs a rule may grant. `*` grants all of them.
pub const VERBS: [&str; 9] = [
    "get", "list", "watch", "create", "update", "delete", "scale", "exec", "logs",
];

/// What a rule may name besides the kinds' plurals: routes that are not resources.
pub const OTHER_RESOURCES: [&str; 7] = [
    "nodes", "cluster", "claims", "registry", "metrics", "audit", "tokens",
];

/// The names of the roles every cluster has; no ClusterRole may take one of them.
pub const BUILT_IN_ROLES: [&str; 5] = ["cluster-admin", "admin", "edit", "view", "system:node"];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRule {
    /// Resource plurals (`deployments`, `instances`, ...) or `*`.
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    /// When given, the rule covers only these object names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// A Role's or ClusterRole's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subject {
    /// `User` or `Group`.
    pub kind: String,
    pub name: String,
    /// Accepted for Kubernetes manifests (a ServiceAccount's); not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Accepted for Kubernetes manifests (`rbac.authorization.k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleRef {
    /// `Role` (same namespace as the binding) or `ClusterRole`.
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

/// A RoleBinding's or ClusterRoleBinding's fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindingSpec {
    #[serde(default)]
    pub subjects: Vec<Subject>,
    pub role_ref: RoleRef,
}

/// One API token. The object's name is the token's id (the part before the secret).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSpec {
    pub user: String,
    /// Lowercase hex SHA-256 of the token's secret.
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Milliseconds since the Unix epoch; none: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

fn known_resource(r: &str) -> bool {
    r == "*" || OTHER_RESOURCES.contains(&r) || Kind::ALL.iter().any(|k| k.plural() == r)
}

impl RoleSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.resources.is_empty() {
                return Err(invalid(&format!("rules[{i}].resources"), "is required"));
            }
            if rule.verbs.is_empty() {
                return Err(invalid(&format!("rules[{i}].verbs"), "is required"));
            }
            for (j, r) in rule.resources.iter().enumerate() {
                if !known_resource(r) {
                    let mut known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
                    known.extend(OTHER_RESOURCES);
                    return Err(invalid(
                        &format!("rules[{i}].resources[{j}]"),
                        format!(
                            "unknown resource \"{r}\"; expected \"*\" or one of {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
            for (j, v) in rule.verbs.iter().enumerate() {
                if v != "*" && !VERBS.contains(&v.as_str()) {
                    return Err(invalid(
                        &format!("rules[{i}].verbs[{j}]"),
                        format!(
                            "unknown verb \"{v}\"; expected \"*\" or one of {}",
                            VERBS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl BindingSpec {
    pub fn validate(&self, kind: Kind) -> Result<(), ModelError> {
        for (i, s) in self.subjects.iter().enumerate() {
            if s.kind != "User" && s.kind != "Group" {
                return Err(invalid(
                    &format!("subjects[{i}].kind"),
                    format!("\"{}\": expected User or Group", s.kind),
                ));
            }
            if s.name.is_empty() {
                return Err(invalid(&format!("subjects[{i}].name"), "is required"));
            }
        }
        let allowed: &[&str] = if kind == Kind::ClusterRoleBinding {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        if !allowed.contains(&self.role_ref.kind.as_str()) {
            return Err(invalid(
                "roleRef.kind",
                format!(
                    "\"{}\": a {kind} refers to {}",
                    self.role_ref.kind,
                    allowed.join(" or ")
                ),
            ));
        }
        if self.role_ref.name.is_empty() {
            return Err(invalid("roleRef.name", "is required"));
        }
        Ok(())
    }
}

impl TokenSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.user.is_empty() {
            return Err(invalid("spec.user", "is required"));
        }
        let hex = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(invalid(
                "spec.sha256",
                "must be 64 lowercase hex digits (the SHA-256 of the token's secret)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            resources: resources.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resource_names: Vec::new(),
        }
    }

    #[test]
    fn rules_name_known_resources_and_verbs() {
        let ok = RoleSpec {
            rules: vec![rule(&["deployments", "instances"], &["get", "scale"])],
        };
        assert!(ok.validate().is_ok());
        let bad = RoleSpec {
            rules: vec![rule(&["deployments"], &["patch"])],
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.field, "rules[0].verbs[0]");
        assert!(e.message.contains("patch"), "{e}");
        let bad = RoleSpec {
            rules: vec![rule(&["pods"], &["get"])],
        };
        assert_eq!(bad.validate().unwrap_err().field, "rules[0].resources[0]");
    }

    #[test]
    fn cluster_bindings_refer_to_cluster_roles_only() {
        let b = BindingSpec {
            subjects: vec![Subject {
                kind: "User".into(),
                name: "alice".into(),
                namespace: None,
                api_group: None,
            }],
            role_ref: RoleRef {
                kind: "Role".into(),
                name: "x".into(),
                api_group: None,
            },
        };
        assert!(b.validate(Kind::RoleBinding).is_ok());
        assert_eq!(
            b.validate(Kind::ClusterRoleBinding).unwrap_err().field,
            "roleRef.kind"
        );
    }
}
