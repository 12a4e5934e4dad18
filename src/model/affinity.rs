//! A pod's `affinity`, in the Kubernetes shape: `nodeAffinity`, `podAffinity` and
//! `podAntiAffinity`, each with its `requiredDuringSchedulingIgnoredDuringExecution` and
//! `preferredDuringSchedulingIgnoredDuringExecution` terms. Parsed once with the rest of
//! the pod (unknown fields refused, naming the path) and validated here; the scheduler
//! glue (`orchestrator::controllers::placement`) reads the typed terms.
//!
//! What the scheduler acts on: required and preferred `podAntiAffinity`, preferred
//! `podAffinity`, by the terms' `matchLabels` and `topologyKey` (the hostname when unset).
//! Checked but not yet acted on: `nodeAffinity`, required `podAffinity`, a term's
//! `matchExpressions` and `namespaces` ([`Affinity::not_acted_on`] names them; `apply`
//! answers them as warnings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::workload::LabelSelector;
use super::{invalid, validate_label_key, ModelError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAffinity>,
}

/// A node affinity's or a pod (anti-)affinity's two lists: what must hold (`R`) and what
/// is preferred (`P`, weighted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduling<R, P> {
    #[serde(
        default = "Option::default",
        rename = "requiredDuringSchedulingIgnoredDuringExecution",
        skip_serializing_if = "Option::is_none"
    )]
    pub required: Option<R>,
    #[serde(
        default = "Option::default",
        rename = "preferredDuringSchedulingIgnoredDuringExecution",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred: Option<Vec<P>>,
}

impl<R, P> Default for Scheduling<R, P> {
    fn default() -> Self {
        Scheduling {
            required: None,
            preferred: None,
        }
    }
}

pub type NodeAffinity = Scheduling<NodeSelector, PreferredSchedulingTerm>;

/// `podAffinity` or `podAntiAffinity`.
pub type PodAffinity = Scheduling<Vec<PodAffinityTerm>, WeightedPodAffinityTerm>;

/// Terms ORed: a node fits when one of them matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Requirements ANDed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<NodeSelectorRequirement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_fields: Option<Vec<NodeSelectorRequirement>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist, Gt, Lt.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreferredSchedulingTerm {
    /// 1 to 100.
    pub weight: i64,
    pub preference: NodeSelectorTerm,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodAffinityTerm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// The node label whose value groups nodes (`kubernetes.io/hostname`: each node its
    /// own group); the hostname when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedPodAffinityTerm {
    /// 1 to 100.
    pub weight: i64,
    pub pod_affinity_term: PodAffinityTerm,
}

const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";

impl Affinity {
    /// `field` is the affinity's own path, e.g. `spec.template.spec.affinity`.
    pub(super) fn validate(&self, field: &str) -> Result<(), ModelError> {
        if let Some(n) = &self.node_affinity {
            let at = format!("{field}.nodeAffinity");
            if let Some(r) = &n.required {
                let at = format!("{at}.{REQUIRED}.nodeSelectorTerms");
                if r.node_selector_terms.is_empty() {
                    return Err(invalid(&at, "must have at least one term"));
                }
                for (i, t) in r.node_selector_terms.iter().enumerate() {
                    t.validate(&format!("{at}[{i}]"))?;
                }
            }
            for (i, p) in n.preferred.iter().flatten().enumerate() {
                let at = format!("{at}.{PREFERRED}[{i}]");
                weight(&at, p.weight)?;
                p.preference.validate(&format!("{at}.preference"))?;
            }
        }
        for (name, pa) in [
            ("podAffinity", &self.pod_affinity),
            ("podAntiAffinity", &self.pod_anti_affinity),
        ] {
            let Some(pa) = pa else { continue };
            let at = format!("{field}.{name}");
            for (i, t) in pa.required.iter().flatten().enumerate() {
                t.validate(&format!("{at}.{REQUIRED}[{i}]"))?;
            }
            for (i, w) in pa.preferred.iter().flatten().enumerate() {
                let at = format!("{at}.{PREFERRED}[{i}]");
                weight(&at, w.weight)?;
                w.pod_affinity_term
                    .validate(&format!("{at}.podAffinityTerm"))?;
            }
        }
        Ok(())
    }

    /// The paths (below `affinity`) of what was given that the scheduler does not act on
    /// yet, for a warning.
    pub fn not_acted_on(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.node_affinity.is_some() {
            out.push("nodeAffinity".to_string());
        }
        if self
            .pod_affinity
            .as_ref()
            .is_some_and(|p| p.required.is_some())
        {
            out.push(format!("podAffinity.{REQUIRED}"));
        }
        let terms = self
            .pod_affinity
            .iter()
            .chain(&self.pod_anti_affinity)
            .flat_map(PodAffinity::terms);
        for t in terms {
            let exprs = t
                .label_selector
                .as_ref()
                .and_then(|s| s.match_expressions.as_ref());
            if exprs.is_some_and(|e| !e.is_empty()) {
                out.push("labelSelector.matchExpressions".to_string());
            }
            if t.namespaces.is_some() {
                out.push("namespaces".to_string());
            }
        }
        out.dedup();
        out
    }
}

impl PodAffinity {
    /// Every term, required then preferred.
    pub fn terms(&self) -> impl Iterator<Item = &PodAffinityTerm> {
        let required = self.required.iter().flatten();
        let preferred = self
            .preferred
            .iter()
            .flatten()
            .map(|w| &w.pod_affinity_term);
        required.chain(preferred)
    }
}

impl PodAffinityTerm {
    /// The labels the term selects instances by (its `matchLabels`).
    pub fn match_labels(&self) -> BTreeMap<String, String> {
        self.label_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default()
    }

    fn validate(&self, field: &str) -> Result<(), ModelError> {
        if let Some(s) = &self.label_selector {
            s.validate(&format!("{field}.labelSelector"))?;
        }
        if let Some(key) = &self.topology_key {
            let at = format!("{field}.topologyKey");
            if key.is_empty() {
                return Err(invalid(
                    &at,
                    "must not be empty (e.g. kubernetes.io/hostname)",
                ));
            }
            validate_label_key(&at, key)?;
        }
        Ok(())
    }
}

impl NodeSelectorTerm {
    fn validate(&self, field: &str) -> Result<(), ModelError> {
        for (name, reqs) in [
            ("matchExpressions", &self.match_expressions),
            ("matchFields", &self.match_fields),
        ] {
            for (i, r) in reqs.iter().flatten().enumerate() {
                r.validate(&format!("{field}.{name}[{i}]"))?;
            }
        }
        Ok(())
    }
}

impl NodeSelectorRequirement {
    fn validate(&self, field: &str) -> Result<(), ModelError> {
        validate_label_key(&format!("{field}.key"), &self.key)?;
        let values = self.values.as_deref().unwrap_or_default();
        let at = format!("{field}.values");
        match self.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => Err(invalid(
                &at,
                format!(
                    "must have at least one value for operator {}",
                    self.operator
                ),
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => Err(invalid(
                &at,
                format!("must be empty for operator {}", self.operator),
            )),
            "Gt" | "Lt" => match values {
                [v] if v.parse::<i64>().is_ok() => Ok(()),
                _ => Err(invalid(
                    &at,
                    format!("must be one integer for operator {}", self.operator),
                )),
            },
            "In" | "NotIn" | "Exists" | "DoesNotExist" => Ok(()),
            other => Err(invalid(
                &format!("{field}.operator"),
                format!("\"{other}\" is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt"),
            )),
        }
    }
}

fn weight(field: &str, w: i64) -> Result<(), ModelError> {
    match w {
        1..=100 => Ok(()),
        _ => Err(invalid(
            &format!("{field}.weight"),
            format!("must be from 1 to 100, got {w}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn check(v: Value) -> Result<Affinity, ModelError> {
        let a: Affinity = serde_json::from_value(v).map_err(|e| invalid("", e.to_string()))?;
        a.validate("spec.affinity")?;
        Ok(a)
    }

    fn err(v: Value) -> String {
        check(v).unwrap_err().to_string()
    }

    #[test]
    fn the_kubernetes_shape_reads_and_writes_back_the_same() {
        let v = json!({
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": [
                        {"key": "disk", "operator": "Exists"}]}}]},
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}},
                                                   "topologyKey": "zone"}}]},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}}]},
        });
        let a = check(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap(), v);
        let anti = a.pod_anti_affinity.as_ref().unwrap();
        let t = &anti.required.as_ref().unwrap()[0];
        assert_eq!(t.match_labels()["app"], "web");
        assert_eq!(t.topology_key, None);
        assert_eq!(a.not_acted_on(), ["nodeAffinity"]);
    }

    #[test]
    fn a_weight_out_of_range_names_its_field() {
        let e = err(
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}]}}),
        );
        assert_eq!(
            e,
            "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: must be from 1 to 100, got 0"
        );
        let e = err(
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 101, "preference": {}}]}}),
        );
        assert!(
            e.starts_with("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight:"),
            "{e}"
        );
    }

    #[test]
    fn node_selector_operators_and_values_are_checked() {
        let term = |r: Value| {
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [r]}]}}})
        };
        let at = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]";
        let e = err(term(
            json!({"key": "zone", "operator": "Near", "values": ["a"]}),
        ));
        assert_eq!(
            e,
            format!(
                "{at}.operator: \"Near\" is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt"
            )
        );
        let e = err(term(json!({"key": "zone", "operator": "In"})));
        assert_eq!(
            e,
            format!("{at}.values: must have at least one value for operator In")
        );
        let e = err(term(
            json!({"key": "zone", "operator": "Exists", "values": ["a"]}),
        ));
        assert_eq!(e, format!("{at}.values: must be empty for operator Exists"));
        let e = err(term(
            json!({"key": "cores", "operator": "Gt", "values": ["many"]}),
        ));
        assert_eq!(
            e,
            format!("{at}.values: must be one integer for operator Gt")
        );
        assert!(check(term(
            json!({"key": "cores", "operator": "Lt", "values": ["8"]})
        ))
        .is_ok());
        let e = err(
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": []}}}),
        );
        assert_eq!(
            e,
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: must have at least one term"
        );
    }

    #[test]
    fn pod_terms_check_their_selector_and_topology_key() {
        let e = err(
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ""}]}}),
        );
        assert_eq!(
            e,
            "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: must not be empty (e.g. kubernetes.io/hostname)"
        );
        let e = err(
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Like"}]}}]}}),
        );
        assert!(
            e.starts_with("spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator:"),
            "{e}"
        );
        let a = check(
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
             "namespaces": ["db"]}]}}),
        )
        .unwrap();
        assert_eq!(
            a.not_acted_on(),
            [
                format!("podAffinity.{REQUIRED}"),
                "labelSelector.matchExpressions".into(),
                "namespaces".into()
            ]
        );
    }

    /// A Deployment whose pod has `affinity`, parsed and validated.
    fn deployment(affinity: Value) -> Result<crate::model::Resource, ModelError> {
        crate::model::Resource::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}],
                                           "affinity": affinity}}}}))
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_path() {
        let e =
            deployment(json!({"podAntiAffinity": {"requiredDuringScheduling": []}})).unwrap_err();
        assert_eq!(
            e.field,
            "spec.template.spec.affinity.podAntiAffinity.requiredDuringScheduling"
        );
        assert!(e.message.contains("unknown field"), "{e}");
        let e = deployment(
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 500, "podAffinityTerm": {}}]}}),
        )
        .unwrap_err();
        assert_eq!(
            e.field,
            "spec.template.spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"
        );
    }

    #[test]
    fn apply_warns_of_what_the_scheduler_ignores() {
        let r = deployment(
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}),
        )
        .unwrap();
        assert_eq!(
            r.warnings(),
            ["spec.template.spec.affinity.nodeAffinity: accepted but not acted on by the scheduler yet"]
        );
    }
}
