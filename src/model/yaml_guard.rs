//! A pass over a YAML body's event stream that refuses, before anything is built from it,
//! documents that nest too deep or whose aliases expand to too much.
//!
//! Why a separate pass: serde_norway first loads a document's events, then builds values
//! from them, replaying an anchor's events at every alias. Its only guard against aliases
//! counts alias *jumps* (up to 100 per event), not the events each jump replays, so one
//! anchor of a few thousand events referenced 10^5 times (under 100 KB of text) builds
//! gigabytes. And libyaml's scanner checks every open flow level (`[`, `{`) at every
//! token, so a document nested 100,000 flow levels deep takes quadratic time while being
//! loaded, long before serde's recursion limit of 128 is reached.
//!
//! How: this pass drives the same libyaml parser (`unsafe-libyaml-norway`, the one under
//! serde_norway, so both see exactly the same events) one event at a time, and
//! 1. keeps the depth of open collections, refusing past [`MAX_DEPTH`] at once: the
//!    scanner is lazy (it looks at most one simple-key window, 1024 characters, ahead), so
//!    it has only been asked about ~[`MAX_DEPTH`] levels when it stops;
//! 2. gives every node a weight (8 for the node plus its scalar bytes; an alias weighs
//!    what its anchored node weighs, its own aliases included), remembering each anchor's
//!    weight and depth when its node ends: one pass, linear time, nothing expanded;
//! 3. adds up what aliases contribute across the whole body and refuses once that exceeds
//!    [`alias_budget`] (twice the body's length, at least 64 KiB): aliases may save some
//!    typing, never multiply a document. An alias to a node still open (a cycle) is
//!    refused, and so is one whose node would nest past [`MAX_DEPTH`] where it is used.
//!
//! The alternative, a cap on alias count × anchor size per document, misses nested bombs
//! (an anchor made of aliases of anchors: "billion laughs"); weights that include the
//! anchors' own aliases catch both with one rule.
//!
//! Syntax errors are not reported here: the pass stops at the first one and lets
//! serde_norway, which meets the same error after the same events, report it.

use std::collections::HashMap;
use std::ptr::{addr_of_mut, NonNull};

use unsafe_libyaml_norway as unsafe_libyaml;

use super::{invalid, ModelError};

/// Deepest nesting of collections a manifest may have (YAML and JSON alike). The deepest
/// real paths (`spec.template.spec.affinity.nodeAffinity...values[0]`) are about 12.
pub const MAX_DEPTH: usize = 64;

/// Weight of a node beyond its scalar bytes.
const NODE_WEIGHT: u64 = 8;

/// Least alias weight allowed whatever the body's size.
const MIN_ALIAS_BUDGET: u64 = 64 << 10;

/// How much weight aliases may add to a body of `len` bytes.
pub fn alias_budget(len: usize) -> u64 {
    (2 * len as u64).max(MIN_ALIAS_BUDGET)
}

/// The libyaml parser, pinned on the heap (it points at itself) and reading `input`.
struct Parser<'a> {
    sys: Box<unsafe_libyaml::yaml_parser_t>,
    _input: &'a [u8],
}

/// One event, reduced to what the pass needs.
enum Event {
    DocumentStart,
    /// Start of a sequence or mapping, with its anchor.
    Open(Option<Vec<u8>>),
    Close,
    Scalar {
        anchor: Option<Vec<u8>>,
        len: u64,
    },
    Alias(Vec<u8>),
    StreamEnd,
    Other,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Parser<'a> {
        let mut uninit = Box::new(std::mem::MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        let parser = uninit.as_mut_ptr();
        // SAFETY: `parser` points at writable memory that never moves (boxed);
        // yaml_parser_initialize writes every field before anything reads one. `input`
        // outlives the parser (the struct borrows it for 'a) and is only read.
        let sys = unsafe {
            if unsafe_libyaml::yaml_parser_initialize(parser).fail {
                panic!("libyaml could not allocate its parser");
            }
            unsafe_libyaml::yaml_parser_set_encoding(parser, unsafe_libyaml::YAML_UTF8_ENCODING);
            unsafe_libyaml::yaml_parser_set_input_string(
                parser,
                input.as_ptr(),
                input.len() as u64,
            );
            uninit.assume_init()
        };
        Parser { sys, _input: input }
    }

    /// The next event and its start (line, column), both 1-based; None at a syntax error.
    fn next(&mut self) -> Option<(Event, (u64, u64))> {
        if self.sys.error != unsafe_libyaml::YAML_NO_ERROR {
            return None;
        }
        let parser = addr_of_mut!(*self.sys);
        let mut event = std::mem::MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser is initialized; after a successful yaml_parser_parse the
        // event is initialized, its union member matches its type_, and its strings are
        // NUL-terminated (anchors) or `length` bytes long (scalar values) until
        // yaml_event_delete, which is called once before returning.
        unsafe {
            if unsafe_libyaml::yaml_parser_parse(parser, event.as_mut_ptr()).fail {
                return None;
            }
            let e = &*event.as_ptr();
            let at = (e.start_mark.line + 1, e.start_mark.column + 1);
            let reduced = match e.type_ {
                unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => {
                    Event::Open(c_bytes(e.data.sequence_start.anchor))
                }
                unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                    Event::Open(c_bytes(e.data.mapping_start.anchor))
                }
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT
                | unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::Close,
                unsafe_libyaml::YAML_SCALAR_EVENT => Event::Scalar {
                    anchor: c_bytes(e.data.scalar.anchor),
                    len: e.data.scalar.length,
                },
                unsafe_libyaml::YAML_ALIAS_EVENT => {
                    Event::Alias(c_bytes(e.data.alias.anchor).unwrap_or_default())
                }
                unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
                _ => Event::Other,
            };
            unsafe_libyaml::yaml_event_delete(event.as_mut_ptr());
            Some((reduced, at))
        }
    }
}

/// Copies a NUL-terminated libyaml string; None for a null pointer.
///
/// # Safety
/// `p` is null or points at a NUL-terminated string.
unsafe fn c_bytes(p: *mut u8) -> Option<Vec<u8>> {
    let p = NonNull::new(p)?;
    // SAFETY: the caller guarantees a NUL-terminated string.
    Some(
        unsafe { std::ffi::CStr::from_ptr(p.as_ptr().cast()) }
            .to_bytes()
            .to_vec(),
    )
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, deleted once.
        unsafe { unsafe_libyaml::yaml_parser_delete(addr_of_mut!(*self.sys)) }
    }
}

/// An open collection: its anchor, its weight so far and the deepest nesting inside it.
struct Open {
    anchor: Option<Vec<u8>>,
    weight: u64,
    depth: usize,
}

/// What an anchor stands for, once its node has ended.
#[derive(Clone, Copy)]
struct Anchored {
    weight: u64,
    depth: usize,
}

/// Refuses `body` if it nests deeper than [`MAX_DEPTH`] or its aliases add more than
/// [`alias_budget`]; see the module doc.
pub fn check(body: &str) -> Result<(), ModelError> {
    let budget = alias_budget(body.len());
    let mut parser = Parser::new(body.as_bytes());
    let mut stack: Vec<Open> = Vec::new();
    // None: the anchor's node is still open.
    let mut anchors: HashMap<Vec<u8>, Option<Anchored>> = HashMap::new();
    let mut aliased: u64 = 0;
    while let Some((event, (line, column))) = parser.next() {
        let at = format!("line {line} column {column}");
        // The node just completed (weight, depth, anchor), if any.
        let done = match event {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart => {
                anchors.clear();
                None
            }
            Event::Other => None,
            Event::Open(anchor) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(invalid(
                        "",
                        format!("YAML nests deeper than {MAX_DEPTH} levels at {at}; no manifest needs that"),
                    ));
                }
                if let Some(a) = &anchor {
                    anchors.insert(a.clone(), None);
                }
                stack.push(Open {
                    anchor,
                    weight: NODE_WEIGHT,
                    depth: 1,
                });
                None
            }
            Event::Close => stack.pop().map(|o| (o.weight, o.depth, o.anchor)),
            Event::Scalar { anchor, len } => Some((NODE_WEIGHT.saturating_add(len), 0, anchor)),
            Event::Alias(name) => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                let node = match anchors.get(&name) {
                    Some(Some(node)) => *node,
                    Some(None) => {
                        return Err(invalid(
                            "",
                            format!("YAML alias *{shown} at {at} refers to a node that contains it (a cycle)"),
                        ))
                    }
                    // Unknown anchor: serde_norway reports it.
                    None => return Ok(()),
                };
                if stack.len() + node.depth > MAX_DEPTH {
                    return Err(invalid(
                        "",
                        format!("YAML alias *{shown} at {at} nests deeper than {MAX_DEPTH} levels where it is used"),
                    ));
                }
                aliased = aliased.saturating_add(node.weight);
                if aliased > budget {
                    return Err(invalid(
                        "",
                        format!(
                            "YAML aliases expand to more than the {budget} bytes allowed for this {}-byte body (at alias *{shown}, {at}); write the repeated parts out",
                            body.len()
                        ),
                    ));
                }
                Some((node.weight, node.depth, None))
            }
        };
        if let Some((weight, depth, anchor)) = done {
            if let Some(a) = anchor {
                anchors.insert(a, Some(Anchored { weight, depth }));
            }
            if let Some(parent) = stack.last_mut() {
                parent.weight = parent.weight.saturating_add(weight);
                parent.depth = parent.depth.max(depth + 1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One anchor of `width` scalars referenced `refs` times, flat.
    pub(crate) fn flat_bomb(width: usize, refs: usize) -> String {
        let mut s = String::from("a: &a [");
        s.push_str(&vec!["xxxxxxxx"; width].join(","));
        s.push_str("]\nb: [");
        s.push_str(&vec!["*a"; refs].join(","));
        s.push_str("]\n");
        s
    }

    #[test]
    fn plain_manifests_and_modest_aliases_pass() {
        check("a: 1\nb: [1, 2, {c: d}]\n---\nx: y\n").unwrap();
        check("base: &res {cpu: 100m, memory: 64Mi}\nc1: *res\nc2: *res\n").unwrap();
        // Anchors do not carry over between documents: serde_norway reports the alias.
        check("a: &x 1\n---\nb: *x\n").unwrap();
        check("a: [unclosed\n").unwrap();
        check("").unwrap();
    }

    #[test]
    fn depth_is_counted_for_flow_block_and_aliased_nodes() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check(&ok).unwrap();
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(check(&deep).unwrap_err().message.contains("deeper than 64"));
        let block = format!("{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(check(&block)
            .unwrap_err()
            .message
            .contains("deeper than 64"));
        let half = MAX_DEPTH / 2 + 1;
        let aliased = format!(
            "a: &a {}{}\nb: {}*a{}\n",
            "[".repeat(half),
            "]".repeat(half),
            "[".repeat(half),
            "]".repeat(half)
        );
        assert!(check(&aliased).unwrap_err().message.contains("*a"));
    }

    #[test]
    fn cycles_and_nested_bombs_are_refused() {
        let err = check("a: &a [1, *a]\n").unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
        let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let prev = format!("*l{}", i - 1);
            laughs.push_str(&format!("l{i}: &l{i} [{}]\n", [prev.as_str(); 9].join(",")));
        }
        let err = check(&laughs).unwrap_err();
        assert!(err.message.contains("YAML aliases expand"), "{err}");
    }

    #[test]
    fn the_budget_scales_with_the_body() {
        // 100 references to a 100-scalar anchor: ~160 KB expanded from ~1.3 KB.
        let err = check(&flat_bomb(100, 100)).unwrap_err();
        assert!(err.message.contains("*a"), "{err}");
        check(&flat_bomb(10, 100)).unwrap();
    }
}
