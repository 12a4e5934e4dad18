//! The gossip actor (thin async shell around `GossipCore`) and the public [`Gossip`] handle.
//!
//! Job: bind the UDP socket, own the `GossipCore` in one ractor actor, and do the I/O the core
//! asks for. After every input the actor drains the core's outputs: datagrams go to the
//! socket (a non-blocking std handle of it: sending never awaits, and unlike tokio's
//! `try_send_to` it does not depend on tokio having seen the socket writable yet), timer
//! requests go to the ONE timer task, events go to a `tokio::sync::broadcast` channel.
//!
//! Threads/tasks: `GossipActor` (owns the core); a socket reader task (`Msg::Packet` per
//! datagram); a timer task holding a [`TimerQueue`] that delivers `Msg::Timer` strictly in
//! deadline order. Both tasks are aborted when the actor stops.
//! May call: the UDP socket, `GossipCore`, the events channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cluster::engine::{CoreConfig, GossipCore};
use crate::cluster::identity::{now_ms, NodeIdentity};
use crate::cluster::member::{MemberMeta, MemberView, MembershipEvent};
use crate::cluster::runtime::{TimerEvent, TimerQueue};
use crate::cluster::{ClusterError, GossipStats};

/// Events buffered per subscriber before it starts lagging.
const EVENT_CAPACITY: usize = 1024;

/// How to start a gossip node.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Where to bind the UDP socket (port 0 allowed).
    pub bind: SocketAddr,
    /// Address other members send to. Port 0 / unspecified IP are filled from the bound socket.
    pub advertise: SocketAddr,
    /// `derive_key(join token)`.
    pub key: [u8; 32],
    /// Gossip addresses of nodes to join through (may be empty for the first node).
    pub seeds: Vec<SocketAddr>,
    /// Our metadata; `meta.name` is the node name (cluster-unique).
    pub meta: MemberMeta,
    /// `None`: foca's LAN default (1 s).
    pub probe_period: Option<Duration>,
    /// The cluster this node belongs to (unknown for a fresh joiner, adopted from a seed).
    pub cluster: crate::cluster::ClusterId,
}

/// Inputs of the gossip actor.
pub enum Msg {
    /// A datagram read from the socket.
    Packet {
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// A timer that the core armed, delivered in order by the timer task.
    Timer(TimerEvent),
    /// Join through more seeds.
    Join(Vec<SocketAddr>),
    UpdateMeta(MemberMeta),
    Members(RpcReplyPort<Vec<MemberView>>),
    /// Graceful leave, then the actor stops (after replying).
    Leave(RpcReplyPort<()>),
}

pub struct Args {
    pub core: CoreConfig,
    /// Read by the socket reader task.
    pub socket: UdpSocket,
    /// The same socket, non-blocking, for sending from the actor.
    pub sender: std::net::UdpSocket,
    pub events: broadcast::Sender<MembershipEvent>,
    pub stats: Arc<GossipStats>,
}

pub struct State {
    core: GossipCore,
    sender: std::net::UdpSocket,
    timers: mpsc::UnboundedSender<(Instant, TimerEvent)>,
    events: broadcast::Sender<MembershipEvent>,
    stats: Arc<GossipStats>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct GossipActor;

/// Spawns the gossip actor (unnamed, unlinked).
pub async fn spawn(args: Args) -> Result<(ActorRef<Msg>, JoinHandle<()>), ClusterError> {
    Actor::spawn(None, GossipActor, args)
        .await
        .map_err(ClusterError::Spawn)
}

impl Actor for GossipActor {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        let core = GossipCore::new(args.core, args.stats.clone(), now_ms());
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(run_timers(timer_rx, myself.clone())),
            tokio::spawn(read_socket(args.socket, myself)),
        ];
        let mut state = State {
            core,
            sender: args.sender,
            timers: timer_tx,
            events: args.events,
            stats: args.stats,
            tasks,
        };
        flush(&mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        match msg {
            Msg::Packet { from, data } => state.core.handle_packet(from, &data, now),
            Msg::Timer(ev) => state.core.handle_timer(ev, now),
            Msg::Join(seeds) => state.core.join(seeds, now),
            Msg::UpdateMeta(meta) => state.core.update_meta(meta, now),
            Msg::Members(reply) => {
                let _ = reply.send(state.core.members());
            }
            Msg::Leave(reply) => {
                state.core.leave(now);
                flush(state);
                let _ = reply.send(());
                myself.stop(Some("left the cluster".into()));
                return Ok(());
            }
        }
        flush(state);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        for t in state.tasks.drain(..) {
            t.abort();
        }
        Ok(())
    }
}

/// Does what the core asked: send datagrams, arm timers, publish events.
fn flush(state: &mut State) {
    let out = state.core.take_outputs();
    for (to, pkt) in out.sends {
        match state.sender.send_to(&pkt, to) {
            Ok(n) => {
                GossipStats::add(&state.stats.packets_out, 1);
                GossipStats::add(&state.stats.bytes_out, n as u64);
            }
            Err(e) => {
                GossipStats::add(&state.stats.send_errors, 1);
                debug!(%to, error = %e, "gossip send failed");
            }
        }
    }
    let now = Instant::now();
    for (after, ev) in out.timers {
        // Fails only once the timer task is gone, i.e. while stopping.
        let _ = state.timers.send((now + after, ev));
    }
    for ev in out.events {
        // No subscriber is fine.
        let _ = state.events.send(ev);
    }
}

/// The one timer task: every timer of the node goes through this ordered queue.
async fn run_timers(
    mut requests: mpsc::UnboundedReceiver<(Instant, TimerEvent)>,
    actor: ActorRef<Msg>,
) {
    let mut queue: TimerQueue<Instant, TimerEvent> = TimerQueue::new();
    loop {
        let now = Instant::now();
        while let Some((_, ev)) = queue.pop_due(now) {
            if actor.cast(Msg::Timer(ev)).is_err() {
                return;
            }
        }
        let next = queue.next_deadline();
        tokio::select! {
            req = requests.recv() => match req {
                Some((deadline, ev)) => queue.push(deadline, ev),
                None => return,
            },
            _ = sleep_until(next) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn read_socket(socket: UdpSocket, actor: ActorRef<Msg>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let data = buf[..n].to_vec();
                if actor.cast(Msg::Packet { from, data }).is_err() {
                    return;
                }
            }
            Err(e) => {
                // e.g. ICMP errors surfacing on the socket; keep reading.
                debug!(error = %e, "gossip socket read");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Handle to a running gossip node. Cheap to clone.
#[derive(Clone)]
pub struct Gossip {
    actor: ActorRef<Msg>,
    local_addr: SocketAddr,
    identity: NodeIdentity,
    events: broadcast::Sender<MembershipEvent>,
    stats: Arc<GossipStats>,
}

impl Gossip {
    /// Binds the UDP socket, spawns the actor and starts joining the seeds.
    pub async fn start(config: GossipConfig) -> Result<Gossip, ClusterError> {
        let bind_err = |source| ClusterError::Bind {
            addr: config.bind,
            source,
        };
        let sender = std::net::UdpSocket::bind(config.bind).map_err(bind_err)?;
        sender.set_nonblocking(true).map_err(bind_err)?;
        let socket =
            UdpSocket::from_std(sender.try_clone().map_err(bind_err)?).map_err(bind_err)?;
        let local_addr = socket.local_addr().map_err(ClusterError::LocalAddr)?;
        let advertise = resolve_advertise(config.advertise, local_addr);
        let name = if config.meta.name.is_empty() {
            advertise.to_string()
        } else {
            config.meta.name.clone()
        };
        let identity = NodeIdentity::starting_now(name, advertise);
        let stats = Arc::new(GossipStats::default());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let core = CoreConfig {
            identity: identity.clone(),
            key: config.key,
            seeds: config.seeds,
            meta: config.meta,
            probe_period: config.probe_period,
            rng_seed: rand::random(),
            cluster: config.cluster,
        };
        let (actor, _join) = spawn(Args {
            core,
            socket,
            sender,
            events: events.clone(),
            stats: stats.clone(),
        })
        .await?;
        Ok(Gossip {
            actor,
            local_addr,
            identity,
            events,
            stats,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our identity at start (foca may renew the incarnation later).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// All members with complete metadata, self included (Alive). Empty once stopped.
    pub async fn members(&self) -> Vec<MemberView> {
        match ractor::call!(self.actor, Msg::Members) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "gossip actor gone");
                Vec::new()
            }
        }
    }

    /// Membership changes of other nodes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// Replaces our metadata and spreads it.
    pub async fn update_meta(&self, meta: MemberMeta) {
        if self.actor.cast(Msg::UpdateMeta(meta)).is_err() {
            warn!("update_meta: gossip actor gone");
        }
    }

    /// Joins through more seeds.
    pub fn join(&self, seeds: Vec<SocketAddr>) {
        let _ = self.actor.cast(Msg::Join(seeds));
    }

    pub fn stats(&self) -> Arc<GossipStats> {
        self.stats.clone()
    }

    /// Tells a few members we leave, then stops the actor and its tasks.
    pub async fn leave(&self) {
        if let Err(e) = ractor::call!(self.actor, Msg::Leave) {
            debug!(error = %e, "leave: gossip actor already gone");
        }
        let _ = self.actor.wait(Some(Duration::from_secs(5))).await;
    }
}

fn resolve_advertise(advertise: SocketAddr, local: SocketAddr) -> SocketAddr {
    let mut a = advertise;
    if a.port() == 0 {
        a.set_port(local.port());
    }
    if a.ip().is_unspecified() {
        a.set_ip(local.ip());
        if a.ip().is_unspecified() {
            warn!(%a, "advertising an unspecified address; set `advertise` to a reachable one");
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::member::MemberStatus;
    use crate::cluster::wire::derive_key;

    fn config(name: &str, key: [u8; 32], seeds: Vec<SocketAddr>) -> GossipConfig {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut meta = MemberMeta {
            name: name.into(),
            roles: vec![crate::model::Role::Agent],
            ..Default::default()
        };
        meta.labels.insert("zone".into(), "test".into());
        GossipConfig {
            bind: any,
            advertise: any,
            key,
            seeds,
            meta,
            probe_period: None,
            cluster: crate::cluster::ClusterId::known([9; 16]),
        }
    }

    async fn alive_names(g: &Gossip) -> Vec<String> {
        g.members()
            .await
            .into_iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .map(|m| m.meta.name)
            .collect()
    }

    #[test]
    fn advertise_is_filled_from_the_socket() {
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(resolve_advertise(any, local), local);
        let fixed: SocketAddr = "10.1.2.3:7946".parse().unwrap();
        assert_eq!(resolve_advertise(fixed, local), fixed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_nodes_on_loopback_and_an_impostor() {
        let key = derive_key("real-token");
        let first = Gossip::start(config("n0", key, vec![])).await.unwrap();
        let seed = first.local_addr();
        let mut nodes = vec![first];
        for i in 1..5 {
            nodes.push(
                Gossip::start(config(&format!("n{i}"), key, vec![seed]))
                    .await
                    .unwrap(),
            );
        }
        let impostor = Gossip::start(config("evil", derive_key("wrong-token"), vec![seed]))
            .await
            .unwrap();
        let mut events = nodes[0].subscribe();

        let started = std::time::Instant::now();
        loop {
            let mut done = true;
            for g in &nodes {
                done &= alive_names(g).await.len() == 5;
            }
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no convergence"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "loopback: 5 nodes all Alive everywhere after {:?}",
            started.elapsed()
        );

        for g in &nodes {
            let all = g.members().await;
            assert_eq!(all.len(), 5);
            assert!(all.iter().all(|m| m.meta.name != "evil"));
            assert!(all.iter().all(|m| m.meta.labels["zone"] == "test"));
        }
        assert_eq!(
            impostor.members().await.len(),
            1,
            "impostor sees only itself"
        );
        assert!(GossipStats::get(&nodes[0].stats().rejected_packets) > 0);
        assert_eq!(GossipStats::get(&nodes[0].stats().members_alive), 5);

        // A graceful leave is seen as Down by the others.
        nodes[4].leave().await;
        assert!(nodes[4].members().await.is_empty(), "actor stopped");
        let started = std::time::Instant::now();
        'wait: loop {
            for g in &nodes[..4] {
                let down = g
                    .members()
                    .await
                    .iter()
                    .any(|m| m.meta.name == "n4" && m.status == MemberStatus::Down);
                if !down {
                    assert!(started.elapsed() < Duration::from_secs(20), "leave unseen");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue 'wait;
                }
            }
            break;
        }
        println!("loopback: leave seen by all after {:?}", started.elapsed());
        let mut saw_down = false;
        while let Ok(ev) = events.try_recv() {
            saw_down |= ev == MembershipEvent::Down("n4".into());
        }
        assert!(saw_down, "Down event published");

        for g in nodes.iter().take(4).chain([&impostor]) {
            g.leave().await;
        }
    }
}
