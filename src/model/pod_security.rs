//! Pod Security Standards: what a pod may do to its host, by the level of its namespace
//! (Kubernetes' `privileged`, `baseline`, `restricted`), as the label
//! `pod-security.kubernetes.io/enforce` on the Namespace sets it (absent: the cluster
//! default, `[api] pod_security_default`, itself `baseline` by default).
//!
//! The rules are Kubernetes' (`baseline:latest`, `restricted:latest`), for the fields this
//! model has:
//!
//! - baseline: no `securityContext.privileged: true`; no `hostPath` volume; no `hostPort`
//!   other than 0 (Kubernetes' admission refuses every one too: a known list of allowed
//!   ports is not offered); capabilities added only from Kubernetes' baseline list
//!   ([`BASELINE_CAPABILITIES`]); `seccompProfile.type` not `Unconfined`.
//! - restricted, in addition: `runAsNonRoot: true` (on the pod or on every container) and
//!   no container setting it false; `runAsUser` not 0; `allowPrivilegeEscalation: false` on
//!   every container (containers here always run with no_new_privs, but the field is
//!   required as Kubernetes requires it, so a manifest passes here exactly where it passes
//!   there); `capabilities.drop` holding `ALL`; only `NET_BIND_SERVICE` added.
//!
//! Not checked, and why: `hostNetwork`, `hostPID`, `hostIPC` and `hostProcess` are no fields
//! of this model (refused at parse as unknown at every level); AppArmor, SELinux options,
//! `procMount` and `sysctls` are not acted on by the agent (warned about as such); a
//! seccomp profile is not required by restricted, because the agent applies no seccomp
//! filter yet (requiring one would promise what the node does not do).
//!
//! Pure: the API's admission hands it the object and the namespace's labels. It lives in
//! `model` because both `config` (the cluster default) and `api` need [`Level`], and
//! `config` may depend on `model` alone; the checks are validation of a pod spec.

use std::collections::BTreeMap;

use serde_json::Value;

use super::security::effective;
use super::workload::PodSpec;
use super::{invalid, ModelError, Resource, Spec};

/// The Namespace label that sets the level enforced on its pods.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Capabilities baseline lets a container add (Kubernetes' list).
pub const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// A Pod Security Standards level, from the most open to the most closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations refused.
    #[default]
    Baseline,
    /// Baseline plus hardening: non-root, no escalation, capabilities dropped.
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    /// `privileged`, `baseline` or `restricted`; `field` names it in the error.
    pub fn parse(field: &str, s: &str) -> Result<Level, ModelError> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(invalid(
                field,
                format!("\"{s}\" is not a Pod Security level: privileged, baseline or restricted"),
            )),
        }
    }

    /// The level a namespace with `labels` enforces; `default` when it has no label.
    pub fn of_namespace(
        labels: &BTreeMap<String, String>,
        default: Level,
    ) -> Result<Level, ModelError> {
        match labels.get(ENFORCE_LABEL) {
            Some(v) => Level::parse(&format!("metadata.labels[\"{ENFORCE_LABEL}\"]"), v),
            None => Ok(default),
        }
    }
}

string_form!(Level);

/// One broken rule: the rule's name (Kubernetes' check name), the field path and what it
/// must not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub field: String,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}: {})", self.rule, self.field, self.detail)
    }
}

/// The pod spec an object carries, with its field path: Deployment and StatefulSet
/// templates, a container Instance's pod. Other kinds carry none.
pub fn pod_of(r: &Resource) -> Option<(&'static str, &PodSpec)> {
    match &r.spec {
        Some(Spec::Deployment(s)) => Some(("spec.template.spec", &s.template.spec)),
        Some(Spec::StatefulSet(s)) => Some(("spec.template.spec", &s.template.spec)),
        Some(Spec::Instance(s)) if !s.is_vm() => Some(("spec.pod", &s.pod)),
        _ => None,
    }
}

/// The refusal's text, in Kubernetes' words plus the namespace:
/// `Deployment "web" in namespace "a" violates PodSecurity "baseline:latest": privileged
/// (spec...privileged: container "c" must not set securityContext.privileged=true)`.
pub fn refusal(r: &Resource, namespace: &str, level: Level, found: &[Violation]) -> String {
    let list: Vec<String> = found.iter().map(|v| v.to_string()).collect();
    format!(
        "{} \"{}\" in namespace \"{namespace}\" violates PodSecurity \"{level}:latest\": {}",
        r.kind,
        r.metadata.name,
        list.join(", ")
    )
}

/// Every rule of `level` that `spec` (at `field`) breaks; empty when it may run.
pub fn check(level: Level, field: &str, spec: &PodSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    baseline(field, spec, &mut out);
    if level == Level::Restricted {
        restricted(field, spec, &mut out);
    }
    out
}

fn push(out: &mut Vec<Violation>, rule: &'static str, field: String, detail: String) {
    out.push(Violation {
        rule,
        field,
        detail,
    });
}

/// `securityContext.seccompProfile.type` of a raw security context, if given.
fn seccomp_type(sc: Option<&Value>) -> Option<&str> {
    sc?.get("seccompProfile")?.get("type")?.as_str()
}

fn baseline(field: &str, spec: &PodSpec, out: &mut Vec<Violation>) {
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            push(
                out,
                "hostPath volumes",
                format!("{field}.volumes[{i}].hostPath"),
                format!("volume \"{}\" must not be a hostPath", v.name),
            );
        }
    }
    if seccomp_type(spec.security_context.as_ref()) == Some("Unconfined") {
        push(
            out,
            "seccompProfile",
            format!("{field}.securityContext.seccompProfile.type"),
            "pod must not set securityContext.seccompProfile.type=Unconfined".into(),
        );
    }
    for (path, c) in spec.containers_with_paths(field) {
        let name = &c.name;
        for (j, p) in c.ports.iter().flatten().enumerate() {
            if let Some(hp) = p.host_port.filter(|h| *h != 0) {
                push(
                    out,
                    "hostPort",
                    format!("{path}.ports[{j}].hostPort"),
                    format!("container \"{name}\" uses hostPort {hp}"),
                );
            }
        }
        if seccomp_type(c.security_context.as_ref()) == Some("Unconfined") {
            push(
                out,
                "seccompProfile",
                format!("{path}.securityContext.seccompProfile.type"),
                format!("container \"{name}\" must not set securityContext.seccompProfile.type=Unconfined"),
            );
        }
        // A context that does not parse is refused by validation, naming its field.
        let Ok(sec) = effective(field, spec, &path, c) else {
            continue;
        };
        if sec.privileged {
            push(
                out,
                "privileged",
                format!("{path}.securityContext.privileged"),
                format!("container \"{name}\" must not set securityContext.privileged=true"),
            );
        }
        for (k, cap) in sec.add.iter().enumerate() {
            if !BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                push(
                    out,
                    "capabilities",
                    format!("{path}.securityContext.capabilities.add[{k}]"),
                    format!("container \"{name}\" must not add capability \"{cap}\""),
                );
            }
        }
    }
}

fn restricted(field: &str, spec: &PodSpec, out: &mut Vec<Violation>) {
    let pod_non_root = spec
        .security_context
        .as_ref()
        .and_then(|v| v.get("runAsNonRoot"))
        .and_then(Value::as_bool);
    for (path, c) in spec.containers_with_paths(field) {
        let name = &c.name;
        let own = c.security_context.as_ref();
        let own_non_root = own
            .and_then(|v| v.get("runAsNonRoot"))
            .and_then(Value::as_bool);
        let Ok(sec) = effective(field, spec, &path, c) else {
            continue;
        };
        if own_non_root == Some(false) || (own_non_root.is_none() && pod_non_root != Some(true)) {
            push(
                out,
                "runAsNonRoot",
                format!("{path}.securityContext.runAsNonRoot"),
                format!("pod or container \"{name}\" must set securityContext.runAsNonRoot=true"),
            );
        }
        if sec.run_as_user == Some(0) {
            push(
                out,
                "runAsUser",
                format!("{path}.securityContext.runAsUser"),
                format!("container \"{name}\" must not set runAsUser=0"),
            );
        }
        let escalation = own
            .and_then(|v| v.get("allowPrivilegeEscalation"))
            .and_then(Value::as_bool);
        if escalation != Some(false) {
            push(
                out,
                "allowPrivilegeEscalation",
                format!("{path}.securityContext.allowPrivilegeEscalation"),
                format!(
                    "container \"{name}\" must set securityContext.allowPrivilegeEscalation=false"
                ),
            );
        }
        if !sec.drop.iter().any(|d| d == "ALL") {
            push(
                out,
                "capabilities",
                format!("{path}.securityContext.capabilities.drop"),
                format!(
                    "container \"{name}\" must set securityContext.capabilities.drop=[\"ALL\"]"
                ),
            );
        }
        for (k, cap) in sec.add.iter().enumerate() {
            if cap != "NET_BIND_SERVICE" && BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                push(
                    out,
                    "capabilities",
                    format!("{path}.securityContext.capabilities.add[{k}]"),
                    format!("container \"{name}\" must not add capability \"{cap}\" (only NET_BIND_SERVICE)"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn one(sc: Value) -> PodSpec {
        pod(json!({"containers": [{"name": "c", "image": "x", "securityContext": sc}]}))
    }

    /// A container restricted accepts.
    fn hardened() -> Value {
        json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false,
               "capabilities": {"drop": ["ALL"]}})
    }

    fn rules(level: Level, spec: &PodSpec) -> Vec<(&'static str, String)> {
        check(level, "spec", spec)
            .into_iter()
            .map(|v| (v.rule, v.field))
            .collect()
    }

    #[test]
    fn levels_parse_from_the_label_and_default_when_absent() {
        let mut labels = BTreeMap::new();
        assert_eq!(
            Level::of_namespace(&labels, Level::Baseline).unwrap(),
            Level::Baseline
        );
        labels.insert(ENFORCE_LABEL.to_string(), "restricted".to_string());
        assert_eq!(
            Level::of_namespace(&labels, Level::Privileged).unwrap(),
            Level::Restricted
        );
        labels.insert(ENFORCE_LABEL.to_string(), "open".to_string());
        let e = Level::of_namespace(&labels, Level::Baseline).unwrap_err();
        assert!(e.field.contains(ENFORCE_LABEL), "{e}");
        assert!(e.message.contains("\"open\""), "{e}");
    }

    #[test]
    fn privileged_containers_are_refused_below_privileged() {
        let p = one(json!({"privileged": true}));
        let want = vec![(
            "privileged",
            "spec.containers[0].securityContext.privileged".to_string(),
        )];
        assert_eq!(rules(Level::Baseline, &p), want);
        assert!(rules(Level::Restricted, &p).contains(&want[0]));
        assert!(rules(Level::Privileged, &p).is_empty());
        let v = &check(Level::Baseline, "spec", &p)[0];
        assert_eq!(
            v.detail,
            "container \"c\" must not set securityContext.privileged=true"
        );
    }

    #[test]
    fn host_path_volumes_and_host_ports_are_refused_by_baseline() {
        let p = pod(json!({
            "containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}]}],
            "volumes": [{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/etc"}}]
        }));
        assert_eq!(
            rules(Level::Baseline, &p),
            vec![
                ("hostPath volumes", "spec.volumes[1].hostPath".to_string()),
                (
                    "hostPort",
                    "spec.containers[0].ports[1].hostPort".to_string()
                ),
            ]
        );
        assert!(rules(Level::Privileged, &p).is_empty());
        let zero = pod(json!({"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 0}]}]}));
        assert!(rules(Level::Baseline, &zero).is_empty());
    }

    #[test]
    fn baseline_allows_its_capability_list_only() {
        let p = one(json!({"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE", "NET_ADMIN"]}}));
        assert_eq!(
            rules(Level::Baseline, &p),
            vec![(
                "capabilities",
                "spec.containers[0].securityContext.capabilities.add[2]".to_string()
            )]
        );
        assert!(rules(Level::Privileged, &p).is_empty());
    }

    #[test]
    fn unconfined_seccomp_is_refused_by_baseline() {
        let p = pod(json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "image": "x",
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
                {"name": "d", "image": "x",
                "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]
        }));
        assert_eq!(
            rules(Level::Baseline, &p),
            vec![
                (
                    "seccompProfile",
                    "spec.securityContext.seccompProfile.type".to_string()
                ),
                (
                    "seccompProfile",
                    "spec.containers[1].securityContext.seccompProfile.type".to_string()
                ),
            ]
        );
    }

    #[test]
    fn restricted_wants_non_root_no_escalation_and_all_dropped() {
        assert!(rules(Level::Restricted, &one(hardened())).is_empty());
        // Nothing set: every restricted rule, baseline has nothing to say.
        let bare = pod(json!({"containers": [{"name": "c", "image": "x"}]}));
        assert!(rules(Level::Baseline, &bare).is_empty());
        let names: Vec<&str> = rules(Level::Restricted, &bare)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(
            names,
            ["runAsNonRoot", "allowPrivilegeEscalation", "capabilities"]
        );
        // runAsNonRoot on the pod covers its containers; a container may not undo it.
        let on_pod = pod(json!({"securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c", "image": "x", "securityContext":
                {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}));
        assert!(rules(Level::Restricted, &on_pod).is_empty());
        let undone = pod(json!({"securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c", "image": "x", "securityContext":
                {"runAsNonRoot": false, "allowPrivilegeEscalation": false,
                 "capabilities": {"drop": ["ALL"]}}}]}));
        assert_eq!(
            rules(Level::Restricted, &undone),
            vec![(
                "runAsNonRoot",
                "spec.containers[0].securityContext.runAsNonRoot".to_string()
            )]
        );
    }

    #[test]
    fn restricted_refuses_root_escalation_and_added_capabilities() {
        let mut sc = hardened();
        sc["runAsNonRoot"] = json!(false);
        sc["runAsUser"] = json!(0);
        sc["allowPrivilegeEscalation"] = json!(true);
        sc["capabilities"]["add"] = json!(["NET_BIND_SERVICE", "CHOWN"]);
        let names: Vec<String> = rules(Level::Restricted, &one(sc))
            .into_iter()
            .map(|(r, f)| format!("{r} {f}"))
            .collect();
        assert_eq!(
            names,
            [
                "runAsNonRoot spec.containers[0].securityContext.runAsNonRoot",
                "runAsUser spec.containers[0].securityContext.runAsUser",
                "allowPrivilegeEscalation spec.containers[0].securityContext.allowPrivilegeEscalation",
                "capabilities spec.containers[0].securityContext.capabilities.add[1]",
            ]
        );
        // Init containers are held to the same rules.
        let init = pod(
            json!({"containers": [{"name": "c", "image": "x", "securityContext": hardened()}],
            "initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": true}}]}),
        );
        let found = rules(Level::Restricted, &init);
        assert!(
            found.contains(&(
                "privileged",
                "spec.initContainers[0].securityContext.privileged".to_string()
            )),
            "{found:?}"
        );
    }

    #[test]
    fn the_refusal_names_kind_namespace_level_rule_and_field() {
        let r = Resource::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "x", "image": "i",
                        "securityContext": {"privileged": true}}]}}}
        }))
        .unwrap();
        let (field, spec) = pod_of(&r).unwrap();
        let found = check(Level::Baseline, field, spec);
        assert_eq!(
            refusal(&r, "team", Level::Baseline, &found),
            "Deployment \"web\" in namespace \"team\" violates PodSecurity \"baseline:latest\": \
             privileged (spec.template.spec.containers[0].securityContext.privileged: \
             container \"x\" must not set securityContext.privileged=true)"
        );
    }
}
