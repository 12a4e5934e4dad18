//! What a chaos run watches while it kills nodes: a stream of API writes (each one
//! acknowledged or not), the Raft leader, the workloads' readiness, and the containers
//! every node runs (one identity on two nodes at once breaks StatefulSet semantics).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::local::LocalCluster;
use crate::client::Client;
use crate::model::InstanceStatus;

/// A workload that must be back at its desired replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub plural: &'static str,
    pub namespace: String,
    pub name: String,
}

/// The Deployments, StatefulSets and VirtualMachines of an apply response.
pub fn workloads_of(applied: &Value) -> Vec<Workload> {
    applied["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let plural = match i["kind"].as_str()? {
                "Deployment" => "deployments",
                "StatefulSet" => "statefulsets",
                "VirtualMachine" => "virtualmachines",
                _ => return None,
            };
            Some(Workload {
                plural,
                namespace: i["namespace"].as_str().unwrap_or("default").to_string(),
                name: i["name"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// "deployments/web 4/6 ready" for a workload short of its replicas, None when restored
/// (`cli::why::progress`: the same test as `--wait`).
fn shortfall(o: &Value, w: &Workload) -> Option<String> {
    let (text, done) = crate::client::why::progress(o);
    (!done).then(|| format!("{}/{} {text}", w.plural, w.name))
}

/// Waits until every workload is at its desired replicas, asking any live node; Err lists
/// the ones that were not at `limit`, each with why (`cli::why`: its instances' reasons,
/// Warning events, node conditions).
pub fn wait_restored(
    cluster: &LocalCluster,
    workloads: &[Workload],
    limit: Duration,
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let last = Instant::now() >= deadline;
        let mut missing = Vec::new();
        for w in workloads {
            let path = format!("/v1/namespaces/{}/{}/{}", w.namespace, w.plural, w.name);
            let o = (0..cluster.nodes.len())
                .filter(|&i| cluster.nodes[i].alive())
                .find_map(|i| Some((i, cluster.client(i).get_json(&path).ok()?)));
            match o {
                Some((i, o)) => missing.extend(shortfall(&o, w).map(|short| {
                    match (last, crate::model::Kind::parse(w.plural)) {
                        (true, Some(kind)) => format!(
                            "{}/{} {}",
                            w.plural,
                            w.name,
                            crate::client::look::replicas_line(&cluster.client(i), kind, &o)
                        ),
                        _ => short,
                    }
                })),
                None => missing.push(format!("{}/{} unreadable", w.plural, w.name)),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if last {
            return Err(missing);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLs the process of a random running instance of the workloads (a VMM when `vms`)
/// and waits, up to `budget`, until it runs again (its restart count went up and it is
/// ready) and every workload is at its replicas.
pub fn kill_instance(
    cluster: &LocalCluster,
    vms: bool,
    rng: &mut rand::rngs::StdRng,
    workloads: &[Workload],
    budget: Duration,
    started: Instant,
) -> Option<super::Kill> {
    use rand::RngExt;
    let list = (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].alive())
        .find_map(|i| {
            cluster
                .client(i)
                .get_json("/v1/instances?consistent=true")
                .ok()
        })?;
    let mut running: Vec<&Value> = list["items"]
        .as_array()?
        .iter()
        .filter(|i| i["spec"].get("vm").is_some() == vms)
        .filter(|i| {
            let st = instance_status(i);
            st.pid.is_some() && st.ready
        })
        .collect();
    running.sort_by_key(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string());
    if running.is_empty() {
        return None;
    }
    let victim = running[rng.random_range(0..running.len())];
    let ns = victim["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let name = victim["metadata"]["name"].as_str()?.to_string();
    let st = instance_status(victim);
    let (restarts, pid) = (st.restarts, st.pid?);
    let at = started.elapsed().as_secs_f64();
    // SAFETY: kill(2) on the pid the instance's node reported for it, on this host.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    let deadline = killed_at + budget;
    let path = format!("/v1/namespaces/{ns}/instances/{name}");
    let back = loop {
        let v = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].alive())
            .find_map(|i| cluster.client(i).get_json(&path).ok());
        // Restarted in place, or replaced (a new incarnation).
        let again = v.as_ref().is_some_and(|v| {
            let st = instance_status(v);
            st.ready
                && (st.restarts > restarts || v["metadata"]["uid"] != victim["metadata"]["uid"])
        });
        if again {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let recovered = (back && wait_restored(cluster, workloads, left).is_ok())
        .then(|| killed_at.elapsed().as_secs_f64());
    Some(super::Kill {
        at_secs: at,
        node: format!("{ns}/{name}"),
        recovered_after_secs: recovered,
    })
}

/// What the observers saw.
pub struct Seen {
    pub acknowledged: Vec<String>,
    pub failed: u64,
    pub leader_changes: u64,
    pub duplicates: Vec<String>,
}

struct Shared {
    apis: Vec<String>,
    dirs: Vec<PathBuf>,
    token: String,
    alive: Vec<AtomicBool>,
    stop: AtomicBool,
    acknowledged: Mutex<Vec<String>>,
    failed: AtomicU64,
    leader_changes: AtomicU64,
    duplicates: Mutex<BTreeSet<String>>,
    /// `namespace/name` of the StatefulSets: their instances are identities.
    stateful: Vec<String>,
}

impl Shared {
    /// A StatefulSet identity (`ns/set-<ordinal>`), which must never run twice; a
    /// Deployment's instances may, briefly, while a dead node's containers still run.
    fn is_identity(&self, instance: &str) -> bool {
        self.stateful.iter().any(|set| {
            instance
                .strip_prefix(set.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|ord| !ord.is_empty() && ord.bytes().all(|b| b.is_ascii_digit()))
        })
    }

    fn client(&self, i: usize) -> Client {
        let ca = crate::client::config::ca_of(&self.dirs[i]);
        Client::with_ca(&self.apis[i], Some(self.token.clone()), ca)
            .with_timeout(Duration::from_secs(3))
    }

    fn live(&self) -> Vec<usize> {
        (0..self.apis.len())
            .filter(|&i| self.alive[i].load(Ordering::Relaxed))
            .collect()
    }
}

pub struct Observers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Observers {
    pub fn start(cluster: &LocalCluster, writes_per_sec: u32, workloads: &[Workload]) -> Observers {
        let shared = Arc::new(Shared {
            apis: cluster.nodes.iter().map(|n| n.api.clone()).collect(),
            dirs: cluster.nodes.iter().map(|n| n.dir.clone()).collect(),
            token: cluster.token.clone(),
            alive: cluster
                .nodes
                .iter()
                .map(|n| AtomicBool::new(n.alive()))
                .collect(),
            stop: AtomicBool::new(false),
            acknowledged: Mutex::new(Vec::new()),
            failed: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            duplicates: Mutex::new(BTreeSet::new()),
            stateful: workloads
                .iter()
                .filter(|w| w.plural == "statefulsets")
                .map(|w| format!("{}/{}", w.namespace, w.name))
                .collect(),
        });
        let mut threads = Vec::new();
        if writes_per_sec > 0 {
            let s = shared.clone();
            let pause = Duration::from_secs(1) / writes_per_sec;
            threads.push(std::thread::spawn(move || writer(&s, pause)));
        }
        let s = shared.clone();
        threads.push(std::thread::spawn(move || leader_watch(&s)));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || identity_watch(&s)));
        Observers { shared, threads }
    }

    pub fn set_alive(&self, node: usize, alive: bool) {
        self.shared.alive[node].store(alive, Ordering::Relaxed);
    }

    pub fn stop(self) -> Seen {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let s = &self.shared;
        Seen {
            acknowledged: s.acknowledged.lock().unwrap().clone(),
            failed: s.failed.load(Ordering::Relaxed),
            leader_changes: s.leader_changes.load(Ordering::Relaxed),
            duplicates: s.duplicates.lock().unwrap().iter().cloned().collect(),
        }
    }
}

/// One write at a time to the next live node; a write counts as acknowledged only on a
/// 2xx answer (a timeout may or may not have been applied, so it is not counted).
fn writer(s: &Shared, pause: Duration) {
    let mut n: u64 = 0;
    while !s.stop.load(Ordering::Relaxed) {
        let live = s.live();
        if let Some(&i) = live.get(n as usize % live.len().max(1)) {
            let name = format!("chaos-w-{n}");
            let body = json!({"apiVersion": "omnicloud.io/v1", "kind": "PriorityClass",
                              "metadata": {"name": name}, "spec": {"value": n}});
            match s.client(i).send(
                "POST",
                "/v1/priorityclasses",
                "application/json",
                &body.to_string(),
            ) {
                Ok(_) => s.acknowledged.lock().unwrap().push(name),
                Err(_) => {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            n += 1;
        }
        std::thread::sleep(pause);
    }
}

fn leader_watch(s: &Shared) {
    let mut last: Option<String> = None;
    while !s.stop.load(Ordering::Relaxed) {
        let leader = s.live().into_iter().find_map(|i| {
            let st = s.client(i).get_json("/v1/cluster/status").ok()?;
            st["raft"]["leader"].as_str().map(str::to_string)
        });
        if let Some(l) = leader {
            if last.as_ref().is_some_and(|prev| *prev != l) {
                s.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            last = Some(l);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Container ids are `<namespace>.<instance>.<uid8>`: the instance identity.
fn identity(container_id: &str) -> Option<String> {
    let (rest, _uid) = container_id.rsplit_once('.')?;
    let (ns, name) = rest.split_once('.')?;
    Some(format!("{ns}/{name}"))
}

/// Every 250 ms: the StatefulSet identities running on each node (whether or not the node process is
/// up: its containers outlive it); one on two nodes at once is a violation.
fn identity_watch(s: &Shared) {
    while !s.stop.load(Ordering::Relaxed) {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for dir in &s.dirs {
            let runtime = crate::container::runtime::Runtime::new(dir.join("containers"));
            let running: HashSet<String> = runtime
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.status == crate::container::runtime::Status::Running)
                .filter_map(|c| identity(&c.id))
                .filter(|id| s.is_identity(id))
                .collect();
            for id in running {
                *seen.entry(id).or_default() += 1;
            }
        }
        let mut dups = s.duplicates.lock().unwrap();
        dups.extend(seen.into_iter().filter(|(_, n)| *n > 1).map(|(id, _)| id));
        drop(dups);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The acknowledged writes found by a consistent (leader) read.
pub fn find_writes(
    cluster: &LocalCluster,
    acknowledged: &[String],
) -> Result<HashSet<String>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].alive())
            .find_map(|i| {
                cluster
                    .client(i)
                    .get_json("/v1/priorityclasses?consistent=true")
                    .ok()
            });
        if let Some(list) = list {
            let names: HashSet<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            return Ok(acknowledged
                .iter()
                .filter(|a| names.contains(*a))
                .cloned()
                .collect());
        }
        if Instant::now() >= deadline {
            return Err("no node answered a consistent read of the writes for 60s".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An instance object's status (the default when it has none yet).
fn instance_status(i: &Value) -> InstanceStatus {
    crate::model::status::of(i.get("status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_container_ids() {
        assert_eq!(
            identity("default.db-0.0123abcd").as_deref(),
            Some("default/db-0")
        );
        assert_eq!(identity("nodots"), None);
    }

    #[test]
    fn a_workload_is_restored_when_current_and_ready_match_desired() {
        let w = Workload {
            plural: "deployments",
            namespace: "default".into(),
            name: "web".into(),
        };
        let ok = json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
                        "status": {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3}});
        assert_eq!(shortfall(&ok, &w), None);
        let short = json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
                        "status": {"observedGeneration": 1, "replicas": 3, "readyReplicas": 2}});
        assert_eq!(shortfall(&short, &w).unwrap(), "deployments/web 2/3 ready");
        // A VirtualMachine that is not running wants no replicas (as `--wait` has it).
        let stopped = json!({"metadata": {"generation": 2}, "spec": {"replicas": 1, "running": false},
                        "status": {"observedGeneration": 2, "replicas": 0, "readyReplicas": 0}});
        assert_eq!(shortfall(&stopped, &w), None);
        let applied = json!({"items": [{"kind": "Deployment", "namespace": "default", "name": "web"},
                                       {"kind": "Namespace", "name": "x"}]});
        assert_eq!(workloads_of(&applied), vec![w]);
    }
}
