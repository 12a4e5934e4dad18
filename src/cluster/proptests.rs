//! Property tests of what a peer can put on the gossip socket: arbitrary datagrams, and
//! authenticated datagrams (a token holder, or a bug) whose bodies are arbitrary or are
//! real protocol traffic with bytes changed. The core must never panic, and must take part
//! with nobody it would refuse. `PROPTEST_CASES=N` runs more cases.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use proptest::collection::vec;
use proptest::prelude::*;

use crate::cluster::engine::{CoreConfig, GossipCore};
use crate::cluster::identity::{ClusterId, NodeIdentity};
use crate::cluster::member::MemberMeta;
use crate::cluster::wire::{self, Sender, KIND_CONTROL, KIND_FOCA, OVERHEAD, TAG_LEN};
use crate::cluster::GossipStats;

const CLUSTER: [u8; 16] = [5; 16];

fn key() -> [u8; 32] {
    wire::derive_key("proptest")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn core(name: &str, port: u16, node_id: u64, seeds: Vec<SocketAddr>) -> GossipCore {
    let cfg = CoreConfig {
        identity: NodeIdentity::new(name, addr(port), 1_000),
        key: key(),
        seeds,
        meta: MemberMeta {
            name: name.into(),
            node_id,
            ..Default::default()
        },
        probe_period: None,
        rng_seed: node_id,
        cluster: ClusterId::known(CLUSTER),
    };
    GossipCore::new(cfg, Arc::new(GossipStats::default()), 1_000)
}

/// Real traffic of a two-node join (hello, announce, feed, metadata, pings), recorded once.
fn corpus() -> &'static Vec<Vec<u8>> {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut a = core("a", 1, 1, vec![addr(2)]);
        let mut b = core("b", 2, 2, vec![]);
        let mut seen = Vec::new();
        let mut now = 1_000;
        for _ in 0..20 {
            now += 100;
            let out_a = a.take_outputs();
            let out_b = b.take_outputs();
            for (to, data) in out_a.sends {
                if to == addr(2) {
                    b.handle_packet(addr(1), &data, now);
                }
                seen.push(data);
            }
            for (to, data) in out_b.sends {
                if to == addr(1) {
                    a.handle_packet(addr(2), &data, now);
                }
                seen.push(data);
            }
            for (_, t) in out_a.timers {
                a.handle_timer(t, now);
            }
            for (_, t) in out_b.timers {
                b.handle_timer(t, now);
            }
        }
        assert!(seen.len() > 5, "the join produced traffic");
        seen
    })
}

fn sender_strategy() -> impl Strategy<Value = Sender> {
    (
        prop_oneof![Just(CLUSTER), Just([0; 16]), any::<[u8; 16]>()],
        any::<u64>(),
    )
        .prop_map(|(cluster, node_id)| Sender { cluster, node_id })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases(256)))]

    /// Unauthenticated bytes: refused before anything is decoded.
    #[test]
    fn arbitrary_datagrams_are_refused_without_panic(data in vec(any::<u8>(), 0..2048)) {
        let mut c = core("n", 9, 9, vec![]);
        c.handle_packet(addr(7), &data, 2_000);
        prop_assert!(wire::open(&key(), &data).is_err());
        prop_assert_eq!(GossipStats::get(&c.stats().rejected_packets), 1);
        prop_assert_eq!(c.num_active(), 0);
    }

    /// Authenticated datagrams with arbitrary bodies and headers never panic the core.
    #[test]
    fn authenticated_garbage_never_panics_the_core(
        kind in prop_oneof![Just(KIND_FOCA), Just(KIND_CONTROL), any::<u8>()],
        sender in sender_strategy(),
        body in vec(any::<u8>(), 0..1400),
    ) {
        let mut c = core("n", 9, 9, vec![]);
        let data = wire::seal(&key(), &sender, kind, &body);
        c.handle_packet(addr(7), &data, 2_000);
        let _ = c.take_outputs();
        prop_assert!(c.members().len() <= 2);
    }

    /// Real traffic with bytes changed (then sealed again, as a token holder could) never
    /// panics the core; a sender of another cluster never becomes a member.
    #[test]
    fn mutated_real_traffic_never_panics_the_core(
        pick in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        foreign in any::<bool>(),
    ) {
        let original = pick.get(corpus());
        let mut body = original[OVERHEAD - TAG_LEN..original.len() - TAG_LEN].to_vec();
        if !body.is_empty() {
            for (at, byte) in &flips {
                let i = at.index(body.len());
                body[i] ^= *byte;
            }
        }
        let sender = Sender {
            cluster: if foreign { [6; 16] } else { CLUSTER },
            node_id: 1,
        };
        let mut c = core("b", 2, 2, vec![]);
        c.handle_packet(addr(1), &wire::seal(&key(), &sender, original[0], &body), 2_000);
        let _ = c.take_outputs();
        if foreign {
            prop_assert_eq!(c.num_active(), 0);
        }
    }
}
