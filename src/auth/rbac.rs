//! RBAC decisions, Kubernetes' rules without API groups:
//!
//! 1. A `ClusterRoleBinding` grants its role's rules everywhere: cluster-scoped resources
//!    and every namespace (including requests across all namespaces).
//! 2. A `RoleBinding` in namespace N grants its role's rules (a Role of N, or a
//!    ClusterRole) only for requests in N.
//! 3. A rule matches when its verbs hold the verb (or `*`), its resources hold the resource
//!    (or `*`), and, when it names `resourceNames`, the request names one of them.
//! 4. Nothing else is allowed: deny by default. The refusal names the user, the verb, the
//!    resource and the namespace.
//!
//! Built in: the cluster roles `cluster-admin`, `admin`, `edit`, `view` and `system:node`,
//! and the bindings `system:masters` → cluster-admin, `system:nodes` → system:node.

use std::collections::BTreeMap;

use crate::model::rbac::{BindingSpec, PolicyRule, RoleSpec};
use crate::model::{Kind, Resource, Spec};

use super::tokens::{Identity, MASTERS_GROUP, NODES_GROUP};

/// What a request asks to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// A kind's plural or one of `model::rbac::OTHER_RESOURCES`.
    pub resource: String,
    /// Empty: cluster-scoped, or across every namespace.
    pub namespace: String,
    pub name: Option<String>,
}

impl Attributes {
    pub fn new(verb: &str, resource: &str, namespace: &str, name: Option<&str>) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.map(str::to_string),
        }
    }

    /// For one object of `kind` (namespace objects count as in their own namespace, so a
    /// RoleBinding in N can grant reading namespace N).
    pub fn object(verb: &str, kind: Kind, namespace: &str, name: Option<&str>) -> Attributes {
        let ns = match (kind, name) {
            (Kind::Namespace, Some(n)) => n,
            _ if kind.namespaced() => namespace,
            _ => "",
        };
        Attributes::new(verb, kind.plural(), ns, name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Why not, for the 403.
    Deny(String),
}

/// The roles and bindings in effect.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    roles: BTreeMap<(String, String), RoleSpec>,
    cluster_roles: BTreeMap<String, RoleSpec>,
    bindings: Vec<(String, BindingSpec)>,
    cluster_bindings: Vec<BindingSpec>,
}

impl Policy {
    pub fn from_resources(objects: impl IntoIterator<Item = Resource>) -> Policy {
        let mut p = Policy::default();
        for r in objects {
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let name = r.metadata.name.clone();
            match (r.kind, r.spec) {
                (Kind::Role, Some(Spec::Role(s))) => {
                    p.roles.insert((ns, name), s);
                }
                (Kind::ClusterRole, Some(Spec::Role(s))) => {
                    p.cluster_roles.insert(name, s);
                }
                (Kind::RoleBinding, Some(Spec::Binding(b))) => p.bindings.push((ns, b)),
                (Kind::ClusterRoleBinding, Some(Spec::Binding(b))) => p.cluster_bindings.push(b),
                _ => {}
            }
        }
        p
    }

    fn cluster_role(&self, name: &str) -> Option<RoleSpec> {
        built_in(name).or_else(|| self.cluster_roles.get(name).cloned())
    }

    fn role_of(&self, binding_ns: Option<&str>, b: &BindingSpec) -> Option<RoleSpec> {
        match (b.role_ref.kind.as_str(), binding_ns) {
            ("ClusterRole", _) => self.cluster_role(&b.role_ref.name),
            ("Role", Some(ns)) => self
                .roles
                .get(&(ns.to_string(), b.role_ref.name.clone()))
                .cloned(),
            _ => None,
        }
    }
}

fn names(who: &Identity, b: &BindingSpec) -> bool {
    b.subjects.iter().any(|s| match s.kind.as_str() {
        "User" => s.name == who.user,
        "Group" => who.groups.contains(&s.name),
        _ => false,
    })
}

fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let has = |list: &[String], x: &str| list.iter().any(|v| v == "*" || v == x);
    has(&rule.verbs, &a.verb)
        && has(&rule.resources, &a.resource)
        && (rule.resource_names.is_empty()
            || a.name
                .as_ref()
                .is_some_and(|n| rule.resource_names.contains(n)))
}

fn role_allows(role: &RoleSpec, a: &Attributes) -> bool {
    role.rules.iter().any(|r| rule_allows(r, a))
}

pub fn authorize(who: &Identity, a: &Attributes, p: &Policy) -> Decision {
    if who.groups.iter().any(|g| g == MASTERS_GROUP) {
        return Decision::Allow;
    }
    if who.groups.iter().any(|g| g == NODES_GROUP)
        && role_allows(&built_in("system:node").expect("built in"), a)
    {
        return Decision::Allow;
    }
    let cluster_wide = p
        .cluster_bindings
        .iter()
        .filter(|b| names(who, b))
        .filter_map(|b| p.role_of(None, b));
    let in_namespace = p
        .bindings
        .iter()
        .filter(|(ns, b)| !a.namespace.is_empty() && *ns == a.namespace && names(who, b))
        .filter_map(|(ns, b)| p.role_of(Some(ns), b));
    if cluster_wide
        .chain(in_namespace)
        .any(|role| role_allows(&role, a))
    {
        return Decision::Allow;
    }
    let place = if a.namespace.is_empty() {
        "cluster-wide (all namespaces)".to_string()
    } else {
        format!("in namespace \"{}\"", a.namespace)
    };
    let object = match &a.name {
        Some(n) => format!("{} \"{n}\"", a.resource),
        None => a.resource.clone(),
    };
    Decision::Deny(format!(
        "user \"{}\" may not {} {object} {place}: no role bound to the user allows verb \"{}\" on resource \"{}\"",
        who.user, a.verb, a.verb, a.resource
    ))
}

fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        resources: resources.iter().map(|s| s.to_string()).collect(),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        resource_names: Vec::new(),
    }
}

const READ: [&str; 3] = ["get", "list", "watch"];

/// The namespaced resources a role inside a namespace may touch, less `except`.
fn namespaced_except(except: &[Kind]) -> Vec<&'static str> {
    Kind::ALL
        .iter()
        .filter(|k| k.namespaced() && !except.contains(k))
        .map(|k| k.plural())
        .collect()
}

/// The built-in cluster roles.
pub fn built_in(name: &str) -> Option<RoleSpec> {
    let rules = match name {
        "cluster-admin" => vec![rule(&["*"], &["*"])],
        "admin" => vec![
            rule(&namespaced_except(&[]), &["*"]),
            rule(&["claims", "metrics"], &["*"]),
            rule(&["namespaces"], &READ),
        ],
        "edit" => vec![
            rule(&namespaced_except(&[Kind::Role, Kind::RoleBinding]), &["*"]),
            rule(&["claims", "metrics"], &["*"]),
            rule(&["namespaces"], &READ),
        ],
        "view" => {
            let hidden = [Kind::Secret, Kind::Role, Kind::RoleBinding];
            vec![
                rule(
                    &namespaced_except(&hidden),
                    &["get", "list", "watch", "logs"],
                ),
                rule(&["metrics"], &["get"]),
                rule(&["namespaces"], &READ),
            ]
        }
        // What node-to-node traffic needs: forwarded logs, claims, image pulls, scrapes.
        "system:node" => vec![
            rule(&["*"], &READ),
            rule(&["instances"], &["logs"]),
            rule(&["claims"], &["get", "update"]),
            rule(&["registry", "metrics"], &["get"]),
        ],
        _ => return None,
    };
    Some(RoleSpec { rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rbac::{RoleRef, Subject};
    use crate::model::ObjectMeta;

    fn user(name: &str) -> Identity {
        Identity {
            user: name.into(),
            groups: Vec::new(),
            class: super::super::tokens::Class::User,
        }
    }

    fn binding(kind: Kind, ns: Option<&str>, who: &str, role_kind: &str, role: &str) -> Resource {
        Resource {
            api_version: crate::model::API_VERSION.into(),
            kind,
            metadata: ObjectMeta {
                name: format!("{who}-{role}"),
                namespace: ns.map(str::to_string),
                ..Default::default()
            },
            spec: Some(Spec::Binding(BindingSpec {
                subjects: vec![Subject {
                    kind: "User".into(),
                    name: who.into(),
                    namespace: None,
                    api_group: None,
                }],
                role_ref: RoleRef {
                    kind: role_kind.into(),
                    name: role.into(),
                    api_group: None,
                },
            })),
            status: None,
        }
    }

    fn allowed(who: &str, p: &Policy, a: Attributes) -> bool {
        authorize(&user(who), &a, p) == Decision::Allow
    }

    #[test]
    fn view_reads_but_does_not_write_or_see_secrets() {
        let p = Policy::from_resources([binding(
            Kind::ClusterRoleBinding,
            None,
            "vic",
            "ClusterRole",
            "view",
        )]);
        assert!(allowed(
            "vic",
            &p,
            Attributes::new("list", "deployments", "", None)
        ));
        assert!(allowed(
            "vic",
            &p,
            Attributes::new("logs", "instances", "a", None)
        ));
        assert!(!allowed(
            "vic",
            &p,
            Attributes::new("get", "secrets", "a", None)
        ));
        let a = Attributes::new("delete", "deployments", "a", Some("web"));
        match authorize(&user("vic"), &a, &p) {
            Decision::Deny(m) => {
                for part in ["\"vic\"", "delete", "deployments", "\"a\""] {
                    assert!(m.contains(part), "{m} names {part}");
                }
            }
            Decision::Allow => panic!("view may not delete"),
        }
        assert!(!allowed(
            "other",
            &p,
            Attributes::new("list", "deployments", "", None)
        ));
    }

    #[test]
    fn a_role_binding_holds_only_in_its_namespace() {
        let p = Policy::from_resources([binding(
            Kind::RoleBinding,
            Some("a"),
            "ed",
            "ClusterRole",
            "edit",
        )]);
        assert!(allowed(
            "ed",
            &p,
            Attributes::new("create", "deployments", "a", None)
        ));
        assert!(!allowed(
            "ed",
            &p,
            Attributes::new("create", "deployments", "b", None)
        ));
        assert!(!allowed(
            "ed",
            &p,
            Attributes::new("list", "deployments", "", None)
        ));
        assert!(!allowed(
            "ed",
            &p,
            Attributes::new("create", "rolebindings", "a", None)
        ));
        assert!(allowed(
            "ed",
            &p,
            Attributes::object("get", Kind::Namespace, "", Some("a"))
        ));
        assert!(!allowed(
            "ed",
            &p,
            Attributes::object("get", Kind::Namespace, "", Some("b"))
        ));
        assert!(!allowed(
            "ed",
            &p,
            Attributes::new("list", "nodes", "", None)
        ));
    }

    #[test]
    fn resource_names_narrow_a_rule_and_roles_resolve_in_their_namespace() {
        let role = Resource {
            api_version: crate::model::API_VERSION.into(),
            kind: Kind::Role,
            metadata: ObjectMeta {
                name: "scaler".into(),
                namespace: Some("a".into()),
                ..Default::default()
            },
            spec: Some(Spec::Role(RoleSpec {
                rules: vec![PolicyRule {
                    resources: vec!["deployments".into()],
                    verbs: vec!["scale".into()],
                    resource_names: vec!["web".into()],
                }],
            })),
            status: None,
        };
        let p = Policy::from_resources([
            role,
            binding(Kind::RoleBinding, Some("a"), "s", "Role", "scaler"),
            binding(Kind::RoleBinding, Some("b"), "s", "Role", "scaler"),
        ]);
        assert!(allowed(
            "s",
            &p,
            Attributes::new("scale", "deployments", "a", Some("web"))
        ));
        assert!(!allowed(
            "s",
            &p,
            Attributes::new("scale", "deployments", "a", Some("db"))
        ));
        // The Role lives in a; the binding in b refers to a Role b does not have.
        assert!(!allowed(
            "s",
            &p,
            Attributes::new("scale", "deployments", "b", Some("web"))
        ));
    }

    #[test]
    fn nodes_read_and_forward_but_do_not_write_objects() {
        let node = Identity {
            user: "system:node:n1".into(),
            groups: vec![NODES_GROUP.into()],
            class: super::super::tokens::Class::System,
        };
        let p = Policy::default();
        let ok = |a| authorize(&node, &a, &p) == Decision::Allow;
        assert!(ok(Attributes::new("get", "instances", "a", Some("x"))));
        assert!(ok(Attributes::new("logs", "instances", "a", Some("x"))));
        assert!(ok(Attributes::new("get", "registry", "", None)));
        assert!(!ok(Attributes::new(
            "delete",
            "deployments",
            "a",
            Some("x")
        )));
        assert!(!ok(Attributes::new("create", "tokens", "", None)));
    }
}
