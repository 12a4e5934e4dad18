//! The watch workload of a campaign: watchers follow the registers (`GET /v1/watch`,
//! ConfigMaps of namespace default) on random nodes, reconnecting (to another random node,
//! `since=` the revision after the last one seen) whenever a stream ends, fails or its
//! timeout runs out, for the whole campaign and until they reach the final revision.
//! Then [`judge`]: every watcher must have seen every revision of the registers, in
//! order, exactly once, and the same change at the same revision as the others; every
//! acknowledged write's revision must be among them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::history::Target;
use crate::client::Client;

/// What one watcher saw: (revision, register, value), in arrival order.
pub type Seen = Vec<(u64, String, String)>;

struct Shared {
    targets: Vec<Target>,
    token: String,
    stop: AtomicBool,
    /// Watchers stop once they have seen this revision (set at the end), or at `stop`.
    until: AtomicU64,
}

pub struct Watchers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<(Seen, u64)>>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchReport {
    pub watchers: usize,
    pub reconnects: u64,
    pub events_seen: u64,
    /// Revisions a watcher got twice.
    pub duplicates: Vec<String>,
    /// Revisions a watcher got after a later one.
    pub out_of_order: Vec<String>,
    /// Revisions of the registers (seen by another watcher, or acknowledged to a client)
    /// that a watcher never got.
    pub missed: Vec<String>,
    /// Revisions two watchers saw as different changes.
    pub disagreements: Vec<String>,
    pub ok: bool,
}

impl Watchers {
    /// Starts `n` watchers from `since` (the revision after the registers were set).
    pub fn start(targets: Vec<Target>, token: &str, n: usize, since: u64, seed: u64) -> Watchers {
        let shared = Arc::new(Shared {
            targets,
            token: token.to_string(),
            stop: AtomicBool::new(false),
            until: AtomicU64::new(u64::MAX),
        });
        let threads = (0..n)
            .map(|w| {
                let s = shared.clone();
                std::thread::spawn(move || follow(&s, since, seed.wrapping_add(w as u64 * 7919)))
            })
            .collect();
        Watchers { shared, threads }
    }

    /// Lets the watchers run until each has seen revision `last` (or `limit` passed), then
    /// returns what each saw and the reconnections.
    pub fn finish(self, last: u64, limit: Duration) -> (Vec<Seen>, u64) {
        self.shared.until.store(last, Ordering::Relaxed);
        let deadline = Instant::now() + limit;
        let shared = self.shared.clone();
        let stopper = std::thread::spawn(move || {
            while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            shared.stop.store(true, Ordering::Relaxed);
        });
        let mut all = Vec::new();
        let mut reconnects: u64 = 0;
        for t in self.threads {
            if let Ok((seen, r)) = t.join() {
                all.push(seen);
                reconnects += r;
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = stopper.join();
        (all, reconnects)
    }
}

fn follow(s: &Shared, since: u64, seed: u64) -> (Seen, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: Seen = Vec::new();
    let mut next = since;
    let mut reconnects: u64 = 0;
    let done = |next: u64| s.stop.load(Ordering::Relaxed) || next > s.until.load(Ordering::Relaxed);
    while !done(next) {
        let node = rng.random_range(0..s.targets.len());
        // Each stream lasts at most a few seconds: a reconnection is part of the test.
        let client = Client::with_ca(
            &s.targets[node].api,
            Some(s.token.clone()),
            s.targets[node].ca.clone(),
        )
        .with_timeout(Duration::from_secs(3));
        let path = format!("/v1/watch?kind=configmaps&namespace=default&since={next}");
        let _ = client.stream(&path, |line| {
            let Some(revision) = line["revision"].as_u64() else {
                return false;
            };
            let name = line["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default();
            if name.starts_with("chaos-reg-") {
                let value = line["object"]["data"]["v"].as_str().unwrap_or_default();
                seen.push((revision, name.to_string(), value.to_string()));
            }
            next = next.max(revision + 1);
            !done(next)
        });
        reconnects += 1;
        if !done(next) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (seen, reconnects.saturating_sub(1))
}

/// The verdict on what the watchers saw, given the revisions acknowledged to clients.
pub fn judge(all: &[Seen], acknowledged: &BTreeSet<u64>, reconnects: u64) -> WatchReport {
    let mut report = WatchReport {
        watchers: all.len(),
        reconnects,
        ..WatchReport::default()
    };
    let mut truth: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for (w, seen) in all.iter().enumerate() {
        report.events_seen += seen.len() as u64;
        let mut last = 0;
        let mut got = BTreeSet::new();
        for (rev, key, value) in seen {
            if !got.insert(*rev) {
                report
                    .duplicates
                    .push(format!("watcher {w}: revision {rev}"));
            } else if *rev < last {
                report
                    .out_of_order
                    .push(format!("watcher {w}: revision {rev} after {last}"));
            }
            last = last.max(*rev);
            match truth.get(rev) {
                Some((k, v)) if (k, v) != (key, value) => report.disagreements.push(format!(
                    "revision {rev}: {k}={v} and {key}={value} (watcher {w})"
                )),
                _ => {
                    truth.insert(*rev, (key.clone(), value.clone()));
                }
            }
        }
    }
    let every: BTreeSet<u64> = truth
        .keys()
        .copied()
        .chain(acknowledged.iter().copied())
        .collect();
    for (w, seen) in all.iter().enumerate() {
        let got: BTreeSet<u64> = seen.iter().map(|(r, _, _)| *r).collect();
        for rev in every.difference(&got) {
            report.missed.push(format!("watcher {w}: revision {rev}"));
        }
    }
    report.ok = report.duplicates.is_empty()
        && report.out_of_order.is_empty()
        && report.missed.is_empty()
        && report.disagreements.is_empty();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: u64, v: &str) -> (u64, String, String) {
        (rev, "chaos-reg-0".into(), v.into())
    }

    #[test]
    fn gaps_repeats_reorders_and_disagreements_are_found() {
        let acked = BTreeSet::from([2, 3]);
        let good = vec![ev(2, "1"), ev(3, "2")];
        assert!(judge(&[good.clone(), good.clone()], &acked, 0).ok);
        let r = judge(&[good.clone(), vec![ev(3, "2")]], &acked, 1);
        assert_eq!(r.missed, ["watcher 1: revision 2"]);
        let r = judge(&[vec![ev(2, "1"), ev(3, "2"), ev(3, "2")]], &acked, 0);
        assert_eq!(r.duplicates, ["watcher 0: revision 3"]);
        let r = judge(&[vec![ev(3, "2"), ev(2, "1")]], &acked, 0);
        assert_eq!(r.out_of_order, ["watcher 0: revision 2 after 3"]);
        let r = judge(&[good, vec![ev(2, "1"), ev(3, "4")]], &acked, 0);
        assert_eq!(r.disagreements.len(), 1);
        assert!(!r.ok);
    }
}
