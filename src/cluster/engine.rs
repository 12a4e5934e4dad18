//! `GossipCore`: the whole gossip protocol as a synchronous state machine.
//!
//! Job: own `Foca` and everything around it (authentication, join handshake, metadata
//! dissemination, member table, config re-derivation). Each input method takes the current
//! wall-clock time in ms (virtual in the simulator) and appends to [`Outputs`]: sealed
//! datagrams to send, timers to arm (relative durations, to be delivered in order through one
//! [`TimerQueue`](crate::cluster::TimerQueue)), and membership events. The caller drains them
//! with [`GossipCore::take_outputs`] after each input.
//!
//! Joining: foca's unique address is the node *name*, which a joiner does not know for a seed
//! address. So the joiner sends our own `Hello` to each seed address; the seed answers
//! `HelloAck` with its identity; the joiner then foca-announces to it. While a node has no
//! active member it says hello to its seeds again every probe period, so a node whose seed was
//! down at start joins once the seed comes up.
//!
//! Membership anti-entropy: SWIM dissemination alone leaves a tail (a member that missed an
//! update learns of the joiner only when probed by it), so we foca-announce to one random
//! member, whose Feed reply lists the members it knows: every probe period / 5 for 5 rounds
//! after we joined or saw a new member, every 10 probe periods otherwise. Down has a tail too:
//! members seen down in the last minute ride along in the metadata digest (below).
//!
//! Metadata: our record goes out as a foca custom broadcast on start, on `update_meta` and on
//! identity renewal. When a member comes up we push our record to it and pull its record if we
//! lack it; every probe period we pull records still missing and exchange a digest
//! (name, incarnation, version) with one random member, which repairs lost packets.
//!
//! Threads: none; driven by the gossip actor or the simulator. May call: `foca`, `wire`,
//! `meta`, `member`, `tracing`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8};
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, OwnedNotification};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tracing::{debug, info, warn};

use crate::cluster::admission::{Admission, Claim};
use crate::cluster::identity::{ClusterId, NodeIdentity};
use crate::cluster::member::{MemberMeta, MemberStatus, MemberTable, MemberView, MembershipEvent};
use crate::cluster::meta::{MetaBroadcasts, MetaRecord, SharedMetaStore};
use crate::cluster::runtime::{QueueRuntime, TimerEvent};
use crate::cluster::wire::{self, Control, FocaCodec, Packet};
use crate::cluster::{ClusterError, GossipStats};

type FocaInstance = Foca<NodeIdentity, FocaCodec, StdRng, MetaBroadcasts>;

/// Largest datagram we produce (foca payload + wire overhead), safe for a 1500-byte MTU.
pub const MAX_DATAGRAM: usize = 1400;
/// At most one "bad tag" warning per sender in this window.
const REJECT_LOG_WINDOW_MS: u64 = 10_000;
/// Metadata entries and down identities per digest (keeps a digest inside one datagram).
const DIGEST_WINDOW: usize = 16;
const DIGEST_DOWN: usize = 8;
/// Records served per request or digest, and missing records pulled per sync tick.
const MAX_META_PER_EXCHANGE: usize = 32;
/// Larger metadata records are not foca broadcasts (they would crowd out or never fit the
/// SWIM traffic); they are pushed to every member directly instead.
pub const MAX_BROADCAST_META: usize = 700;
/// Members seen down within this window are repeated in every digest.
const DOWN_GOSSIP_WINDOW_MS: u64 = 60_000;
/// Announce rounds at probe period / 5 after we joined or saw a new member.
const FAST_ANNOUNCE_ROUNDS: u32 = 5;
/// Otherwise one announce every this many probe periods.
const SLOW_ANNOUNCE_PERIODS: u32 = 10;
/// Every this many probe periods, say hello to one member we hold as down: after a
/// network partition heals, neither side would otherwise ever talk to the other again
/// (as Serf's reconnect of failed members).
const RECONNECT_PERIODS: u32 = 10;
/// Down members are retried for this long.
const RECONNECT_WINDOW_MS: u64 = 6 * 3600 * 1000;

/// What a `GossipCore` is built from.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub identity: NodeIdentity,
    pub key: [u8; 32],
    pub seeds: Vec<SocketAddr>,
    pub meta: MemberMeta,
    /// `None`: foca's LAN default (1 s).
    pub probe_period: Option<Duration>,
    /// Seeds foca's RNG and ours (the simulator passes a fixed one).
    pub rng_seed: u64,
    /// The cluster this node's data belongs to (unknown for a fresh joiner).
    pub cluster: ClusterId,
}

/// What the core asks its driver to do.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Sealed datagrams and where to send them.
    pub sends: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to deliver back to `handle_timer` after the duration, in deadline order.
    pub timers: Vec<(Duration, TimerEvent)>,
    pub events: Vec<MembershipEvent>,
}

/// foca's LAN configuration for `cluster_size` members, scaled to a custom probe period.
pub fn derive_config(cluster_size: u32, probe_period: Option<Duration>) -> foca::Config {
    let n = NonZeroU32::new(cluster_size.max(1)).expect("max(1) is non-zero");
    let mut c = foca::Config::new_lan(n);
    if let Some(p) = probe_period {
        let scale = p.as_secs_f64() / c.probe_period.as_secs_f64();
        c.probe_period = p;
        c.probe_rtt = c.probe_rtt.mul_f64(scale);
        c.suspect_to_down_after = c.suspect_to_down_after.mul_f64(scale);
        if let Some(g) = c.periodic_gossip.as_mut() {
            g.frequency = g
                .frequency
                .mul_f64(scale.min(1.0))
                .max(Duration::from_millis(10));
        }
    }
    // Small clusters get few transmissions from the formula; 4 keeps dissemination reliable
    // under loss at negligible cost.
    c.max_transmissions = c.max_transmissions.max(NonZeroU8::new(4).expect("4 > 0"));
    c.max_packet_size = (MAX_DATAGRAM - wire::OVERHEAD)
        .try_into()
        .expect("positive packet size");
    c
}

/// The foca config is re-derived when the cluster size crosses a power of two (from 4 on),
/// using that power of two as the size.
fn size_bucket(members: usize) -> u32 {
    let n = (members as u32).max(4);
    1 << (31 - n.leading_zeros())
}

pub struct GossipCore {
    foca: FocaInstance,
    rt: QueueRuntime,
    key: [u8; 32],
    seeds: Vec<SocketAddr>,
    meta: MemberMeta,
    meta_version: u64,
    store: SharedMetaStore,
    table: MemberTable,
    probe_period: Option<Duration>,
    bucket: u32,
    rng: StdRng,
    out: Outputs,
    stats: Arc<GossipStats>,
    started_ms: u64,
    reject_log: BTreeMap<SocketAddr, u64>,
    digest_cursor: usize,
    /// Fast announce rounds left, and the generation of the live announce timer chain.
    fast_announce: u32,
    announce_gen: u32,
    leaving: bool,
    /// Counts Rejoin ticks, to pace reconnect attempts to down members.
    reconnect_tick: u32,
    admission: Admission,
    /// When we last warned that no seed answers (a wrong join token looks like silence).
    silence_warned_ms: u64,
}

impl GossipCore {
    /// Builds the core, queues our metadata broadcast, arms the periodic timers and says
    /// hello to the seeds. Drain the outputs afterwards.
    pub fn new(cfg: CoreConfig, stats: Arc<GossipStats>, now_ms: u64) -> Self {
        let store = SharedMetaStore::new(&cfg.identity.name);
        let admission = Admission::new(cfg.cluster, &cfg.identity.name, cfg.meta.node_id);
        let bucket = size_bucket(1);
        let foca = Foca::with_custom_broadcast(
            cfg.identity.clone(),
            derive_config(bucket, cfg.probe_period),
            StdRng::seed_from_u64(cfg.rng_seed),
            FocaCodec,
            MetaBroadcasts::new(store.clone()),
        );
        let mut core = Self {
            foca,
            rt: QueueRuntime::default(),
            key: cfg.key,
            seeds: Vec::new(),
            meta: cfg.meta,
            meta_version: 1,
            store,
            table: MemberTable::default(),
            probe_period: cfg.probe_period,
            bucket,
            rng: StdRng::seed_from_u64(cfg.rng_seed ^ 0x9e37_79b9_7f4a_7c15),
            out: Outputs::default(),
            stats,
            started_ms: now_ms,
            reject_log: BTreeMap::new(),
            digest_cursor: 0,
            fast_announce: 0,
            announce_gen: 0,
            leaving: false,
            reconnect_tick: 0,
            admission,
            // The first warning after 10 s of silence, then one a minute.
            silence_warned_ms: now_ms.saturating_sub(50_000),
        };
        core.normalize_meta();
        core.publish_own_meta();
        core.update_stats();
        let period = core.period();
        core.out.timers.push((period, TimerEvent::Rejoin));
        core.out.timers.push((period, TimerEvent::Sync));
        core.out
            .timers
            .push((period * SLOW_ANNOUNCE_PERIODS, TimerEvent::Announce(0)));
        core.join(cfg.seeds, now_ms);
        core
    }

    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    pub fn stats(&self) -> &Arc<GossipStats> {
        &self.stats
    }

    /// Number of other members foca holds as active (alive or suspect).
    pub fn num_active(&self) -> usize {
        self.foca.num_members()
    }

    /// Everything the driver has to do since the last call.
    pub fn take_outputs(&mut self) -> Outputs {
        std::mem::take(&mut self.out)
    }

    /// All members with complete metadata, self included (always Alive), by name.
    pub fn members(&self) -> Vec<MemberView> {
        let me = MemberView {
            meta: self.meta.clone(),
            status: MemberStatus::Alive,
            incarnation: self.identity().incarnation,
            since_ms: self.started_ms,
        };
        let mut all: Vec<MemberView> = self.table.views().cloned().collect();
        all.push(me);
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    /// A datagram arrived from `from`.
    pub fn handle_packet(&mut self, from: SocketAddr, data: &[u8], now_ms: u64) {
        GossipStats::add(&self.stats.packets_in, 1);
        GossipStats::add(&self.stats.bytes_in, data.len() as u64);
        match wire::open(&self.key, data) {
            Ok((sender, packet)) => {
                if let Err(reason) = self.admit(from, &sender, &packet, now_ms) {
                    self.refuse(from, &reason, now_ms);
                    return;
                }
                match packet {
                    Packet::Foca(payload) => {
                        if let Err(e) = self.foca.handle_data(payload, &mut self.rt) {
                            GossipStats::add(&self.stats.decode_errors, 1);
                            debug!(%from, error = %e, "foca refused a packet");
                        }
                    }
                    Packet::Control(msg) => self.handle_control(from, msg),
                }
            }
            Err(e @ (ClusterError::BadTag | ClusterError::ShortPacket(_))) => {
                self.note_rejected(from, &e, now_ms);
                return;
            }
            Err(e) => {
                GossipStats::add(&self.stats.decode_errors, 1);
                debug!(%from, error = %e, "undecodable gossip packet");
            }
        }
        self.after_input(now_ms);
    }

    /// Admission of one authenticated datagram (see `admission`): its cluster, and the
    /// name it speaks for. A seed's `HelloAck` first teaches a joiner its cluster's id.
    fn admit(
        &mut self,
        from: SocketAddr,
        sender: &wire::Sender,
        packet: &Packet<'_>,
        now_ms: u64,
    ) -> Result<(), String> {
        let msg = match packet {
            Packet::Control(m) => Some(m),
            Packet::Foca(_) => None,
        };
        let claim = match packet {
            Packet::Foca(payload) => {
                let mut buf = *payload;
                let header = foca::Codec::decode_header(&mut FocaCodec, &mut buf)
                    .map_err(|e| format!("undecodable foca header: {e}"))?;
                Some(direct_claim(&header.src.name, sender))
            }
            Packet::Control(Control::Hello { from: who }) => Some(direct_claim(&who.name, sender)),
            Packet::Control(Control::HelloAck { identity }) => {
                self.admission.adopt_from(sender);
                Some(direct_claim(&identity.name, sender))
            }
            Packet::Control(Control::Meta(r)) => Some(Claim {
                name: r.meta.name.clone(),
                node_id: r.meta.node_id,
                direct: false,
            }),
            Packet::Control(Control::Refused { reason }) => {
                self.admission.note_refused(from, reason, now_ms);
                return Err(String::new());
            }
            Packet::Control(_) => None,
        };
        let table = &self.table;
        let owner_of = |name: &str| {
            table
                .views()
                .find(|v| v.meta.name == name && v.status != MemberStatus::Down)
                .map(|v| v.meta.node_id)
        };
        self.admission
            .admit(sender, msg, claim.as_ref(), owner_of, now_ms)
    }

    /// Tells a refused sender why (once per window), and our log too.
    fn refuse(&mut self, from: SocketAddr, reason: &str, now_ms: u64) {
        if reason.is_empty() {
            return; // a refusal we received; already logged
        }
        GossipStats::add(&self.stats.rejected_packets, 1);
        if self.admission.should_refuse_loudly(from, now_ms) {
            warn!(peer = %from, "refused a gossip peer: {reason}");
            let msg = Control::Refused {
                reason: format!("{} refused you: {reason}", self.identity().name),
            };
            self.send_control(from, &msg);
        }
    }

    /// A timer armed through `Outputs::timers` fired.
    pub fn handle_timer(&mut self, event: TimerEvent, now_ms: u64) {
        match event {
            TimerEvent::Foca(t) => {
                if let Err(e) = self.foca.handle_timer(t, &mut self.rt) {
                    debug!(error = %e, "foca timer");
                }
            }
            TimerEvent::Rejoin => {
                if self.leaving {
                    return;
                }
                if self.foca.num_members() == 0 {
                    self.hello(&self.seeds.clone());
                    self.warn_if_no_seed_answers(now_ms);
                }
                self.reconnect_tick = self.reconnect_tick.wrapping_add(1);
                if self.reconnect_tick.is_multiple_of(RECONNECT_PERIODS) {
                    self.reconnect_down(now_ms);
                }
                self.out.timers.push((self.period(), TimerEvent::Rejoin));
            }
            TimerEvent::Sync => {
                if self.leaving {
                    return;
                }
                self.meta_sync(now_ms);
                self.out.timers.push((self.period(), TimerEvent::Sync));
            }
            TimerEvent::Announce(generation) => {
                if self.leaving || generation != self.announce_gen {
                    return; // superseded by a faster chain
                }
                self.announce_round();
            }
        }
        self.after_input(now_ms);
    }

    /// Adds seeds and says hello to them now.
    pub fn join(&mut self, seeds: Vec<SocketAddr>, now_ms: u64) {
        let own = self.identity().addr;
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != own).collect();
        for s in &seeds {
            if !self.seeds.contains(s) {
                self.seeds.push(*s);
            }
        }
        self.hello(&seeds);
        self.after_input(now_ms);
    }

    /// Replaces our metadata (the name cannot change) and spreads it.
    pub fn update_meta(&mut self, meta: MemberMeta, now_ms: u64) {
        self.meta = meta;
        self.normalize_meta();
        self.meta_version += 1;
        self.publish_own_meta();
        self.after_input(now_ms);
    }

    /// Declares ourselves down to a few members and stops reacting.
    pub fn leave(&mut self, now_ms: u64) {
        if self.leaving {
            return;
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            warn!(error = %e, "leaving the cluster");
        }
        self.leaving = true;
        self.after_input(now_ms);
    }

    /// Datagrams sealed with another join token are dropped without an answer, so a wrong
    /// token looks like silence: say so, every minute while nobody answers.
    fn warn_if_no_seed_answers(&mut self, now_ms: u64) {
        if self.seeds.is_empty() || now_ms.saturating_sub(self.silence_warned_ms) < 60_000 {
            return;
        }
        self.silence_warned_ms = now_ms;
        warn!(
            seeds = ?self.seeds,
            "no seed has answered for a minute: they are down or unreachable, or they hold a different join token (packets sealed with another token are dropped without an answer)"
        );
    }

    fn period(&self) -> Duration {
        self.probe_period.unwrap_or(Duration::from_secs(1))
    }

    fn normalize_meta(&mut self) {
        let id = self.foca.identity();
        if self.meta.name != *id.name {
            if !self.meta.name.is_empty() {
                warn!(meta_name = %self.meta.name, node = %id.name, "metadata name differs from the node name; using the node name");
            }
            self.meta.name = id.name.to_string();
        }
        if self.meta.gossip_addr.is_empty() {
            self.meta.gossip_addr = id.addr.to_string();
        }
    }

    fn own_record(&self) -> MetaRecord {
        MetaRecord {
            incarnation: self.identity().incarnation,
            version: self.meta_version,
            meta: self.meta.clone(),
        }
    }

    fn publish_own_meta(&mut self) {
        let record = self.own_record();
        self.store.lock().set_local(record.clone());
        let data = match wire::encode(&record) {
            Ok(d) => d,
            Err(e) => return warn!(error = %e, "encoding our metadata"),
        };
        if data.len() <= MAX_BROADCAST_META {
            if let Err(e) = self.foca.add_broadcast(&data) {
                warn!(error = %e, "queueing our metadata broadcast");
            }
            return;
        }
        debug!(
            bytes = data.len(),
            "metadata too large to broadcast; pushing it to every member"
        );
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let msg = Control::Meta(record);
        for to in members {
            self.send_control(to, &msg);
        }
    }

    fn send_control(&mut self, to: SocketAddr, msg: &Control) {
        match wire::seal_control(&self.key, &self.admission.sender(), msg) {
            Ok(pkt) => self.out.sends.push((to, pkt)),
            Err(e) => warn!(error = %e, "encoding a control message"),
        }
    }

    fn hello(&mut self, seeds: &[SocketAddr]) {
        let msg = Control::Hello {
            from: self.identity().clone(),
        };
        for s in seeds {
            self.send_control(*s, &msg);
        }
    }

    fn handle_control(&mut self, from: SocketAddr, msg: Control) {
        if self.leaving {
            return;
        }
        match msg {
            Control::Hello { from: who } => {
                debug!(%from, joiner = %who, "hello");
                let reply = Control::HelloAck {
                    identity: self.identity().clone(),
                };
                self.send_control(from, &reply);
            }
            Control::HelloAck { identity } => {
                if identity.name == self.identity().name {
                    warn!(%from, other = %identity, "a seed answers with our own node name; is the name configured twice?");
                    return;
                }
                if let Err(e) = self.foca.announce(identity, &mut self.rt) {
                    debug!(error = %e, "announce");
                }
            }
            Control::Meta(record) => {
                if self.store.lock().offer(record) {
                    GossipStats::add(&self.stats.meta_updates, 1);
                }
            }
            Control::Digest { meta, down } => {
                if !down.is_empty() {
                    let updates = down.into_iter().map(foca::Member::down);
                    if let Err(e) = self.foca.apply_many(updates, true, &mut self.rt) {
                        debug!(error = %e, "applying down members from a digest");
                    }
                }
                self.handle_digest(from, meta);
            }
            Control::Refused { .. } => {} // handled at admission
            Control::MetaRequest(names) => {
                let records: Vec<MetaRecord> = {
                    let store = self.store.lock();
                    names
                        .iter()
                        .filter_map(|n| store.get(n).cloned())
                        .take(MAX_META_PER_EXCHANGE)
                        .collect()
                };
                for r in records {
                    self.send_control(from, &Control::Meta(r));
                }
            }
        }
    }

    fn handle_digest(&mut self, from: SocketAddr, entries: Vec<(String, u64, u64)>) {
        let mut push = Vec::new();
        let mut want = Vec::new();
        {
            let store = self.store.lock();
            for (name, inc, ver) in entries {
                match store.get(&name) {
                    Some(r) if r.version_key() > (inc, ver) => push.push(r.clone()),
                    Some(r) if r.version_key() == (inc, ver) => {}
                    _ if name == *self.identity().name => {}
                    _ => want.push(name),
                }
            }
        }
        for r in push.into_iter().take(MAX_META_PER_EXCHANGE) {
            self.send_control(from, &Control::Meta(r));
        }
        if !want.is_empty() {
            want.truncate(MAX_META_PER_EXCHANGE);
            self.send_control(from, &Control::MetaRequest(want));
        }
    }

    /// Membership anti-entropy: announce to a random member, then re-arm the chain.
    fn announce_round(&mut self) {
        if let Some(to) = self.random_member() {
            if let Err(e) = self.foca.announce(to, &mut self.rt) {
                debug!(error = %e, "periodic announce");
            }
        }
        self.fast_announce = self.fast_announce.saturating_sub(1);
        let next = if self.fast_announce > 0 {
            self.period() / 5
        } else {
            self.period() * SLOW_ANNOUNCE_PERIODS
        };
        let generation = self.announce_gen;
        self.out
            .timers
            .push((next, TimerEvent::Announce(generation)));
    }

    /// The membership is changing: announce often for a while. Starts a new, faster timer
    /// chain unless one is running (the slow one is then ignored when it fires).
    fn speed_up_announces(&mut self) {
        if self.fast_announce == 0 {
            self.announce_gen = self.announce_gen.wrapping_add(1);
            let generation = self.announce_gen;
            self.out
                .timers
                .push((self.period() / 5, TimerEvent::Announce(generation)));
        }
        self.fast_announce = FAST_ANNOUNCE_ROUNDS;
    }

    /// Says hello to one random member held as down; if it is alive (a healed partition),
    /// the exchange makes both sides renew and see each other again.
    fn reconnect_down(&mut self, now_ms: u64) {
        let down = self
            .table
            .recent_down(now_ms.saturating_sub(RECONNECT_WINDOW_MS));
        if down.is_empty() {
            return;
        }
        let pick = self.rng.random_range(0..down.len());
        self.hello(&[down[pick].addr]);
    }

    fn random_member(&mut self) -> Option<NodeIdentity> {
        let n = self.foca.num_members();
        if n == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..n);
        self.foca.iter_members().nth(pick).map(|m| m.id().clone())
    }

    /// Pulls records still missing, then sends a digest window (and the members seen down
    /// recently) to one random member.
    fn meta_sync(&mut self, now_ms: u64) {
        let missing = {
            let store = self.store.lock();
            self.table.missing_meta(|n| store.version_of(n))
        };
        for id in missing.into_iter().take(MAX_META_PER_EXCHANGE) {
            self.send_control(id.addr, &Control::MetaRequest(vec![id.name.to_string()]));
        }

        let Some(to) = self.random_member().map(|m| m.addr) else {
            return;
        };
        let digest: Vec<(String, u64, u64)> = {
            let store = self.store.lock();
            let all: Vec<&MetaRecord> = store.iter().collect();
            let start = self.digest_cursor % all.len().max(1);
            all.iter()
                .cycle()
                .skip(start)
                .take(all.len().min(DIGEST_WINDOW))
                .map(|r| (r.meta.name.clone(), r.incarnation, r.version))
                .collect()
        };
        self.digest_cursor = self.digest_cursor.wrapping_add(DIGEST_WINDOW);
        let mut down = self
            .table
            .recent_down(now_ms.saturating_sub(DOWN_GOSSIP_WINDOW_MS));
        down.truncate(DIGEST_DOWN);
        self.send_control(to, &Control::Digest { meta: digest, down });
    }

    fn note_rejected(&mut self, from: SocketAddr, err: &ClusterError, now_ms: u64) {
        GossipStats::add(&self.stats.rejected_packets, 1);
        let quiet = self
            .reject_log
            .get(&from)
            .is_some_and(|last| now_ms.saturating_sub(*last) < REJECT_LOG_WINDOW_MS);
        if !quiet {
            warn!(%from, error = %err, "dropped unauthenticated gossip packet (wrong join token?)");
            self.reject_log.insert(from, now_ms);
            if self.reject_log.len() > 4096 {
                self.reject_log
                    .retain(|_, last| now_ms.saturating_sub(*last) < REJECT_LOG_WINDOW_MS);
            }
        }
    }

    /// Drains foca's queues (sending, arming timers, reacting to notifications), then
    /// reconciles the member table and publishes events.
    fn after_input(&mut self, now_ms: u64) {
        while !(self.rt.sends.is_empty()
            && self.rt.timers.is_empty()
            && self.rt.notifications.is_empty())
        {
            for (to, payload) in std::mem::take(&mut self.rt.sends) {
                if self.is_spurious_turn_undead(&to, &payload) {
                    debug!(member = %to, "dropping TurnUndead to a member that refuted suspicion");
                    continue;
                }
                self.out.sends.push((
                    to.addr,
                    wire::seal_foca(&self.key, &self.admission.sender(), &payload),
                ));
            }
            self.out.timers.append(&mut self.rt.timers);
            for n in std::mem::take(&mut self.rt.notifications) {
                self.handle_notification(n);
            }
        }
        self.sync_table(now_ms);
        self.adjust_config();
    }

    /// foca 2.0 sends `TurnUndead` ("you are down") when a suspicion timer fires even if the
    /// member refuted the suspicion meanwhile (the Down was not applied), which makes that
    /// member renew its identity for nothing: under 10% loss nearly every suspicion became a
    /// forced rejoin in simulation. A `TurnUndead` is justified only when foca does not hold
    /// exactly this identity as active (it is Down, or superseded by a newer incarnation).
    fn is_spurious_turn_undead(&self, to: &NodeIdentity, payload: &[u8]) -> bool {
        let mut buf = payload;
        let is_turn_undead = foca::Codec::decode_header(&mut FocaCodec, &mut buf)
            .is_ok_and(|h| h.message == foca::Message::TurnUndead);
        is_turn_undead
            && self
                .foca
                .iter_members()
                .any(|m| m.id() == to && m.state() != foca::State::Down)
    }

    fn handle_notification(&mut self, n: OwnedNotification<NodeIdentity>) {
        match n {
            OwnedNotification::MemberUp(id) => {
                self.speed_up_announces();
                self.greet(&id);
            }
            OwnedNotification::Rename(old, new) => {
                debug!(%old, %new, "member restarted");
                self.speed_up_announces();
                self.greet(&new);
            }
            OwnedNotification::MemberDown(id) => debug!(member = %id, "member down"),
            OwnedNotification::Active => info!(node = %self.identity(), "joined the cluster"),
            OwnedNotification::Idle => {
                info!(node = %self.identity(), "no active member left; will keep greeting seeds")
            }
            OwnedNotification::Defunct => {
                if !self.leaving {
                    warn!(node = %self.identity(), "declared down and could not rejoin");
                }
            }
            OwnedNotification::Rejoin(id) => {
                GossipStats::add(&self.stats.rejoins, 1);
                warn!(node = %id, "the cluster declared us down; rejoined under a new incarnation");
                self.publish_own_meta();
            }
        }
    }

    /// A member came up: push our record to it, and pull its record if we lack it.
    fn greet(&mut self, id: &NodeIdentity) {
        if self.leaving {
            return;
        }
        let record = self.own_record();
        self.send_control(id.addr, &Control::Meta(record));
        let have = self.store.lock().version_of(&id.name);
        if have.is_none_or(|(inc, _)| inc < id.incarnation) {
            self.send_control(id.addr, &Control::MetaRequest(vec![id.name.to_string()]));
        }
    }

    fn sync_table(&mut self, now_ms: u64) {
        let own = self.foca.identity().name.clone();
        for m in self.foca.iter_membership_state() {
            if m.id().name != own {
                self.table.observe(m.id(), m.state());
            }
        }
        let events = {
            let store = self.store.lock();
            self.table.reconcile(|n| store.get(n), now_ms)
        };
        self.out.events.extend(events);
        self.update_stats();
    }

    fn update_stats(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.table.counts();
        self.stats.members_alive.store(c.alive + 1, Relaxed);
        self.stats.members_suspect.store(c.suspect, Relaxed);
        self.stats.members_down.store(c.down, Relaxed);
    }

    fn adjust_config(&mut self) {
        let bucket = size_bucket(self.foca.num_members() + 1);
        if bucket != self.bucket {
            match self
                .foca
                .set_config(derive_config(bucket, self.probe_period))
            {
                Ok(()) => {
                    debug!(bucket, "gossip config re-derived for the cluster size");
                    self.bucket = bucket;
                }
                Err(e) => warn!(error = %e, "re-deriving the gossip config"),
            }
        }
    }
}

fn direct_claim(name: &str, sender: &wire::Sender) -> Claim {
    Claim {
        name: name.to_string(),
        node_id: sender.node_id,
        direct: true,
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
