//! The `[api]` section: request body size, TLS, per-user rate limits, the audit log's size
//! and the default Pod Security level; parsed and checked by field.

use serde::Deserialize;

use crate::model::pod_security::Level;

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileApi {
    max_body_bytes: usize,
    tls: bool,
    rate_per_user: f64,
    burst_per_user: u32,
    audit_max_bytes: u64,
    pod_security_default: String,
}

/// `[api] rate_per_user` and `burst_per_user`: each user's token bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSettings {
    /// Requests per second, sustained.
    pub rate: f64,
    /// Requests at once.
    pub burst: u32,
}

/// What the API is handed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApiSettings {
    pub max_body_bytes: usize,
    pub tls: bool,
    pub rate: RateSettings,
    pub audit_max_bytes: u64,
    /// The Pod Security level of a namespace without the enforce label.
    pub pod_security_default: Level,
}

impl FileApi {
    pub(super) fn settings(&self) -> Result<ApiSettings, ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(invalid("api.max_body_bytes", "must be at least 1024"));
        }
        if !(self.rate_per_user.is_finite() && self.rate_per_user > 0.0) {
            return Err(invalid(
                "api.rate_per_user",
                "must be a number of requests per second above 0",
            ));
        }
        if self.burst_per_user < 1 {
            return Err(invalid("api.burst_per_user", "must be at least 1"));
        }
        if self.audit_max_bytes < 4096 {
            return Err(invalid("api.audit_max_bytes", "must be at least 4096"));
        }
        let pod_security_default = Level::parse("", &self.pod_security_default)
            .map_err(|e| invalid("api.pod_security_default", e.message))?;
        Ok(ApiSettings {
            max_body_bytes: self.max_body_bytes,
            tls: self.tls,
            rate: RateSettings {
                rate: self.rate_per_user,
                burst: self.burst_per_user,
            },
            audit_max_bytes: self.audit_max_bytes,
            pod_security_default,
        })
    }
}
