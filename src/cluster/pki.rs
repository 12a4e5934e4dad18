//! The cluster CA, node certificates and the rustls configurations built from them; the
//! join token's format.
//!
//! The seed makes the CA at bootstrap (rcgen, ECDSA P-256, 10 years), or keeps one already
//! there ([`ensure_ca`]: USB sticks made by `omnicloud usb prepare` carry one, which init
//! copies in). Files, in `<data-dir>/tls/`:
//!
//! | file       | on            | what                                                     |
//! |------------|---------------|----------------------------------------------------------|
//! | `ca.crt`   | every node    | the cluster CA certificate: what every TLS peer trusts   |
//! | `ca.key`   | the seed only | the CA's private key (0600): only a node that issues     |
//! |            |               | certificates holds it, so a stolen worker disk cannot    |
//! |            |               | mint certificates                                        |
//! | `node.crt` | every node    | this node's certificate (server and client auth), its    |
//! |            |               | names and IPs as SANs, signed by the CA, 1 year          |
//! | `node.key` | every node    | its private key (0600), made on the node, never sent     |
//!
//! The join token is `K10<sha256 of the CA certificate (DER), hex>::<secret>`, as k3s's: a
//! joining node refuses a server whose CA does not hash to the pinned value before it sends
//! anything derived from the secret. Keys for gossip, RPC and the admin token come from the
//! secret only.
//!
//! One crypto provider everywhere: rustls's `ring`. Pure functions and file reads; no
//! actors. May call nothing else in the crate.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

/// The prefix of a join token (k3s's: version 10 of the format).
pub const TOKEN_PREFIX: &str = "K10";
/// Lifetime of the CA certificate.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of a node certificate.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The format a join token must have, for error messages.
pub const TOKEN_FORMAT: &str =
    "K10<64 hex digits: sha256 of the cluster CA certificate>::<secret> (the seed's <data-dir>/join.token)";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("reading {what}: {why}")]
    Pem { what: String, why: String },
    #[error("this node holds no cluster CA key ({path}): only the seed issues certificates; join through the seed")]
    NoCaKey { path: String },
    #[error("join token is not in the expected format {TOKEN_FORMAT}: {why}")]
    TokenFormat { why: String },
    #[error("the join token pins CA sha256 {pinned}, but this node's CA ({path}) hashes to {actual}: the token belongs to another cluster")]
    TokenCaMismatch {
        pinned: String,
        actual: String,
        path: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How this process reaches other nodes' APIs: set once by `node` (TLS on: a client
/// trusting the cluster CA), read by everything that calls a peer's API (logs, claims,
/// scrapes, peer image pulls).
static PEER_API_TLS: std::sync::OnceLock<Option<Arc<ClientConfig>>> = std::sync::OnceLock::new();

/// Sets how peers' APIs are reached (the first call wins: one node per process).
pub fn set_peer_api_tls(config: Option<Arc<ClientConfig>>) {
    let _ = PEER_API_TLS.set(config);
}

/// The base URL of a peer's API at `addr` (`host:port`): https when TLS is on.
pub fn peer_api_url(addr: &str) -> String {
    match PEER_API_TLS.get() {
        Some(Some(_)) => format!("https://{addr}"),
        _ => format!("http://{addr}"),
    }
}

/// The TLS client config for peers' APIs (None: TLS is off).
pub fn peer_api_tls() -> Option<Arc<ClientConfig>> {
    PEER_API_TLS.get().cloned().flatten()
}

/// A ureq agent for peers' APIs (trusting the cluster CA when TLS is on), from `builder`.
pub fn peer_agent(builder: ureq::AgentBuilder) -> ureq::Agent {
    match PEER_API_TLS.get() {
        Some(Some(config)) => builder.tls_config(config.clone()).build(),
        _ => builder.build(),
    }
}

/// The rustls crypto provider every TLS config of omnicloud uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the certificate files of a data dir are.
#[derive(Debug, Clone)]
pub struct TlsDir(pub PathBuf);

impl TlsDir {
    pub fn of(data_dir: &Path) -> TlsDir {
        TlsDir(data_dir.join("tls"))
    }
    pub fn ca_crt(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn node_crt(&self) -> PathBuf {
        self.0.join("node.crt")
    }
    pub fn node_key(&self) -> PathBuf {
        self.0.join("node.key")
    }
    /// Whether this node holds a certificate of its own.
    pub fn has_node_cert(&self) -> bool {
        self.node_crt().exists() && self.node_key().exists() && self.ca_crt().exists()
    }
    pub fn read(&self, path: &Path) -> Result<String, PkiError> {
        fs::read_to_string(path).map_err(io_err(path))
    }
}

/// Writes `body` to `path` atomically with `mode`.
pub fn write_file(path: &Path, body: &str, mode: u32) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(body.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    // An hour back: a peer whose clock is a little behind still accepts it.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + lifetime).into();
}

/// Makes the cluster CA in `tls` unless it is there. Returns whether it was made.
pub fn ensure_ca(tls: &TlsDir) -> Result<bool, PkiError> {
    if tls.ca_crt().exists() {
        return Ok(false);
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "omnicloud cluster CA");
    validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    // The key first: a crash between the two leaves no CA without its key.
    write_file(&tls.ca_key(), &key.serialize_pem(), 0o600)?;
    write_file(&tls.ca_crt(), &cert.pem(), 0o644)?;
    Ok(true)
}

/// The first certificate of a PEM text, as DER.
pub fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| PkiError::Pem {
            what: what.to_string(),
            why: "no certificate in it".into(),
        })?
        .map_err(|e| PkiError::Pem {
            what: what.to_string(),
            why: e.to_string(),
        })
}

/// Lower-case hex sha256 of a certificate's DER bytes.
pub fn cert_hash(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash a join token pins, of the CA certificate in `ca_pem`.
pub fn ca_hash(ca_pem: &str) -> Result<String, PkiError> {
    Ok(cert_hash(&first_cert(ca_pem, "the CA certificate")?))
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex sha256 of the cluster CA certificate.
    pub ca_hash: String,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<JoinToken, PkiError> {
        let text = text.trim();
        let bad = |why: &str| PkiError::TokenFormat { why: why.into() };
        let rest = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| bad("it does not start with K10"))?;
        let (hash, secret) = rest
            .split_once("::")
            .ok_or_else(|| bad("no `::` between the CA hash and the secret"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash is not 64 hex digits"));
        }
        if secret.is_empty() {
            return Err(bad("the secret after `::` is empty"));
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// Checks that the token pins the CA in `tls`.
    pub fn check_ca(&self, tls: &TlsDir) -> Result<(), PkiError> {
        let actual = ca_hash(&tls.read(&tls.ca_crt())?)?;
        if actual != self.ca_hash {
            return Err(PkiError::TokenCaMismatch {
                pinned: self.ca_hash.clone(),
                actual,
                path: tls.ca_crt().display().to_string(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}::{}", self.ca_hash, self.secret)
    }
}

/// Names and addresses a node's certificate is valid for.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Sans {
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

fn node_params(sans: &Sans) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans.names.clone())?;
    for ip in &sans.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    if let Some(name) = sans.names.first() {
        params.distinguished_name.push(DnType::CommonName, name);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// A new key for this node and a signing request for `sans`: (CSR PEM, key PEM).
pub fn node_csr(sans: &Sans) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let csr = node_params(sans)?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

fn issuer(tls: &TlsDir) -> Result<Issuer<'static, KeyPair>, PkiError> {
    if !tls.ca_key().exists() {
        return Err(PkiError::NoCaKey {
            path: tls.ca_key().display().to_string(),
        });
    }
    let key = KeyPair::from_pem(&tls.read(&tls.ca_key())?)?;
    Ok(Issuer::from_ca_cert_pem(&tls.read(&tls.ca_crt())?, key)?)
}

/// Signs a node's CSR with the CA in `tls` (which must hold `ca.key`): the certificate PEM.
pub fn sign_csr(tls: &TlsDir, csr_pem: &str) -> Result<String, PkiError> {
    let issuer = issuer(tls)?;
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    // What the CA vouches for is its own choice, not the requester's: usages and lifetime.
    csr.params.is_ca = IsCa::NoCa;
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut csr.params, NODE_VALIDITY);
    Ok(csr.signed_by(&issuer)?.pem())
}

/// Issues this node's own certificate with the local CA (the seed, at bootstrap or when
/// its certificate is due for renewal).
pub fn issue_own(tls: &TlsDir, sans: &Sans) -> Result<(), PkiError> {
    let (csr, key) = node_csr(sans)?;
    let cert = sign_csr(tls, &csr)?;
    write_file(&tls.node_key(), &key, 0o600)?;
    write_file(&tls.node_crt(), &cert, 0o644)
}

/// When the first certificate in `pem` expires.
pub fn not_after(pem: &str, what: &str) -> Result<SystemTime, PkiError> {
    let der = first_cert(pem, what)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Pem {
        what: what.to_string(),
        why: e.to_string(),
    })?;
    let secs = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

/// A node certificate is renewed (at the node's start, or by `omnicloud certs rotate`)
/// when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The names and addresses a certificate is valid for.
pub fn sans_of(pem: &str) -> Result<Sans, PkiError> {
    let der = first_cert(pem, "the certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Pem {
        what: "the certificate".into(),
        why: e.to_string(),
    })?;
    let mut sans = Sans::default();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => sans.names.push(n.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        sans.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        sans.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(sans)
}

/// Whether this node's certificate must be made again for `want`: it expires within
/// [`RENEW_BEFORE`], or does not name every name and address in `want` (the node moved to
/// another address, or was renamed).
pub fn needs_new_cert(tls: &TlsDir, want: &Sans) -> Result<bool, PkiError> {
    let have = sans_of(&tls.read(&tls.node_crt())?)?;
    let covered = want.names.iter().all(|n| have.names.contains(n))
        && want.ips.iter().all(|ip| have.ips.contains(ip));
    Ok(!covered || due_for_renewal(tls)?)
}

/// Whether this node's certificate expires within [`RENEW_BEFORE`].
pub fn due_for_renewal(tls: &TlsDir) -> Result<bool, PkiError> {
    let expires = not_after(&tls.read(&tls.node_crt())?, "node.crt")?;
    Ok(expires < SystemTime::now() + RENEW_BEFORE)
}

/// Each certificate file of `tls` that exists: (file name, when it expires).
pub fn status(tls: &TlsDir) -> Result<Vec<(String, SystemTime)>, PkiError> {
    let mut out = Vec::new();
    for path in [tls.ca_crt(), tls.node_crt()] {
        if path.exists() {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            out.push((name.clone(), not_after(&tls.read(&path)?, &name)?));
        }
    }
    Ok(out)
}

fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(first_cert(ca_pem, "the CA certificate")?)?;
    Ok(roots)
}

fn node_identity(
    tls: &TlsDir,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let cert = first_cert(&tls.read(&tls.node_crt())?, "node.crt")?;
    let ca = first_cert(&tls.read(&tls.ca_crt())?, "ca.crt")?;
    let key_pem = tls.read(&tls.node_key())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::Pem {
        what: "node.key".into(),
        why: e.to_string(),
    })?;
    Ok((vec![cert, ca], key))
}

/// The server side of this node's TLS: its certificate chain (node, CA); with
/// `client_auth`, peers must show a certificate of the same CA (node-to-node RPC).
pub fn server_config(tls: &TlsDir, client_auth: bool) -> Result<Arc<ServerConfig>, PkiError> {
    let (chain, key) = node_identity(tls)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if client_auth {
        let roots = Arc::new(roots(&tls.read(&tls.ca_crt())?)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(builder.with_single_cert(chain, key)?))
}

/// A client trusting only the CA in `ca_pem`; with `identity`, showing this node's
/// certificate (node-to-node RPC).
pub fn client_config(ca_pem: &str, identity: Option<&TlsDir>) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match identity {
        Some(tls) => {
            let (chain, key) = node_identity(tls)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// A client for the join exchange: trusts a server whose chain ends in a CA certificate
/// hashing to `pinned`, and then checks the server's certificate against that CA as
/// usual. A mismatch is remembered in `mismatch` (the CA hash seen) so the caller can
/// name it.
pub fn pinned_client_config(
    pinned: &str,
    mismatch: Arc<Mutex<Option<String>>>,
) -> Result<ClientConfig, PkiError> {
    let verifier = PinnedCa {
        pinned: pinned.to_string(),
        mismatch,
        provider: provider(),
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[derive(Debug)]
struct PinnedCa {
    pinned: String,
    mismatch: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((ca, rest)) = intermediates.split_last() else {
            *self.mismatch.lock().expect("mismatch") = Some("(no CA certificate sent)".into());
            return Err(rustls::Error::General(
                "the server sent no CA certificate".into(),
            ));
        };
        let actual = cert_hash(ca);
        if actual != self.pinned {
            *self.mismatch.lock().expect("mismatch") = Some(actual.clone());
            return Err(rustls::Error::General(format!(
                "the server's CA hashes to {actual}, the join token pins {}",
                self.pinned
            )));
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans() -> Sans {
        Sans {
            names: vec!["node-1".into(), "localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn token_round_trips_and_bad_tokens_name_the_format() {
        let hash = "a".repeat(64);
        let t = JoinToken::parse(&format!("K10{hash}::s3cret")).unwrap();
        assert_eq!(t.ca_hash, hash);
        assert_eq!(t.secret, "s3cret");
        assert_eq!(t.to_string(), format!("K10{hash}::s3cret"));
        for bad in [
            "0123abcd",
            &format!("K10{hash}s3cret"),
            "K10abc::x",
            &format!("K10{hash}::"),
        ] {
            let e = JoinToken::parse(bad).unwrap_err().to_string();
            assert!(e.contains("K10<64 hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn ca_signs_a_node_csr_and_the_token_pins_it() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsDir::of(dir.path());
        assert!(ensure_ca(&tls).unwrap());
        assert!(!ensure_ca(&tls).unwrap(), "a second call keeps the CA");
        let hash = ca_hash(&tls.read(&tls.ca_crt()).unwrap()).unwrap();
        let token = JoinToken {
            ca_hash: hash,
            secret: "x".into(),
        };
        token.check_ca(&tls).unwrap();
        let other = JoinToken {
            ca_hash: "b".repeat(64),
            secret: "x".into(),
        };
        let e = other.check_ca(&tls).unwrap_err().to_string();
        assert!(
            e.contains(&"b".repeat(64)) && e.contains("another cluster"),
            "{e}"
        );

        issue_own(&tls, &sans()).unwrap();
        let expires = not_after(&tls.read(&tls.node_crt()).unwrap(), "node.crt").unwrap();
        let left = expires.duration_since(SystemTime::now()).unwrap();
        assert!(left > NODE_VALIDITY - Duration::from_secs(3600) && left <= NODE_VALIDITY);
        server_config(&tls, true).unwrap();
        client_config(&tls.read(&tls.ca_crt()).unwrap(), Some(&tls)).unwrap();
        assert!(
            !due_for_renewal(&tls).unwrap(),
            "a new certificate is not due"
        );
        assert!(!needs_new_cert(&tls, &sans()).unwrap());
        let mut moved = sans();
        moved.ips.push("10.0.0.9".parse().unwrap());
        assert!(
            needs_new_cert(&tls, &moved).unwrap(),
            "a new address needs a new one"
        );
        let back = sans_of(&tls.read(&tls.node_crt()).unwrap()).unwrap();
        assert_eq!((back.names, back.ips), (sans().names, sans().ips));
        let files: Vec<String> = status(&tls).unwrap().into_iter().map(|(f, _)| f).collect();
        assert_eq!(files, ["ca.crt", "node.crt"]);
    }

    #[test]
    fn a_node_without_the_ca_key_cannot_sign() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsDir::of(dir.path());
        ensure_ca(&tls).unwrap();
        fs::remove_file(tls.ca_key()).unwrap();
        let (csr, _) = node_csr(&sans()).unwrap();
        let e = sign_csr(&tls, &csr).unwrap_err().to_string();
        assert!(e.contains("only the seed issues"), "{e}");
    }
}
