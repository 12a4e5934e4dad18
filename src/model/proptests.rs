//! Property tests of manifest parsing and validation (proptest, stable toolchain).
//!
//! - Any text, and YAML-flavoured text full of anchors, aliases and brackets, parses or
//!   is refused with a message; never a panic.
//! - Generated Deployments with random counts and quantities, at most one of them out of
//!   bounds: valid ones are accepted and read back exactly, invalid ones are refused
//!   naming that field.
//! - Random alias and nesting structures are refused by the guard or stay small: what a
//!   body becomes is bounded by its size.
//! - Quantities parse exactly (an independent decimal oracle) or are refused.
//!
//! `PROPTEST_CASES` sets the cases per property (default 64 to keep `cargo test` fast):
//! `PROPTEST_CASES=20000 cargo test --release --lib model::proptests`.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

use super::limits::{MAX_CPU_MILLIS, MAX_MEMORY_BYTES, MAX_REPLICAS, MAX_REVISION_HISTORY};
use super::parse::split_documents;
use super::quantity::{CpuQuantity, MemoryQuantity};
use super::yaml_guard::{alias_budget, MAX_DEPTH};
use super::{parse_manifests, Resource};

fn config() -> Config {
    let cases = crate::proptest_cases(64);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Parse never panics; a refusal always says something.
fn parses_or_explains(body: &str) {
    if let Err(e) = parse_manifests(body) {
        assert!(!e.message.is_empty(), "empty error for {body:?}");
    }
}

/// A field of a generated Deployment and the value written there.
#[derive(Clone, Debug)]
enum Knob {
    Replicas(i64),
    Cpu(String),
    Memory(String),
    MaxSurge(Value),
    HistoryLimit(i64),
}

impl Knob {
    /// The field path and whether the value is within bounds.
    fn field_and_ok(&self) -> (&'static str, bool) {
        match self {
            Knob::Replicas(n) => ("spec.replicas", (0..=MAX_REPLICAS).contains(n)),
            Knob::Cpu(s) => (
                "spec.template.spec.containers[0].resources.requests.cpu",
                cpu_oracle(s).is_some_and(|m| m <= MAX_CPU_MILLIS),
            ),
            Knob::Memory(s) => (
                "spec.template.spec.containers[0].resources.requests.memory",
                memory_oracle(s).is_some_and(|b| b <= MAX_MEMORY_BYTES),
            ),
            Knob::MaxSurge(v) => (
                "spec.strategy.rollingUpdate.maxSurge",
                match v {
                    Value::Number(n) => n.as_i64().is_some_and(|n| (0..=MAX_REPLICAS).contains(&n)),
                    Value::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<i64>().ok())
                        .is_some_and(|p| (0..=100).contains(&p)),
                    _ => false,
                },
            ),
            Knob::HistoryLimit(n) => (
                "spec.revisionHistoryLimit",
                (0..=MAX_REVISION_HISTORY).contains(n),
            ),
        }
    }

    fn set(&self, d: &mut Value) {
        let c = &mut d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"];
        match self {
            Knob::Replicas(n) => d["spec"]["replicas"] = json!(n),
            Knob::Cpu(s) => c["cpu"] = json!(s),
            Knob::Memory(s) => c["memory"] = json!(s),
            Knob::MaxSurge(v) => d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": v}}),
            Knob::HistoryLimit(n) => d["spec"]["revisionHistoryLimit"] = json!(n),
        }
    }
}

/// Decimal text with an optional fraction, exactly times `mult`; None if not whole.
fn exact(s: &str, mult: u128) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || frac.len() > 9
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let n: u128 = format!("{int}{frac}").parse().ok()?;
    let p = n.checked_mul(mult)?;
    let d = 10u128.pow(frac.len() as u32);
    (p % d == 0).then(|| u64::try_from(p / d).ok()).flatten()
}

fn cpu_oracle(s: &str) -> Option<u64> {
    match s.strip_suffix('m') {
        Some(m) if !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()) => m.parse().ok(),
        Some(_) => None,
        None => exact(s, 1000),
    }
}

fn memory_oracle(s: &str) -> Option<u64> {
    let units: [(&str, u128); 4] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
    ];
    for (u, m) in units {
        if let Some(n) = s.strip_suffix(u) {
            return exact(n, m);
        }
    }
    exact(s, 1)
}

fn decimal_text() -> impl Strategy<Value = String> {
    (0u64..5_000_000, prop::option::of(0u32..1_000_000))
        .prop_map(|(i, f)| f.map_or(i.to_string(), |f| format!("{i}.{f}")))
}

fn knob() -> impl Strategy<Value = Knob> {
    let count = prop_oneof![
        0i64..=20_000,
        Just(2_147_483_648),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>()
    ];
    prop_oneof![
        count.clone().prop_map(Knob::Replicas),
        prop_oneof![decimal_text(), decimal_text().prop_map(|d| format!("{d}m")),]
            .prop_map(Knob::Cpu),
        (
            decimal_text(),
            prop::sample::select(vec!["", "Ki", "Mi", "Gi", "k"])
        )
            .prop_map(|(d, u)| Knob::Memory(format!("{d}{u}"))),
        prop_oneof![
            count.clone().prop_map(|n| json!(n)),
            any::<i32>().prop_map(|p| json!(format!("{p}%"))),
            (0i64..200).prop_map(|p| json!(format!("{p}%"))),
        ]
        .prop_map(Knob::MaxSurge),
        count.prop_map(Knob::HistoryLimit),
    ]
}

fn deployment() -> Value {
    json!({
        "apiVersion": "omnicloud.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {}}}]}
            }
        }
    })
}

/// YAML-flavoured text: indicators, anchors, aliases, quotes and line breaks.
fn yamlish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "[", "]", "{", "}", ": ", ", ", "- ", "\n", "  ", "&a ", "&b ", "*a", "*b", "'", "\"", "x",
        "1", ".inf", ".nan", "? ", "!t ", "|\n", ">\n", "#", "---\n", "kind: ", "~",
    ]);
    prop::collection::vec(pieces, 0..120).prop_map(|v| v.concat())
}

/// Nested anchors: level i is a list of `width` copies of level i-1, used `refs` times.
fn alias_tree(levels: usize, width: usize, refs: usize) -> String {
    let mut s = format!("l0: &l0 [{}]\n", vec!["lol"; width].join(","));
    for i in 1..levels {
        let prev = format!("*l{}", i - 1);
        s.push_str(&format!(
            "l{i}: &l{i} [{}]\n",
            vec![prev.as_str(); width].join(",")
        ));
    }
    let last = format!("*l{}", levels - 1);
    s.push_str(&format!("top: [{}]\n", vec![last.as_str(); refs].join(",")));
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_parses_or_explains(body in any::<String>()) {
        parses_or_explains(&body);
    }

    #[test]
    fn any_bytes_parse_or_explain(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        parses_or_explains(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_flavoured_text_parses_or_explains(body in yamlish()) {
        parses_or_explains(&body);
        // Whatever a body becomes is bounded by its size (aliases included).
        if let Ok(values) = split_documents(&body) {
            let built = serde_json::to_string(&values).unwrap().len() as u64;
            prop_assert!(built <= 8 * body.len() as u64 + 8 * alias_budget(body.len()));
        }
    }

    #[test]
    fn generated_deployments_are_accepted_exactly_or_refused_by_field(
        knob in knob(),
        others in prop::collection::vec(knob(), 0..4),
        json_body in any::<bool>(),
    ) {
        let mut d = deployment();
        // Only in-bounds values besides the knob under test.
        for k in others.iter().filter(|k| k.field_and_ok().1) {
            k.set(&mut d);
        }
        knob.set(&mut d);
        let body = if json_body {
            serde_json::to_string(&d).unwrap()
        } else {
            serde_norway::to_string(&d).unwrap()
        };
        let (field, ok) = knob.field_and_ok();
        match parse_manifests(&body) {
            Ok(mut parsed) => {
                prop_assert!(ok, "{field} accepted: {knob:?}");
                let r: Resource = parsed.remove(0);
                prop_assert_eq!(r.to_value(), d.clone());
                let again = parse_manifests(&serde_json::to_string(&r.to_value()).unwrap());
                prop_assert_eq!(again.unwrap().remove(0), r);
            }
            Err(e) => {
                prop_assert!(!ok, "{knob:?} refused: {e}");
                prop_assert_eq!(e.field, field, "{}", e.message);
            }
        }
    }

    #[test]
    fn alias_trees_are_refused_or_stay_small(
        levels in 1usize..6,
        width in 1usize..40,
        refs in 1usize..400,
    ) {
        let body = alias_tree(levels, width, refs);
        match split_documents(&body) {
            Ok(values) => {
                let built = serde_json::to_string(&values).unwrap().len() as u64;
                prop_assert!(built <= 8 * body.len() as u64 + 8 * alias_budget(body.len()),
                    "{built} bytes from {}", body.len());
            }
            Err(e) => prop_assert!(e.message.contains("YAML aliases expand"), "{e}"),
        }
    }

    #[test]
    fn nesting_is_refused_exactly_past_the_limit(
        opens in prop::collection::vec(prop::sample::select(vec!["[", "{k: ", "- "]), 0..150),
    ) {
        // Block entries ("- ") only nest at the start, before any flow collection.
        let block = opens.iter().take_while(|o| **o == "- ").count();
        let flow = &opens[block..];
        // Under a key, so the body is YAML (not JSON) and one level deeper.
        let mut body = format!("v:\n  {}", "- ".repeat(block));
        for o in flow {
            body.push_str(if *o == "- " { "[" } else { o });
        }
        body.push('x');
        for o in flow.iter().rev() {
            body.push(if *o == "{k: " { '}' } else { ']' });
        }
        body.push('\n');
        match split_documents(&body) {
            Ok(_) => prop_assert!(opens.len() < MAX_DEPTH, "{} levels accepted", opens.len() + 1),
            Err(e) => {
                prop_assert!(opens.len() + 1 > MAX_DEPTH, "{body}: {e}");
                prop_assert!(e.message.contains("nests deeper than 64"), "{e}");
            }
        }
    }

    #[test]
    fn quantities_parse_exactly_or_are_refused(
        text in prop_oneof![
            decimal_text(),
            decimal_text().prop_map(|d| format!("{d}m")),
            (decimal_text(), prop::sample::select(vec!["Ki", "Mi", "Gi", "k"]))
                .prop_map(|(d, u)| format!("{d}{u}")),
            "[-+.0-9a-zA-Z]{0,12}",
        ],
    ) {
        prop_assert_eq!(CpuQuantity::parse(&text).ok().map(|q| q.millis()), cpu_oracle(&text));
        if !text.ends_with('m') {
            let oracle = memory_oracle(&text);
            let parsed = MemoryQuantity::parse(&text).ok().map(|q| q.bytes());
            // The oracle knows fewer units than the parser; it must agree when it knows.
            if oracle.is_some() {
                prop_assert_eq!(parsed, oracle);
            }
        }
    }
}
