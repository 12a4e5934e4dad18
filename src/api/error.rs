//! API errors: every failure is JSON `{code, reason, message, field}` with a matching status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::model::ModelError;
use crate::orchestrator::ControlError;
use crate::store::Rejection;

#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status, repeated in the body for clients that only keep the body.
    pub code: u16,
    /// Machine-readable reason: BadRequest, Invalid, NotFound, AlreadyExists, Conflict, ...
    pub reason: &'static str,
    pub message: String,
    /// Path of the offending field, e.g. `spec.template.spec.containers[0].image`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code: status.as_u16(),
            reason,
            message: message.into(),
            field: String::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let full = if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", full).with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self)
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        // Syntax errors have no field: the document itself is malformed.
        if e.field.is_empty() {
            ApiError::bad_request(e.message)
        } else {
            ApiError::invalid(&e.field, e.message)
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        match r {
            Rejection::NotFound { .. } => ApiError::not_found(message),
            Rejection::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "AlreadyExists", message)
            }
            Rejection::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "Conflict", message)
                .with_field("metadata.resourceVersion"),
            Rejection::Invalid { field, message } => ApiError::invalid(&field, message),
            Rejection::Forbidden { field, message } => {
                ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message).with_field(field)
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let (status, reason) = match e {
            // Proposed but not known to be committed or not: never "failed".
            ControlError::Timeout(_) | ControlError::UnknownOutcome(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UnknownOutcome")
            }
            ControlError::NotLeader(_) | ControlError::NoLeader | ControlError::Forward { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "Unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Unavailable"),
        };
        ApiError::new(status, reason, e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(format!("{e}: {}", error_chain(&e)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
