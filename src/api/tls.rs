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
//! Tasks: the accept loop and one per connection. May call nothing else in the crate.

use std::net::SocketAddr;
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

/// Relays TLS connections on `public` to `inner` (actix over rustls on loopback) and
/// refuses the rest.
pub fn front(public: TcpListener, inner: SocketAddr) {
    let port = public.local_addr().map(|a| a.port()).unwrap_or_default();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match public.accept().await {
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
            tokio::spawn(async move {
                let _slot = slot;
                let _ = one(stream, inner, port).await;
            });
        }
    });
}

async fn one(mut client: TcpStream, inner: SocketAddr, port: u16) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(FIRST_BYTE, client.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {
            let mut server = TcpStream::connect(inner).await?;
            server.set_nodelay(true)?;
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
        front(public, inner_addr);

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
        let (mut seen, _) = inner.accept().await.unwrap();
        let mut got = [0u8; 6];
        seen.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [TLS_HANDSHAKE, 3, 1, 0, 1, 0]);
    }
}
