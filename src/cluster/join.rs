//! The join exchange: how a new node gets the cluster CA and a certificate of its own
//! before it gossips.
//!
//! Every node serves it on TCP at its gossip port number (gossip itself is UDP on that
//! port, as memberlist serves TCP and UDP on one port). The joining node dials a seed over
//! TLS trusting only a CA whose certificate hashes to the token's pin
//! ([`pki::pinned_client_config`]): a server with another CA (a wrong token, or a man in
//! the middle) is refused, naming both hashes, before anything is sent. Then it sends one
//! JSON line, `{"proof": hex HMAC key derived from the token's secret, "csr": PEM}` (its
//! key never leaves it), and reads one line back: `{"ca": PEM, "cert": PEM}` or
//! `{"error": text}`. Only a node holding `ca.key` signs (the seed); others answer why not.
//!
//! Tasks: one per accepted connection. May call: `cluster::pki`, `cluster::transport`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::cluster::pki::{self, JoinToken, PkiError, Sans, TlsDir};
use crate::cluster::transport::derive_key;

/// Longest request or response line.
const MAX_LINE: u64 = 64 * 1024;
/// One exchange must finish within this.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("seed {seed} presents a cluster CA with sha256 {actual}, but the join token pins {pinned}: refusing to join (a wrong token, or not the cluster you meant: a man in the middle?)")]
    CaMismatch {
        seed: SocketAddr,
        actual: String,
        pinned: String,
    },
    #[error("seed {seed} refused the join: {why}")]
    Refused { seed: SocketAddr, why: String },
    #[error("no seed answered the join exchange: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    proof: String,
    csr: String,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Response {
    #[serde(default)]
    ca: String,
    #[serde(default)]
    cert: String,
    #[serde(default)]
    error: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a joiner shows to prove it holds the token (derived from the secret, never it).
pub fn proof(secret: &str) -> String {
    hex(&derive_key(secret, "join"))
}

/// Serves the join exchange on `listener` with this node's certificate. A node without
/// the CA key relays a request it has checked to its own seeds (`upstream`): a worker VM
/// joins through its director, which joined through the seed.
pub fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tls: TlsDir,
    token: JoinToken,
    upstream: Vec<SocketAddr>,
) {
    let expected = proof(&token.secret);
    let relay = Arc::new((token, upstream));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (acceptor, tls, expected) = (acceptor.clone(), tls.clone(), expected.clone());
            let relay = relay.clone();
            tokio::spawn(async move {
                let work = answer(stream, acceptor, &tls, &expected, &relay);
                match tokio::time::timeout(EXCHANGE_TIMEOUT, work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(%peer, "join exchange: {e}"),
                    Err(_) => tracing::warn!(%peer, "join exchange timed out"),
                }
            });
        }
    });
}

async fn answer(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    tls: &TlsDir,
    expected: &str,
    relay: &(JoinToken, Vec<SocketAddr>),
) -> std::io::Result<()> {
    let stream = acceptor.accept(stream).await?;
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(read.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response {
            error: format!("bad join request: {e}"),
            ..Default::default()
        },
        Ok(req) if !same(req.proof.as_bytes(), expected.as_bytes()) => Response {
            error: "the join token's secret is wrong".into(),
            ..Default::default()
        },
        Ok(req) if !tls.ca_key().exists() && !relay.1.is_empty() => {
            relayed(&relay.0, &relay.1, &req.csr).await
        }
        Ok(req) => match (pki::sign_csr(tls, &req.csr), tls.read(&tls.ca_crt())) {
            (Ok(cert), Ok(ca)) => Response {
                ca,
                cert,
                error: String::new(),
            },
            (Err(e), _) | (_, Err(e)) => Response {
                error: crate::error_chain(&e),
                ..Default::default()
            },
        },
    };
    let mut out = serde_json::to_vec(&response).expect("response serializes");
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// A request checked here, answered by the first of this node's seeds that answers.
async fn relayed(token: &JoinToken, upstream: &[SocketAddr], csr: &str) -> Response {
    let mut failures = Vec::new();
    for seed in upstream {
        let config = match pki::pinned_client_config(&token.ca_hash, Default::default()) {
            Ok(c) => c,
            Err(e) => return refusal(crate::error_chain(&e)),
        };
        let attempt =
            tokio::time::timeout(EXCHANGE_TIMEOUT, ask(*seed, config, &token.secret, csr));
        match attempt.await {
            Ok(Ok(r)) => return r,
            Ok(Err(e)) => failures.push(format!("{seed}: {e}")),
            Err(_) => failures.push(format!("{seed}: timed out")),
        }
    }
    refusal(format!(
        "this node holds no CA key and none of its seeds answered: {}",
        failures.join("; ")
    ))
}

fn refusal(error: String) -> Response {
    Response {
        error,
        ..Default::default()
    }
}

/// Gets the CA and a certificate for `sans` from the first seed that answers, and writes
/// them (and the new key) to `tls`. A CA mismatch or a refusal stops at once.
pub async fn fetch(
    seeds: &[SocketAddr],
    token: &JoinToken,
    tls: &TlsDir,
    sans: &Sans,
) -> Result<(), JoinError> {
    let (csr, key) = pki::node_csr(sans)?;
    let mut failures = Vec::new();
    for seed in seeds {
        let mismatch = Arc::new(Mutex::new(None));
        let config = pki::pinned_client_config(&token.ca_hash, mismatch.clone())?;
        let attempt =
            tokio::time::timeout(EXCHANGE_TIMEOUT, ask(*seed, config, &token.secret, &csr))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
        if let Some(actual) = mismatch.lock().expect("mismatch").take() {
            return Err(JoinError::CaMismatch {
                seed: *seed,
                actual,
                pinned: token.ca_hash.clone(),
            });
        }
        match attempt {
            Ok(r) if !r.error.is_empty() => {
                return Err(JoinError::Refused {
                    seed: *seed,
                    why: r.error,
                })
            }
            Ok(r) => {
                // The CA handed over must be the one pinned, not just the one serving.
                let got = pki::ca_hash(&r.ca)?;
                if got != token.ca_hash {
                    return Err(JoinError::CaMismatch {
                        seed: *seed,
                        actual: got,
                        pinned: token.ca_hash.clone(),
                    });
                }
                pki::write_file(&tls.node_key(), &key, 0o600)?;
                pki::write_file(&tls.node_crt(), &r.cert, 0o644)?;
                pki::write_file(&tls.ca_crt(), &r.ca, 0o644)?;
                return Ok(());
            }
            Err(e) => failures.push(format!("{seed}: {e}")),
        }
    }
    Err(JoinError::Unreachable(failures.join("; ")))
}

async fn ask(
    seed: SocketAddr,
    config: rustls::ClientConfig,
    secret: &str,
    csr: &str,
) -> std::io::Result<Response> {
    let tcp = TcpStream::connect(seed).await?;
    let name = rustls::pki_types::ServerName::IpAddress(seed.ip().into());
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (read, mut write) = tokio::io::split(stream);
    let mut req = serde_json::to_vec(&Request {
        proof: proof(secret),
        csr: csr.to_string(),
    })?;
    req.push(b'\n');
    write.write_all(&req).await?;
    let mut line = String::new();
    BufReader::new(read.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn seed() -> (tempfile::TempDir, TlsDir, SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsDir::of(dir.path());
        pki::ensure_ca(&tls).unwrap();
        let sans = Sans {
            names: vec!["seed".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        pki::issue_own(&tls, &sans).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(pki::server_config(&tls, false).unwrap());
        let token = JoinToken {
            ca_hash: pki::ca_hash(&tls.read(&tls.ca_crt()).unwrap()).unwrap(),
            secret: "s3cret".into(),
        };
        serve(listener, acceptor, tls.clone(), token, Vec::new());
        (dir, tls, addr)
    }

    /// A worker VM's path: it asks its director (no `ca.key`), which checks the proof and
    /// passes the request on to its own seed; the certificate comes back signed by the CA.
    #[tokio::test]
    async fn a_node_without_the_ca_key_relays_a_checked_join_to_its_seed() {
        let (_d, seed_tls, seed_addr) = seed().await;
        let token = JoinToken {
            ca_hash: pki::ca_hash(&seed_tls.read(&seed_tls.ca_crt()).unwrap()).unwrap(),
            secret: "s3cret".into(),
        };
        // The director: joined the seed, so it holds the CA certificate and its own.
        let director_dir = tempfile::tempdir().unwrap();
        let director = TlsDir::of(director_dir.path());
        let director_sans = Sans {
            names: vec!["director".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        fetch(&[seed_addr], &token, &director, &director_sans)
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let director_addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(pki::server_config(&director, false).unwrap());
        serve(
            listener,
            acceptor,
            director.clone(),
            token.clone(),
            vec![seed_addr],
        );

        let worker = tempfile::tempdir().unwrap();
        let tls = TlsDir::of(worker.path());
        let wrong_secret = JoinToken {
            secret: "nope".into(),
            ..token.clone()
        };
        let e = fetch(&[director_addr], &wrong_secret, &tls, &joiner_sans())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("secret is wrong"), "{e}");
        fetch(&[director_addr], &token, &tls, &joiner_sans())
            .await
            .unwrap();
        token.check_ca(&tls).unwrap();
        assert!(!tls.ca_key().exists() && !director.ca_key().exists());
        // The worker's certificate is one the seed's mutual-TLS server (the RPC) accepts.
        let mtls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mtls_addr = mtls.local_addr().unwrap();
        let server = TlsAcceptor::from(pki::server_config(&seed_tls, true).unwrap());
        let accepted = tokio::spawn(async move {
            let (tcp, _) = mtls.accept().await.unwrap();
            let mut stream = server.accept(tcp).await?;
            stream.write_all(b"ok").await?;
            stream.shutdown().await
        });
        let ca = tls.read(&tls.ca_crt()).unwrap();
        let client = TlsConnector::from(Arc::new(pki::client_config(&ca, Some(&tls)).unwrap()));
        let tcp = TcpStream::connect(mtls_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(mtls_addr.ip().into());
        let mut stream = client.connect(name, tcp).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok");
        accepted.await.unwrap().unwrap();
        let issued = pki::sans_of(&tls.read(&tls.node_crt()).unwrap()).unwrap();
        assert_eq!(issued.names, ["joiner"]);
    }

    fn joiner_sans() -> Sans {
        Sans {
            names: vec!["joiner".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    #[tokio::test]
    async fn a_right_token_gets_a_certificate_a_wrong_pin_or_secret_is_refused() {
        let (_d, seed_tls, addr) = seed().await;
        let hash = pki::ca_hash(&seed_tls.read(&seed_tls.ca_crt()).unwrap()).unwrap();
        let joiner = tempfile::tempdir().unwrap();
        let tls = TlsDir::of(joiner.path());

        let wrong_pin = JoinToken {
            ca_hash: "c".repeat(64),
            secret: "s3cret".into(),
        };
        let e = fetch(&[addr], &wrong_pin, &tls, &joiner_sans())
            .await
            .unwrap_err();
        assert!(matches!(e, JoinError::CaMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&hash) && e.to_string().contains(&"c".repeat(64)));
        assert!(!tls.has_node_cert());

        let wrong_secret = JoinToken {
            ca_hash: hash.clone(),
            secret: "nope".into(),
        };
        let e = fetch(&[addr], &wrong_secret, &tls, &joiner_sans())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("secret is wrong"), "{e}");

        let right = JoinToken {
            ca_hash: hash,
            secret: "s3cret".into(),
        };
        fetch(&[addr], &right, &tls, &joiner_sans()).await.unwrap();
        assert!(tls.has_node_cert());
        right.check_ca(&tls).unwrap();
        assert!(!tls.ca_key().exists(), "the CA key stays on the seed");
        pki::server_config(&tls, true).unwrap();
    }
}
