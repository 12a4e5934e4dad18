//! The client config (`omnicloud login` writes it; every client verb reads it): the API
//! server, the cluster CA to trust (embedded, so the file can be copied to a laptop) and
//! the token. TOML at `$OMNICLOUD_CLIENT_CONFIG`, else `~/.config/omnicloud/client.toml`.
//!
//! Which CA a client trusts, first found: `--ca FILE` / `OMNICLOUD_CA`, the client config,
//! `<data-dir>/tls/ca.crt` of a local node. Only that CA: never the system roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::pki;

/// What `omnicloud login` writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientConfig {
    pub server: String,
    pub token: String,
    /// The cluster CA certificate, PEM.
    pub ca: String,
}

/// Where the client config is read from and written to.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("OMNICLOUD_CLIENT_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".config/omnicloud/client.toml")
}

impl ClientConfig {
    /// The client config, when one is there (a broken one is reported and ignored).
    pub fn load() -> Option<ClientConfig> {
        let path = path();
        let text = std::fs::read_to_string(&path).ok()?;
        match toml::from_str(&text) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("warning: ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// Writes it (0600: it holds the token).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        pki::write_file(path, &text, 0o600).map_err(|e| crate::error_chain(&e))
    }
}

/// The CA a client trusts (PEM), first found of: `explicit` (a file), the client config,
/// `<data_dir>/tls/ca.crt` (the given or the default data dir).
pub fn discover_ca(
    explicit: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<Option<String>, String> {
    if let Some(file) = explicit {
        let pem =
            std::fs::read_to_string(file).map_err(|e| format!("--ca {}: {e}", file.display()))?;
        pki::ca_hash(&pem).map_err(|e| format!("--ca {}: {e}", file.display()))?;
        return Ok(Some(pem));
    }
    if let Some(c) = ClientConfig::load().filter(|c| !c.ca.is_empty()) {
        return Ok(Some(c.ca));
    }
    let dir = data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(crate::config::default_data_dir);
    Ok(std::fs::read_to_string(pki::TlsDir::of(&dir).ca_crt()).ok())
}

/// The cluster CA of a local node's data dir (PEM), if it has one.
pub fn ca_of(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(pki::TlsDir::of(data_dir).ca_crt()).ok()
}

/// A ureq agent trusting only `ca` (no CA: an agent that trusts nothing, so an https
/// server is refused with "unknown issuer" rather than trusted).
pub fn agent(ca: Option<&str>, builder: ureq::AgentBuilder) -> Result<ureq::Agent, String> {
    let config = match ca {
        Some(pem) => pki::client_config(pem, None).map_err(|e| crate::error_chain(&e))?,
        None => rustls::ClientConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    Ok(builder.tls_config(Arc::new(config)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_config_round_trips_and_explicit_ca_wins() {
        let dir = tempfile::tempdir().unwrap();
        let tls = pki::TlsDir::of(dir.path());
        pki::ensure_ca(&tls).unwrap();
        let ca = tls.read(&tls.ca_crt()).unwrap();
        let config = ClientConfig {
            server: "https://10.0.0.1:7070".into(),
            token: "t".into(),
            ca: ca.clone(),
        };
        let file = dir.path().join("client.toml");
        config.save(&file).unwrap();
        let back: ClientConfig = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(back, config);
        let found = discover_ca(Some(&tls.ca_crt()), None).unwrap();
        assert_eq!(found.as_deref(), Some(ca.as_str()));
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = discover_ca(Some(&junk), None).unwrap_err();
        assert!(e.contains("--ca"), "{e}");
    }
}
