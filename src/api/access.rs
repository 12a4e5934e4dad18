//! The one door every request passes: authenticate the bearer token, hold a user to its
//! rate, ask `auth` whether the caller may do what the path asks, and record mutating and
//! refused requests in the node's audit log. Handlers whose object is only known from the
//! body (create, replace, apply) or that span kinds (watch of everything) ask
//! [`authorize`] themselves with the caller this middleware attached.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use super::{ApiError, ApiState};
use crate::auth::audit::AuditRecord;
use crate::auth::request::{self, Access};
use crate::auth::tokens::Class;
use crate::auth::{limit, Attributes, AuthError, Decision, Identity};
use crate::cluster::identity::now_ms;

/// The caller, attached to the request for handlers.
#[derive(Clone)]
pub struct Caller(pub Identity);

/// What to audit about a request.
struct Seen {
    user: String,
    /// The client's address (through the TLS front's relay: see [`super::tls::Clients`]).
    source: String,
    verb: String,
    object: String,
}

fn object_of(a: &Attributes) -> String {
    let mut o = a.resource.clone();
    if !a.namespace.is_empty() {
        o = format!("{o}/{}", a.namespace);
    }
    if let Some(n) = &a.name {
        o = format!("{o}/{n}");
    }
    o
}

fn result_of(code: StatusCode) -> &'static str {
    match code.as_u16() {
        401 => "unauthenticated",
        403 => "forbidden",
        429 => "rate-limited",
        c if c >= 400 => "failed",
        _ => "allowed",
    }
}

fn record(state: &ApiState, seen: &Seen, code: StatusCode, message: &str) {
    let rec = AuditRecord {
        time_ms: now_ms(),
        node: state.node_name.clone(),
        user: seen.user.clone(),
        source: seen.source.clone(),
        verb: seen.verb.clone(),
        object: seen.object.clone(),
        code: code.as_u16(),
        result: result_of(code).into(),
        message: message.into(),
    };
    if let Err(e) = state.audit.record(&rec) {
        tracing::warn!(error = %crate::error_chain(&e), "audit record lost");
    }
}

pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if super::is_open(req.method(), req.path()) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let state = req
        .app_data::<Data<ApiState>>()
        .expect("state is registered")
        .clone();
    let method = req.method().as_str().to_string();
    let path = request::decode_path(req.path());
    let access = request::access(&method, &path, req.query_string());
    let source = req
        .app_data::<Data<super::tls::Clients>>()
        .and_then(|c| c.of(req.peer_addr()))
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut seen = Seen {
        user: String::new(),
        source,
        verb: method.to_lowercase(),
        object: path.clone(),
    };
    if let Access::Check(a) = &access {
        seen.verb = a.verb.clone();
        seen.object = object_of(a);
    }
    let refuse = |req: ServiceRequest, seen: &Seen, resp: HttpResponse, message: &str| {
        record(&state, seen, resp.status(), message);
        Ok(req.into_response(resp).map_into_right_body())
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let who = match state.auth.authenticate(&bearer, now_ms()) {
        Ok(who) => who,
        Err(AuthError::Store(e)) => {
            return Ok(req
                .into_response(ApiError::from(e).error_response())
                .map_into_right_body())
        }
        Err(e) => {
            seen.user = crate::auth::tokens::describe_unauthenticated(&bearer);
            let err = ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string());
            let message = err.message.clone();
            return refuse(req, &seen, err.error_response(), &message);
        }
    };
    seen.user = who.user.clone();
    if who.class == Class::User {
        if let Err(wait) = state.limiter.take(&who.user, Instant::now()) {
            let secs = limit::retry_after_secs(wait);
            let err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "user \"{}\" is over its request rate ([api] rate_per_user); retry after {secs}s",
                    who.user
                ),
            );
            let mut resp = err.error_response();
            resp.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(secs),
            );
            return refuse(req, &seen, resp, &err.message);
        }
    }
    if let Access::Check(a) = &access {
        match state.auth.decide(&who, a) {
            Ok(Decision::Allow) => {}
            Ok(Decision::Deny(message)) => {
                let err = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message.clone());
                return refuse(req, &seen, err.error_response(), &message);
            }
            Err(e) => {
                let err = ApiError::internal(crate::error_chain(&e));
                return Ok(req
                    .into_response(err.error_response())
                    .map_into_right_body());
            }
        }
    }
    req.extensions_mut().insert(Caller(who));
    let res = next.call(req).await?;
    let status = res.status();
    if request::is_mutating(&method) || status == StatusCode::FORBIDDEN {
        let note = res.request().extensions().get::<AuditNote>().cloned();
        let message = match note {
            Some(n) => {
                seen.verb = n.verbs.join(",");
                seen.object = n.objects.join(",");
                n.message
            }
            None => String::new(),
        };
        record(&state, &seen, status, &message);
    }
    Ok(res.map_into_left_body())
}

/// What a handler's own checks decided, for the audit record of its request.
#[derive(Clone, Default)]
struct AuditNote {
    verbs: Vec<String>,
    objects: Vec<String>,
    message: String,
}

/// A handler's own check of one object its body names (create, replace, apply), noted for
/// the audit record: 403 naming the user, verb, resource and namespace.
pub fn authorize_object(
    state: &ApiState,
    req: &HttpRequest,
    a: &Attributes,
) -> Result<(), ApiError> {
    let who = caller(req)?;
    let result = authorize(state, &who, a);
    let mut ext = req.extensions_mut();
    if ext.get::<AuditNote>().is_none() {
        ext.insert(AuditNote::default());
    }
    let note = ext.get_mut::<AuditNote>().expect("inserted above");
    if !note.verbs.contains(&a.verb) {
        note.verbs.push(a.verb.clone());
    }
    note.objects.push(object_of(a));
    if let Err(e) = &result {
        note.message = e.message.clone();
    }
    result
}

/// The caller the middleware attached.
pub fn caller(req: &HttpRequest) -> Result<Identity, ApiError> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| ApiError::internal("no authenticated caller on this request"))
}

/// A handler's own check (the object came from the body): 403 naming the user, verb,
/// resource and namespace.
pub fn authorize(state: &ApiState, who: &Identity, a: &Attributes) -> Result<(), ApiError> {
    match state.auth.decide(who, a) {
        Ok(Decision::Allow) => Ok(()),
        Ok(Decision::Deny(message)) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message))
        }
        Err(e) => Err(ApiError::internal(crate::error_chain(&e))),
    }
}
