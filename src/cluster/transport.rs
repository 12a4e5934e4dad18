//! Authenticated request/response transport between nodes over TCP (the `--rpc-port`).
//!
//! Nodes prove they hold the join token without sending it: each connection starts with a
//! nonce from each side, and every frame carries an HMAC-SHA256 tag over the direction,
//! both nonces, a sequence number and the body, with a key derived from the token. A peer
//! with another token, a replayed frame or a frame from another connection fails the tag
//! check; the connection is dropped and `rejected` counts it.
//!
//! Frame: `u32 BE length | 32-byte tag | body`. The body is opaque bytes; callers encode.
//! Tasks: one per accepted connection. May call: nothing else in the crate.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type HmacSha256 = Hmac<Sha256>;

/// Largest frame accepted (snapshots and image chunks are sent in frames of at most this).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o with peer")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("frame failed authentication: the peer holds a different join token (or the frame was replayed)")]
    BadTag,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A key derived from the join token for one purpose ("rpc", "gossip", ...).
pub fn derive_key(token: &str, purpose: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"omnicloud/");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub rejected: AtomicU64,
    pub requests_in: AtomicU64,
    pub requests_out: AtomicU64,
}

/// One authenticated connection: both nonces, the key, and a sequence per direction.
struct Session {
    stream: TcpStream,
    key: [u8; 32],
    nonces: [u8; 2 * NONCE_LEN],
    send_seq: u64,
    recv_seq: u64,
    /// 0 for the dialing side, 1 for the accepting side: frames are tagged by sender role.
    role: u8,
}

impl Session {
    async fn handshake(
        mut stream: TcpStream,
        key: [u8; 32],
        dialer: bool,
    ) -> Result<Session, TransportError> {
        stream.set_nodelay(true)?;
        let mine: [u8; NONCE_LEN] = rand::random();
        stream.write_all(&mine).await?;
        let mut theirs = [0u8; NONCE_LEN];
        stream.read_exact(&mut theirs).await?;
        let (dialer_nonce, acceptor_nonce) = if dialer {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        let mut nonces = [0u8; 2 * NONCE_LEN];
        nonces[..NONCE_LEN].copy_from_slice(&dialer_nonce);
        nonces[NONCE_LEN..].copy_from_slice(&acceptor_nonce);
        Ok(Session {
            stream,
            key,
            nonces,
            send_seq: 0,
            recv_seq: 0,
            role: if dialer { 0 } else { 1 },
        })
    }

    fn tag(&self, sender_role: u8, seq: u64, body: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("32-byte key");
        mac.update(&[sender_role]);
        mac.update(&self.nonces);
        mac.update(&seq.to_be_bytes());
        mac.update(body);
        mac
    }

    async fn send(&mut self, body: &[u8]) -> Result<(), TransportError> {
        if body.len() > MAX_FRAME {
            return Err(TransportError::TooLarge(body.len()));
        }
        let tag = self
            .tag(self.role, self.send_seq, body)
            .finalize()
            .into_bytes();
        self.send_seq += 1;
        let mut frame = Vec::with_capacity(4 + TAG_LEN + body.len());
        frame.extend_from_slice(&((TAG_LEN + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&tag);
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let len = self.stream.read_u32().await? as usize;
        if !(TAG_LEN..=TAG_LEN + MAX_FRAME).contains(&len) {
            return Err(TransportError::TooLarge(len));
        }
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).await?;
        let body = frame.split_off(TAG_LEN);
        self.tag(1 - self.role, self.recv_seq, &body)
            .verify_slice(&frame)
            .map_err(|_| TransportError::BadTag)?;
        self.recv_seq += 1;
        Ok(body)
    }
}

/// Serves requests on `listener`: `handler(body)` produces the response body.
pub fn serve<H, F>(listener: TcpListener, key: [u8; 32], stats: Arc<TransportStats>, handler: H)
where
    H: Fn(Vec<u8>) -> F + Send + Sync + 'static,
    F: Future<Output = Vec<u8>> + Send + 'static,
{
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "rpc accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut session = match Session::handshake(stream, key, false).await {
                    Ok(s) => s,
                    Err(_) => return,
                };
                loop {
                    let body = match session.recv().await {
                        Ok(b) => b,
                        Err(TransportError::BadTag) => {
                            stats.rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, "rpc frame failed authentication; dropping the connection (wrong join token?)");
                            return;
                        }
                        Err(_) => return,
                    };
                    stats.requests_in.fetch_add(1, Ordering::Relaxed);
                    let response = handler(body).await;
                    if session.send(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Dials peers and keeps idle connections for reuse.
pub struct Client {
    key: [u8; 32],
    idle: Mutex<std::collections::HashMap<SocketAddr, Vec<Session>>>,
    pub stats: Arc<TransportStats>,
}

impl Client {
    pub fn new(key: [u8; 32], stats: Arc<TransportStats>) -> Client {
        Client {
            key,
            idle: Mutex::new(Default::default()),
            stats,
        }
    }

    /// Sends one request and waits for its response, at most `timeout`.
    pub async fn call(
        &self,
        addr: SocketAddr,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        match tokio::time::timeout(timeout, self.call_inner(addr, body)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    async fn call_inner(&self, addr: SocketAddr, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.stats.requests_out.fetch_add(1, Ordering::Relaxed);
        // A pooled connection may have been closed by the peer: retry once on a fresh one.
        let pooled = self.idle.lock().await.get_mut(&addr).and_then(Vec::pop);
        if let Some(mut session) = pooled {
            if let Ok(resp) = Self::exchange(&mut session, body).await {
                self.release(addr, session).await;
                return Ok(resp);
            }
        }
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect { addr, source })?;
        let mut session = Session::handshake(stream, self.key, true).await?;
        let resp = Self::exchange(&mut session, body).await;
        if let Err(TransportError::BadTag) = resp {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let resp = resp?;
        self.release(addr, session).await;
        Ok(resp)
    }

    /// Returns a healthy connection to the pool.
    async fn release(&self, addr: SocketAddr, session: Session) {
        self.idle
            .lock()
            .await
            .entry(addr)
            .or_default()
            .push(session);
    }

    async fn exchange(session: &mut Session, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        session.send(body).await?;
        session.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server(key: [u8; 32]) -> (SocketAddr, Arc<TransportStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(TransportStats::default());
        serve(
            listener,
            key,
            stats.clone(),
            |mut body: Vec<u8>| async move {
                body.reverse();
                body
            },
        );
        (addr, stats)
    }

    #[tokio::test]
    async fn same_token_talks_and_reuses_connections() {
        let key = derive_key("secret", "rpc");
        let (addr, stats) = echo_server(key).await;
        let client = Client::new(key, Arc::new(TransportStats::default()));
        for i in 0..20u8 {
            let resp = client
                .call(addr, &[1, 2, i], Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!(resp, vec![i, 2, 1]);
        }
        assert_eq!(stats.requests_in.load(Ordering::Relaxed), 20);
        assert_eq!(
            client.idle.lock().await[&addr].len(),
            1,
            "one connection reused"
        );
    }

    #[tokio::test]
    async fn wrong_token_is_refused_and_counted() {
        let (addr, stats) = echo_server(derive_key("secret", "rpc")).await;
        let client = Client::new(
            derive_key("guess", "rpc"),
            Arc::new(TransportStats::default()),
        );
        let err = client
            .call(addr, b"hello", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Io(_) | TransportError::BadTag),
            "{err:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(
            stats.requests_in.load(Ordering::Relaxed),
            0,
            "the handler never ran"
        );
    }

    #[tokio::test]
    async fn replayed_frame_fails_the_tag() {
        let key = derive_key("secret", "rpc");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut server = Session::handshake(s, key, false).await.unwrap();
            let first = server.recv().await.unwrap();
            (first, server.recv().await)
        });
        let mut client = Session::handshake(TcpStream::connect(addr).await.unwrap(), key, true)
            .await
            .unwrap();
        client.send(b"once").await.unwrap();
        // Same bytes again with the old sequence number: a replay.
        client.send_seq = 0;
        client.send(b"once").await.unwrap();
        let (first, second) = accept.await.unwrap();
        assert_eq!(first, b"once");
        assert!(matches!(second, Err(TransportError::BadTag)));
    }

    #[test]
    fn keys_differ_by_token_and_purpose() {
        assert_ne!(derive_key("a", "rpc"), derive_key("b", "rpc"));
        assert_ne!(derive_key("a", "rpc"), derive_key("a", "gossip"));
        assert_eq!(derive_key("a", "rpc"), derive_key("a", "rpc"));
    }
}
