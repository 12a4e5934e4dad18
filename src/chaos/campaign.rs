//! A linearizability campaign (`omnicloud chaos --history DIR`), the Jepsen shape: node
//! processes (in network namespaces with `--netns`, [`super::hosts`]), the register/CAS
//! workload recording a history ([`super::history`]), faults on a seeded schedule, and a
//! verdict from an independent checker (`checker/`, Porcupine) run on the history.
//!
//! Faults, each undone at its end and, whatever happens, at exit ([`Undo`]):
//! - `kill`: SIGKILL a random node, started again at the end of the fault;
//! - `pause`: SIGSTOP a random node (the leader half the time), SIGCONT at the end (the
//!   stale-leader test);
//! - `partition-leader`: the leader cut off from every other node (iptables DROP inside
//!   the namespaces, both directions);
//! - `partition-minority`: a random minority cut off from the majority;
//! - `partition-bridge`: two halves that cannot see each other, and one node (the bridge)
//!   that sees both;
//! - `partition-ring`: each node sees only its two neighbours in a random ring;
//! - `latency`: 150 ms ±30 ms delay and 5% loss (tc netem) on a random node, where the
//!   kernel has netem (refused up front where it has not);
//! - `loss`: 20% of a random node's packets dropped both ways (iptables statistic).
//!
//! The report: operations and their outcomes, availability during each fault kind and
//! between faults, recovery time after each fault (from its end to the first acknowledged
//! write), and the checker's verdict (PASS only when it says valid).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use super::history::{self, Target, Workload};
use super::hosts::Hosts;
use super::local::LocalCluster;
use super::watch::{self, WatchReport, Watchers};
use super::ChaosArgs;

/// A fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    Pause,
    PartitionLeader,
    PartitionMinority,
    PartitionBridge,
    PartitionRing,
    Latency,
    Loss,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionMinority => "partition-minority",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionRing => "partition-ring",
            Fault::Latency => "latency",
            Fault::Loss => "loss",
        }
    }

    /// Needs nodes in network namespaces (it cuts or slows packets).
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader
                | Fault::PartitionMinority
                | Fault::PartitionBridge
                | Fault::PartitionRing
                | Fault::Latency
                | Fault::Loss
        )
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRecord {
    pub kind: Fault,
    /// The nodes it hit (the cut-off side of a partition).
    pub nodes: Vec<String>,
    /// The Raft leader just before it.
    pub leader: Option<String>,
    pub start_secs: f64,
    pub end_secs: f64,
    /// From the start of the fault to the first write or CAS acknowledged among those
    /// invoked after it: how long writes stopped (a leader election, a failover).
    pub writes_resumed_after_secs: Option<f64>,
    /// From the end of the fault to the first acknowledged write or CAS.
    pub recovered_after_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    /// A fault kind, or "no fault".
    pub during: String,
    pub operations: u64,
    pub ok: u64,
    pub fraction_ok: f64,
    /// The same for operations sent to nodes the fault did not hit (the majority side of a
    /// partition, the nodes not paused or killed).
    pub elsewhere_operations: u64,
    pub elsewhere_ok: u64,
    pub elsewhere_fraction_ok: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignReport {
    pub nodes: usize,
    pub seed: u64,
    pub netns: bool,
    /// The deliberate break was on (`--break-stale-reads`): the verdict should be invalid.
    pub stale_reads_break: bool,
    pub faults: Vec<FaultRecord>,
    pub outcomes: Outcomes,
    pub availability: Vec<Availability>,
    pub recovery_max_secs: Option<f64>,
    /// What the watchers saw (absent with `--watchers 0`).
    pub watch: Option<WatchReport>,
    /// The checker's verdict file as it wrote it (verdict, opsChecked, operations, ...).
    pub checker: Value,
    /// valid, invalid or unknown (the checker's word).
    pub linearizability: String,
    pub history_dir: PathBuf,
    /// PASS when the checker said valid.
    pub verdict: String,
    pub duration_secs: f64,
}

/// Undoes the active faults when dropped: SIGCONT to paused nodes, partitions healed,
/// latency removed. Killed nodes are started again by the schedule; at exit the cluster's
/// own drop ends them all.
struct Undo<'a> {
    hosts: Option<&'a Hosts>,
    paused: Vec<u32>,
    slowed: Vec<usize>,
    cut: bool,
}

impl Undo<'_> {
    fn all(&mut self) {
        for pid in self.paused.drain(..) {
            // SAFETY: kill(2) on a node process this run started.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
        if let Some(h) = self.hosts {
            for i in self.slowed.drain(..) {
                h.unslow(i);
            }
            if std::mem::take(&mut self.cut) {
                if let Err(e) = h.heal() {
                    super::progress(&format!("healing the partition: {e}"));
                }
            }
        }
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        self.all();
    }
}

/// The node the cluster calls its Raft leader, asked of every live node in turn.
fn leader(cluster: &LocalCluster) -> Option<usize> {
    (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].alive())
        .find_map(|i| {
            let st = cluster.client(i).get_json("/v1/cluster/status").ok()?;
            let name = st["raft"]["members"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "leader")?["name"]
                .as_str()?
                .to_string();
            cluster.nodes.iter().position(|n| n.name == name)
        })
}

/// The revision of the registers (a consistent list, any node that answers, for up to a
/// minute): the store's revision, or with `newest` the highest resourceVersion among them.
fn registers_revision(cluster: &LocalCluster, newest: bool) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].alive())
            .find_map(|i| {
                cluster
                    .client(i)
                    .get_json("/v1/namespaces/default/configmaps?consistent=true")
                    .ok()
            });
        if let Some(list) = list {
            let parse = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
            return Ok(if newest {
                list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|o| {
                        o["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("chaos-reg-"))
                    })
                    .filter_map(|o| parse(&o["metadata"]["resourceVersion"]))
                    .max()
                    .unwrap_or(0)
            } else {
                parse(&list["metadata"]["revision"]).unwrap_or(0)
            });
        }
        if Instant::now() > deadline {
            return Err("no node answered a consistent list of the registers for 60s".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where the checker is: --checker, else `OMNICLOUD_CHECKER`, else `target/checker/checker`
/// beside this build (`scripts/build-checker.sh` puts it there).
pub fn checker_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("OMNICLOUD_CHECKER") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|target| target.join("checker/checker"))
        .unwrap_or_default()
}

pub fn run(args: &ChaosArgs, dir: &Path) -> Result<CampaignReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--history {}: {e}", dir.display()))?;
    let checker = checker_path(args.checker.as_deref());
    if !checker.is_file() {
        return Err(format!(
            "--checker: {} is not there; build it with scripts/build-checker.sh (needs golang-go)",
            checker.display()
        ));
    }
    let hosts = if args.netns {
        Some(Hosts::new(args.nodes).map_err(|e| format!("--netns: {e}"))?)
    } else {
        None
    };
    if args.faults.contains(&Fault::Latency) && !hosts.as_ref().is_some_and(Hosts::has_netem) {
        return Err(
            "--faults latency: this kernel has no netem (sch_netem); use loss instead".into(),
        );
    }
    let base = dir.join("nodes");
    let env: &[(&str, &str)] = if args.break_stale_reads {
        &[("OMNICLOUD_TEST_STALE_FOLLOWER_READS", "1")]
    } else {
        &[]
    };
    super::progress(&format!(
        "starting {} nodes under {}",
        args.nodes,
        base.display()
    ));
    let mut cluster = LocalCluster::start_on(
        args.nodes,
        &base,
        &args.roles,
        &args.cidr,
        &args.bridge_prefix,
        None,
        hosts.as_ref(),
        env,
    )?;
    let result = campaign(args, dir, &mut cluster, hosts.as_ref(), &checker);
    cluster.shutdown();
    drop(hosts);
    result
}

fn campaign(
    args: &ChaosArgs,
    dir: &Path,
    cluster: &mut LocalCluster,
    hosts: Option<&Hosts>,
    checker: &Path,
) -> Result<CampaignReport, String> {
    let started = Instant::now();
    let targets = || {
        cluster
            .nodes
            .iter()
            .map(|n| Target {
                name: n.name.clone(),
                api: n.api.clone(),
                ca: crate::client::config::ca_of(&n.dir),
            })
            .collect::<Vec<_>>()
    };
    let watchers = if args.watchers > 0 {
        let since = registers_revision(cluster, false)? + 1;
        Some(Watchers::start(
            targets(),
            &cluster.token,
            args.watchers,
            since,
            args.seed,
        ))
    } else {
        None
    };
    let targets = targets();
    let history_path = dir.join("history.jsonl");
    let workload = Workload::start(
        targets,
        &cluster.token,
        args.clients,
        args.keys,
        args.op_timeout,
        args.seed,
        &history_path,
    )?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut undo = Undo {
        hosts,
        paused: Vec::new(),
        slowed: Vec::new(),
        cut: false,
    };
    let mut faults = Vec::new();
    for k in 0..args.kills {
        std::thread::sleep(args.interval - args.down);
        let kind = args.faults[k % args.faults.len()];
        let was_leader = leader(cluster).map(|i| cluster.nodes[i].name.clone());
        let (start, nodes, killed) = inject(cluster, &mut undo, &mut rng, kind, &workload)?;
        super::progress(&format!(
            "fault {}/{}: {} {}",
            k + 1,
            args.kills,
            kind.name(),
            nodes.join(",")
        ));
        std::thread::sleep(args.down);
        undo.all();
        if let Some(i) = killed {
            cluster.restart(i)?;
        }
        faults.push(Applied {
            kind,
            nodes,
            start,
            end: workload.now(),
            leader: was_leader,
        });
    }
    // Time to recover after the last fault, with the clients still running.
    std::thread::sleep(args.interval.min(Duration::from_secs(10)));
    drop(undo);
    let acknowledged = workload.acknowledged();
    let events = workload.stop();
    let watch = match watchers {
        Some(w) => {
            let last = registers_revision(cluster, true)?;
            super::progress(&format!(
                "waiting for the watchers to reach revision {last}"
            ));
            let (seen, reconnects) = w.finish(last, Duration::from_secs(30));
            Some(watch::judge(&seen, &acknowledged, reconnects))
        }
        None => None,
    };
    super::progress(&format!(
        "checking {} history events with {}",
        events.len(),
        checker.display()
    ));
    let verdict_path = dir.join("verdict.json");
    let status = Command::new(checker)
        .arg(&history_path)
        .arg(&verdict_path)
        .arg(dir.join("timeline.html"))
        // Its summary line goes with the progress, not into the report on stdout.
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("running the checker {}: {e}", checker.display()))?;
    let verdict: Value = std::fs::read(&verdict_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("the checker wrote no verdict ({status}); see its output above"))?;
    let linearizability = verdict["verdict"].as_str().unwrap_or("unknown").to_string();
    let mut r = report(
        args,
        dir,
        faults,
        &events,
        verdict,
        linearizability,
        hosts.is_some(),
        started,
    );
    if let Some(w) = watch {
        if !w.ok {
            r.verdict = "FAIL".into();
        }
        r.watch = Some(w);
    }
    Ok(r)
}

/// A fault as it was applied: the nodes hit, its start and end on the history's clock
/// (nanoseconds), the leader just before it.
struct Applied {
    kind: Fault,
    nodes: Vec<String>,
    start: u64,
    end: u64,
    leader: Option<String>,
}

/// Applies one fault; (its start on the history's clock, the nodes hit, the node to start
/// again at its end).
fn inject(
    cluster: &mut LocalCluster,
    undo: &mut Undo,
    rng: &mut StdRng,
    kind: Fault,
    workload: &Workload,
) -> Result<(u64, Vec<String>, Option<usize>), String> {
    let n = cluster.nodes.len();
    let leader = leader(cluster);
    let random = rng.random_range(0..n);
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    let start = workload.now();
    match kind {
        Fault::Kill => {
            cluster.nodes[random].kill9();
            Ok((start, vec![name(random)], Some(random)))
        }
        Fault::Pause => {
            let victim = if rng.random_bool(0.5) {
                leader.unwrap_or(random)
            } else {
                random
            };
            if let Some(pid) = cluster.nodes[victim].pid() {
                // SAFETY: kill(2) on a node process this run started.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                undo.paused.push(pid);
            }
            Ok((start, vec![name(victim)], None))
        }
        Fault::PartitionLeader
        | Fault::PartitionMinority
        | Fault::PartitionBridge
        | Fault::PartitionRing => {
            let hosts = undo.hosts.ok_or("partitions need --netns")?;
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            // The pairs cut apart, and the nodes the fault is said to hit.
            let (pairs, hit) = match kind {
                Fault::PartitionLeader => {
                    let l = leader.unwrap_or(random);
                    (super::hosts::across(n, &[l]), vec![l])
                }
                Fault::PartitionMinority => {
                    let side = order[..(n - 1) / 2].to_vec();
                    (super::hosts::across(n, &side), side)
                }
                Fault::PartitionBridge => (super::hosts::bridge(&order), vec![order[0]]),
                _ => (super::hosts::ring(&order), Vec::new()),
            };
            undo.cut = true;
            hosts.cut(&pairs)?;
            Ok((start, hit.into_iter().map(name).collect(), None))
        }
        Fault::Latency => {
            let hosts = undo.hosts.ok_or("latency needs --netns")?;
            undo.slowed.push(random);
            hosts.slow(random, 150, 5)?;
            Ok((start, vec![name(random)], None))
        }
        Fault::Loss => {
            let hosts = undo.hosts.ok_or("loss needs --netns")?;
            undo.cut = true;
            hosts.lose(random, 20)?;
            Ok((start, vec![name(random)], None))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &ChaosArgs,
    dir: &Path,
    faults: Vec<Applied>,
    events: &[history::Event],
    checker: Value,
    linearizability: String,
    netns: bool,
    started: Instant,
) -> CampaignReport {
    let secs = |ns: u64| ns as f64 / 1e9;
    let records: Vec<FaultRecord> = faults
        .iter()
        .map(|f| FaultRecord {
            kind: f.kind,
            leader: f.leader.clone(),
            nodes: f.nodes.clone(),
            start_secs: secs(f.start),
            end_secs: secs(f.end),
            writes_resumed_after_secs: history::first_write_after(events, f.start)
                .map(|t| secs(t.saturating_sub(f.start))),
            recovered_after_secs: history::first_write_after(events, f.end)
                .map(|t| secs(t.saturating_sub(f.end))),
        })
        .collect();
    let mut availability = Vec::new();
    for kind in &args.faults {
        let (mut ops, mut ok, mut away, mut away_ok) = (0, 0, 0, 0);
        for f in faults.iter().filter(|f| f.kind == *kind) {
            let (d, o) = history::availability(events, f.start, f.end, &[]);
            let (e, eo) = history::availability(events, f.start, f.end, &f.nodes);
            (ops, ok, away, away_ok) = (ops + d, ok + o, away + e, away_ok + eo);
        }
        if availability
            .iter()
            .any(|a: &Availability| a.during == kind.name())
        {
            continue;
        }
        let mut a = figure(kind.name(), ops, ok);
        a.elsewhere_operations = away;
        a.elsewhere_ok = away_ok;
        a.elsewhere_fraction_ok = fraction(away, away_ok);
        availability.push(a);
    }
    let (all, all_ok) = history::availability(events, 0, u64::MAX, &[]);
    let (during, during_ok) = availability
        .iter()
        .fold((0, 0), |(d, o), a| (d + a.operations, o + a.ok));
    availability.push(figure("no fault", all - during, all_ok - during_ok));
    let mut outcomes = Outcomes::default();
    for e in events {
        match e.kind {
            "invoke" => outcomes.invoked += 1,
            "ok" => outcomes.ok += 1,
            "fail" => outcomes.fail += 1,
            _ => outcomes.unknown += 1,
        }
    }
    let recovery_max_secs = records
        .iter()
        .filter_map(|r| r.recovered_after_secs)
        .max_by(f64::total_cmp);
    CampaignReport {
        nodes: args.nodes,
        seed: args.seed,
        netns,
        stale_reads_break: args.break_stale_reads,
        faults: records,
        outcomes,
        availability,
        recovery_max_secs,
        watch: None,
        checker,
        verdict: if linearizability == "valid" {
            "PASS"
        } else {
            "FAIL"
        }
        .into(),
        linearizability,
        history_dir: dir.to_path_buf(),
        duration_secs: started.elapsed().as_secs_f64(),
    }
}

fn fraction(operations: u64, ok: u64) -> f64 {
    if operations == 0 {
        0.0
    } else {
        ok as f64 / operations as f64
    }
}

fn figure(during: &str, operations: u64, ok: u64) -> Availability {
    Availability {
        during: during.into(),
        operations,
        ok,
        fraction_ok: fraction(operations, ok),
        elsewhere_operations: operations,
        elsewhere_ok: ok,
        elsewhere_fraction_ok: fraction(operations, ok),
    }
}

/// The campaign report for people.
pub fn render(r: &CampaignReport) -> String {
    let mut out = format!(
        "campaign: {} nodes{}, seed {}, {} faults in {:.0}s{}\n\n",
        r.nodes,
        if r.netns {
            " in network namespaces"
        } else {
            " on loopback"
        },
        r.seed,
        r.faults.len(),
        r.duration_secs,
        if r.stale_reads_break {
            " (DELIBERATE BREAK: stale follower reads)"
        } else {
            ""
        }
    );
    for f in &r.faults {
        out.push_str(&format!(
            "  {:>6.1}s-{:>6.1}s  {:<19} {:<16} leader was {:<8} writes resumed {}, recovered {}\n",
            f.start_secs,
            f.end_secs,
            f.kind.name(),
            f.nodes.join(","),
            f.leader.as_deref().unwrap_or("-"),
            f.writes_resumed_after_secs
                .map(|s| format!("after {s:.2}s"))
                .unwrap_or_else(|| "-".into()),
            f.recovered_after_secs
                .map(|s| format!("after {s:.2}s"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    let o = &r.outcomes;
    out.push_str(&format!(
        "\noperations: {} invoked: {} ok, {} fail, {} unknown\navailability (answered: ok or a definite refusal, of those invoked in the window):\n",
        o.invoked, o.ok, o.fail, o.unknown
    ));
    for a in &r.availability {
        out.push_str(&format!(
            "  {:<19} {:>5.1}% of {:<6} on the nodes it did not hit: {:>5.1}% of {}\n",
            a.during,
            a.fraction_ok * 100.0,
            a.operations,
            a.elsewhere_fraction_ok * 100.0,
            a.elsewhere_operations
        ));
    }
    out.push_str(&format!(
        "\nchecker: {} ({} operations checked); history, verdict.json and timeline.html in {}\n",
        r.linearizability,
        r.checker["opsChecked"],
        r.history_dir.display()
    ));
    if let Some(ops) = r.checker["operations"].as_array() {
        out.push_str("operations the checker could not linearize (earliest first):\n");
        for op in ops {
            out.push_str(&format!(
                "  history lines {}..{}  process {}  {} {} {} -> {} on {}\n",
                op["invokeIndex"],
                op["completeIndex"],
                op["process"],
                op["f"].as_str().unwrap_or_default(),
                op["key"].as_str().unwrap_or_default(),
                op["value"].as_str().unwrap_or_default(),
                op["type"].as_str().unwrap_or_default(),
                op["node"].as_str().unwrap_or_default(),
            ));
        }
    }
    if let Some(w) = &r.watch {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join("; ")
            }
        };
        out.push_str(&format!(
            "watch: {} watchers, {} events, {} reconnections; missed: {}; duplicates: {}; out of order: {}; disagreements: {}\n",
            w.watchers,
            w.events_seen,
            w.reconnects,
            list(&w.missed),
            list(&w.duplicates),
            list(&w.out_of_order),
            list(&w.disagreements)
        ));
    }
    out.push_str(&format!("\nverdict: {}\n", r.verdict));
    out
}
