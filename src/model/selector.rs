//! Label selectors as typed on the command line (`-l`) and in `?labelSelector=`:
//! `app=web`, `tier!=db`, `env in (a,b)`, `env notin (c)`, `gpu`, `!gpu`, comma-separated.

use std::collections::BTreeMap;

use super::{invalid, ModelError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(term: &str, rest: &str) -> Result<Vec<String>, ModelError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            invalid(
                "labelSelector",
                format!("\"{term}\": expected a value list like (a,b)"),
            )
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

pub fn parse_label_selector(s: &str) -> Result<Vec<(String, SelectorOp)>, ModelError> {
    let mut out = Vec::new();
    for term in terms(s)
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let parsed = if let Some((k, v)) = term.split_once("!=") {
            (k.trim(), SelectorOp::NotEq(v.trim().to_string()))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k.trim(), SelectorOp::Eq(v.trim().to_string()))
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            (k.trim(), SelectorOp::NotIn(set_values(term, rest)?))
        } else if let Some((k, rest)) = term.split_once(" in ") {
            (k.trim(), SelectorOp::In(set_values(term, rest)?))
        } else if let Some(k) = term.strip_prefix('!') {
            (k.trim(), SelectorOp::NotExists)
        } else {
            (term, SelectorOp::Exists)
        };
        let key = parsed.0;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(invalid(
                "labelSelector",
                format!("\"{term}\": bad label key \"{key}\""),
            ));
        }
        out.push((key.to_string(), parsed.1));
    }
    Ok(out)
}

pub fn selector_matches(sel: &[(String, SelectorOp)], labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, op)| {
        let v = labels.get(k);
        match op {
            SelectorOp::Eq(want) => v == Some(want),
            SelectorOp::NotEq(want) => v != Some(want),
            SelectorOp::In(set) => v.is_some_and(|v| set.contains(v)),
            SelectorOp::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
            SelectorOp::Exists => v.is_some(),
            SelectorOp::NotExists => v.is_none(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubectl_syntax() {
        let sel =
            parse_label_selector("app=web, tier!=db,env in (prod, staging),!canary,zone").unwrap();
        assert_eq!(sel.len(), 5);
        assert!(selector_matches(
            &sel,
            &labels(&[("app", "web"), ("env", "prod"), ("zone", "a")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("env", "dev"), ("zone", "a")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[
                ("app", "web"),
                ("env", "prod"),
                ("zone", "a"),
                ("canary", "1")
            ])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[
                ("app", "web"),
                ("tier", "db"),
                ("env", "prod"),
                ("zone", "a")
            ])
        ));
        let sel = parse_label_selector("env notin (dev)").unwrap();
        assert!(selector_matches(&sel, &labels(&[])));
        assert!(parse_label_selector("env in prod").is_err());
        assert!(parse_label_selector("=x").is_err());
        assert!(parse_label_selector("").unwrap().is_empty());
    }
}
