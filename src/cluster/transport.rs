//! Authenticated request/response transport between nodes over TCP (the `--rpc-port`).
//!
//! Nodes prove they hold the join token without sending it: each connection starts with a
//! nonce from each side, then a fixed-size hello from each side (`cluster id (16) | HMAC
//! tag (32)` over the role, both nonces and the cluster id), and every frame after that
//! carries an HMAC-SHA256 tag over the direction, both nonces, a sequence number and the
//! body, with a key derived from the token. A peer with another token, a replayed frame or
//! a frame from another connection fails the tag check; the connection is dropped and
//! `rejected` counts it.
//!
//! Nothing is allocated for a peer before it has proven the token: the acceptor reads 16 +
//! 48 bytes, within [`HANDSHAKE_TIMEOUT`], and checks the hello's tag and cluster id (a
//! node whose data belongs to another cluster is refused, naming both, before any request
//! is read). At most [`MAX_CONNECTIONS`] connections are served at once; an idle one is
//! closed after [`IDLE_TIMEOUT`], and a frame must arrive whole within [`FRAME_TIMEOUT`].
//! Frame bodies are read as they arrive, never allocated from the declared length.
//!
//! Frame: `u32 BE length | 32-byte tag | body`. The body is opaque bytes; callers encode.
//! Tasks: one per accepted connection. May call: `cluster::identity`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::cluster::identity::{ClusterId, ClusterTag};

type HmacSha256 = Hmac<Sha256>;

/// Largest frame accepted (snapshots and image chunks are sent in frames of at most this).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// A connecting peer must finish the handshake (nonce and hello) within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// An accepted connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A frame, once its length has arrived, must arrive whole within this.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
const HELLO_LEN: usize = 16 + TAG_LEN;

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
    #[error("peer refused: {0}")]
    Refused(String),
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

/// A byte stream to a peer: plain TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One authenticated connection: both nonces, the key, and a sequence per direction.
struct Session {
    stream: Box<dyn Io>,
    key: [u8; 32],
    nonces: [u8; 2 * NONCE_LEN],
    send_seq: u64,
    recv_seq: u64,
    /// 0 for the dialing side, 1 for the accepting side: frames are tagged by sender role.
    role: u8,
}

impl Session {
    /// Nonces, then hellos: the dialer's first, checked by the acceptor (token, then
    /// cluster) before it answers with its own, which the dialer checks the same way.
    async fn handshake(
        mut stream: Box<dyn Io>,
        key: [u8; 32],
        cluster: &ClusterId,
        dialer: bool,
    ) -> Result<Session, TransportError> {
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
        let mut session = Session {
            stream,
            key,
            nonces,
            send_seq: 0,
            recv_seq: 0,
            role: if dialer { 0 } else { 1 },
        };
        if dialer {
            session.send_hello(cluster).await?;
            session.recv_hello(cluster).await?;
        } else {
            let checked = session.recv_hello(cluster).await;
            if let Err(TransportError::Refused(_)) = &checked {
                // Tell the dialer which cluster this is, so it can say why too.
                let _ = session.send_hello(cluster).await;
            }
            checked?;
            session.send_hello(cluster).await?;
        }
        Ok(session)
    }

    fn hello_tag(&self, sender_role: u8, id: &ClusterTag) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("32-byte key");
        mac.update(b"hello");
        mac.update(&[sender_role]);
        mac.update(&self.nonces);
        mac.update(id);
        mac
    }

    async fn send_hello(&mut self, cluster: &ClusterId) -> Result<(), TransportError> {
        let id = cluster.tag();
        let mut hello = [0u8; HELLO_LEN];
        hello[..16].copy_from_slice(&id);
        hello[16..].copy_from_slice(&self.hello_tag(self.role, &id).finalize().into_bytes());
        self.stream.write_all(&hello).await?;
        Ok(())
    }

    async fn recv_hello(&mut self, cluster: &ClusterId) -> Result<(), TransportError> {
        let mut hello = [0u8; HELLO_LEN];
        self.stream.read_exact(&mut hello).await?;
        let id: ClusterTag = hello[..16].try_into().expect("16 bytes");
        self.hello_tag(1 - self.role, &id)
            .verify_slice(&hello[16..])
            .map_err(|_| TransportError::BadTag)?;
        cluster.check_peer(&id).map_err(TransportError::Refused)
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
        // Grows as bytes arrive: a declared length costs nothing until it is sent.
        let mut frame = Vec::with_capacity(len.min(64 * 1024));
        let mut limited = (&mut self.stream).take(len as u64);
        tokio::time::timeout(FRAME_TIMEOUT, limited.read_to_end(&mut frame))
            .await
            .map_err(|_| TransportError::Timeout(FRAME_TIMEOUT))??;
        if frame.len() != len {
            return Err(TransportError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let body = frame.split_off(TAG_LEN);
        self.tag(1 - self.role, self.recv_seq, &body)
            .verify_slice(&frame)
            .map_err(|_| TransportError::BadTag)?;
        self.recv_seq += 1;
        Ok(body)
    }
}

/// Serves requests on `listener`: `handler(body)` produces the response body. With `tls`,
/// each connection is TLS first (the acceptor decides whether peers must show a
/// certificate), then the handshake above inside it.
pub fn serve<H, F>(
    listener: TcpListener,
    key: [u8; 32],
    cluster: ClusterId,
    stats: Arc<TransportStats>,
    tls: Option<TlsAcceptor>,
    handler: H,
) where
    H: Fn(Vec<u8>) -> F + Send + Sync + 'static,
    F: Future<Output = Vec<u8>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusals = Arc::new(std::sync::Mutex::new(RefusalLog::default()));
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                continue; // over MAX_CONNECTIONS: closed at once
            };
            let handler = handler.clone();
            let stats = stats.clone();
            let cluster = cluster.clone();
            let refusals = refusals.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let shake = async {
                    let stream = accept(stream, tls.as_ref()).await?;
                    Session::handshake(stream, key, &cluster, false).await
                };
                let mut session = match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(TransportError::BadTag)) => {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(Err(TransportError::Refused(why))) => {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        if refusals.lock().expect("refusal log").loud(peer) {
                            tracing::warn!(%peer, "refused an rpc peer: {why}");
                        }
                        return;
                    }
                    _ => return,
                };
                loop {
                    let next = tokio::time::timeout(IDLE_TIMEOUT, session.recv()).await;
                    let Ok(next) = next else { return };
                    let body = match next {
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

async fn accept(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
) -> Result<Box<dyn Io>, TransportError> {
    stream.set_nodelay(true)?;
    Ok(match tls {
        Some(acceptor) => Box::new(acceptor.accept(stream).await.map_err(tls_refused)?),
        None => Box::new(stream),
    })
}

/// A TLS failure (a peer without a certificate of the cluster CA) is a refusal.
fn tls_refused(e: std::io::Error) -> TransportError {
    TransportError::Refused(format!("TLS: {e}"))
}

/// At most one log line per refused peer address per minute.
#[derive(Default)]
struct RefusalLog(std::collections::HashMap<std::net::IpAddr, std::time::Instant>);

impl RefusalLog {
    fn loud(&mut self, peer: SocketAddr) -> bool {
        let now = std::time::Instant::now();
        if self.0.len() > 4096 {
            self.0.clear();
        }
        match self.0.get(&peer.ip()) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
            _ => {
                self.0.insert(peer.ip(), now);
                true
            }
        }
    }
}

/// Dials peers and keeps idle connections for reuse.
pub struct Client {
    key: [u8; 32],
    tls: Option<TlsConnector>,
    cluster: ClusterId,
    idle: Mutex<std::collections::HashMap<SocketAddr, Vec<Session>>>,
    pub stats: Arc<TransportStats>,
    refusals: std::sync::Mutex<RefusalLog>,
}

impl Client {
    pub fn new(
        key: [u8; 32],
        cluster: ClusterId,
        stats: Arc<TransportStats>,
        tls: Option<TlsConnector>,
    ) -> Client {
        Client {
            key,
            tls,
            cluster,
            idle: Mutex::new(Default::default()),
            stats,
            refusals: Default::default(),
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
        stream.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                Box::new(connector.connect(name, stream).await.map_err(tls_refused)?)
            }
            None => Box::new(stream),
        };
        let mut session = match Session::handshake(stream, self.key, &self.cluster, true).await {
            Ok(s) => s,
            Err(TransportError::Refused(why)) => {
                if self.refusals.lock().expect("refusal log").loud(addr) {
                    tracing::warn!(peer = %addr, "refusing an rpc peer: {why}");
                }
                return Err(TransportError::Refused(why));
            }
            Err(e) => return Err(e),
        };
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

    const CLUSTER: ClusterTag = [3; 16];

    fn ours() -> ClusterId {
        ClusterId::known(CLUSTER)
    }

    async fn echo_server(key: [u8; 32]) -> (SocketAddr, Arc<TransportStats>) {
        echo_server_tls(key, None).await
    }

    async fn echo_server_tls(
        key: [u8; 32],
        tls: Option<TlsAcceptor>,
    ) -> (SocketAddr, Arc<TransportStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(TransportStats::default());
        serve(
            listener,
            key,
            ours(),
            stats.clone(),
            tls,
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
        let client = Client::new(key, ours(), Arc::new(TransportStats::default()), None);
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

    /// Over TLS (mutual, the cluster CA's certificates): a node with a certificate of the
    /// CA talks; a client trusting the CA but showing no certificate is refused before any
    /// request is read, and so is a client trusting another CA.
    #[tokio::test]
    async fn tls_needs_certificates_of_the_cluster_ca_on_both_sides() {
        use crate::cluster::pki;
        let dir = tempfile::tempdir().unwrap();
        let tls = pki::TlsDir::of(dir.path());
        pki::ensure_ca(&tls).unwrap();
        let sans = pki::Sans {
            names: vec!["n".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        pki::issue_own(&tls, &sans).unwrap();
        let ca = tls.read(&tls.ca_crt()).unwrap();
        let key = derive_key("secret", "rpc");
        let acceptor = TlsAcceptor::from(pki::server_config(&tls, true).unwrap());
        let (addr, stats) = echo_server_tls(key, Some(acceptor)).await;
        let stats_out = Arc::new(TransportStats::default());
        let connector = |c| Some(TlsConnector::from(Arc::new(c)));
        let node = pki::client_config(&ca, Some(&tls)).unwrap();
        let client = Client::new(key, ours(), stats_out.clone(), connector(node));
        let resp = client.call(addr, b"abc", Duration::from_secs(5)).await;
        assert_eq!(resp.unwrap(), b"cba");

        let anonymous = pki::client_config(&ca, None).unwrap();
        let client = Client::new(key, ours(), stats_out.clone(), connector(anonymous));
        assert!(client
            .call(addr, b"x", Duration::from_secs(5))
            .await
            .is_err());

        let other = tempfile::tempdir().unwrap();
        let other_tls = pki::TlsDir::of(other.path());
        pki::ensure_ca(&other_tls).unwrap();
        pki::issue_own(&other_tls, &sans).unwrap();
        let other_ca = other_tls.read(&other_tls.ca_crt()).unwrap();
        let stranger = pki::client_config(&other_ca, Some(&other_tls)).unwrap();
        let client = Client::new(key, ours(), stats_out, connector(stranger));
        let err = client
            .call(addr, b"x", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Refused(_)), "{err:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stats.requests_in.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn wrong_token_is_refused_and_counted() {
        let (addr, stats) = echo_server(derive_key("secret", "rpc")).await;
        let client = Client::new(
            derive_key("guess", "rpc"),
            ours(),
            Arc::new(TransportStats::default()),
            None,
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
            let mut server = Session::handshake(Box::new(s), key, &ours(), false)
                .await
                .unwrap();
            let first = server.recv().await.unwrap();
            (first, server.recv().await)
        });
        let mut client = Session::handshake(
            Box::new(TcpStream::connect(addr).await.unwrap()),
            key,
            &ours(),
            true,
        )
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

    /// Issue 13.5: a peer without the token declared a 64 MiB frame and sent it, from many
    /// connections, and the node buffered each. Now the first 48 bytes after the nonce must
    /// be a valid hello: the same bytes end the connection before any frame is read.
    #[tokio::test]
    async fn unauthenticated_peers_are_dropped_before_any_frame() {
        let (addr, stats) = echo_server(derive_key("secret", "rpc")).await;
        let mut conns = Vec::new();
        for _ in 0..20 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[0u8; NONCE_LEN]).await.unwrap();
            let mut frame = ((TAG_LEN + MAX_FRAME) as u32).to_be_bytes().to_vec();
            frame.extend(vec![0xAB; 1 << 20]);
            let _ = s.write_all(&frame).await; // the server may close mid-way
            conns.push(s);
        }
        for mut s in conns {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            loop {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => got += n,
                    Err(_) => panic!("the server kept an unauthenticated connection open"),
                }
            }
            assert!(
                got <= NONCE_LEN,
                "only the server's nonce, never a hello or frame"
            );
        }
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 20);
        assert_eq!(stats.requests_in.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
        let (addr, _) = echo_server(derive_key("secret", "rpc")).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let started = std::time::Instant::now();
        let mut got = 0;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert_eq!(got, NONCE_LEN);
        assert!(started.elapsed() >= HANDSHAKE_TIMEOUT - Duration::from_millis(100));
    }

    /// Issue 13.2: a node whose data belongs to another cluster (same token) is refused
    /// before any request, and both sides can say which clusters.
    #[tokio::test]
    async fn a_peer_of_another_cluster_is_refused_by_name() {
        let key = derive_key("secret", "rpc");
        let (addr, stats) = echo_server(key).await;
        let other = ClusterId::known([4; 16]);
        let client = Client::new(key, other, Arc::new(TransportStats::default()), None);
        let err = client
            .call(addr, b"install my snapshot", Duration::from_secs(2))
            .await
            .unwrap_err();
        let TransportError::Refused(why) = &err else {
            panic!("{err:?}")
        };
        assert!(
            why.contains(&"03".repeat(16)) && why.contains(&"04".repeat(16)),
            "{why}"
        );
        let fresh = Client::new(
            key,
            ClusterId::unknown(None),
            Arc::new(TransportStats::default()),
            None,
        );
        assert!(matches!(
            fresh.call(addr, b"x", Duration::from_secs(2)).await,
            Err(TransportError::Refused(_) | TransportError::Io(_))
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            stats.requests_in.load(Ordering::Relaxed),
            0,
            "no request was handled"
        );
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::proptest_cases(64)))]

        /// After a valid handshake, arbitrary bytes as frames (the frame decoder's input)
        /// never reach the handler unless tagged, and the server keeps serving.
        #[test]
        fn arbitrary_frames_never_reach_the_handler(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        ) {
            static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
            let rt = RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap());
            rt.block_on(async {
                let key = derive_key("secret", "rpc");
                let (addr, stats) = echo_server(key).await;
                let stream = TcpStream::connect(addr).await.unwrap();
                let mut s = Session::handshake(Box::new(stream), key, &ours(), true).await.unwrap();
                s.stream.write_all(&bytes).await.unwrap();
                s.stream.shutdown().await.unwrap();
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.stream.read_to_end(&mut rest)).await;
                assert_eq!(stats.requests_in.load(Ordering::Relaxed), 0);
                let client = Client::new(key, ours(), Arc::new(TransportStats::default()), None);
                let resp = client.call(addr, &[1, 2], Duration::from_secs(5)).await.unwrap();
                assert_eq!(resp, vec![2, 1], "still serving");
            });
        }
    }

    #[test]
    fn keys_differ_by_token_and_purpose() {
        assert_ne!(derive_key("a", "rpc"), derive_key("b", "rpc"));
        assert_ne!(derive_key("a", "rpc"), derive_key("a", "gossip"));
        assert_eq!(derive_key("a", "rpc"), derive_key("a", "rpc"));
    }
}
