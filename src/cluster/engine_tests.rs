//! Tests of `GossipCore` (through the deterministic simulator).

use super::*;
use crate::cluster::member::MemberStatus;
use crate::cluster::sim::{Sim, SimConfig};
use crate::cluster::wire::derive_key;

#[test]
fn config_is_rederived_at_powers_of_two() {
    let buckets: Vec<u32> = [1, 4, 5, 7, 8, 20, 33, 100].map(size_bucket).to_vec();
    assert_eq!(buckets, vec![4, 4, 4, 4, 8, 16, 32, 64]);
    let c = derive_config(16, None);
    assert_eq!(c.probe_period, Duration::from_secs(1));
    assert!(c.max_packet_size.get() + wire::OVERHEAD <= MAX_DATAGRAM);
    assert!(c.max_transmissions.get() >= 4);
}

#[test]
fn custom_probe_period_scales_the_timeouts() {
    let base = derive_config(16, None);
    let fast = derive_config(16, Some(Duration::from_millis(500)));
    assert_eq!(fast.probe_period, Duration::from_millis(500));
    assert_eq!(fast.probe_rtt, base.probe_rtt / 2);
    assert!(fast.probe_rtt < fast.probe_period);
    let half = base.suspect_to_down_after.as_secs_f64() / 2.0;
    assert!((fast.suspect_to_down_after.as_secs_f64() - half).abs() < 1e-6);
}

#[test]
fn large_metadata_still_reaches_everyone() {
    let mut sim = Sim::new(SimConfig::default());
    let key = derive_key("k");
    let a = sim.add_node("a", key, vec![]);
    let mut nodes = vec![a];
    for name in ["b", "c", "d"] {
        nodes.push(sim.add_node(name, key, vec![sim.addr(a)]));
    }
    sim.run_until(Duration::from_secs(10), |s| {
        s.all_see_alive(&["a", "b", "c", "d"])
    })
    .expect("converged");
    let mut meta = Sim::meta_for("c", 2);
    meta.labels.insert("blob".into(), "x".repeat(2000));
    sim.update_meta(2, meta);
    let t = sim.run_until(Duration::from_secs(10), |s| {
        nodes.iter().all(|&i| {
            s.status_seen(i, "c")
                .is_some_and(|v| v.meta.labels.get("blob").is_some_and(|b| b.len() == 2000))
        })
    });
    assert!(t.is_some(), "large metadata did not spread");
}

#[test]
fn leaving_node_is_seen_down_and_stops_talking() {
    let mut sim = Sim::new(SimConfig::default());
    let key = derive_key("k");
    let a = sim.add_node("a", key, vec![]);
    let b = sim.add_node("b", key, vec![sim.addr(a)]);
    let c = sim.add_node("c", key, vec![sim.addr(a)]);
    sim.run_until(Duration::from_secs(10), |s| {
        s.all_see_alive(&["a", "b", "c"])
    })
    .expect("converged");
    sim.leave(c);
    // Well under the failure-detection time: the others were told.
    let t = sim.run_until(Duration::from_secs(1), |s| {
        [a, b].iter().all(|&i| {
            s.status_seen(i, "c")
                .is_some_and(|v| v.status == MemberStatus::Down)
        })
    });
    assert!(t.is_some(), "leave not seen within 1 s");
}
