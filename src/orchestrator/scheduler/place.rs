//! The decisions: filters, scores, sampling, preemption and the explanation given when
//! no node takes a request.

use super::state::{subset, Inst};
use super::{
    Cluster, Outcome, Policy, Request, Strategy, AFFINITY_POINT, FULL, MIN_SAMPLE, OWNER_PENALTY,
    SAMPLE_PERCENT, SOFT_SPREAD_PENALTY,
};

/// A request resolved against the indexes, once per placement.
struct Prep {
    filter: usize,
    owner: u32,
    /// (topology, index)
    anti: Vec<(usize, usize)>,
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
    /// (topology, index, signed points)
    prefer: Vec<(usize, usize, i64)>,
}

struct Constraint {
    topo: usize,
    index: usize,
    max_skew: i64,
    /// 1 when the request matches the constraint's selector itself (Kubernetes' selfMatch).
    own: i64,
    min: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    Pods,
    Resources { cpu: bool, memory: bool },
    AntiAffinity,
    SpreadLabel,
    Skew,
}

/// Failure reasons in the order they are reported.
const REASONS: [&str; 9] = [
    "not alive",
    "unschedulable",
    "node selector mismatch",
    "too many pods",
    "insufficient cpu",
    "insufficient memory",
    "anti-affinity conflict",
    "missing spread topology label",
    "spread skew exceeded",
];

impl Cluster {
    /// Decides where `req` goes and applies the decision (evictions included).
    pub fn place(&mut self, req: &Request, policy: &Policy) -> Outcome {
        let prep = self.prepare(req);
        if let Some(n) = self.pick(req, &prep, policy) {
            self.add_request(req, n, prep.owner);
            return Outcome::Placed(self.nodes[n as usize].name.clone());
        }
        if let Some((n, victims)) = self.preemption(req, &prep, policy) {
            let victims = victims.into_iter().map(|v| self.remove_id(v).key).collect();
            self.add_request(req, n, prep.owner);
            return Outcome::Preempt {
                node: self.nodes[n as usize].name.clone(),
                victims,
            };
        }
        Outcome::Unschedulable(self.explain(req, &prep, policy))
    }

    fn prepare(&mut self, req: &Request) -> Prep {
        let filter = self.filter(&req.node_selector);
        let owner = self.owner_id(&req.owner);
        let anti = req
            .anti_affinity
            .iter()
            .map(|term| self.index(&term.selector, &term.topology_key))
            .collect();
        let mut hard = Vec::new();
        let mut soft = Vec::new();
        for s in &req.spread {
            let (topo, index) = self.index(&s.selector, &s.topology_key);
            let c = Constraint {
                topo,
                index,
                max_skew: i64::from(s.max_skew.max(1)),
                own: i64::from(subset(&s.selector, &req.labels)),
                min: self.spread_min(filter, topo, index),
            };
            if s.hard {
                hard.push(c);
            } else {
                soft.push(c);
            }
        }
        let mut prefer = Vec::new();
        let weighted = req
            .affinity_preferred
            .iter()
            .map(|(w, t)| (i64::from(*w), t))
            .chain(
                req.anti_affinity_preferred
                    .iter()
                    .map(|(w, t)| (-i64::from(*w), t)),
            );
        for (w, term) in weighted {
            let (topo, index) = self.index(&term.selector, &term.topology_key);
            prefer.push((topo, index, w * AFFINITY_POINT));
        }
        Prep {
            filter,
            owner,
            anti,
            hard,
            soft,
            prefer,
        }
    }

    fn fits_resources(&self, n: u32, req: &Request, policy: &Policy) -> Result<(), Fail> {
        let node = &self.nodes[n as usize];
        if policy.max_pods_per_node.is_some_and(|max| node.pods >= max) {
            return Err(Fail::Pods);
        }
        let cpu_cap = node.cpu.saturating_sub(policy.reserved_cpu_millis);
        let memory_cap = node.memory.saturating_sub(policy.reserved_memory_bytes);
        let cpu = node.used_cpu.saturating_add(req.cpu_millis) > cpu_cap;
        let memory = node.used_memory.saturating_add(req.memory_bytes) > memory_cap;
        if cpu || memory {
            return Err(Fail::Resources { cpu, memory });
        }
        Ok(())
    }

    fn fits_topology(&self, n: u32, prep: &Prep) -> Result<(), Fail> {
        for &(topo, index) in &prep.anti {
            if self.domain_count(topo, index, n).is_some_and(|c| c > 0) {
                return Err(Fail::AntiAffinity);
            }
        }
        for c in &prep.hard {
            match self.domain_count(c.topo, c.index, n) {
                None => return Err(Fail::SpreadLabel),
                Some(count) if count + c.own - c.min > c.max_skew => return Err(Fail::Skew),
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn score(&self, n: u32, req: &Request, prep: &Prep, policy: &Policy) -> i64 {
        let node = &self.nodes[n as usize];
        let cpu = fraction(
            node.used_cpu.saturating_add(req.cpu_millis),
            node.cpu.saturating_sub(policy.reserved_cpu_millis),
        );
        let memory = fraction(
            node.used_memory.saturating_add(req.memory_bytes),
            node.memory.saturating_sub(policy.reserved_memory_bytes),
        );
        let mut score = match policy.strategy {
            Strategy::Spread => {
                let same = self
                    .owner_counts
                    .get(&(prep.owner, n))
                    .copied()
                    .unwrap_or(0);
                (2 * FULL - cpu - memory) / 2 - (i64::from(same) * OWNER_PENALTY).min(FULL)
            }
            Strategy::BinPack => (cpu + memory) / 2,
        };
        for c in &prep.soft {
            // A node without the key is scored as if it broke the constraint.
            let skew = match self.domain_count(c.topo, c.index, n) {
                Some(count) => count + c.own - c.min,
                None => c.max_skew + 1,
            };
            score -= SOFT_SPREAD_PENALTY * skew / c.max_skew;
        }
        for &(topo, index, points) in &prep.prefer {
            if self.domain_count(topo, index, n).is_some_and(|c| c > 0) {
                score += points;
            }
        }
        score
    }

    /// The best of the first sampled feasible nodes.
    fn pick(&mut self, req: &Request, prep: &Prep, policy: &Policy) -> Option<u32> {
        let eligible = &self.filters[prep.filter].eligible;
        if eligible.is_empty() {
            return None;
        }
        let want = MIN_SAMPLE.max(self.nodes.len() * SAMPLE_PERCENT / 100);
        let start = match policy.strategy {
            Strategy::Spread => self.offset % eligible.len(),
            Strategy::BinPack => 0,
        };
        let (before, after) = eligible.split_at(start);
        let mut best: Option<(i64, u32)> = None;
        let (mut found, mut examined) = (0, 0);
        for &n in after.iter().chain(before) {
            examined += 1;
            if self.fits_resources(n, req, policy).is_err() || self.fits_topology(n, prep).is_err()
            {
                continue;
            }
            let s = self.score(n, req, prep, policy);
            if best.is_none_or(|(bs, bn)| s > bs || (s == bs && n < bn)) {
                best = Some((s, n));
            }
            found += 1;
            if found >= want {
                break;
            }
        }
        self.offset = self.offset.wrapping_add(examined);
        best.map(|(_, n)| n)
    }

    /// The node where evicting the fewest lower-priority instances makes `req` fit, and
    /// those instances in eviction order.
    fn preemption(&self, req: &Request, prep: &Prep, policy: &Policy) -> Option<(u32, Vec<u32>)> {
        // (victims, highest victim priority, node)
        let mut best: Option<(usize, i64, u32, Vec<u32>)> = None;
        for &n in &self.filters[prep.filter].eligible {
            if self.fits_topology(n, prep).is_err() {
                continue;
            }
            let Some(victims) = self.victims(n, req, policy) else {
                continue;
            };
            let top = victims
                .iter()
                .map(|&v| self.inst(v).priority)
                .max()
                .unwrap_or(i64::MIN);
            let better = best
                .as_ref()
                .is_none_or(|(len, bp, bn, _)| (victims.len(), top, n) < (*len, *bp, *bn));
            if better {
                best = Some((victims.len(), top, n, victims));
            }
        }
        best.map(|(_, _, n, victims)| (n, victims))
    }

    /// Lowest priority first, then largest: taken until `req` fits; then those not needed
    /// (highest priority first) are given back. None if even evicting every lower-priority
    /// instance is not enough.
    fn victims(&self, n: u32, req: &Request, policy: &Policy) -> Option<Vec<u32>> {
        let node = &self.nodes[n as usize];
        let cpu_cap = node.cpu.saturating_sub(policy.reserved_cpu_millis);
        let memory_cap = node.memory.saturating_sub(policy.reserved_memory_bytes);
        let max_pods = policy.max_pods_per_node.unwrap_or(u32::MAX);
        if req.cpu_millis > cpu_cap || req.memory_bytes > memory_cap || max_pods == 0 {
            return None;
        }
        let size = |i: &Inst| fraction(i.cpu, cpu_cap) + fraction(i.memory, memory_cap);
        let mut candidates: Vec<u32> = node
            .insts
            .iter()
            .copied()
            .filter(|&id| self.inst(id).priority < req.priority)
            .collect();
        candidates.sort_by(|&a, &b| {
            let (a, b) = (self.inst(a), self.inst(b));
            (a.priority, -size(a), &a.key).cmp(&(b.priority, -size(b), &b.key))
        });
        let fits = |cpu: u64, memory: u64, pods: u32| {
            cpu.saturating_add(req.cpu_millis) <= cpu_cap
                && memory.saturating_add(req.memory_bytes) <= memory_cap
                && pods < max_pods
        };
        let (mut cpu, mut memory, mut pods) = (node.used_cpu, node.used_memory, node.pods);
        let mut taken = Vec::new();
        for id in candidates {
            if fits(cpu, memory, pods) {
                break;
            }
            let i = self.inst(id);
            cpu = cpu.saturating_sub(i.cpu);
            memory = memory.saturating_sub(i.memory);
            pods -= 1;
            taken.push(id);
        }
        if !fits(cpu, memory, pods) || taken.is_empty() {
            return None;
        }
        for k in (0..taken.len()).rev() {
            let i = self.inst(taken[k]);
            if fits(cpu + i.cpu, memory + i.memory, pods + 1) {
                cpu += i.cpu;
                memory += i.memory;
                pods += 1;
                taken.remove(k);
            }
        }
        Some(taken)
    }

    /// Why no node takes `req`: every node's first failing filter (both resources when
    /// both are short, as kube-scheduler reports them).
    fn explain(&self, req: &Request, prep: &Prep, policy: &Policy) -> String {
        let mut counts = [0usize; REASONS.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            let n = n as u32;
            let reason = if !node.alive {
                0
            } else if !node.schedulable {
                1
            } else if !subset(&req.node_selector, &node.labels) {
                2
            } else {
                match self
                    .fits_resources(n, req, policy)
                    .and_then(|()| self.fits_topology(n, prep))
                {
                    Ok(()) => continue,
                    Err(Fail::Pods) => 3,
                    Err(Fail::Resources { cpu, memory }) => {
                        counts[4] += usize::from(cpu);
                        counts[5] += usize::from(memory);
                        continue;
                    }
                    Err(Fail::AntiAffinity) => 6,
                    Err(Fail::SpreadLabel) => 7,
                    Err(Fail::Skew) => 8,
                }
            };
            counts[reason] += 1;
        }
        let parts: Vec<String> = REASONS
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        if parts.is_empty() {
            format!("0/{} nodes are available.", self.nodes.len())
        } else {
            format!(
                "0/{} nodes are available: {}.",
                self.nodes.len(),
                parts.join(", ")
            )
        }
    }
}

/// `used / cap` in basis points, capped at FULL; a node with no capacity counts as full.
fn fraction(used: u64, cap: u64) -> i64 {
    if cap == 0 {
        return FULL;
    }
    let f = match used.checked_mul(FULL as u64) {
        Some(scaled) => scaled / cap,
        // Beyond 1.8 EB: rare enough for the slow 128-bit division.
        None => (u128::from(used) * FULL as u128 / u128::from(cap)) as u64,
    };
    f.min(FULL as u64) as i64
}
