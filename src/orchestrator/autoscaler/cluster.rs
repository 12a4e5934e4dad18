//! The cluster autoscaler's decisions (pure): which node groups get worker VMs, and which
//! worker VMs go. `workers` gathers the inputs on the leader and writes the outcome.
//!
//! A worker is one `VirtualMachine` (`worker: true`, replicas 1) named `<group>-<n>`; its
//! one instance `<group>-<n>-0` is the guest's node name once it joins. One object per
//! worker (not one object scaled by `replicas`) because the VirtualMachine controller
//! scales down from the highest index, and scale-down must remove the worker that is empty,
//! whichever it is.
//!
//! Scale-up, per node group in the order given:
//! 1. the group's floor: `minSize`, raised while a PredictiveBootstrapScaler's `vmPool`
//!    window is active (capped at `maxSize`); missing workers are added at once.
//! 2. demand: container instances the scheduler left Pending/Unschedulable for at least
//!    the group's `decisionTime` (default 30s), oldest first, that fit one worker of the
//!    group's NodeClass and that no earlier group took.
//! 3. the demand is packed (first fit, largest first) into the workers still booting
//!    (requested, not yet joined as an agent), then into new workers: their number is
//!    what the group asks for.
//! 4. bounds, each named in the event when it cuts the count: `maxSize`, the group's
//!    scale-up `cooldown` (default 0s), a worker that never joined (no scale-up for
//!    [`PROVISION_TIMEOUT_MS`] after it was given up), and the ClusterScalingPolicy's
//!    `bootstrapLimits`:
//!    - `orchestratorRatio a:b`: the cluster runs at most `orchestrators * b / a`
//!      application containers; pending instances beyond that minus the placed ones are
//!      not demand (more workers would only add containers the control plane cannot
//!      manage).
//!    - `directorRatio a:b`: at most `directors * b / a` worker VMs in all groups.
//!    - `minimumReservedCapacity p`: as the scheduler, every node keeps p% free: a new
//!      worker offers (100-p)% of its NodeClass to the demand, and a director takes worker
//!      VMs only into (100-p)% of its capacity.
//!
//!    And every new worker must fit on an alive director's free room (none: no scale-up).
//!
//! Scale-down, per group without demand: a worker is unneeded when nothing is placed on
//! its node (empty; a worker that never joined is empty too), or when it joined and its
//! instances request less than `utilizationThreshold` percent (default 50) of it and fit
//! on the other agents. Unneeded for `emptyTime` (default 10m) -> its VirtualMachine is
//! deleted: every empty one at once, else one underused one per sync; never below the
//! floor, and not within the group's scale-down `cooldown` (default 10m) of its last
//! scale-up. A worker that has not joined [`PROVISION_TIMEOUT_MS`] after it was requested
//! is given up (ScaleDownUnregistered).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::capacity::NodeGroup;

/// Labels every worker VM (and its instance) carries.
pub const AUTOSCALER_LABEL: &str = "omnicloud.io/cluster-autoscaler";
pub const NODE_GROUP_LABEL: &str = "omnicloud.io/node-group";
pub const NODE_CLASS_LABEL: &str = "omnicloud.io/node-class";
/// Annotation: when the autoscaler asked for the worker (ms since the epoch).
pub const REQUESTED_AT: &str = "omnicloud.io/requested-at";
/// A worker whose guest has not joined this long after the request is given up
/// (Kubernetes' max-node-provision-time).
pub const PROVISION_TIMEOUT_MS: u64 = 15 * 60_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Size {
    fn fits(&self, need: &Size) -> bool {
        need.cpu_millis <= self.cpu_millis && need.memory_bytes <= self.memory_bytes
    }

    fn take(&mut self, need: &Size) {
        self.cpu_millis -= need.cpu_millis;
        self.memory_bytes -= need.memory_bytes;
    }

    fn percent(&self, p: u64) -> Size {
        Size {
            cpu_millis: self.cpu_millis * p / 100,
            memory_bytes: self.memory_bytes * p / 100,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}m cpu, {}Mi", self.cpu_millis, self.memory_bytes >> 20)
    }
}

/// A node group with its NodeClass resolved.
#[derive(Clone, Debug)]
pub struct Group<'a> {
    pub spec: &'a NodeGroup,
    /// (NodeClass name, the worker's size, what its VM asks of a director); None: the
    /// NodeClass does not exist.
    pub class: Option<(String, Size, Size)>,
    /// A PredictiveBootstrapScaler vmPool window: (targetSize, the scaler's name).
    pub scheduled: Option<(i64, String)>,
}

#[derive(Clone, Debug)]
pub struct Pending {
    /// namespace/name
    pub key: String,
    pub need: Size,
    /// Unplaced since (its creation: the scheduler never placed it).
    pub since_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Worker {
    /// The VirtualMachine's name.
    pub vm: String,
    pub group: String,
    /// The guest's node name (the VM's instance).
    pub node: String,
    pub requested_ms: u64,
    /// Its guest is an alive agent member.
    pub joined: bool,
    /// The node's capacity (gossip) when joined.
    pub capacity: Size,
    /// Requests of the instances placed on its node.
    pub placed: Vec<Size>,
}

#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub orchestrator_ratio: Option<(u32, u32)>,
    pub director_ratio: Option<(u32, u32)>,
    pub reserve_pct: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Inputs<'a> {
    pub now_ms: u64,
    pub groups: Vec<Group<'a>>,
    pub pending: Vec<Pending>,
    pub workers: Vec<Worker>,
    /// Free room of each alive director, after the reserve.
    pub directors: Vec<Size>,
    pub orchestrators: usize,
    /// Container instances placed on nodes.
    pub placed_containers: usize,
    /// Free room of every alive agent that is not a worker of these groups, after the
    /// reserve (where an underused worker's instances would go).
    pub agent_room: Vec<Size>,
    /// Names of every VirtualMachine in the workers' namespace (new names avoid them).
    pub taken: BTreeSet<String>,
    pub limits: Limits,
}

/// What the leader remembers between syncs (dropped with leadership).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// VM name -> since when it is unneeded.
    pub unneeded_since: BTreeMap<String, u64>,
    /// Group -> when a worker of it was last given up for never joining.
    pub gave_up: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create these worker VMs.
    Create(Vec<String>),
    /// Delete this worker VM.
    Delete(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub group: String,
    /// TriggeredScaleUp, ScaleUpToMinSize, ScheduledScaleUp, ScaleUpLimited,
    /// ScaleDownEmpty, ScaleDownUnderused, ScaleDownUnregistered.
    pub reason: &'static str,
    pub warning: bool,
    pub message: String,
    pub action: Option<Action>,
}

/// Every decision reason, for `omnicloud scaling history`.
pub const REASONS: [&str; 7] = [
    "TriggeredScaleUp",
    "ScaleUpToMinSize",
    "ScheduledScaleUp",
    "ScaleUpLimited",
    "ScaleDownEmpty",
    "ScaleDownUnderused",
    "ScaleDownUnregistered",
];

fn secs(ms: u64) -> String {
    format!("{}s", ms / 1000)
}

/// Lowest free `<group>-<n>` names.
fn names(group: &str, n: usize, taken: &mut BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let name = format!("{group}-{i}");
        if taken.insert(name.clone()) {
            out.push(name);
        }
        i += 1;
    }
    out
}

/// First fit, largest first: how many new bins of `bin` the items need after `open` bins.
fn bins_needed(items: &[Size], mut open: Vec<Size>, bin: Size) -> usize {
    let mut items = items.to_vec();
    items.sort_by_key(|s| std::cmp::Reverse((s.cpu_millis, s.memory_bytes)));
    let before = open.len();
    for it in &items {
        match open.iter_mut().find(|b| b.fits(it)) {
            Some(b) => b.take(it),
            None => {
                let mut b = bin;
                b.take(it);
                open.push(b);
            }
        }
    }
    open.len() - before
}

pub fn decide(inp: &Inputs, memory: &mut Memory) -> Vec<Decision> {
    let now = inp.now_ms;
    let mut out = Vec::new();
    let mut taken = inp.taken.clone();
    let mut directors = inp.directors.clone();
    let mut total_workers = inp.workers.len() as i64;
    let usable_pct = 100 - inp.limits.reserve_pct.min(90);
    // orchestratorRatio: how many more containers the control plane may take on.
    let mut container_room = inp.limits.orchestrator_ratio.map(|(a, b)| {
        (inp.orchestrators as i64 * b as i64 / a as i64 - inp.placed_containers as i64).max(0)
    });
    let max_workers = inp
        .limits
        .director_ratio
        .map(|(a, b)| inp.directors.len() as i64 * b as i64 / a as i64);
    let mut pending: Vec<&Pending> = inp.pending.iter().collect();
    pending.sort_by_key(|p| (p.since_ms, p.key.clone()));
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let live: BTreeSet<&str> = inp.workers.iter().map(|w| w.vm.as_str()).collect();
    memory
        .unneeded_since
        .retain(|vm, _| live.contains(vm.as_str()));

    for g in &inp.groups {
        let name = g.spec.name.as_str();
        // Workers whose guest never joined are given up first.
        let (mine, lost): (Vec<&Worker>, Vec<&Worker>) = inp
            .workers
            .iter()
            .filter(|w| w.group == name)
            .partition(|w| w.joined || now.saturating_sub(w.requested_ms) < PROVISION_TIMEOUT_MS);
        for w in lost {
            memory.gave_up.insert(name.into(), now);
            total_workers -= 1;
            out.push(Decision {
                group: name.into(),
                reason: "ScaleDownUnregistered",
                warning: true,
                message: format!(
                    "node group {name}: removing {}: its guest did not join as {} within {} of the request",
                    w.vm,
                    w.node,
                    secs(PROVISION_TIMEOUT_MS)
                ),
                action: Some(Action::Delete(w.vm.clone())),
            });
        }
        let count = mine.len() as i64;
        let scheduled = g.scheduled.as_ref().map(|(n, _)| (*n).min(g.spec.max_size));
        let floor = g.spec.min_size.max(scheduled.unwrap_or(0));
        let Some((class, size, vm_need)) = &g.class else {
            out.push(Decision {
                group: name.into(),
                reason: "ScaleUpLimited",
                warning: true,
                message: format!(
                    "node group {name}: NodeClass {} does not exist; no worker can be sized",
                    g.spec
                        .node_class
                        .as_deref()
                        .unwrap_or("(none given, and there is none)")
                ),
                action: None,
            });
            continue;
        };
        let usable = size.percent(usable_pct);
        let last_up = mine.iter().map(|w| w.requested_ms).max();

        // Demand: waited long enough, fits one worker, not taken by an earlier group.
        let decision_ms = g.spec.decision_time_ms();
        let mut demand: Vec<&Pending> = Vec::new();
        let mut ratio_cut = 0;
        for p in &pending {
            if claimed.contains(p.key.as_str())
                || now.saturating_sub(p.since_ms) < decision_ms
                || !usable.fits(&p.need)
            {
                continue;
            }
            if let Some(room) = container_room.as_mut() {
                if *room == 0 {
                    ratio_cut += 1;
                    continue;
                }
                *room -= 1;
            }
            demand.push(p);
        }
        claimed.extend(demand.iter().map(|p| p.key.as_str()));
        let booting: Vec<Size> = mine.iter().filter(|w| !w.joined).map(|_| usable).collect();
        let needs: Vec<Size> = demand.iter().map(|p| p.need).collect();
        let for_demand = bins_needed(&needs, booting, usable) as i64;
        let for_floor = (floor - count).max(0);
        let wanted = for_demand.max(for_floor);
        if ratio_cut > 0 {
            let (a, b) = inp.limits.orchestrator_ratio.unwrap_or((1, 1));
            out.push(Decision {
                group: name.into(),
                reason: "ScaleUpLimited",
                warning: true,
                message: format!(
                    "node group {name}: {ratio_cut} unschedulable instance(s) not counted: orchestratorRatio {a}:{b} with {} orchestrator(s) allows {} containers and {} are placed",
                    inp.orchestrators,
                    inp.orchestrators as u64 * b as u64 / a as u64,
                    inp.placed_containers
                ),
                action: None,
            });
        }
        if wanted > 0 {
            let mut bounds: Vec<(i64, String)> = vec![(
                g.spec.max_size - count,
                format!("maxSize {} ({count} present)", g.spec.max_size),
            )];
            let cooldown = g.spec.scale_up_cooldown_ms();
            if let Some(t) = last_up.filter(|t| now.saturating_sub(*t) < cooldown) {
                bounds.push((
                    0,
                    format!(
                        "scale-up cooldown {} (last scale-up {} ago)",
                        secs(cooldown),
                        secs(now - t)
                    ),
                ));
            }
            if let Some(t) = memory
                .gave_up
                .get(name)
                .filter(|t| now.saturating_sub(**t) < PROVISION_TIMEOUT_MS)
            {
                bounds.push((
                    0,
                    format!(
                        "a worker never joined; backing off for {} more",
                        secs(PROVISION_TIMEOUT_MS - (now - t))
                    ),
                ));
            }
            if let (Some(max), Some((a, b))) = (max_workers, inp.limits.director_ratio) {
                bounds.push((
                    max - total_workers,
                    format!(
                        "directorRatio {a}:{b} with {} director(s) allows {max} worker VMs ({total_workers} present)",
                        inp.directors.len()
                    ),
                ));
            }
            // Director room: place the new VMs first fit on a copy.
            let mut room = directors.clone();
            let mut fit = 0;
            while fit < wanted {
                match room.iter_mut().find(|d| d.fits(vm_need)) {
                    Some(d) => {
                        d.take(vm_need);
                        fit += 1;
                    }
                    None => break,
                }
            }
            bounds.push((
                fit,
                if inp.directors.is_empty() {
                    "no alive director to run a worker VM".to_string()
                } else {
                    format!(
                        "room for {fit} more worker VM(s) of {vm_need} on {} director(s)",
                        inp.directors.len()
                    )
                },
            ));
            let (allowed, why) = bounds
                .iter()
                .min_by_key(|(n, _)| *n)
                .map(|(n, w)| ((*n).clamp(0, wanted), w.clone()))
                .expect("maxSize is always a bound");
            // Stable while nothing changes: a repeated limit is one event with a count.
            let inputs = format!(
                "{} unschedulable instance(s) waited >= {} (decisionTime); {} worker(s) booting; NodeClass {class} ({size}, {usable_pct}% usable); floor {floor}",
                demand.len(),
                secs(decision_ms),
                mine.iter().filter(|w| !w.joined).count(),
            );
            let oldest = demand
                .first()
                .map(|p| format!("; oldest {} waited {}", p.key, secs(now - p.since_ms)))
                .unwrap_or_default();
            if allowed > 0 {
                let new = names(name, allowed as usize, &mut taken);
                for _ in 0..allowed {
                    if let Some(d) = directors.iter_mut().find(|d| d.fits(vm_need)) {
                        d.take(vm_need);
                    }
                }
                total_workers += allowed;
                let (reason, why_up) = if for_demand >= for_floor {
                    (
                        "TriggeredScaleUp",
                        format!("{for_demand} more worker(s) needed"),
                    )
                } else if scheduled.is_some_and(|s| s > g.spec.min_size) {
                    let by = g.scheduled.as_ref().map(|s| s.1.as_str()).unwrap_or("");
                    (
                        "ScheduledScaleUp",
                        format!("PredictiveBootstrapScaler {by} holds the pool at {floor}"),
                    )
                } else {
                    ("ScaleUpToMinSize", format!("minSize {}", g.spec.min_size))
                };
                out.push(Decision {
                    group: name.into(),
                    reason,
                    warning: false,
                    message: format!(
                        "node group {name}: adding {}: {why_up}; {inputs}{oldest}; {count} -> {} worker(s)",
                        new.join(", "),
                        count + allowed
                    ),
                    action: Some(Action::Create(new)),
                });
            }
            if allowed < wanted {
                out.push(Decision {
                    group: name.into(),
                    reason: "ScaleUpLimited",
                    warning: true,
                    message: format!(
                        "node group {name}: {} of {wanted} wanted worker(s) not added: {why}; {inputs}",
                        wanted - allowed
                    ),
                    action: None,
                });
            }
        }

        // Scale-down.
        let mut removed = 0i64;
        if !demand.is_empty() {
            for w in &mine {
                memory.unneeded_since.remove(&w.vm);
            }
            continue;
        }
        let threshold = g.spec.utilization_threshold();
        let mut agent_room: Vec<Size> = inp.agent_room.clone();
        let mut candidates: Vec<(&Worker, bool, u64)> = Vec::new();
        for w in &mine {
            let empty = w.placed.is_empty();
            let used = w.placed.iter().fold(Size::default(), |a, s| Size {
                cpu_millis: a.cpu_millis + s.cpu_millis,
                memory_bytes: a.memory_bytes + s.memory_bytes,
            });
            let util = if w.capacity.cpu_millis == 0 || w.capacity.memory_bytes == 0 {
                100
            } else {
                (used.cpu_millis * 100 / w.capacity.cpu_millis)
                    .max(used.memory_bytes * 100 / w.capacity.memory_bytes)
            };
            let underused = !empty && w.joined && (util as i64) < threshold && {
                // Its instances must fit on the other agents.
                let mut room = agent_room.clone();
                let ok = w
                    .placed
                    .iter()
                    .all(|s| match room.iter_mut().find(|r| r.fits(s)) {
                        Some(r) => {
                            r.take(s);
                            true
                        }
                        None => false,
                    });
                if ok {
                    agent_room = room;
                }
                ok
            };
            if empty || underused {
                let since = *memory.unneeded_since.entry(w.vm.clone()).or_insert(now);
                candidates.push((w, empty, since));
            } else {
                memory.unneeded_since.remove(&w.vm);
            }
        }
        let empty_ms = g.spec.empty_time_ms();
        let down_cooldown = g.spec.scale_down_cooldown_ms();
        let cooling = last_up.is_some_and(|t| now.saturating_sub(t) < down_cooldown);
        let ripe: Vec<&(&Worker, bool, u64)> = candidates
            .iter()
            .filter(|(_, _, since)| now.saturating_sub(*since) >= empty_ms)
            .collect();
        if cooling || ripe.is_empty() {
            continue;
        }
        let any_empty = ripe.iter().any(|c| c.1);
        for (w, empty, since) in ripe {
            if count - removed <= floor {
                break;
            }
            if any_empty != *empty {
                continue;
            }
            removed += 1;
            memory.unneeded_since.remove(&w.vm);
            let (reason, what) = if *empty {
                (
                    "ScaleDownEmpty",
                    if w.joined {
                        format!("nothing placed on {}", w.node)
                    } else {
                        format!("{} never joined and nothing waits for it", w.node)
                    },
                )
            } else {
                ("ScaleDownUnderused", format!("{} below utilizationThreshold {threshold}% and its {} instance(s) fit elsewhere", w.node, w.placed.len()))
            };
            out.push(Decision {
                group: name.into(),
                reason,
                warning: false,
                message: format!(
                    "node group {name}: removing {}: {what} for {} (emptyTime {}); {count} -> {} worker(s), floor {floor}",
                    w.vm,
                    secs(now - since),
                    secs(empty_ms),
                    count - removed
                ),
                action: Some(Action::Delete(w.vm.clone())),
            });
            if !*empty {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
