//! A Docker Registry v2 token server for tests (the `realm` of `WWW-Authenticate: Bearer`,
//! as Docker Hub's auth.docker.io): checks HTTP basic credentials and answers with a JWT
//! (RS256, signed by `openssl dgst` with a key whose self-signed certificate the registry
//! trusts as `rootcertbundle`, the certificate in the `x5c` header) granting the actions
//! each requested `scope` asks for. Wrong credentials: 401 with a JSON message.
//! Plain HTTP on 127.0.0.1, port 0; one thread.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

pub const SERVICE: &str = "omnicloud-test-registry";
pub const ISSUER: &str = "omnicloud-test-issuer";
/// What the server says to wrong credentials.
pub const REFUSAL: &str = "incorrect username or password for the test token service";

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// The certificate the registry trusts for tokens.
    pub bundle: PathBuf,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Signs a token for `user` granting `scopes` (`repository:NAME:ACTIONS`).
fn token(dir: &Path, user: &str, scopes: &[String]) -> String {
    let der = openssl(dir, &["x509", "-in", "token.pem", "-outform", "DER"]);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = serde_json::json!({"iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_id()),
        "access": access});
    let signing = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let input = dir.join(format!("signing-{}", rand_id()));
    std::fs::write(&input, &signing).unwrap();
    let signature = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "token.key",
            input.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&input);
    format!("{signing}.{}", b64url(&signature))
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
}

fn decode_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'%' if i + 2 < b.len() => {
                        let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                        out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                        i += 3;
                    }
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            (k.to_string(), String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

impl TokenServer {
    /// A token server accepting only `user`/`password`, keys in `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
                "-days",
                "2",
                "-subj",
                "/CN=omnicloud test token issuer",
            ],
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let (dir, want) = (
            dir.to_path_buf(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        );
        let user = user.to_string();
        let bundle = dir.join("token.pem");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut authorization = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = v.trim().to_string();
                        }
                    }
                }
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let scopes: Vec<String> = decode_query(query)
                    .into_iter()
                    .filter(|(k, _)| k == "scope")
                    .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
                    .collect();
                let (status, body) = if authorization == want {
                    let t = token(&dir, &user, &scopes);
                    (
                        "200 OK",
                        serde_json::json!({"token": t, "access_token": t, "expires_in": 300}),
                    )
                } else {
                    ("401 Unauthorized", serde_json::json!({"details": REFUSAL}))
                };
                let body = body.to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { realm, bundle }
    }

    /// The docker-registry `auth:` section using this server.
    pub fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.bundle.display()
        )
    }
}
