//! `omnicloud chaos`: a resilience run with a verdict. It starts a cluster of local node
//! processes ([`local`]), applies a workload and waits for it, then, while a stream of API
//! writes runs against random nodes, kills random nodes with SIGKILL on a schedule (seeded,
//! so a run can be repeated) and starts them again. Observers ([`observe`]) sample the Raft
//! leader, the workloads' readiness and the containers running on every node. The report
//! says what a tester needs: writes acknowledged vs found afterwards (a consistent read
//! through the leader), how long each recovery took, leader changes, and any invariant
//! broken (a lost acknowledged write, one identity running twice, a workload that did not
//! come back). Exit status 1 when an invariant broke.
//!
//! With `--history DIR` it runs a linearizability campaign instead ([`campaign`]): nodes in
//! network namespaces ([`hosts`]), the register/CAS workload and its history ([`history`]),
//! partitions, pauses, kills and loss, and the verdict of the independent checker
//! (`checker/`, Porcupine).

pub mod campaign;
pub mod history;
pub mod hosts;
pub mod local;
pub mod observe;
pub mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use local::LocalCluster;

/// What a chaos run kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Victims {
    /// Node processes (SIGKILL, then started again after --down).
    Nodes,
    /// Container instances' processes (their agent restarts them).
    Instances,
    /// VM instances' VMM processes (their director restarts them).
    Vms,
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// What to kill.
    #[arg(long, value_enum, default_value = "nodes")]
    pub kill: Victims,
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// How many kills.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Time between kills.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How long a killed node stays down before it is started again.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub down: Duration,
    /// Seed for the choice of victims (the same seed kills the same nodes in order).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Roles of every node.
    #[arg(long, default_value = "orchestrator,agent")]
    pub roles: String,
    /// Only kill nodes whose index is in this list (e.g. 1,2); default: any.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<usize>,
    /// Workload YAML applied before the chaos starts; its Deployments and StatefulSets must
    /// be back at their desired replicas at the end.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// OCI image layout imported into every node (the workload's images).
    #[arg(long)]
    pub import: Option<PathBuf>,
    /// API writes per second during the run.
    #[arg(long, default_value_t = 10)]
    pub writes_per_sec: u32,
    /// How long the workloads get to recover after the last restart.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Where the nodes keep their data (default: a new temp dir, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cluster CIDR of the local cluster (it must not overlap another on this host).
    #[arg(long, default_value = "10.66.0.0/16")]
    pub cidr: String,
    /// Bridge name prefix (node i gets PREFIX<i>).
    #[arg(long, default_value = "ochaos")]
    pub bridge_prefix: String,
    /// Keep the data dirs (logs) after the run.
    #[arg(long)]
    pub keep: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: crate::client::Format,
    /// A linearizability campaign instead of the kill run: the register/CAS workload
    /// records its history in DIR (history.jsonl), faults from --faults hit the nodes
    /// (--kills of them, one every --interval, each lasting --down), and the checker
    /// writes DIR/verdict.json and DIR/timeline.html. Node data goes to DIR/nodes.
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// The faults of a campaign, taken in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,pause")]
    pub faults: Vec<campaign::Fault>,
    /// Run the campaign's nodes in network namespaces joined by a bridge (needed for the
    /// partition and latency faults; root, ip, iptables, tc, nsenter).
    #[arg(long)]
    pub netns: bool,
    /// Concurrent clients of the register/CAS workload.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Watchers following the registers through the campaign (0: none); each must see
    /// every revision in order, exactly once, across reconnections.
    #[arg(long, default_value_t = 2)]
    pub watchers: usize,
    /// Registers (keys) of the workload.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// Timeout of one client operation (a write that times out is recorded as unknown).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub op_timeout: Duration,
    /// The linearizability checker (default: $OMNICLOUD_CHECKER, else
    /// target/checker/checker beside this build; scripts/build-checker.sh makes it).
    #[arg(long)]
    pub checker: Option<PathBuf>,
    /// TEST ONLY: break the system on purpose: followers answer consistent reads from
    /// their local state without a read index (OMNICLOUD_TEST_STALE_FOLLOWER_READS=1 on
    /// every node). The checker must then judge the history invalid.
    #[arg(long)]
    pub break_stale_reads: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kill {
    pub at_secs: f64,
    /// The node, or the instance, killed.
    pub node: String,
    /// From the kill until every workload was back at its desired replicas.
    pub recovered_after_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub nodes: usize,
    pub seed: u64,
    pub kills: Vec<Kill>,
    pub writes_acknowledged: u64,
    pub writes_failed: u64,
    pub writes_found: u64,
    pub writes_lost: Vec<String>,
    pub leader_changes: u64,
    pub term_start: u64,
    pub term_end: u64,
    pub recovery_median_secs: Option<f64>,
    pub recovery_max_secs: Option<f64>,
    /// Workloads not at their desired replicas at the end.
    pub not_restored: Vec<String>,
    /// Instance names seen running on two nodes at once.
    pub duplicate_identities: Vec<String>,
    pub verdict: String,
    pub duration_secs: f64,
}

fn validate(args: &ChaosArgs) -> Result<(), String> {
    if args.nodes < 1 {
        return Err("--nodes: at least 1".into());
    }
    if let Some(t) = args.targets.iter().find(|t| **t >= args.nodes) {
        return Err(format!(
            "--targets: node {t} does not exist (nodes are 0..{})",
            args.nodes - 1
        ));
    }
    if args.kills > 0 && args.kill == Victims::Nodes && args.interval <= args.down {
        return Err("--interval must be longer than --down (a node is down between kills)".into());
    }
    if args.history.is_some() {
        if args.faults.is_empty() {
            return Err("--faults: at least one fault".into());
        }
        if let Some(f) = args.faults.iter().find(|f| f.needs_netns() && !args.netns) {
            return Err(format!(
                "--faults: {f:?} cuts or slows packets between hosts; add --netns"
            ));
        }
        if args.kills > 0 && args.interval <= args.down {
            return Err("--interval must be longer than --down (a fault lasts --down)".into());
        }
        if args.clients == 0 || args.keys == 0 {
            return Err("--clients and --keys: at least 1".into());
        }
        if args.workload.is_some() || args.import.is_some() {
            return Err("--history runs the register workload; --workload and --import are for the kill run".into());
        }
        for (given, flag) in [
            (!args.targets.is_empty(), "--targets"),
            (
                args.data_dir.is_some(),
                "--data-dir (the nodes' data goes to DIR/nodes)",
            ),
            (args.keep, "--keep (DIR is always kept)"),
            (args.kill != Victims::Nodes, "--kill (use --faults)"),
            (args.writes_per_sec != 10, "--writes-per-sec"),
        ] {
            if given {
                progress(&format!(
                    "warning: {flag} is for the kill run; a campaign ignores it"
                ));
            }
        }
    } else {
        let campaign_only = [
            (args.netns, "--netns"),
            (args.break_stale_reads, "--break-stale-reads"),
            (args.checker.is_some(), "--checker"),
            (args.clients != 5, "--clients"),
            (args.keys != 3, "--keys"),
            (args.watchers != 2, "--watchers"),
            (args.op_timeout != Duration::from_secs(2), "--op-timeout"),
            (
                args.faults != [campaign::Fault::Kill, campaign::Fault::Pause],
                "--faults",
            ),
        ];
        if let Some((_, flag)) = campaign_only.iter().find(|(given, _)| *given) {
            return Err(format!("{flag} is for a campaign: add --history DIR"));
        }
    }
    if let Some(w) = &args.workload {
        std::fs::metadata(w).map_err(|e| format!("--workload {}: {e}", w.display()))?;
    }
    Ok(())
}

/// A linearizability campaign (`--history DIR`, [`campaign`]).
pub fn run_campaign(args: ChaosArgs) -> Result<campaign::CampaignReport, String> {
    validate(&args)?;
    let dir = args.history.clone().ok_or("--history: a directory")?;
    campaign::run(&args, &dir)
}

pub fn run(args: ChaosArgs) -> Result<Report, String> {
    validate(&args)?;
    let mut tmp = None;
    let base = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::Builder::new()
                .prefix("omnicloud-chaos-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let path = t.path().to_path_buf();
            tmp = Some(t);
            path
        }
    };
    progress(&format!(
        "starting {} nodes under {}",
        args.nodes,
        base.display()
    ));
    let mut cluster = match LocalCluster::start(
        args.nodes,
        &base,
        &args.roles,
        &args.cidr,
        &args.bridge_prefix,
        args.import.as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            if let Some(t) = tmp {
                let _ = t.keep();
            }
            return Err(format!("{e} (data and logs kept in {})", base.display()));
        }
    };
    let result = chaos(&args, &mut cluster);
    cluster.shutdown();
    if args.keep || result.is_err() {
        if let Some(t) = tmp {
            let _ = t.keep();
        }
        progress(&format!("data and logs kept in {}", base.display()));
    }
    result
}

/// One node kill: SIGKILL, down for `--down`, started again, then the wait for every
/// workload to be back (until the next kill is due).
#[allow(clippy::too_many_arguments)]
fn kill_node(
    cluster: &mut LocalCluster,
    observers: &observe::Observers,
    victim: usize,
    args: &ChaosArgs,
    workloads: &[observe::Workload],
    budget: Duration,
    started: Instant,
    k: usize,
) -> Result<Kill, String> {
    let at = started.elapsed().as_secs_f64();
    progress(&format!(
        "kill {}/{}: SIGKILL {}",
        k + 1,
        args.kills,
        cluster.nodes[victim].name
    ));
    cluster.nodes[victim].kill9();
    observers.set_alive(victim, false);
    let killed_at = Instant::now();
    std::thread::sleep(args.down);
    cluster.restart(victim)?;
    observers.set_alive(victim, true);
    let recovered = if workloads.is_empty() {
        None
    } else {
        observe::wait_restored(cluster, workloads, budget)
            .ok()
            .map(|_| killed_at.elapsed().as_secs_f64())
    };
    Ok(Kill {
        at_secs: at,
        node: cluster.nodes[victim].name.clone(),
        recovered_after_secs: recovered,
    })
}

pub(crate) fn progress(msg: &str) {
    eprintln!("chaos: {msg}");
}

fn chaos(args: &ChaosArgs, cluster: &mut LocalCluster) -> Result<Report, String> {
    let started = Instant::now();
    let seed = cluster.client(0);
    let workloads = match &args.workload {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            let applied = seed
                .send("POST", "/v1/apply", "application/yaml", &text)
                .map_err(|e| format!("applying {}: {e}", path.display()))?;
            observe::workloads_of(&applied)
        }
        None => Vec::new(),
    };
    if !workloads.is_empty() {
        progress(&format!(
            "waiting for {} workload(s) to be ready",
            workloads.len()
        ));
        observe::wait_restored(cluster, &workloads, args.settle)
            .map_err(|missing| format!("the workload never became ready: {missing:?}"))?;
    }
    let status = |c: &LocalCluster| -> Option<Value> {
        (0..c.nodes.len())
            .filter(|&i| c.nodes[i].alive())
            .find_map(|i| c.client(i).get_json("/v1/cluster/status").ok())
    };
    let term_start = status(cluster)
        .and_then(|s| s["raft"]["term"].as_u64())
        .unwrap_or(0);
    let observers = observe::Observers::start(cluster, args.writes_per_sec, &workloads);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let candidates: Vec<usize> = if args.targets.is_empty() {
        (0..args.nodes).collect()
    } else {
        args.targets.clone()
    };
    let mut kills = Vec::new();
    for k in 0..args.kills {
        // Recovery is waited for until the next kill is due (the settle time after the last).
        let last = k + 1 == args.kills;
        let budget = |between: Duration| if last { args.settle } else { between };
        let kill = match args.kill {
            Victims::Nodes => {
                std::thread::sleep(args.interval - args.down);
                let victim = candidates[rng.random_range(0..candidates.len())];
                let budget = budget(args.interval - args.down);
                kill_node(
                    cluster, &observers, victim, args, &workloads, budget, started, k,
                )?
            }
            Victims::Instances | Victims::Vms => {
                std::thread::sleep(args.interval);
                let vms = args.kill == Victims::Vms;
                let budget = budget(args.interval);
                let Some(kill) =
                    observe::kill_instance(cluster, vms, &mut rng, &workloads, budget, started)
                else {
                    progress("nothing to kill: no running instance of that kind");
                    continue;
                };
                progress(&format!(
                    "kill {}/{}: SIGKILL {}",
                    k + 1,
                    args.kills,
                    kill.node
                ));
                kill
            }
        };
        kills.push(kill);
    }
    let not_restored = match observe::wait_restored(cluster, &workloads, args.settle) {
        Ok(()) => Vec::new(),
        Err(missing) => missing,
    };
    let seen = observers.stop();
    progress("checking the acknowledged writes through the leader");
    let found = observe::find_writes(cluster, &seen.acknowledged)?;
    let lost: Vec<String> = seen
        .acknowledged
        .iter()
        .filter(|w| !found.contains(*w))
        .cloned()
        .collect();
    let term_end = status(cluster)
        .and_then(|s| s["raft"]["term"].as_u64())
        .unwrap_or(0);
    let mut times: Vec<f64> = kills
        .iter()
        .filter_map(|k| k.recovered_after_secs)
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let broken = !lost.is_empty() || !not_restored.is_empty() || !seen.duplicates.is_empty();
    Ok(Report {
        nodes: args.nodes,
        seed: args.seed,
        writes_acknowledged: seen.acknowledged.len() as u64,
        writes_failed: seen.failed,
        writes_found: seen.acknowledged.len() as u64 - lost.len() as u64,
        writes_lost: lost,
        leader_changes: seen.leader_changes,
        term_start,
        term_end,
        recovery_median_secs: times.get(times.len() / 2).copied(),
        recovery_max_secs: times.last().copied(),
        not_restored,
        duplicate_identities: seen.duplicates,
        kills,
        verdict: if broken { "FAIL" } else { "PASS" }.into(),
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// The report for people.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "chaos run: {} nodes, seed {}, {} kills in {:.0}s\n\n",
        r.nodes,
        r.seed,
        r.kills.len(),
        r.duration_secs
    );
    for k in &r.kills {
        out.push_str(&format!(
            "  {:>7.1}s  SIGKILL {:<10} recovered {}\n",
            k.at_secs,
            k.node,
            k.recovered_after_secs
                .map(|s| format!("after {s:.1}s"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    let secs = |v: Option<f64>| v.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into());
    out.push_str(&format!(
        "\nwrites:      {} acknowledged, {} found afterwards, {} lost, {} refused or timed out\n\
         recovery:    median {}, max {}\n\
         leadership:  {} leader changes seen (Raft term {} -> {})\n",
        r.writes_acknowledged,
        r.writes_found,
        r.writes_lost.len(),
        r.writes_failed,
        secs(r.recovery_median_secs),
        secs(r.recovery_max_secs),
        r.leader_changes,
        r.term_start,
        r.term_end,
    ));
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    out.push_str(&format!(
        "invariants:  lost writes: {}; identities running twice: {}; workloads not restored: {}\n\nverdict: {}\n",
        list(&r.writes_lost),
        list(&r.duplicate_identities),
        list(&r.not_restored),
        r.verdict
    ));
    out
}
