//! HTTPS in front of the API: the public port takes each connection, looks at its first
//! byte, and
//!
//! - a TLS handshake (a ClientHello record starts with 0x16) is passed, bytes untouched,
//!   to actix serving TLS (rustls) on a loopback listener of its own;
//! - anything else (plain HTTP) gets `400` with a text saying to use `https://`, and
//!   nothing else: no route is reached, no data is read out. `/healthz` and `/readyz` are
//!   open over HTTPS only (no token needed), so probes use `https://` too (with
//!   `-k`/the CA).
//!
//! actix-web cannot look at a connection before its TLS acceptor does, hence the relay;
//! its cost is one loopback hop per connection (not per request: connections are kept).
//! actix then sees the relay's loopback address as every client's, so the relay notes
//! which client each of its loopback ports carries ([`Clients`]), and the audit log names
//! the real one.
//! Tasks: the accept loop and one per connection. May call nothing else in the crate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;
/// A connection must send its first byte within this.
const FIRST_BYTE: Duration = Duration::from_secs(10);
/// Connections relayed at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;

/// The answer to a plain-HTTP request on the HTTPS port.
pub fn refusal(port: u16) -> String {
    let body = format!(
        "this port serves HTTPS only: the omnicloud API refuses plain HTTP. Use https://<node>:{port}/ \
         and trust the cluster CA (<data-dir>/tls/ca.crt, or `omnicloud login --ca FILE`).\n"
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The real client behind each relayed connection, keyed by the relay's loopback port
/// (the peer port actix sees). Entries live as long as their connection.
#[derive(Clone, Default)]
pub struct Clients(Arc<Mutex<HashMap<u16, SocketAddr>>>);

impl Clients {
    /// The client of a connection actix saw coming from `seen`: the relayed client when
    /// `seen` is one of the relay's loopback ports, else `seen` itself (no TLS front).
    pub fn of(&self, seen: Option<SocketAddr>) -> Option<SocketAddr> {
        let seen = seen?;
        if !seen.ip().is_loopback() {
            return Some(seen);
        }
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Some(map.get(&seen.port()).copied().unwrap_or(seen))
    }

    fn hold(&self, port: u16, client: SocketAddr) -> Held {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(port, client);
        Held(self.clone(), port)
    }
}

/// Removes its entry when the relayed connection ends.
struct Held(Clients, u16);

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.1);
    }
}

/// Relays TLS connections on `public` to `inner` (actix over rustls on loopback) and
/// refuses the rest; `clients` learns who each relayed connection carries.
pub fn front(public: TcpListener, inner: SocketAddr, clients: Clients) {
    let port = public.local_addr().map(|a| a.port()).unwrap_or_default();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, from) = match public.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let clients = clients.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let _ = one(stream, from, inner, port, &clients).await;
            });
        }
    });
}

async fn one(
    mut client: TcpStream,
    from: SocketAddr,
    inner: SocketAddr,
    port: u16,
    clients: &Clients,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(FIRST_BYTE, client.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {
            let mut server = TcpStream::connect(inner).await?;
            server.set_nodelay(true)?;
            // Noted before any byte is relayed, so before actix can see a request on it.
            let _held = clients.hold(server.local_addr()?.port(), from);
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            Ok(())
        }
        Ok(Ok(1)) => {
            // Take in the request head (up to 16 KiB, 2 s) so closing does not reset the
            // connection before the client reads the answer.
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            client.write_all(refusal(port).as_bytes()).await?;
            client.shutdown().await
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_gets_a_refusal_and_tls_bytes_reach_the_inner_listener() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inner_addr = inner.local_addr().unwrap();
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public_addr = public.local_addr().unwrap();
        let clients = Clients::default();
        front(public, inner_addr, clients.clone());

        let mut plain = TcpStream::connect(public_addr).await.unwrap();
        plain
            .write_all(b"GET /v1/namespaces HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        plain.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("HTTPS only"), "{answer}");

        let mut tls = TcpStream::connect(public_addr).await.unwrap();
        tls.write_all(&[TLS_HANDSHAKE, 3, 1, 0, 1, 0])
            .await
            .unwrap();
        let (mut seen, relay) = inner.accept().await.unwrap();
        let mut got = [0u8; 6];
        seen.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [TLS_HANDSHAKE, 3, 1, 0, 1, 0]);
        // The relay's port maps back to the real client; another address passes through.
        assert_eq!(clients.of(Some(relay)), Some(tls.local_addr().unwrap()));
        let lan: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(clients.of(Some(lan)), Some(lan));
        drop(tls);
        drop(seen);
        for _ in 0..100 {
            if clients.of(Some(relay)) == Some(relay) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            clients.of(Some(relay)),
            Some(relay),
            "entry gone with the connection"
        );
    }
}
