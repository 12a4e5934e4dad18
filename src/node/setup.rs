//! What a node sets up before it runs: its join token and certificates, its TLS
//! configurations, its listeners, its seeds, and its node and cluster identity in the store.

use super::*;

/// The join token: a seed makes its CA and writes `join.token` (`K10<CA hash>::<secret>`;
/// a secret given with --token, or kept from an older `join.token` without the pin, is
/// kept); a joining node must be given a token in that format, and one whose pin matches
/// the CA it already holds.
pub(super) fn join_token(
    config: &NodeConfig,
    dir: &Path,
    tls: &TlsDir,
) -> Result<JoinToken, pki::PkiError> {
    if !config.join.is_empty() {
        let given = config.token.as_deref().unwrap_or_default();
        let token = JoinToken::parse(given)?;
        if tls.ca_crt().exists() {
            token.check_ca(tls)?;
        }
        return Ok(token);
    }
    pki::ensure_ca(tls)?;
    let ca_hash = pki::ca_hash(&tls.read(&tls.ca_crt())?)?;
    let path = dir.join(JOIN_TOKEN_FILE);
    let io = |source| pki::PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    let secret_of = |text: &str| -> Result<String, pki::PkiError> {
        match JoinToken::parse(text) {
            Ok(t) => {
                if t.ca_hash != ca_hash {
                    return Err(pki::PkiError::TokenCaMismatch {
                        pinned: t.ca_hash,
                        actual: ca_hash.clone(),
                        path: tls.ca_crt().display().to_string(),
                    });
                }
                Ok(t.secret)
            }
            Err(_) => Ok(text.trim().to_string()),
        }
    };
    let secret = match config.token.as_deref() {
        Some(given) => secret_of(given)?,
        None => match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => secret_of(&text)?,
            _ => {
                let bytes: [u8; 24] = rand::random();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            }
        },
    };
    let token = JoinToken { ca_hash, secret };
    let text = token.to_string();
    ensure_token_file(&path, Some(&text)).map_err(io)?;
    Ok(token)
}

/// What this node's certificate names: its name, `localhost`, the advertised and bound
/// addresses and loopback.
pub(super) fn node_sans(config: &NodeConfig) -> pki::Sans {
    let mut ips = vec![config.advertise, std::net::IpAddr::from([127, 0, 0, 1])];
    if !config.bind.is_unspecified() {
        ips.push(config.bind);
    }
    ips.sort();
    ips.dedup();
    let mut names = vec![config.name.clone(), "localhost".to_string()];
    names.dedup();
    pki::Sans { names, ips }
}

/// TLS for the node-to-node RPC: mutual, both sides showing a certificate of the CA.
pub(super) fn rpc_tls(
    tls: &TlsDir,
    on: bool,
) -> Result<Option<(TlsAcceptor, TlsConnector)>, pki::PkiError> {
    if !on {
        return Ok(None);
    }
    let acceptor = TlsAcceptor::from(pki::server_config(tls, true)?);
    let ca = tls.read(&tls.ca_crt())?;
    let connector = TlsConnector::from(Arc::new(pki::client_config(&ca, Some(tls))?));
    Ok(Some((acceptor, connector)))
}

/// The join listener, TCP at the gossip port number; with port 0, a port free for both TCP
/// and UDP (gossip binds UDP on it next).
pub(super) fn bind_join(ip: std::net::IpAddr, port: u16) -> Result<(TcpListener, u16), NodeError> {
    if port != 0 {
        return Ok((bind_tcp("join", SocketAddr::new(ip, port))?, port));
    }
    let mut last = None;
    for _ in 0..20 {
        let listener = bind_tcp("join", SocketAddr::new(ip, 0))?;
        let port = listener.local_addr().map_err(NodeError::Api)?.port();
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(udp) => {
                drop(udp);
                return Ok((listener, port));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(NodeError::Bind {
        what: "gossip",
        addr: SocketAddr::new(ip, 0),
        source: last.expect("tried"),
    })
}

/// `host:port` seeds to socket addresses (names resolved once, at start).
pub(super) async fn resolve_seeds(join: &[String]) -> Result<Vec<SocketAddr>, NodeError> {
    let mut seeds = Vec::new();
    for seed in join {
        let addrs = tokio::net::lookup_host(seed.as_str())
            .await
            .map_err(|source| NodeError::Seed {
                seed: seed.clone(),
                source,
            })?;
        seeds.extend(addrs.filter(|a| a.is_ipv4()).take(1));
    }
    Ok(seeds)
}

pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The node id is chosen once, at first start, and kept in the node's database: a restarted
/// node is the same Raft member.
pub(super) fn node_identity(store: &Store, name: &str) -> Result<NodeId, crate::store::StoreError> {
    if let Some(bytes) = store.local_get("node_id")? {
        let id = u64::from_le_bytes(bytes.as_slice().try_into().unwrap_or_default());
        if let Some(old) = store.local_get("node_name")? {
            if old != name.as_bytes() {
                tracing::warn!(old = %String::from_utf8_lossy(&old), new = name, "node name changed; keeping its id");
                store.local_put("node_name", name.as_bytes())?;
            }
        }
        return Ok(id);
    }
    let id = loop {
        let id: u64 = rand::random();
        if id != 0 {
            break id;
        }
    };
    store.local_put("node_id", &id.to_le_bytes())?;
    store.local_put("node_name", name.as_bytes())?;
    Ok(id)
}

const CLUSTER_ID_KEY: &str = "cluster_id";

/// The cluster this data dir belongs to: kept in the node's database; made here when this
/// node bootstraps a new cluster; otherwise learned from the first seed that answers and
/// recorded (durably) before anything of that cluster reaches this node.
pub(super) fn cluster_identity(
    store: &Store,
    bootstrap: bool,
) -> Result<ClusterId, crate::store::StoreError> {
    if let Some(bytes) = store.local_get(CLUSTER_ID_KEY)? {
        if let Ok(id) = <[u8; 16]>::try_from(bytes.as_slice()) {
            return Ok(ClusterId::known(id));
        }
    }
    if bootstrap {
        let id = ClusterId::generate();
        store.local_put(CLUSTER_ID_KEY, &id)?;
        return Ok(ClusterId::known(id));
    }
    let store = store.clone();
    Ok(ClusterId::unknown(Some(Arc::new(move |id: &[u8; 16]| {
        store
            .local_put(CLUSTER_ID_KEY, id)
            .map_err(|e| crate::error_chain(&e))?;
        tracing::info!(cluster = %crate::cluster::identity::hex_id(id), "joined cluster");
        Ok(())
    }))))
}

/// Reads the token in `path`, or creates the file (mode 0600) with `given` or a new random
/// token.
pub(super) fn ensure_token_file(path: &Path, given: Option<&str>) -> std::io::Result<String> {
    if let Ok(existing) = fs::read_to_string(path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() && given.is_none_or(|g| g == existing) {
            return Ok(existing);
        }
    }
    let token = match given {
        Some(t) => t.to_string(),
        None => {
            let bytes: [u8; 24] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    Ok(token)
}

pub(super) fn write_endpoints(
    dir: &Path,
    name: &str,
    node_id: NodeId,
    scheme: &str,
    api: SocketAddr,
    rpc: SocketAddr,
    gossip: SocketAddr,
) -> std::io::Result<()> {
    let local = |a: SocketAddr| {
        let ip = if a.ip().is_unspecified() {
            [127, 0, 0, 1].into()
        } else {
            a.ip()
        };
        SocketAddr::new(ip, a.port())
    };
    let body = json!({
        "name": name,
        "nodeId": node_id.to_string(),
        "api": api.to_string(),
        "apiUrl": format!("{scheme}://{}", local(api)),
        "rpc": rpc.to_string(),
        "gossip": local(gossip).to_string(),
        "pid": std::process::id(),
    });
    let tmp = dir.join("endpoints.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&body).expect("JSON"))?;
    fs::rename(tmp, dir.join(ENDPOINTS_FILE))
}
