//! `[registries]` of the node config: where images are pulled from, as k3s's
//! `registries.yaml` says it (mirrors per registry, tried in order before the registry
//! itself; per-host credentials and CA files) plus containerd's list of plain-HTTP hosts.
//!
//! ```toml
//! [registries]
//! unqualified_search = ["docker.io"]   # where `nginx` is looked for (after the peers)
//! insecure = ["127.0.0.1:5000"]        # hosts spoken to over plain HTTP
//! ca_files = ["/etc/omnicloud/registry-ca.pem"]   # trusted beside the system roots
//! max_parallel_layers = 3
//! [registries.mirrors."docker.io"]
//! endpoints = ["https://mirror.local:5000"]
//! [registries.configs."mirror.local:5000"]
//! auth = { username = "puller", password = "secret" }
//! ca_file = "/etc/omnicloud/mirror-ca.pem"
//! ```
//!
//! Checked once when the node starts (and by `omnicloud image pull --config`): every
//! error names its field. Pure data; the pulling is `container::registry`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRegistries {
    unqualified_search: Vec<String>,
    insecure: Vec<String>,
    ca_files: Vec<String>,
    max_parallel_layers: usize,
    #[serde(default)]
    mirrors: BTreeMap<String, FileMirror>,
    #[serde(default)]
    configs: BTreeMap<String, FileHost>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMirror {
    endpoints: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHost {
    #[serde(default)]
    auth: Option<FileAuth>,
    #[serde(default)]
    ca_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    username: String,
    password: String,
}

/// One place to pull from: a registry or a mirror, `host[:port]`, over HTTPS unless the
/// host is in `insecure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub plain_http: bool,
}

/// A user name and password for a registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct HostAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostAuth({}, <password>)", self.username)
    }
}

/// What `[registries.configs."host"]` says about one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub auth: Option<HostAuth>,
    pub ca_file: Option<PathBuf>,
}

/// The checked `[registries]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Registries a name without a host (`nginx`) is looked for in, in order, after the
    /// node's store and its peers. Empty: such names come only from the store and peers.
    pub unqualified_search: Vec<String>,
    /// Hosts spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of CAs trusted for every registry, beside the system roots.
    pub ca_files: Vec<PathBuf>,
    /// Blobs of one image downloaded at the same time.
    pub max_parallel_layers: usize,
    /// Registry host -> its mirrors, tried in order before the registry itself.
    pub mirrors: BTreeMap<String, Vec<Endpoint>>,
    pub hosts: BTreeMap<String, HostSettings>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            unqualified_search: vec!["docker.io".into()],
            insecure: Vec::new(),
            ca_files: Vec::new(),
            max_parallel_layers: 3,
            mirrors: BTreeMap::new(),
            hosts: BTreeMap::new(),
        }
    }
}

impl RegistrySettings {
    /// Where to pull an image of `registry` from: its mirrors in order, then itself.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = self.mirrors.get(registry).cloned().unwrap_or_default();
        let host = if registry == "docker.io" {
            "index.docker.io"
        } else {
            registry
        };
        out.push(Endpoint {
            host: host.to_string(),
            plain_http: self.is_insecure(host) || self.is_insecure(registry),
        });
        out
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h == host)
    }

    /// The CA files trusted for `host`: the global ones and its own.
    pub fn ca_files_for(&self, host: &str) -> Vec<PathBuf> {
        let mut files = self.ca_files.clone();
        files.extend(self.hosts.get(host).and_then(|h| h.ca_file.clone()));
        files
    }

    /// The configured credentials of `host`.
    pub fn auth_for(&self, host: &str) -> Option<&HostAuth> {
        let lookup = if host == "index.docker.io" {
            ["index.docker.io", "docker.io"].as_slice()
        } else {
            std::slice::from_ref(&host)
        };
        lookup
            .iter()
            .find_map(|h| self.hosts.get(*h).and_then(|c| c.auth.as_ref()))
    }
}

/// `host`, `host:port`, `[v6]:port`: no scheme, no path, no spaces.
fn check_host(field: &str, host: &str) -> Result<(), ConfigError> {
    let bad = host.is_empty()
        || host.contains("://")
        || host.contains('/')
        || host.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(invalid(
            field,
            format!(
                "\"{host}\" is not a registry host (expected HOST or HOST:PORT, no scheme or path)"
            ),
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().is_err() {
            return Err(invalid(
                field,
                format!("\"{host}\": the port is not a number up to 65535"),
            ));
        }
    }
    Ok(())
}

/// A CA file must exist and hold at least one PEM certificate.
fn check_ca(field: &str, path: &str) -> Result<PathBuf, ConfigError> {
    let text = std::fs::read_to_string(Path::new(path))
        .map_err(|e| invalid(field, format!("cannot read {path}: {e}")))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid(
            field,
            format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// A mirror endpoint: `https://host[:port]`, `http://host[:port]` (the host must be in
/// `insecure`), or a bare `host[:port]` (HTTPS unless insecure).
fn endpoint(field: &str, text: &str, insecure: &[String]) -> Result<Endpoint, ConfigError> {
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, text),
    };
    let host = rest.trim_end_matches('/');
    if host.contains('/') {
        return Err(invalid(
            field,
            format!(
                "\"{text}\": a path after the host is not supported (the registry API is at /v2/)"
            ),
        ));
    }
    check_host(field, host)?;
    let listed = insecure.iter().any(|h| h == host);
    match scheme {
        None | Some("https") => Ok(Endpoint {
            host: host.to_string(),
            plain_http: listed && scheme.is_none(),
        }),
        Some("http") if listed => Ok(Endpoint {
            host: host.to_string(),
            plain_http: true,
        }),
        Some("http") => Err(invalid(
            field,
            format!("\"{text}\" is plain HTTP: list {host} in registries.insecure to allow it"),
        )),
        Some(other) => Err(invalid(
            field,
            format!("\"{text}\": scheme {other} is not https or http"),
        )),
    }
}

impl FileRegistries {
    pub(super) fn settings(
        &self,
        unqualified_flag: Option<&[String]>,
    ) -> Result<RegistrySettings, ConfigError> {
        let unqualified = match unqualified_flag {
            Some(f) if f.iter().any(|s| s == "none") => Vec::new(),
            Some(f) => f.to_vec(),
            None => self.unqualified_search.clone(),
        };
        for (i, h) in unqualified.iter().enumerate() {
            check_host(&format!("registries.unqualified_search[{i}]"), h)?;
        }
        for (i, h) in self.insecure.iter().enumerate() {
            check_host(&format!("registries.insecure[{i}]"), h)?;
        }
        let ca_files = self
            .ca_files
            .iter()
            .enumerate()
            .map(|(i, p)| check_ca(&format!("registries.ca_files[{i}]"), p))
            .collect::<Result<_, _>>()?;
        if !(1..=16).contains(&self.max_parallel_layers) {
            return Err(invalid(
                "registries.max_parallel_layers",
                "must be between 1 and 16",
            ));
        }
        let mut mirrors = BTreeMap::new();
        for (registry, m) in &self.mirrors {
            let field = format!("registries.mirrors.\"{registry}\"");
            check_host(&field, registry)?;
            let endpoints = m
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| endpoint(&format!("{field}.endpoints[{i}]"), e, &self.insecure))
                .collect::<Result<Vec<_>, _>>()?;
            mirrors.insert(registry.clone(), endpoints);
        }
        let mut hosts = BTreeMap::new();
        for (host, c) in &self.configs {
            let field = format!("registries.configs.\"{host}\"");
            check_host(&field, host)?;
            let auth = match &c.auth {
                Some(a) if a.username.is_empty() || a.username.contains(':') => {
                    return Err(invalid(
                        &format!("{field}.auth.username"),
                        "must be set and hold no ':'",
                    ))
                }
                Some(a) if a.password.is_empty() => {
                    return Err(invalid(&format!("{field}.auth.password"), "must be set"))
                }
                Some(a) => Some(HostAuth {
                    username: a.username.clone(),
                    password: a.password.clone(),
                }),
                None => None,
            };
            let ca_file = match c.ca_file.as_str() {
                "" => None,
                p => Some(check_ca(&format!("{field}.ca_file"), p)?),
            };
            hosts.insert(host.clone(), HostSettings { auth, ca_file });
        }
        Ok(RegistrySettings {
            unqualified_search: unqualified,
            insecure: self.insecure.clone(),
            ca_files,
            max_parallel_layers: self.max_parallel_layers,
            mirrors,
            hosts,
        })
    }
}

/// Reads only the `[registries]` section of a node config file (for `omnicloud image
/// pull --config`); the built-in defaults where the file says nothing.
pub fn load_registries(path: Option<&Path>) -> Result<RegistrySettings, ConfigError> {
    let mut merged: toml::Table = super::DEFAULT_CONFIG
        .parse()
        .expect("built-in config parses");
    let name = path.map_or("<built-in>".to_string(), |p| p.display().to_string());
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        let user: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: name.clone(),
                message: e.to_string(),
            })?;
        super::merge(&mut merged, user);
    }
    let section = merged
        .remove("registries")
        .unwrap_or(toml::Value::Table(Default::default()));
    let file: FileRegistries =
        section
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: name,
                message: format!("[registries]: {e}"),
            })?;
    file.settings(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<RegistrySettings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, extra).unwrap();
        load_registries(Some(&path))
    }

    #[test]
    fn defaults_search_docker_hub_and_mirrors_come_first() {
        let s = load_registries(None).unwrap();
        assert_eq!(s.unqualified_search, ["docker.io"]);
        assert_eq!(s.max_parallel_layers, 3);
        let s = parse(
            "[registries]\ninsecure = [\"127.0.0.1:5000\"]\n\
             [registries.mirrors.\"docker.io\"]\nendpoints = [\"https://mirror.local:5000\", \"http://127.0.0.1:5000\"]\n",
        )
        .unwrap();
        let hosts: Vec<_> = s
            .endpoints("docker.io")
            .into_iter()
            .map(|e| (e.host, e.plain_http))
            .collect();
        assert_eq!(
            hosts,
            [
                ("mirror.local:5000".to_string(), false),
                ("127.0.0.1:5000".to_string(), true),
                ("index.docker.io".to_string(), false)
            ]
        );
        assert!(s.endpoints("127.0.0.1:5000")[0].plain_http);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let cases = [
            (
                "[registries.mirrors.\"docker.io\"]\nendpoints = [\"http://m:5000\"]\n",
                "registries.mirrors.\"docker.io\".endpoints[0]",
                "registries.insecure",
            ),
            (
                "[registries.mirrors.\"docker.io\"]\nendpoints = [\"https://m/v2/x\"]\n",
                "endpoints[0]",
                "path",
            ),
            (
                "[registries]\ninsecure = [\"http://x\"]\n",
                "registries.insecure[0]",
                "no scheme",
            ),
            (
                "[registries]\nca_files = [\"/no/such/ca.pem\"]\n",
                "registries.ca_files[0]",
                "cannot read",
            ),
            (
                "[registries.configs.\"r:5000\"]\nauth = { username = \"\", password = \"p\" }\n",
                "registries.configs.\"r:5000\".auth.username",
                "must be set",
            ),
            (
                "[registries.configs.\"r:99999\"]\nca_file = \"\"\n",
                "registries.configs.\"r:99999\"",
                "port",
            ),
            (
                "[registries]\nmax_parallel_layers = 0\n",
                "registries.max_parallel_layers",
                "between 1 and 16",
            ),
        ];
        for (text, field, why) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(why), "{text}: {e}");
        }
        let e = parse("[registries.configs.\"r\"]\npassword = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("password"), "{e}");
    }

    #[test]
    fn host_credentials_and_cas() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let s = parse(&format!(
            "[registries]\nca_files = [\"{0}\"]\n[registries.configs.\"docker.io\"]\nauth = {{ username = \"u\", password = \"p\" }}\nca_file = \"{0}\"\n",
            ca.display()
        ))
        .unwrap();
        assert_eq!(s.auth_for("index.docker.io").unwrap().username, "u");
        assert_eq!(s.ca_files_for("docker.io").len(), 2);
        assert_eq!(s.ca_files_for("other").len(), 1);
        assert!(!format!("{:?}", s.auth_for("docker.io")).contains("\"p\""));
    }
}
