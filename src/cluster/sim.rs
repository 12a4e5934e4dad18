//! Deterministic simulation of a gossip cluster: many `GossipCore`s, no sockets.
//!
//! Job: drive N cores through the exact code the actor uses, with virtual time (one
//! [`TimerQueue`] keyed by virtual microseconds holds every packet delivery and every timer of
//! every node), a seeded RNG (`StdRng::seed_from_u64`), configurable packet loss and delay,
//! and node kill/restart. The same seed gives the same event trace.
//! Threads: none. May call: `GossipCore`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::cluster::engine::{CoreConfig, GossipCore};
use crate::cluster::identity::NodeIdentity;
use crate::cluster::member::{MemberMeta, MemberStatus, MemberView, MembershipEvent};
use crate::cluster::runtime::{TimerEvent, TimerQueue};
use crate::cluster::GossipStats;

/// Virtual wall clock at simulation start (ms since the epoch).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// One-way delay, uniform in this range (ms).
    pub delay_ms: (u64, u64),
    pub probe_period: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            loss: 0.0,
            delay_ms: (1, 1),
            probe_period: None,
        }
    }
}

enum SimEvent {
    Packet {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        epoch: u32,
        event: TimerEvent,
    },
}

/// One simulated process.
pub struct SimNode {
    pub name: String,
    pub key: [u8; 32],
    pub seeds: Vec<SocketAddr>,
    pub core: GossipCore,
    pub stats: Arc<GossipStats>,
    pub running: bool,
    /// Bumped on restart so timers of the previous process are ignored.
    epoch: u32,
    /// Events this node published, with the virtual time (µs).
    pub events: Vec<(u64, MembershipEvent)>,
}

pub struct Sim {
    cfg: SimConfig,
    now_us: u64,
    queue: TimerQueue<u64, SimEvent>,
    rng: StdRng,
    pub nodes: Vec<SimNode>,
    /// Every published event, in order: "time_us node event".
    pub trace: Vec<String>,
    pub delivered: u64,
    pub dropped: u64,
    /// Address pairs that cannot reach each other (a network partition).
    cut: std::collections::BTreeSet<(SocketAddr, SocketAddr)>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            now_us: 0,
            queue: TimerQueue::new(),
            nodes: Vec::new(),
            trace: Vec::new(),
            delivered: 0,
            dropped: 0,
            cut: Default::default(),
        }
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.now_us / 1000
    }

    /// Gossip address of node `i` in its `epoch`: distinct ports per restart.
    fn addr_of(i: usize, epoch: u32) -> SocketAddr {
        let port = 10_000 + (epoch as usize) * 1_000 + i;
        SocketAddr::from(([127, 0, 0, 1], port as u16))
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].core.identity().addr
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Metadata the simulated nodes publish.
    pub fn meta_for(name: &str, i: usize) -> MemberMeta {
        let mut meta = MemberMeta {
            name: name.into(),
            node_id: i as u64 + 1,
            api_addr: format!("127.0.0.1:{}", 8000 + i),
            rpc_addr: format!("127.0.0.1:{}", 9000 + i),
            roles: vec![crate::model::Role::Agent],
            containers: true,
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ..Default::default()
        };
        meta.labels.insert("zone".into(), format!("z{}", i % 3));
        meta
    }

    fn build_core(
        &self,
        i: usize,
        name: &str,
        key: [u8; 32],
        seeds: Vec<SocketAddr>,
        epoch: u32,
    ) -> (GossipCore, Arc<GossipStats>) {
        let stats = Arc::new(GossipStats::default());
        let identity = NodeIdentity::new(name, Self::addr_of(i, epoch), self.now_ms());
        let mut meta = Self::meta_for(name, i);
        meta.started_at_ms = self.now_ms();
        let cfg = CoreConfig {
            identity,
            key,
            seeds,
            meta,
            probe_period: self.cfg.probe_period,
            rng_seed: self.cfg.seed.wrapping_mul(1_000_003) ^ ((i as u64) << 32) ^ epoch as u64,
            cluster: crate::cluster::ClusterId::known([5; 16]),
        };
        (GossipCore::new(cfg, stats.clone(), self.now_ms()), stats)
    }

    /// Starts a node that joins through `seeds`. Returns its index.
    pub fn add_node(&mut self, name: &str, key: [u8; 32], seeds: Vec<SocketAddr>) -> usize {
        let i = self.nodes.len();
        let (core, stats) = self.build_core(i, name, key, seeds.clone(), 0);
        self.nodes.push(SimNode {
            name: name.into(),
            key,
            seeds,
            core,
            stats,
            running: true,
            epoch: 0,
            events: Vec::new(),
        });
        self.drain(i);
        i
    }

    /// Graceful leave: the node's goodbye datagrams are sent, then the process stops.
    pub fn leave(&mut self, i: usize) {
        let now = self.now_ms();
        self.nodes[i].core.leave(now);
        self.drain(i);
        self.kill(i);
    }

    /// The process stops: no more packets or timers.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].running = false;
    }

    /// A new process under the same name, with a higher incarnation and new ports.
    pub fn restart(&mut self, i: usize) {
        let epoch = self.nodes[i].epoch + 1;
        let (name, key, seeds) = {
            let n = &self.nodes[i];
            (n.name.clone(), n.key, n.seeds.clone())
        };
        let (core, stats) = self.build_core(i, &name, key, seeds, epoch);
        let n = &mut self.nodes[i];
        n.core = core;
        n.stats = stats;
        n.epoch = epoch;
        n.running = true;
        self.drain(i);
    }

    pub fn update_meta(&mut self, i: usize, meta: MemberMeta) {
        let now = self.now_ms();
        self.nodes[i].core.update_meta(meta, now);
        self.drain(i);
    }

    /// Nodes in `a` and nodes in `b` stop reaching each other, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                let (x, y) = (self.addr(i), self.addr(j));
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn members(&self, i: usize) -> Vec<MemberView> {
        self.nodes[i].core.members()
    }

    /// Moves the outputs of node `i` into the event queue, applying loss and delay.
    fn drain(&mut self, i: usize) {
        let out = self.nodes[i].core.take_outputs();
        let from = self.nodes[i].core.identity().addr;
        for (to, data) in out.sends {
            if self.cut.contains(&(from, to)) {
                self.dropped += 1;
                continue;
            }
            if self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss) {
                self.dropped += 1;
                continue;
            }
            let (lo, hi) = self.cfg.delay_ms;
            let delay = self.rng.random_range(lo * 1000..=hi.max(lo) * 1000);
            self.queue
                .push(self.now_us + delay, SimEvent::Packet { from, to, data });
        }
        let epoch = self.nodes[i].epoch;
        for (after, event) in out.timers {
            let at = self.now_us + after.as_micros() as u64;
            self.queue.push(
                at,
                SimEvent::Timer {
                    node: i,
                    epoch,
                    event,
                },
            );
        }
        for ev in out.events {
            self.trace
                .push(format!("{} {} {:?}", self.now_us, self.nodes[i].name, ev));
            self.nodes[i].events.push((self.now_us, ev));
        }
    }

    /// Processes the next event if it is due at or before `until_us`.
    fn step(&mut self, until_us: u64) -> bool {
        if self.queue.next_deadline().is_none_or(|d| d > until_us) {
            return false;
        }
        let (at, ev) = self.queue.pop_next().expect("checked above");
        self.now_us = at;
        let now_ms = self.now_ms();
        match ev {
            SimEvent::Packet { from, to, data } => {
                let target = self
                    .nodes
                    .iter()
                    .position(|n| n.running && n.core.identity().addr == to);
                if let Some(i) = target {
                    self.delivered += 1;
                    self.nodes[i].core.handle_packet(from, &data, now_ms);
                    self.drain(i);
                } else {
                    self.dropped += 1;
                }
            }
            SimEvent::Timer { node, epoch, event } => {
                let n = &mut self.nodes[node];
                if n.running && n.epoch == epoch {
                    n.core.handle_timer(event, now_ms);
                    self.drain(node);
                }
            }
        }
        true
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now_us + d.as_micros() as u64;
        while self.step(until) {}
        self.now_us = until;
    }

    /// Runs until `done` holds (checked every 10 ms of virtual time) or `max` passed.
    /// Returns how long it took.
    pub fn run_until(&mut self, max: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let start = self.now_us;
        let deadline = start + max.as_micros() as u64;
        loop {
            if done(self) {
                return Some(Duration::from_micros(self.now_us - start));
            }
            if self.now_us >= deadline {
                return None;
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    /// True when every running node sees exactly `names` as Alive with complete metadata.
    pub fn all_see_alive(&self, names: &[&str]) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.running && names.contains(&n.name.as_str()))
            .all(|n| {
                let m = n.core.members();
                m.len() == names.len()
                    && m.iter().all(|v| {
                        v.status == MemberStatus::Alive
                            && names.contains(&v.meta.name.as_str())
                            && complete(&v.meta)
                    })
            })
    }

    /// Status of `name` as seen by node `i`.
    pub fn status_seen(&self, i: usize, name: &str) -> Option<MemberView> {
        self.members(i).into_iter().find(|v| v.meta.name == name)
    }
}

fn complete(m: &MemberMeta) -> bool {
    !m.api_addr.is_empty() && !m.gossip_addr.is_empty() && m.labels.contains_key("zone")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::derive_key;

    fn key() -> [u8; 32] {
        derive_key("sim-token")
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:02}")).collect()
    }

    /// Starts `n` nodes at t=0, all joining through node 0.
    fn cluster(cfg: SimConfig, n: usize) -> (Sim, Vec<String>) {
        let mut sim = Sim::new(cfg);
        let names = names(n);
        let seed = Sim::addr_of(0, 0);
        for (i, name) in names.iter().enumerate() {
            let seeds = if i == 0 { vec![] } else { vec![seed] };
            sim.add_node(name, key(), seeds);
        }
        (sim, names)
    }

    fn refs(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    fn converge(sim: &mut Sim, names: &[String], max: Duration) -> Duration {
        let n = refs(names);
        sim.run_until(max, |s| s.all_see_alive(&n))
            .unwrap_or_else(|| panic!("no convergence within {max:?}"))
    }

    #[test]
    fn twenty_nodes_join_through_one_seed_deterministically() {
        let run = || {
            let (mut sim, names) = cluster(
                SimConfig {
                    seed: 7,
                    ..Default::default()
                },
                20,
            );
            let t = converge(&mut sim, &names, Duration::from_secs(30));
            sim.run_for(Duration::from_secs(5));
            let errors: u64 = sim
                .nodes
                .iter()
                .map(|n| GossipStats::get(&n.stats.decode_errors))
                .sum();
            assert_eq!(errors, 0, "authenticated packets foca refused");
            (t, sim.trace.clone(), sim.delivered)
        };
        let (t1, trace1, delivered1) = run();
        let (t2, trace2, delivered2) = run();
        println!("sim: 20 nodes converged (all Alive, full metadata) in {t1:?}");
        assert!(
            t1 <= Duration::from_secs(3),
            "20-node formation took {t1:?}"
        );
        assert_eq!(t1, t2);
        assert_eq!(delivered1, delivered2);
        assert_eq!(trace1, trace2, "same seed, same trace");
        // 19 Joined events per node, nothing else while the cluster is stable.
        assert_eq!(trace1.len(), 20 * 19);
    }

    #[test]
    fn converges_with_loss_and_delay() {
        let cfg = SimConfig {
            seed: 11,
            loss: 0.10,
            delay_ms: (1, 50),
            ..Default::default()
        };
        let (mut sim, names) = cluster(cfg, 20);
        let t = converge(&mut sim, &names, Duration::from_secs(60));
        println!(
            "sim: 20 nodes, 10% loss, 1-50 ms delay: converged in {t:?} ({} dropped)",
            sim.dropped
        );
        // Stays converged: suspicions come and go under loss, but false Downs (each one forces
        // the member to rejoin under a new incarnation) stay rare.
        sim.run_for(Duration::from_secs(60));
        let rejoins: u64 = sim
            .nodes
            .iter()
            .map(|n| GossipStats::get(&n.stats.rejoins))
            .sum();
        println!("sim: 60 s more at 10% loss: {rejoins} false-Down rejoins");
        assert!(rejoins <= 2, "{rejoins} false Downs in 60 s");
        for i in 0..20 {
            let m = sim.members(i);
            assert_eq!(m.len(), 20);
            assert!(m.iter().all(|v| v.status != MemberStatus::Down));
        }
    }

    fn detection_time(cfg: SimConfig) -> Duration {
        let (mut sim, names) = cluster(cfg, 20);
        converge(&mut sim, &names, Duration::from_secs(30));
        sim.run_for(Duration::from_secs(2));
        let victim = 7;
        let killed_at = sim.now();
        sim.kill(victim);
        let others: Vec<usize> = (0..20).filter(|i| *i != victim).collect();
        let t = sim
            .run_until(Duration::from_secs(60), |s| {
                others.iter().all(|&i| {
                    s.status_seen(i, &names[victim])
                        .is_some_and(|v| v.status == MemberStatus::Down)
                })
            })
            .expect("victim never seen down by all");
        // since_ms tells when each member saw it go down.
        let since = sim.status_seen(0, &names[victim]).unwrap().since_ms;
        assert!(since >= EPOCH_MS + killed_at.as_millis() as u64);
        // The others stay Alive.
        let alive: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != names[victim])
            .collect();
        for &i in &others {
            let m = sim.members(i);
            assert_eq!(
                m.iter().filter(|v| v.status == MemberStatus::Alive).count(),
                19
            );
            assert!(m
                .iter()
                .filter(|v| v.status == MemberStatus::Alive)
                .all(|v| alive.contains(&v.meta.name.as_str())));
        }
        t
    }

    #[test]
    fn killed_node_is_seen_down_by_all_in_bounded_time() {
        let t = detection_time(SimConfig {
            seed: 3,
            ..Default::default()
        });
        println!("sim: kill detected by all 19 others in {t:?} (probe period 1 s)");
        assert!(t <= Duration::from_secs(12), "detection took {t:?}");

        let fast = detection_time(SimConfig {
            seed: 3,
            probe_period: Some(Duration::from_millis(500)),
            ..Default::default()
        });
        println!("sim: kill detected by all 19 others in {fast:?} (probe period 500 ms)");
        assert!(fast <= Duration::from_secs(6), "detection took {fast:?}");
    }

    #[test]
    fn restarted_node_is_alive_again_everywhere_under_its_name() {
        let (mut sim, names) = cluster(
            SimConfig {
                seed: 5,
                ..Default::default()
            },
            10,
        );
        converge(&mut sim, &names, Duration::from_secs(30));
        let old_inc = sim.nodes[4].core.identity().incarnation;

        // Killed, seen down, then restarted on new ports.
        sim.kill(4);
        sim.run_until(Duration::from_secs(30), |s| {
            (0..10).filter(|i| *i != 4).all(|i| {
                s.status_seen(i, &names[4])
                    .is_some_and(|v| v.status == MemberStatus::Down)
            })
        })
        .expect("seen down");
        sim.restart(4);
        let new_inc = sim.nodes[4].core.identity().incarnation;
        assert!(new_inc > old_inc);
        let t = converge(&mut sim, &names, Duration::from_secs(30));
        println!("sim: restarted node Alive again everywhere after {t:?}");
        for i in 0..10 {
            let v = sim.status_seen(i, &names[4]).unwrap();
            assert_eq!(v.incarnation, new_inc);
            assert_eq!(v.meta.gossip_addr, sim.addr(4).to_string());
            if i != 4 {
                assert!(sim.nodes[i].events.iter().any(
                    |(_, e)| matches!(e, MembershipEvent::Rejoined(v) if v.meta.name == names[4])
                ));
            }
        }

        // Restarted again at once, before anyone noticed: still one member, new incarnation.
        sim.kill(4);
        sim.restart(4);
        let newest = sim.nodes[4].core.identity().incarnation;
        let t = sim
            .run_until(Duration::from_secs(30), |s| {
                s.all_see_alive(&refs(&names))
                    && (0..10).all(|i| s.status_seen(i, &names[4]).unwrap().incarnation == newest)
            })
            .expect("quick restart not picked up");
        println!("sim: quick restart (never seen down) picked up everywhere after {t:?}");
    }

    #[test]
    fn a_healed_partition_reconverges() {
        let run = |seed: u64| {
            let (mut sim, names) = cluster(
                SimConfig {
                    seed,
                    ..Default::default()
                },
                6,
            );
            converge(&mut sim, &names, Duration::from_secs(30));
            sim.partition(&[0, 1], &[2, 3, 4, 5]);
            let split = sim.run_until(Duration::from_secs(60), |s| {
                s.status_seen(0, "node-02")
                    .is_some_and(|v| v.status == MemberStatus::Down)
                    && s.status_seen(2, "node-00")
                        .is_some_and(|v| v.status == MemberStatus::Down)
            });
            assert!(split.is_some(), "the sides never saw each other down");
            sim.heal();
            let n = refs(&names);
            let healed = sim.run_until(Duration::from_secs(60), |s| s.all_see_alive(&n));
            (
                healed.expect("no reconvergence after healing"),
                sim.trace.len(),
            )
        };
        let (t, events) = run(21);
        println!("sim: healed partition of 6 reconverged in {t:?}");
        assert_eq!(run(21), (t, events), "same seed, same run");
    }

    #[test]
    fn wrong_key_never_becomes_a_member() {
        let (mut sim, names) = cluster(
            SimConfig {
                seed: 9,
                ..Default::default()
            },
            6,
        );
        let evil = sim.add_node(
            "evil",
            derive_key("guessed-token"),
            vec![sim.addr(0), sim.addr(3)],
        );
        let t = converge(&mut sim, &names, Duration::from_secs(30));
        sim.run_for(Duration::from_secs(20));
        let _ = t;
        for i in 0..6 {
            assert!(sim.members(i).iter().all(|v| v.meta.name != "evil"));
        }
        assert_eq!(sim.members(evil).len(), 1);
        let rejected0 = GossipStats::get(&sim.nodes[0].stats.rejected_packets);
        let rejected3 = GossipStats::get(&sim.nodes[3].stats.rejected_packets);
        println!("sim: impostor rejected {rejected0} times by node 0, {rejected3} by node 3");
        assert!(rejected0 >= 10 && rejected3 >= 10);
        // Nobody ever answers the impostor.
        assert_eq!(GossipStats::get(&sim.nodes[evil].stats.packets_in), 0);
    }

    #[test]
    fn metadata_update_propagates() {
        let cfg = SimConfig {
            seed: 13,
            loss: 0.05,
            delay_ms: (1, 20),
            ..Default::default()
        };
        let (mut sim, names) = cluster(cfg, 20);
        converge(&mut sim, &names, Duration::from_secs(30));
        let mut meta = Sim::meta_for(&names[4], 4);
        meta.labels.insert("zone".into(), "moved".into());
        meta.roles = vec![crate::model::Role::Agent, crate::model::Role::Director];
        sim.update_meta(4, meta.clone());
        let t = sim
            .run_until(Duration::from_secs(30), |s| {
                (0..20).all(|i| {
                    s.status_seen(i, &names[4]).is_some_and(|v| {
                        v.meta.labels["zone"] == "moved" && v.meta.roles.len() == 2
                    })
                })
            })
            .expect("metadata update did not reach everyone");
        println!("sim: metadata update reached all 20 nodes in {t:?} (5% loss)");
        assert!(sim.nodes[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, MembershipEvent::Updated(v) if v.meta.name == names[4])));
    }

    #[test]
    fn node_joins_once_its_seed_comes_up() {
        let mut sim = Sim::new(SimConfig {
            seed: 21,
            ..Default::default()
        });
        let seed = sim.add_node("seed", key(), vec![]);
        sim.kill(seed);
        let late = sim.add_node("late", key(), vec![Sim::addr_of(seed, 1)]);
        sim.run_for(Duration::from_secs(10));
        assert_eq!(sim.members(late).len(), 1);
        sim.restart(seed);
        let t = sim
            .run_until(Duration::from_secs(10), |s| {
                s.all_see_alive(&["seed", "late"])
            })
            .expect("late joiner never joined");
        println!("sim: node joined {t:?} after its seed came up");
    }

    fn spread(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    }

    /// Timing over several seeds (deterministic, so the bounds cannot flake).
    #[test]
    fn timing_over_seeds() {
        let (mut form, mut lossy, mut det, mut det500) = (vec![], vec![], vec![], vec![]);
        for seed in 100..108 {
            let (mut sim, names) = cluster(
                SimConfig {
                    seed,
                    ..Default::default()
                },
                20,
            );
            form.push(converge(&mut sim, &names, Duration::from_secs(30)));
            let cfg = SimConfig {
                seed,
                loss: 0.10,
                delay_ms: (1, 50),
                ..Default::default()
            };
            let (mut sim, names) = cluster(cfg, 20);
            lossy.push(converge(&mut sim, &names, Duration::from_secs(60)));
            det.push(detection_time(SimConfig {
                seed,
                ..Default::default()
            }));
            det500.push(detection_time(SimConfig {
                seed,
                probe_period: Some(Duration::from_millis(500)),
                ..Default::default()
            }));
        }
        let (form, lossy, det, det500) = (spread(form), spread(lossy), spread(det), spread(det500));
        println!("sim timing over 8 seeds, 20 nodes (min, median, max):");
        println!("  formation, no loss:              {form:?}");
        println!("  formation, 10% loss, 1-50 ms:    {lossy:?}");
        println!("  kill seen Down by all, 1 s probe: {det:?}");
        println!("  kill seen Down by all, 500 ms:    {det500:?}");
        assert!(form.2 <= Duration::from_secs(3));
        assert!(lossy.2 <= Duration::from_secs(15));
        assert!(det.2 <= Duration::from_secs(12));
        assert!(det500.2 <= Duration::from_secs(6));
    }
}
