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
use crate::model::event::EventReason;

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
    pub reason: EventReason,
    pub warning: bool,
    pub message: String,
    pub action: Option<Action>,
}

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

/// The decisions of one sync, group by group in the order given: for each group its
/// unjoined workers are given up (step 0), its floor and NodeClass resolved (step 1), its
/// demand taken (step 2), packed into workers (step 3) and bounded (step 4); a group
/// without demand may then shrink (scale-down).
pub fn decide(inp: &Inputs, memory: &mut Memory) -> Vec<Decision> {
    let mut pass = Pass::new(inp);
    let live: BTreeSet<&str> = inp.workers.iter().map(|w| w.vm.as_str()).collect();
    memory
        .unneeded_since
        .retain(|vm, _| live.contains(vm.as_str()));
    for g in &inp.groups {
        let mine = pass.give_up_unjoined(g, memory);
        let Some(group) = pass.resolve(g, mine) else {
            continue;
        };
        let demand = pass.take_demand(&group);
        pass.scale_up(&group, &demand, memory);
        if demand.is_empty() {
            pass.scale_down(&group, memory);
        } else {
            for w in &group.mine {
                memory.unneeded_since.remove(&w.vm);
            }
        }
    }
    pass.out
}

/// What `decide` carries from one node group to the next.
struct Pass<'i> {
    inp: &'i Inputs<'i>,
    now: u64,
    out: Vec<Decision>,
    /// VM names in use, this pass's new workers included.
    taken: BTreeSet<String>,
    /// Each director's free room, less the workers this pass added.
    directors: Vec<Size>,
    total_workers: i64,
    usable_pct: u64,
    /// orchestratorRatio: how many more containers the control plane may take on.
    container_room: Option<i64>,
    /// directorRatio: how many worker VMs all groups may have.
    max_workers: Option<i64>,
    /// Oldest first.
    pending: Vec<&'i Pending>,
    /// Pending instances an earlier group took as its demand.
    claimed: BTreeSet<&'i str>,
}

/// One node group with its floor and NodeClass resolved (step 1).
struct GroupView<'i> {
    g: &'i Group<'i>,
    name: &'i str,
    /// Its workers still in play: joined, or requested within the provision timeout.
    mine: Vec<&'i Worker>,
    count: i64,
    /// The vmPool window's target, capped at maxSize.
    scheduled: Option<i64>,
    floor: i64,
    class: &'i str,
    size: Size,
    vm_need: Size,
    /// What one worker offers to the demand (its size less the reserve).
    usable: Size,
    last_up: Option<u64>,
    decision_ms: u64,
}

impl<'i> Pass<'i> {
    fn new(inp: &'i Inputs<'i>) -> Pass<'i> {
        let container_room = inp.limits.orchestrator_ratio.map(|(a, b)| {
            (inp.orchestrators as i64 * b as i64 / a as i64 - inp.placed_containers as i64).max(0)
        });
        let max_workers = inp
            .limits
            .director_ratio
            .map(|(a, b)| inp.directors.len() as i64 * b as i64 / a as i64);
        let mut pending: Vec<&Pending> = inp.pending.iter().collect();
        pending.sort_by_key(|p| (p.since_ms, p.key.clone()));
        Pass {
            inp,
            now: inp.now_ms,
            out: Vec::new(),
            taken: inp.taken.clone(),
            directors: inp.directors.clone(),
            total_workers: inp.workers.len() as i64,
            usable_pct: 100 - inp.limits.reserve_pct.min(90),
            container_room,
            max_workers,
            pending,
            claimed: BTreeSet::new(),
        }
    }

    /// A decision; the limits and the given-up workers are warnings.
    fn push(&mut self, group: &str, reason: EventReason, message: String, action: Option<Action>) {
        let warning = matches!(
            reason,
            EventReason::ScaleUpLimited | EventReason::ScaleDownUnregistered
        );
        self.out.push(Decision {
            group: group.into(),
            reason,
            warning,
            message,
            action,
        });
    }

    /// Step 0: workers whose guest never joined are given up first; the rest are returned.
    fn give_up_unjoined(&mut self, g: &'i Group<'i>, memory: &mut Memory) -> Vec<&'i Worker> {
        let (name, now, inp) = (g.spec.name.as_str(), self.now, self.inp);
        let (mine, lost): (Vec<&Worker>, Vec<&Worker>) = inp
            .workers
            .iter()
            .filter(|w| w.group == name)
            .partition(|w| w.joined || now.saturating_sub(w.requested_ms) < PROVISION_TIMEOUT_MS);
        for w in lost {
            memory.gave_up.insert(name.into(), now);
            self.total_workers -= 1;
            self.push(
                name,
                EventReason::ScaleDownUnregistered,
                format!(
                    "node group {name}: removing {}: its guest did not join as {} within {} of the request",
                    w.vm,
                    w.node,
                    secs(PROVISION_TIMEOUT_MS)
                ),
                Some(Action::Delete(w.vm.clone())),
            );
        }
        mine
    }

    /// Step 1: the group's floor and NodeClass; None (and a ScaleUpLimited) when the
    /// NodeClass does not exist.
    fn resolve(&mut self, g: &'i Group<'i>, mine: Vec<&'i Worker>) -> Option<GroupView<'i>> {
        let name = g.spec.name.as_str();
        let scheduled = g.scheduled.as_ref().map(|(n, _)| (*n).min(g.spec.max_size));
        let floor = g.spec.min_size.max(scheduled.unwrap_or(0));
        let Some((class, size, vm_need)) = &g.class else {
            self.push(
                name,
                EventReason::ScaleUpLimited,
                format!(
                    "node group {name}: NodeClass {} does not exist; no worker can be sized",
                    g.spec
                        .node_class
                        .as_deref()
                        .unwrap_or("(none given, and there is none)")
                ),
                None,
            );
            return None;
        };
        Some(GroupView {
            g,
            name,
            count: mine.len() as i64,
            last_up: mine.iter().map(|w| w.requested_ms).max(),
            mine,
            scheduled,
            floor,
            class,
            size: *size,
            vm_need: *vm_need,
            usable: size.percent(self.usable_pct),
            decision_ms: g.spec.decision_time_ms(),
        })
    }

    /// Step 2: the pending instances that waited long enough, fit one worker and no
    /// earlier group took, within the orchestratorRatio's room (what it cuts is a
    /// ScaleUpLimited).
    fn take_demand(&mut self, gv: &GroupView<'i>) -> Vec<&'i Pending> {
        let mut demand: Vec<&Pending> = Vec::new();
        let mut ratio_cut = 0;
        for &p in &self.pending {
            if self.claimed.contains(p.key.as_str())
                || self.now.saturating_sub(p.since_ms) < gv.decision_ms
                || !gv.usable.fits(&p.need)
            {
                continue;
            }
            if let Some(room) = self.container_room.as_mut() {
                if *room == 0 {
                    ratio_cut += 1;
                    continue;
                }
                *room -= 1;
            }
            demand.push(p);
        }
        self.claimed.extend(demand.iter().map(|p| p.key.as_str()));
        if ratio_cut > 0 {
            let inp = self.inp;
            let (a, b) = inp.limits.orchestrator_ratio.unwrap_or((1, 1));
            self.push(
                gv.name,
                EventReason::ScaleUpLimited,
                format!(
                    "node group {}: {ratio_cut} unschedulable instance(s) not counted: orchestratorRatio {a}:{b} with {} orchestrator(s) allows {} containers and {} are placed",
                    gv.name,
                    inp.orchestrators,
                    inp.orchestrators as u64 * b as u64 / a as u64,
                    inp.placed_containers
                ),
                None,
            );
        }
        demand
    }

    /// Steps 3 and 4: the demand packed into the booting workers, then into new ones;
    /// the floor; the bounds; the workers added and what limited them.
    fn scale_up(&mut self, gv: &GroupView<'i>, demand: &[&Pending], memory: &Memory) {
        let booting: Vec<Size> = gv
            .mine
            .iter()
            .filter(|w| !w.joined)
            .map(|_| gv.usable)
            .collect();
        let needs: Vec<Size> = demand.iter().map(|p| p.need).collect();
        let for_demand = bins_needed(&needs, booting, gv.usable) as i64;
        let for_floor = (gv.floor - gv.count).max(0);
        let wanted = for_demand.max(for_floor);
        if wanted <= 0 {
            return;
        }
        let (allowed, why) = self
            .bounds(gv, wanted, memory)
            .into_iter()
            .min_by_key(|(n, _)| *n)
            .map(|(n, w)| (n.clamp(0, wanted), w))
            .expect("maxSize is always a bound");
        let (name, count, now) = (gv.name, gv.count, self.now);
        // Stable while nothing changes: a repeated limit is one event with a count.
        let inputs = format!(
            "{} unschedulable instance(s) waited >= {} (decisionTime); {} worker(s) booting; NodeClass {} ({}, {}% usable); floor {}",
            demand.len(),
            secs(gv.decision_ms),
            gv.mine.iter().filter(|w| !w.joined).count(),
            gv.class,
            gv.size,
            self.usable_pct,
            gv.floor,
        );
        let oldest = demand
            .first()
            .map(|p| format!("; oldest {} waited {}", p.key, secs(now - p.since_ms)))
            .unwrap_or_default();
        if allowed > 0 {
            let new = names(name, allowed as usize, &mut self.taken);
            for _ in 0..allowed {
                if let Some(d) = self.directors.iter_mut().find(|d| d.fits(&gv.vm_need)) {
                    d.take(&gv.vm_need);
                }
            }
            self.total_workers += allowed;
            let (reason, why_up) = scale_up_reason(gv, for_demand, for_floor);
            self.push(
                name,
                reason,
                format!(
                    "node group {name}: adding {}: {why_up}; {inputs}{oldest}; {count} -> {} worker(s)",
                    new.join(", "),
                    count + allowed
                ),
                Some(Action::Create(new)),
            );
        }
        if allowed < wanted {
            self.push(
                name,
                EventReason::ScaleUpLimited,
                format!(
                    "node group {name}: {} of {wanted} wanted worker(s) not added: {why}; {inputs}",
                    wanted - allowed
                ),
                None,
            );
        }
    }

    /// Step 4's bounds on adding `wanted` workers, each with the words that name it:
    /// maxSize, the scale-up cooldown, a worker given up for never joining, directorRatio
    /// and the directors' free room.
    fn bounds(&self, gv: &GroupView<'i>, wanted: i64, memory: &Memory) -> Vec<(i64, String)> {
        let (g, count, now, inp) = (gv.g, gv.count, self.now, self.inp);
        let mut bounds: Vec<(i64, String)> = vec![(
            g.spec.max_size - count,
            format!("maxSize {} ({count} present)", g.spec.max_size),
        )];
        let cooldown = g.spec.scale_up_cooldown_ms();
        if let Some(t) = gv.last_up.filter(|t| now.saturating_sub(*t) < cooldown) {
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
            .get(gv.name)
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
        if let (Some(max), Some((a, b))) = (self.max_workers, inp.limits.director_ratio) {
            bounds.push((
                max - self.total_workers,
                format!(
                    "directorRatio {a}:{b} with {} director(s) allows {max} worker VMs ({} present)",
                    inp.directors.len(),
                    self.total_workers
                ),
            ));
        }
        // Director room: place the new VMs first fit on a copy.
        let mut room = self.directors.clone();
        let mut fit = 0;
        while fit < wanted {
            match room.iter_mut().find(|d| d.fits(&gv.vm_need)) {
                Some(d) => {
                    d.take(&gv.vm_need);
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
                    "room for {fit} more worker VM(s) of {} on {} director(s)",
                    gv.vm_need,
                    inp.directors.len()
                )
            },
        ));
        bounds
    }

    /// Scale-down of a group without demand: unneeded workers for `emptyTime` go, every
    /// empty one at once, else one underused one; never below the floor nor within the
    /// scale-down cooldown of the last scale-up.
    fn scale_down(&mut self, gv: &GroupView<'i>, memory: &mut Memory) {
        let (name, count, floor, now) = (gv.name, gv.count, gv.floor, self.now);
        let threshold = gv.g.spec.utilization_threshold();
        let candidates = self.unneeded(gv, threshold, memory);
        let empty_ms = gv.g.spec.empty_time_ms();
        let down_cooldown = gv.g.spec.scale_down_cooldown_ms();
        let cooling = gv
            .last_up
            .is_some_and(|t| now.saturating_sub(t) < down_cooldown);
        let ripe: Vec<&(&Worker, bool, u64)> = candidates
            .iter()
            .filter(|(_, _, since)| now.saturating_sub(*since) >= empty_ms)
            .collect();
        if cooling || ripe.is_empty() {
            return;
        }
        let any_empty = ripe.iter().any(|c| c.1);
        let mut removed = 0i64;
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
                    EventReason::ScaleDownEmpty,
                    if w.joined {
                        format!("nothing placed on {}", w.node)
                    } else {
                        format!("{} never joined and nothing waits for it", w.node)
                    },
                )
            } else {
                (EventReason::ScaleDownUnderused, format!("{} below utilizationThreshold {threshold}% and its {} instance(s) fit elsewhere", w.node, w.placed.len()))
            };
            self.push(
                name,
                reason,
                format!(
                    "node group {name}: removing {}: {what} for {} (emptyTime {}); {count} -> {} worker(s), floor {floor}",
                    w.vm,
                    secs(now - since),
                    secs(empty_ms),
                    count - removed
                ),
                Some(Action::Delete(w.vm.clone())),
            );
            if !*empty {
                break;
            }
        }
    }

    /// The group's unneeded workers with whether each is empty and since when it is
    /// unneeded (remembered across syncs): empty (nothing placed, or never joined), or
    /// joined, under `threshold` percent used, and its instances fit on the other agents.
    fn unneeded(
        &self,
        gv: &GroupView<'i>,
        threshold: i64,
        memory: &mut Memory,
    ) -> Vec<(&'i Worker, bool, u64)> {
        let mut agent_room: Vec<Size> = self.inp.agent_room.clone();
        let mut candidates: Vec<(&Worker, bool, u64)> = Vec::new();
        for &w in &gv.mine {
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
                let since = *memory
                    .unneeded_since
                    .entry(w.vm.clone())
                    .or_insert(self.now);
                candidates.push((w, empty, since));
            } else {
                memory.unneeded_since.remove(&w.vm);
            }
        }
        candidates
    }
}

/// Why a group grows: demand, a PredictiveBootstrapScaler's window, or minSize.
fn scale_up_reason(gv: &GroupView, for_demand: i64, for_floor: i64) -> (EventReason, String) {
    let spec = gv.g.spec;
    if for_demand >= for_floor {
        (
            EventReason::TriggeredScaleUp,
            format!("{for_demand} more worker(s) needed"),
        )
    } else if gv.scheduled.is_some_and(|s| s > spec.min_size) {
        let by = gv.g.scheduled.as_ref().map(|s| s.1.as_str()).unwrap_or("");
        (
            EventReason::ScheduledScaleUp,
            format!(
                "PredictiveBootstrapScaler {by} holds the pool at {}",
                gv.floor
            ),
        )
    } else {
        (
            EventReason::ScaleUpToMinSize,
            format!("minSize {}", spec.min_size),
        )
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
