//! Registry credentials from a Docker config: the `.dockerconfigjson` key of a Secret of
//! type `kubernetes.io/dockerconfigjson` (what a pod's `imagePullSecrets` names), the same
//! shape as `~/.docker/config.json`:
//!
//! ```json
//! {"auths": {"registry.example:5000": {"auth": "base64(user:password)"},
//!            "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}
//! ```
//!
//! A key may be a bare host, a URL (`https://host/v1/`) or Docker Hub's legacy
//! `https://index.docker.io/v1/`; [`DockerConfig::for_host`] matches them all to the host
//! a pull speaks to. Pure: parsing and lookup, no I/O.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::RegistryError;

/// A user name and password for one registry host. Debug output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The credentials of one Docker config, by registry host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct Raw {
    auths: BTreeMap<String, RawAuth>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `docker.io` -> `index.docker.io`
/// (the host Docker Hub's API is on); `host:5000` stays.
fn host_of(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "index.docker.io".to_string()
        }
        _ => host,
    }
}

fn bad(message: impl Into<String>) -> RegistryError {
    RegistryError::DockerConfig(message.into())
}

impl DockerConfig {
    /// Parses the decoded `.dockerconfigjson` bytes. Errors name the entry at fault and
    /// never hold a credential.
    pub fn parse(bytes: &[u8]) -> Result<DockerConfig, RegistryError> {
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a Docker config ({{\"auths\": {{...}}}}): {e}")))?;
        let mut auths = BTreeMap::new();
        for (key, a) in raw.auths {
            let creds = match (&a.username, &a.password, &a.auth) {
                (Some(u), Some(p), _) if !u.is_empty() => Credentials {
                    username: u.clone(),
                    password: p.clone(),
                },
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| bad(format!("auths.\"{key}\".auth is not base64")))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| bad(format!("auths.\"{key}\".auth is not UTF-8")))?;
                    let (u, p) = text.split_once(':').ok_or_else(|| {
                        bad(format!(
                            "auths.\"{key}\".auth is not base64 of USER:PASSWORD"
                        ))
                    })?;
                    Credentials {
                        username: u.to_string(),
                        password: p.to_string(),
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "auths.\"{key}\" has neither auth nor username and password"
                    )))
                }
            };
            auths.insert(host_of(&key), creds);
        }
        Ok(DockerConfig { auths })
    }

    /// The credentials for `host` (the host a pull speaks to: a registry or a mirror).
    pub fn for_host(&self, host: &str) -> Option<&Credentials> {
        self.auths.get(&host_of(host))
    }

    /// The hosts it has credentials for.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }
}

/// The seam for a pod's `imagePullSecrets`: a `kubernetes.io/dockerconfigjson` Secret's
/// decoded `.dockerconfigjson` bytes -> the credentials they hold for `host` (the registry
/// or mirror a pull speaks to), if any.
pub fn credentials_for(
    dockerconfigjson: &[u8],
    host: &str,
) -> Result<Option<Credentials>, RegistryError> {
    Ok(DockerConfig::parse(dockerconfigjson)?
        .for_host(host)
        .cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn both_shapes_and_docker_hub_keys() {
        let json = format!(
            r#"{{"auths": {{
                "registry.local:5000": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}},
                "https://ghcr.io": {{"auth": "{}", "email": "x@y"}}
            }}}}"#,
            b64("alice:s3cr:et"),
            b64("bob:tok")
        );
        let c = DockerConfig::parse(json.as_bytes()).unwrap();
        let alice = c.for_host("registry.local:5000").unwrap();
        assert_eq!(
            (alice.username.as_str(), alice.password.as_str()),
            ("alice", "s3cr:et")
        );
        assert_eq!(c.for_host("index.docker.io").unwrap().username, "hub");
        assert_eq!(c.for_host("docker.io").unwrap().username, "hub");
        assert_eq!(c.for_host("ghcr.io").unwrap().password, "tok");
        assert!(c.for_host("registry.local:5001").is_none());
        assert!(!format!("{c:?}").contains("s3cr"), "no password in Debug");
        let hub = credentials_for(json.as_bytes(), "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(hub.password, "pw");
        assert_eq!(credentials_for(json.as_bytes(), "quay.io").unwrap(), None);
    }

    #[test]
    fn malformed_configs_say_what_is_wrong_without_the_secret() {
        let cases = [
            ("{}", "not a Docker config"),
            (
                r#"{"auths": {"r": {"auth": "%%%"}}}"#,
                "auths.\"r\".auth is not base64",
            ),
            (r#"{"auths": {"r": {}}}"#, "neither auth nor username"),
        ];
        for (json, want) in cases {
            let e = DockerConfig::parse(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let no_colon = format!(
            r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#,
            b64("secretonly")
        );
        let e = DockerConfig::parse(no_colon.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("USER:PASSWORD") && !e.contains("secretonly"),
            "{e}"
        );
    }
}
