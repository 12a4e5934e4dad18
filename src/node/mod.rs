//! Composition root: turns a `NodeConfig` into a running node — database, identity,
//! tokens, the Raft control plane and the API server — and shuts it down in order.
//!
//! `Node::build` binds every listener first (port 0 allowed) and records the bound
//! addresses in `<data-dir>/endpoints.json`; `run_until_stopped` serves until SIGTERM/SIGINT
//! or `NodeHandle::stop`.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use actix_web::web::Data;
use serde_json::json;
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::api::{self, ApiMetrics, ApiState};
use crate::cluster::host::{resolve_roles, HostFacts};
use crate::cluster::pki::{self, JoinToken, TlsDir};
use crate::cluster::transport::{self, TransportStats};
use crate::cluster::{ClusterId, Gossip, GossipConfig, MemberMeta};
use crate::config::NodeConfig;
use crate::model::{Kind, Role};
use crate::orchestrator::voters::VoterPolicy;
use crate::orchestrator::{membership, rpc, ControlPlane};
use crate::store::{Command, NodeId, ObjectKey, PutMode, RaftNode, Store};

pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const JOIN_TOKEN_FILE: &str = "join.token";
pub const ENDPOINTS_FILE: &str = "endpoints.json";

mod setup;
use setup::*;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data dir {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("store")]
    Store(#[from] crate::store::StoreError),
    #[error("control plane")]
    Control(#[source] Box<crate::orchestrator::ControlError>),
    #[error("api server")]
    Api(#[source] std::io::Error),
    #[error("--join needs the cluster's join token: pass --token or --token-file")]
    MissingToken,
    #[error("cannot resolve seed {seed}")]
    Seed {
        seed: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gossip")]
    Gossip(#[from] crate::cluster::ClusterError),
    #[error("certificates")]
    Tls(#[source] pki::PkiError),
    #[error("joining")]
    Join(#[from] crate::cluster::join::JoinError),
    #[error("raft stopped on this node ({0}); exiting so that the service manager restarts it (if the disk is full, free space in the data dir first)")]
    RaftFailed(String),
}

pub struct Node {
    config: NodeConfig,
    control: ControlPlane,
    gossip: Gossip,
    api_listener: TcpListener,
    api_addr: SocketAddr,
    rpc_listener: TcpListener,
    rpc_key: [u8; 32],
    rpc_stats: Arc<TransportStats>,
    rpc_tls: Option<(TlsAcceptor, TlsConnector)>,
    join_listener: TcpListener,
    seeds: Vec<SocketAddr>,
    token: JoinToken,
    tls: TlsDir,
    cluster: ClusterId,
    admin_token: String,
    /// Handed to the worker VMs a director boots.
    join_token: String,
    roles: Vec<Role>,
    stop_tx: watch::Sender<bool>,
}

impl From<crate::orchestrator::ControlError> for NodeError {
    fn from(e: crate::orchestrator::ControlError) -> Self {
        NodeError::Control(Box::new(e))
    }
}

/// Stops a running node from elsewhere (tests, embedding).
#[derive(Clone)]
pub struct NodeHandle(watch::Sender<bool>);

impl NodeHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).map_err(|source| NodeError::Bind { what, addr, source })
}

impl Node {
    pub async fn build(config: NodeConfig) -> Result<Node, NodeError> {
        let dir = config.data_dir.clone();
        let dir_err = |source| NodeError::DataDir {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(&dir).map_err(dir_err)?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));

        let store = Store::open(&dir)?;
        let node_id = node_identity(&store, &config.name)?;
        let cluster = cluster_identity(&store, config.join.is_empty())?;
        let tls = TlsDir::of(&dir);
        let bootstrap = config.join.is_empty();
        let seeds_given = resolve_seeds(&config.join).await?;
        if !bootstrap && config.token.is_none() {
            return Err(NodeError::MissingToken);
        }
        let token = join_token(&config, &dir, &tls).map_err(NodeError::Tls)?;
        let join_token = token.to_string();
        // One admin token for the whole cluster, derived from the join token's secret (which
        // already grants full membership), so any node's admin.token works against any node.
        let derived: String = transport::derive_key(&token.secret, "admin")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let admin_token =
            ensure_token_file(&dir.join(ADMIN_TOKEN_FILE), Some(&derived)).map_err(dir_err)?;
        // The join listener: TCP at the gossip (UDP) port number.
        let (join_listener, gossip_port) = bind_join(config.bind, config.gossip_port)?;
        let sans = node_sans(&config);
        let renew =
            tls.has_node_cert() && pki::needs_new_cert(&tls, &sans).map_err(NodeError::Tls)?;
        if renew {
            tracing::info!("this node's certificate expires within 30 days or does not name its current addresses; renewing it");
        }
        if !tls.has_node_cert() || renew {
            if tls.ca_key().exists() {
                pki::issue_own(&tls, &sans).map_err(NodeError::Tls)?;
            } else {
                crate::cluster::join::fetch(&seeds_given, &token, &tls, &sans).await?;
                tracing::info!("got this node's certificate from the cluster CA");
            }
        }
        let api_listener = bind_tcp("api", SocketAddr::new(config.bind, config.api_port))?;
        let api_addr = api_listener.local_addr().map_err(NodeError::Api)?;
        let rpc_listener = bind_tcp("rpc", SocketAddr::new(config.bind, config.rpc_port))?;
        let rpc_addr = rpc_listener.local_addr().map_err(NodeError::Api)?;
        let advertised = |port| SocketAddr::new(config.advertise, port);

        let facts = HostFacts::probe();
        let meta = MemberMeta {
            name: config.name.clone(),
            node_id,
            api_addr: advertised(api_addr.port()).to_string(),
            rpc_addr: advertised(rpc_addr.port()).to_string(),
            gossip_addr: String::new(),
            roles: resolve_roles(&config.roles, &facts),
            kvm: facts.kvm,
            containers: facts.containers,
            cpu_millis: facts.cpu_millis,
            memory_bytes: facts.memory_bytes,
            labels: config.labels.clone(),
            started_at_ms: membership::now_ms(),
        };
        // Peers remembered from the last run let a restarted seed (no --join) find its cluster.
        let mut seeds = seeds_given.clone();
        for peer in remembered_peers(&store) {
            if !seeds.contains(&peer) {
                seeds.push(peer);
            }
        }
        let gossip = Gossip::start(GossipConfig {
            bind: SocketAddr::new(config.bind, gossip_port),
            advertise: advertised(0),
            key: crate::cluster::derive_key(&token.secret),
            seeds,
            meta: meta.clone(),
            probe_period: Some(config.gossip_probe),
            cluster: cluster.clone(),
        })
        .await?;
        let gossip_addr = gossip.local_addr();
        gossip
            .update_meta(MemberMeta {
                gossip_addr: advertised(gossip_addr.port()).to_string(),
                ..meta.clone()
            })
            .await;

        let me = RaftNode {
            name: config.name.clone(),
            rpc_addr: meta.rpc_addr.clone(),
            api_addr: meta.api_addr.clone(),
        };
        let rpc_key = transport::derive_key(&token.secret, "rpc");
        let rpc_stats = Arc::new(TransportStats::default());
        let rpc_tls = rpc_tls(&tls, config.tls).map_err(NodeError::Tls)?;
        pki::set_peer_api_tls(match config.tls {
            true => {
                let ca = tls.read(&tls.ca_crt()).map_err(NodeError::Tls)?;
                Some(Arc::new(
                    pki::client_config(&ca, None).map_err(NodeError::Tls)?,
                ))
            }
            false => None,
        });
        let rpc_client = Arc::new(transport::Client::new(
            rpc_key,
            cluster.clone(),
            rpc_stats.clone(),
            rpc_tls.as_ref().map(|(_, c)| c.clone()),
        ));
        let control =
            ControlPlane::start(store, node_id, me, &config.raft, bootstrap, rpc_client).await?;
        let scheme = if config.tls { "https" } else { "http" };
        write_endpoints(
            &dir,
            &config.name,
            node_id,
            scheme,
            api_addr,
            rpc_addr,
            gossip_addr,
        )
        .map_err(dir_err)?;

        let (stop_tx, _) = watch::channel(false);
        Ok(Node {
            config,
            control,
            gossip,
            api_listener,
            api_addr,
            rpc_listener,
            rpc_key,
            rpc_stats,
            rpc_tls,
            join_listener,
            seeds: seeds_given,
            token,
            tls,
            cluster,
            admin_token,
            roles: meta.roles.clone(),
            join_token,
            stop_tx,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn handle(&self) -> NodeHandle {
        NodeHandle(self.stop_tx.clone())
    }

    pub async fn run_until_stopped(self) -> Result<(), NodeError> {
        let Node {
            config,
            control,
            gossip,
            api_listener,
            api_addr,
            rpc_listener,
            rpc_key,
            rpc_stats,
            rpc_tls,
            join_listener,
            seeds,
            token,
            tls,
            cluster,
            admin_token,
            join_token,
            roles,
            stop_tx,
        } = self;
        let api_tls = if config.tls {
            Some(pki::server_config(&tls, false).map_err(NodeError::Tls)?)
        } else {
            None
        };
        let node_key = transport::derive_key(&token.secret, "node-credential");
        join_listener
            .set_nonblocking(true)
            .map_err(NodeError::Api)?;
        crate::cluster::join::serve(
            tokio::net::TcpListener::from_std(join_listener).map_err(NodeError::Api)?,
            TlsAcceptor::from(pki::server_config(&tls, false).map_err(NodeError::Tls)?),
            tls.clone(),
            token,
            seeds,
        );
        // Each node's own API credential (for the requests it makes of other nodes), checked
        // by any node with the key derived from the join token.
        let credentials = crate::auth::tokens::Credentials {
            admin_token,
            node_key,
        };
        let node_token = credentials.node_credential(&config.name);
        rpc_listener.set_nonblocking(true).map_err(NodeError::Api)?;
        let rpc_listener =
            tokio::net::TcpListener::from_std(rpc_listener).map_err(NodeError::Api)?;
        let rpc_control = control.clone();
        transport::serve(
            rpc_listener,
            rpc_key,
            cluster.clone(),
            rpc_stats.clone(),
            rpc_tls.map(|(a, _)| a),
            move |body| rpc::handle(rpc_control.clone(), body),
        );

        spawn_peer_memory(
            control.store().clone(),
            gossip.clone(),
            config.name.clone(),
            stop_tx.subscribe(),
        );
        let policy = VoterPolicy {
            orchestrators: config.orchestrators,
            replace_after: config.orchestrator_replace_after,
        };
        membership::spawn(
            control.clone(),
            gossip.clone(),
            policy.clone(),
            stop_tx.subscribe(),
        );
        let api_metrics = ApiMetrics::new();
        let controller_metrics =
            api_metrics.with_registry(crate::orchestrator::controllers::ControllerMetrics::new);
        crate::orchestrator::autoscaler::spawn(
            control.clone(),
            gossip.clone(),
            config.autoscaler.clone(),
            controller_metrics.clone(),
            (config.name.clone(), node_token.clone()),
            stop_tx.subscribe(),
        );
        crate::orchestrator::controllers::spawn(
            control.clone(),
            gossip.clone(),
            config.network.clone(),
            controller_metrics,
            stop_tx.subscribe(),
        );

        // Routes to every peer's instance subnet, on every node (nodes reach all instances).
        let routing = crate::net::spawn(
            control.clone(),
            gossip.clone(),
            crate::net::RoutingArgs {
                node: config.name.clone(),
                advertise: config.advertise,
                backend: config.network.backend,
            },
            stop_tx.subscribe(),
        );
        // One node network (bridge, subnet, addresses) for containers and VMs.
        let node_network =
            crate::supervise::NodeNet::new(&config.network.bridge, config.network.cluster_cidr);
        if roles
            .iter()
            .any(|r| matches!(r, Role::Agent | Role::Director))
        {
            let (announce_control, me) = (control.clone(), config.name.clone());
            crate::net::dataplane::spawn(
                control.clone(),
                config.name.clone(),
                config.network.cluster_cidr,
                std::sync::Arc::new(move || {
                    crate::supervise::announce_degraded(
                        &announce_control,
                        &me,
                        crate::container::network::Degraded::NoServiceDataPlane,
                    )
                }),
                stop_tx.subscribe(),
            );
        }
        // LoadBalancer addresses: announced by agent nodes (they run the Services data plane).
        let announcing = roles.contains(&Role::Agent).then(|| {
            crate::net::announce_task::spawn(
                control.clone(),
                gossip.clone(),
                config.name.clone(),
                stop_tx.subscribe(),
            )
        });
        // The cluster DNS server, on the bridge gateway once the node network is up.
        if roles
            .iter()
            .any(|r| matches!(r, Role::Agent | Role::Director))
        {
            let settings = crate::net::dns_feed::DnsSettings {
                domain: config.network.cluster_domain.clone(),
                extra_listen: config.network.dns_listen,
                upstreams: config.network.dns_upstreams.clone(),
                cluster_cidr: config.network.cluster_cidr,
            };
            tokio::spawn(crate::net::dns_feed::serve(
                control.clone(),
                settings,
                node_network.clone(),
                stop_tx.subscribe(),
            ));
        }
        if roles.contains(&Role::Agent) {
            let agent = crate::agent::AgentConfig {
                node: config.name.clone(),
                data_dir: config.data_dir.clone(),
                network: node_network.clone(),
                settings: config.agent.clone(),
                peers: gossip.clone(),
                node_token: node_token.clone(),
                cluster_domain: config.network.cluster_domain.clone(),
                registries: config.registries.clone(),
            };
            let metrics = api_metrics.with_registry(crate::agent::AgentMetrics::new);
            if let Err(e) =
                crate::agent::spawn(control.clone(), agent, metrics, stop_tx.subscribe())
            {
                let error = crate::error_chain(&e);
                tracing::error!(%error, "the agent did not start; this node runs no instances");
            }
        }
        if roles.contains(&Role::Director) {
            let director = crate::director::DirectorConfig {
                node: config.name.clone(),
                data_dir: config.data_dir.clone(),
                settings: config.agent.clone(),
                worker: config.director.clone(),
                join_addr: format!("{}:{}", config.advertise, gossip.local_addr().port()),
                join_token: join_token.clone(),
                network: node_network,
            };
            let metrics = api_metrics.with_registry(crate::director::DirectorMetrics::new);
            if let Err(e) =
                crate::director::spawn(control.clone(), director, metrics, stop_tx.subscribe())
            {
                let error = crate::error_chain(&e);
                tracing::error!(%error, "the director did not start; this node runs no VMs");
            }
        }
        let state = Data::new(ApiState {
            control: control.clone(),
            gossip: gossip.clone(),
            policy,
            rpc_stats,
            cluster,
            auth: crate::auth::Authorizer {
                credentials,
                reader: control.reader().clone(),
            },
            limiter: crate::auth::limit::RateLimiter::new(config.rate),
            audit: crate::auth::audit::AuditLog::new(&config.data_dir, config.audit_max_bytes),
            node_token,
            metrics: api_metrics,
            max_body_bytes: config.max_body_bytes,
            services: config.network.services,
            pod_security_default: config.pod_security_default,
            node_name: config.name.clone(),
            data_dir: config.data_dir.clone(),
            started: Instant::now(),
        });
        let server = api::serve(api_listener, state, 2, api_tls)
            .await
            .map_err(NodeError::Api)?;
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);

        if config.join.is_empty() {
            let control = control.clone();
            tokio::spawn(async move { create_default_namespace(&control).await });
            eprintln!(
                "omnicloud: cluster seed {}; join other nodes with: omnicloud node --join {}:{} --token-file <copy of {}>",
                config.name,
                config.advertise,
                gossip.local_addr().port(),
                config.data_dir.join(JOIN_TOKEN_FILE).display()
            );
        }
        tracing::info!(
            node = %config.name,
            api = %api_addr,
            gossip = %gossip.local_addr(),
            data_dir = %config.data_dir.display(),
            "node ready; admin token in {}",
            config.data_dir.join(ADMIN_TOKEN_FILE).display()
        );

        let mut stop_rx = stop_tx.subscribe();
        let mut failure = None;
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received, shutting down"),
            _ = stop_rx.wait_for(|s| *s) => tracing::info!("stop requested"),
            why = raft_failure(control.raft.metrics()) => {
                tracing::error!("raft stopped on this node: {why}; shutting down");
                failure = Some(why);
            }
        }
        let _ = stop_tx.send(true);
        // The routing task removes the routes and link it made.
        let _ = tokio::time::timeout(Duration::from_secs(5), routing).await;
        if let Some(task) = announcing {
            // Released before gossip says we left, so the next announcer finds it free.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        gossip.leave().await;
        server_handle.stop(true).await;
        let _ = server_task.await;
        control.shutdown().await;
        match failure {
            Some(why) => Err(NodeError::RaftFailed(why)),
            None => Ok(()),
        }
    }
}

/// Resolves when Raft stops for good on this node (a storage error such as a full disk:
/// openraft does not recover from one), with the reason.
async fn raft_failure(
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, crate::store::RaftNode>>,
) -> String {
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "raft is gone".into();
        }
    }
}

const PEERS_KEY: &str = "gossip_peers";

fn remembered_peers(store: &Store) -> Vec<SocketAddr> {
    store
        .local_get(PEERS_KEY)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Vec<SocketAddr>>(&b).ok())
        .unwrap_or_default()
}

/// On every membership event (and every second), records the gossip addresses of alive
/// peers in the local table, written only when they change.
fn spawn_peer_memory(store: Store, gossip: Gossip, me: String, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut events = gossip.subscribe();
        let mut last = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = events.recv() => {}
                _ = stop.changed() => return,
            }
            let mut peers: Vec<SocketAddr> = gossip
                .members()
                .await
                .iter()
                .filter(|m| m.meta.name != me && m.status == crate::cluster::MemberStatus::Alive)
                .filter_map(|m| m.meta.gossip_addr.parse().ok())
                .collect();
            peers.sort();
            if !peers.is_empty() && peers != last {
                let bytes = serde_json::to_vec(&peers).expect("JSON");
                if let Err(e) = store.local_put(PEERS_KEY, &bytes) {
                    tracing::warn!(error = %e, "remembering gossip peers");
                }
                last = peers;
            }
        }
    });
}

/// `default` exists implicitly; creating it makes it visible in `get namespaces`.
async fn create_default_namespace(control: &ControlPlane) {
    if control
        .wait_for_leader(Duration::from_secs(30))
        .await
        .is_err()
        || !control.is_leader()
    {
        return;
    }
    let key = ObjectKey::new(Kind::Namespace, "", "default");
    if matches!(control.reader().get(&key), Ok(Some(_))) {
        return;
    }
    let object = json!({"apiVersion": crate::model::API_VERSION, "kind": "Namespace", "metadata": {"name": "default"}});
    let cmd = Command::put(key, &object, PutMode::Create, None);
    if let Err(e) = control.write(cmd).await {
        tracing::warn!(error = %e, "creating the default namespace");
    }
}

/// Where `omnicloud` clients look for a node's admin token.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}
