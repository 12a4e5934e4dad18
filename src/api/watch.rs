//! `GET /v1/watch`: a stream of committed changes as newline-delimited JSON,
//! `{"type":"ADDED|MODIFIED|DELETED","revision":N,"object":{...}}`, optionally narrowed to
//! one kind, namespace and label selector.
//!
//! A watch of every kind sees Secrets with their keys but without values; a watch of
//! `kind=secrets` asked for them and gets them, as `GET` does.
//!
//! `since=N` replays the recorded history from revision N (410 Gone if it was compacted:
//! list again and watch from the list's revision + 1), then follows live changes without a
//! gap: the live feed is subscribed before the history is read, and duplicates are dropped
//! by revision. History is read a page at a time ([`PAGE_ITEMS`] changes or [`PAGE_BYTES`]),
//! as the client takes it, so a watcher holds one page, never the whole history. A watcher
//! that falls too far behind gets an `ERROR` line and the stream ends.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data, Query};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use super::access::caller;
use super::resources::labels_of;
use super::{ApiError, ApiState};
use crate::auth::{Attributes, Decision, Identity, Policy};
use crate::model::{self, Kind, SelectorOp};
use crate::store::reader::{HistoryError, StoreReader as Reader};
use crate::store::Change;

/// History is replayed in pages of at most this many changes ...
pub const PAGE_ITEMS: usize = 64;
/// ... or this many bytes of objects.
pub const PAGE_BYTES: usize = 1 << 20;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/watch", web::get().to(watch));
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WatchQuery {
    /// First revision to deliver; absent: only changes after now.
    since: Option<u64>,
    kind: Option<String>,
    namespace: Option<String>,
    label_selector: Option<String>,
}

struct Filter {
    kind: Option<Kind>,
    namespace: Option<String>,
    selector: Option<Vec<(String, SelectorOp)>>,
    /// A watch of every kind carries only what the caller may watch, by the policy in
    /// effect when the watch began.
    may: Option<(Identity, Policy)>,
}

impl Filter {
    fn matches(&self, change: &Change, object: &Value) -> bool {
        self.kind.is_none_or(|k| change.key.kind == k)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| &change.key.namespace == ns)
            && self
                .selector
                .as_ref()
                .is_none_or(|s| model::selector_matches(s, &labels_of(object)))
            && self.may.as_ref().is_none_or(|(who, policy)| {
                let k = &change.key;
                let a = Attributes::object("watch", k.kind, &k.namespace, Some(&k.name));
                crate::auth::rbac::authorize(who, &a, policy) == Decision::Allow
            })
    }
}

struct WatchState {
    backlog: VecDeque<Arc<Change>>,
    /// Where the next page of history starts; None once history is replayed.
    history: Option<(Reader, u64)>,
    live: broadcast::Receiver<Arc<Change>>,
    next_revision: u64,
    filter: Filter,
    done: bool,
}

fn line(value: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&value).expect("JSON values serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl WatchState {
    /// The next line to send, or None when the stream ends.
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            if self.backlog.is_empty() {
                if let Some(err) = self.next_page().await {
                    self.done = true;
                    return Some(err);
                }
            }
            let change = match self.backlog.pop_front() {
                Some(c) => c,
                None => match self.live.recv().await {
                    Ok(c) => c,
                    Err(RecvError::Lagged(n)) => {
                        self.done = true;
                        return Some(line(json!({
                            "type": "ERROR",
                            "message": format!("watch fell {n} changes behind; list again and watch from its revision"),
                        })));
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if change.revision < self.next_revision {
                continue;
            }
            self.next_revision = change.revision + 1;
            let mut object: Value = serde_json::from_slice(&change.object).unwrap_or(Value::Null);
            if !self.filter.matches(&change, &object) {
                continue;
            }
            // A Secret's values go only to a watch of Secrets (one that asked for them).
            if change.key.kind == Kind::Secret && self.filter.kind != Some(Kind::Secret) {
                model::config::redact_secret_object(&mut object);
            }
            return Some(line(json!({
                "type": change.change.as_str(),
                "revision": change.revision,
                "object": object,
            })));
        }
    }
}

impl WatchState {
    /// Reads the next page of history into the backlog; an `ERROR` line if it is gone.
    async fn next_page(&mut self) -> Option<Bytes> {
        let (reader, from) = self.history.take()?;
        let read = tokio::task::spawn_blocking(move || {
            let page = reader.changes_page(from, PAGE_ITEMS, PAGE_BYTES);
            (reader, page)
        })
        .await;
        let (reader, page) = match read {
            Ok(r) => r,
            Err(e) => return Some(error_line(format!("reading the history: {e}"))),
        };
        match page {
            Ok((changes, more)) => {
                if more {
                    let next = changes.last().map_or(from, |c| c.revision + 1);
                    self.history = Some((reader, next));
                }
                self.backlog.extend(changes.into_iter().map(Arc::new));
                None
            }
            Err(e) => Some(error_line(format!(
                "{e}; list again and watch from its revision"
            ))),
        }
    }
}

fn error_line(message: String) -> Bytes {
    line(json!({"type": "ERROR", "message": message}))
}

async fn watch(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<WatchQuery>,
) -> Result<HttpResponse, ApiError> {
    let kind = match q.kind.as_deref() {
        Some(k) => Some(
            Kind::parse(k)
                .ok_or_else(|| ApiError::invalid("kind", format!("unknown kind \"{k}\"")))?,
        ),
        None => None,
    };
    let selector = match q.label_selector.as_deref() {
        Some(s) if !s.is_empty() => Some(model::parse_label_selector(s)?),
        _ => None,
    };
    // With a kind the middleware checked the whole watch; without, each change is checked.
    let may = match kind {
        Some(_) => None,
        None => {
            let policy = state
                .auth
                .policy()
                .map_err(|e| ApiError::internal(crate::error_chain(&e)))?;
            Some((caller(&req)?, policy))
        }
    };
    let live = state.control.subscribe();
    let reader = state.control.reader();
    let (backlog, history, next_revision) = match q.since {
        Some(since) => {
            // The first page now, so a compacted revision is a 410 rather than a stream.
            let (first, more) =
                reader
                    .changes_page(since, PAGE_ITEMS, PAGE_BYTES)
                    .map_err(|e| match e {
                        HistoryError::Compacted { .. } => {
                            ApiError::new(StatusCode::GONE, "Expired", e.to_string())
                        }
                        HistoryError::Store(s) => s.into(),
                    })?;
            let next = first.last().map_or(since, |c| c.revision + 1);
            let history = more.then(|| (reader.clone(), next));
            (first.into_iter().map(Arc::new).collect(), history, since)
        }
        None => (VecDeque::new(), None, reader.revision()? + 1),
    };
    let watch = WatchState {
        backlog,
        history,
        live,
        next_revision,
        filter: Filter {
            kind,
            namespace: q.namespace.clone(),
            selector,
            may,
        },
        done: false,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        w.next_line()
            .await
            .map(|l| (Ok::<_, actix_web::Error>(l), w))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(stream))
}
