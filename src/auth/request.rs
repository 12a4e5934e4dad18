//! What an HTTP request asks for, from its method, its (percent-decoded) path and its
//! query: one function over every route of the API, so a new route that this table does
//! not know is refused to everyone but cluster-admins (fail closed).

use crate::model::Kind;

use super::rbac::Attributes;

/// How a request is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated caller (version, whoami).
    Authenticated,
    /// One check before the handler runs (create and replace handlers check the object
    /// they store once more: its namespace may come from the body).
    Check(Attributes),
    /// Only the handler can tell: each object the body names (`apply`, the short create
    /// and replace paths), or each change of a watch of every kind.
    InHandler,
}

/// `method` upper case; `path` percent-decoded, from `/v1/` on; `query` the raw query.
pub fn access(method: &str, path: &str, query: &str) -> Access {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Access::Check(Attributes::new(verb_of(method), "*", "", None));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let q = |key: &str| query_value(query, key);
    let read = if method == "GET" || method == "HEAD" {
        "get"
    } else {
        verb_of(method)
    };
    let check = |verb: &str, resource: &str, ns: &str, name: Option<&str>| {
        Access::Check(Attributes::new(verb, resource, ns, name))
    };
    match parts.as_slice() {
        ["version"] | ["auth", "whoami"] => Access::Authenticated,
        ["apply"] => Access::InHandler,
        ["watch"] => {
            let ns = q("namespace").unwrap_or_default();
            match q("kind").and_then(|k| Kind::parse(&k)) {
                Some(kind) => Access::Check(Attributes::object("watch", kind, &ns, None)),
                // Every kind: the handler drops what the caller may not watch.
                None => Access::InHandler,
            }
        }
        ["nodes"] => check("list", "nodes", "", None),
        ["nodes", name] => check("get", "nodes", "", Some(name)),
        ["cluster", "status"] => check("get", "cluster", "", None),
        ["audit"] => check("list", "audit", "", None),
        ["auth", "tokens"] if method == "GET" => check("list", "tokens", "", None),
        ["auth", "tokens"] => check("create", "tokens", "", None),
        ["auth", "tokens", id] => check(verb_of(method), "tokens", "", Some(id)),
        ["claims", ns, name] => check(read, "claims", ns, Some(name)),
        ["registry", ..] => {
            let verb = if read == "get" { "get" } else { "create" };
            check(verb, "registry", "", None)
        }
        ["namespaces", ns, "instances", name, "log"] => check("logs", "instances", ns, Some(name)),
        ["namespaces", ns, "instances", name, "exec"] => check("exec", "instances", ns, Some(name)),
        ["namespaces", ns, "instances", name, "scrape"] => check("get", "metrics", ns, Some(name)),
        ["namespaces", ns, plural, name, "scale"] => {
            let verb = if read == "get" { "get" } else { "scale" };
            object(verb, plural, ns, Some(name))
        }
        ["namespaces", ns, plural] => {
            let verb = if read == "get" {
                "list"
            } else {
                verb_of(method)
            };
            object(verb, plural, ns, None)
        }
        ["namespaces", ns, plural, name] => object(verb_of(method), plural, ns, Some(name)),
        // Short forms take the namespace from the body: the handler checks where it lands.
        [_] if method == "POST" => Access::InHandler,
        [_, _] if method == "PUT" => Access::InHandler,
        [plural] => {
            let verb = if read == "get" {
                "list"
            } else {
                verb_of(method)
            };
            // A list without ?namespace= spans every namespace.
            let ns = q("namespace").unwrap_or_default();
            object(verb, plural, &ns, None)
        }
        [plural, name] => {
            let ns = q("namespace").unwrap_or_else(|| "default".into());
            object(verb_of(method), plural, &ns, Some(name))
        }
        _ => check(verb_of(method), "*", "", None),
    }
}

fn object(verb: &str, plural: &str, ns: &str, name: Option<&str>) -> Access {
    match Kind::parse(plural) {
        Some(kind) => Access::Check(Attributes::object(verb, kind, ns, name)),
        // Not a kind: the handler answers 404; only `*` rules reach it.
        None => Access::Check(Attributes::new(verb, plural, ns, name)),
    }
}

fn verb_of(method: &str) -> &'static str {
    match method {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" | "PATCH" => "update",
        "DELETE" => "delete",
        _ => "*",
    }
}

/// Is this a change (audited even when it succeeds)?
pub fn is_mutating(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| decode(v, true))
    })
}

/// A request path as the router matches it: `%XX` decoded except `%2F`, `%25` and `%2B`
/// (as actix-router keeps them), so the segments here are the router's segments.
pub fn decode_path(s: &str) -> String {
    decode(s, false)
}

/// `%XX` decoded (in a query, `+` too); an invalid escape is kept as written.
fn decode(s: &str, query: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) if query || !matches!(h * 16 + l, 0x2f | 0x25 | 0x2b) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if query => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: &str) -> Attributes {
        match access(method, path, query) {
            Access::Check(a) => a,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths_name_verb_resource_and_namespace() {
        let a = attrs("DELETE", "/v1/namespaces/a/deployments/web", "");
        assert_eq!(
            a,
            Attributes::new("delete", "deployments", "a", Some("web"))
        );
        assert_eq!(attrs("GET", "/v1/deployments", "").namespace, "");
        assert_eq!(
            attrs("GET", "/v1/deployments", "namespace=b").namespace,
            "b"
        );
        assert_eq!(attrs("GET", "/v1/deploy/web", "").namespace, "default");
        assert_eq!(
            attrs("GET", "/v1/namespaces/a/deployments", "").verb,
            "list"
        );
        let s = attrs("PUT", "/v1/namespaces/a/deployments/web/scale", "");
        assert_eq!(
            (s.verb.as_str(), s.resource.as_str()),
            ("scale", "deployments")
        );
        let l = attrs("GET", "/v1/namespaces/a/instances/x/log", "follow=true");
        assert_eq!(
            (l.verb.as_str(), l.resource.as_str()),
            ("logs", "instances")
        );
        let x = attrs("POST", "/v1/namespaces/a/instances/x/exec", "");
        assert_eq!((x.verb.as_str(), x.namespace.as_str()), ("exec", "a"));
        // A namespace object is in its own namespace; cluster-scoped kinds in none.
        assert_eq!(attrs("GET", "/v1/namespaces/a", "").namespace, "a");
        assert_eq!(
            attrs("GET", "/v1/nodeclasses/x", "namespace=a").namespace,
            ""
        );
    }

    #[test]
    fn other_routes_and_unknown_paths() {
        assert_eq!(access("GET", "/v1/version", ""), Access::Authenticated);
        assert_eq!(access("POST", "/v1/apply", ""), Access::InHandler);
        assert_eq!(access("GET", "/v1/watch", ""), Access::InHandler);
        assert_eq!(access("POST", "/v1/deployments", ""), Access::InHandler);
        assert_eq!(access("PUT", "/v1/deployments/web", ""), Access::InHandler);
        let w = attrs("GET", "/v1/watch", "kind=deployments&namespace=a");
        assert_eq!((w.verb.as_str(), w.namespace.as_str()), ("watch", "a"));
        assert_eq!(attrs("PUT", "/v1/claims/a/c", "").verb, "update");
        assert_eq!(attrs("PUT", "/v1/registry/v2/x/blobs/y", "").verb, "create");
        assert_eq!(
            attrs("DELETE", "/v1/auth/tokens/abc", "").resource,
            "tokens"
        );
        assert_eq!(attrs("GET", "/v1/a/b/c", "").resource, "*");
        assert_eq!(attrs("GET", "/elsewhere", "").resource, "*");
        assert_eq!(decode("a%2Fb+c%zz", true), "a/b c%zz");
        assert_eq!(decode_path("/v1/%64eploy%2Fx+y"), "/v1/deploy%2Fx+y");
        // An encoded slash is not a segment boundary, as for the router.
        let a = attrs(
            "DELETE",
            &decode_path("/v1/namespaces/b/deployments/web%2Fscale"),
            "",
        );
        assert_eq!(
            (a.verb.as_str(), a.name.as_deref()),
            ("delete", Some("web%2Fscale"))
        );
    }
}
