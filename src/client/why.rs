//! Why a workload is not there yet, in one line: from its instances' statuses (the
//! scheduler's Pending reasons, the agent's and director's start failures, crash loops with
//! the last exit), the Warning events about the workload and its instances, and the
//! conditions of the nodes its instances wait on. `--wait`'s status line, its timeout error
//! and `describe` print it. Pure: JSON objects in, text out.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::instance::reasons;
use crate::model::instance::{InstanceStatus, Phase, Termination};
use crate::model::status::{self, ReplicaCounts, RolloutCondition};

/// What is known about one workload besides its own object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    /// The workload's instances (any revision).
    pub instances: &'a [Value],
    /// Event objects to consider (the caller leaves out stale ones); only Warning events
    /// about the workload or one of `instances` are used.
    pub events: &'a [Value],
    /// `/v1/nodes` items, with their `conditions`.
    pub nodes: &'a [Value],
}

/// At most this many distinct groups are spelled out; the rest are counted.
const MAX_GROUPS: usize = 3;

/// "2/3 ready" and whether the workload has converged: every replica created, ready and of
/// the current generation (a VirtualMachine that is not running wants none).
pub fn progress(o: &Value) -> (String, bool) {
    let mut want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    if o["spec"]["running"] == false {
        want = 0;
    }
    let st: ReplicaCounts = status::of(o.get("status"));
    let ready = st.ready_replicas;
    let observed = st.observed_generation >= o["metadata"]["generation"].as_u64().unwrap_or(0);
    let done = observed && ready == want && st.replicas == want;
    (format!("{ready}/{want} ready"), done)
}

/// "0/2 ready: 2 Failed (image pull failed: ...)": the progress, and why it is not further
/// along ("2/2 ready; warning: ..." when only warnings remain); whether it has converged.
pub fn summary(workload: &Value, facts: &Facts) -> (String, bool) {
    let (mut line, done) = progress(workload);
    let (groups, tail) = parts(workload, facts);
    if !groups.is_empty() {
        line.push_str(": ");
        line.push_str(&groups);
    }
    for t in tail {
        line.push_str("; ");
        line.push_str(&t);
    }
    (line, done)
}

/// "2 Failed (image pull failed: ...), 1 Pending (unschedulable: ...)": the instances of
/// `workload` that are not ready, grouped by phase and reason; and what follows them: the
/// instances' warnings, the workload's condition and its own Warning events.
fn parts(workload: &Value, facts: &Facts) -> (String, Vec<String>) {
    let mut instances: Vec<&Value> = facts.instances.iter().collect();
    instances.sort_by_key(|i| i["metadata"]["name"].as_str().unwrap_or_default());
    // (phase, why) -> count, in order of first appearance.
    let mut groups: Vec<((String, String), usize)> = Vec::new();
    for i in instances.iter().filter(|i| !status_of(i).ready) {
        let key = (phase(i).to_string(), instance_reason(i, facts));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    let mut shown: Vec<String> = groups
        .iter()
        .take(MAX_GROUPS)
        .map(|((phase, why), n)| match why.is_empty() {
            true => format!("{n} {phase}"),
            false => format!("{n} {phase} ({why})"),
        })
        .collect();
    if groups.len() > MAX_GROUPS {
        let rest: usize = groups[MAX_GROUPS..].iter().map(|(_, n)| n).sum();
        shown.push(format!("{rest} more not ready"));
    }
    let mut tail: Vec<String> = warnings(&instances);
    let condition =
        status::of::<crate::model::status::DeploymentStatus>(workload.get("status")).condition;
    if condition == RolloutCondition::ProgressDeadlineExceeded {
        tail.push("progress deadline exceeded".into());
    }
    let kind = workload["kind"].as_str().unwrap_or_default();
    let name = workload["metadata"]["name"].as_str().unwrap_or_default();
    tail.extend(
        latest_warnings(facts.events, kind, name)
            .into_iter()
            .map(|(reason, message)| format!("{reason}: {message}")),
    );
    (shown.join(", "), tail)
}

/// An instance object's status (the default, Pending, when it has none yet).
fn status_of(i: &Value) -> InstanceStatus {
    status::of(i.get("status"))
}

fn phase(i: &Value) -> &'static str {
    status_of(i).phase.as_str()
}

/// Why one instance is not ready, in words: its status's reason, else the latest Warning
/// event about it, else where it is in its life (waiting for placement, not started on its
/// node yet) with its node's conditions.
pub fn instance_reason(i: &Value, facts: &Facts) -> String {
    let st = status_of(i);
    if let Some(why) = status_reason(&st) {
        return why;
    }
    let name = i["metadata"]["name"].as_str().unwrap_or_default();
    if let Some((reason, message)) = latest_warnings(facts.events, "Instance", name)
        .into_iter()
        .next()
    {
        return format!("{reason}: {message}");
    }
    let node = Some(st.node.as_str())
        .filter(|n| !n.is_empty())
        .or_else(|| i["spec"]["nodeName"].as_str());
    let Some(node) = node else {
        return "waiting for placement".into();
    };
    let mut why = match phase(i) {
        "Running" => "started, not ready yet".to_string(),
        "Pending" if i["status"].is_null() => format!("not started on {node} yet"),
        _ => String::new(),
    };
    for (reason, message) in node_conditions(facts.nodes, node) {
        if !why.is_empty() {
            why.push_str("; ");
        }
        why.push_str(&format!("node {node}: {reason}: {message}"));
    }
    why
}

/// The words for an instance status's reason and message; None when it gives none.
fn status_reason(st: &InstanceStatus) -> Option<String> {
    let message = st.message.as_str();
    let last = st.last_termination.as_ref().and_then(last_exit);
    let label = match st.reason.as_str() {
        "" => {
            // Between restarts without a reason of its own: the exit it restarts from.
            return (st.phase != Phase::Running)
                .then_some(last?)
                .map(|l| format!("restarting, {l}"));
        }
        reasons::UNSCHEDULABLE => "unschedulable",
        reasons::ERR_IMAGE_NOT_FOUND | reasons::ERR_IMAGE_PULL => "image pull failed",
        reasons::CONTAINER_CANNOT_RUN => "container cannot run",
        reasons::INVALID_SPEC => "invalid spec",
        reasons::NO_ADDRESS => "no instance address",
        reasons::READINESS_PROBE_FAILED => "readiness probe failing",
        reasons::NETWORK_SETUP_FAILED => "network setup failed",
        reasons::CREATE_CONTAINER_CONFIG_ERROR => "waiting for a ConfigMap or Secret",
        reasons::IMAGE_PULL_BACK_OFF => "image pull failed, backing off",
        reasons::ERR_IMAGE_NEVER_PULL => "image not on the node (imagePullPolicy Never)",
        reasons::INVALID_IMAGE_NAME => "invalid image name",
        reasons::CRASH_LOOP_BACK_OFF => {
            return Some(match last {
                Some(l) => format!("crash loop, {l}"),
                None => "crash loop".into(),
            })
        }
        other => other,
    };
    Some(if message.is_empty() {
        label.to_string()
    } else {
        format!("{label}: {message}")
    })
}

/// "last exit Error (exit code 1)", "last exit OOMKilled (exit code 137; the memory limit
/// was exceeded)".
fn last_exit(t: &Termination) -> Option<String> {
    let reason = Some(t.reason.as_str()).filter(|r| !r.is_empty())?;
    let message = t.message.as_str();
    let mut detail = Vec::new();
    if let Some(code) = t.exit_code {
        if !message.contains(&format!("exit code {code}")) {
            detail.push(format!("exit code {code}"));
        }
    }
    if !message.is_empty() {
        detail.push(message.to_string());
    }
    Some(match detail.is_empty() {
        true => format!("last exit {reason}"),
        false => format!("last exit {reason} ({})", detail.join("; ")),
    })
}

/// "warning: NoOutboundNAT on 2 instances (message)", one per warning reason.
fn warnings(instances: &[&Value]) -> Vec<String> {
    let mut by_reason: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for w in instances.iter().flat_map(|i| status_of(i).warnings) {
        let entry = by_reason.entry(w.reason).or_insert((0, w.message));
        entry.0 += 1;
    }
    by_reason
        .into_iter()
        .map(|(reason, (n, message))| {
            let on = if n == 1 { "instance" } else { "instances" };
            format!("warning: {reason} on {n} {on} ({message})")
        })
        .collect()
}

/// The Warning events about `kind`/`name`, newest first, one per reason.
fn latest_warnings(events: &[Value], kind: &str, name: &str) -> Vec<(String, String)> {
    let mut mine: Vec<&Value> = events
        .iter()
        .map(|e| &e["spec"])
        .filter(|s| {
            s["type"] == "Warning"
                && s["involvedObject"]["kind"] == kind
                && s["involvedObject"]["name"] == name
        })
        .collect();
    mine.sort_by_key(|s| std::cmp::Reverse(s["lastTimestamp"].as_str().unwrap_or_default()));
    let mut out: Vec<(String, String)> = Vec::new();
    for s in mine {
        let reason = s["reason"].as_str().unwrap_or_default().to_string();
        if !out.iter().any(|(r, _)| *r == reason) {
            out.push((
                reason,
                s["message"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// (reason, message) of each condition `/v1/nodes` gives the node `name`.
fn node_conditions<'a>(nodes: &'a [Value], name: &str) -> Vec<(&'a str, &'a str)> {
    nodes
        .iter()
        .filter(|n| n["name"] == name)
        .flat_map(|n| n["conditions"].as_array().into_iter().flatten())
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}})
    }

    fn instance(name: &str, node: Option<&str>, status: Value) -> Value {
        json!({"kind": "Instance", "metadata": {"name": name},
               "spec": {"nodeName": node, "owner": {"kind": "Deployment", "name": "web"}},
               "status": status})
    }

    fn event(kind: &str, name: &str, reason: &str, message: &str, at: &str) -> Value {
        json!({"kind": "Event", "spec": {"type": "Warning", "reason": reason, "message": message,
               "involvedObject": {"kind": kind, "name": name}, "lastTimestamp": at}})
    }

    /// The text after "N/M ready": the groups, then the rest, "; "-separated.
    fn explain_with(instances: &[Value], events: &[Value], nodes: &[Value]) -> String {
        let facts = Facts {
            instances,
            events,
            nodes,
        };
        let (groups, tail) = parts(&deployment(), &facts);
        std::iter::once(groups)
            .filter(|g| !g.is_empty())
            .chain(tail)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn converged_means_current_generation_and_all_ready() {
        let o = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
                       "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3}});
        assert_eq!(progress(&o), ("3/3 ready".to_string(), true));
        let stale = json!({"metadata": {"generation": 3}, "spec": {"replicas": 3},
                           "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3}});
        assert!(!progress(&stale).1);
        let extra = json!({"metadata": {"generation": 2}, "spec": {"replicas": 1},
                           "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1}});
        assert!(
            !progress(&extra).1,
            "scaling down is done when the extra ones are gone"
        );
        let stopped_vm = json!({"metadata": {"generation": 4}, "spec": {"replicas": 2, "running": false},
                           "status": {"observedGeneration": 4, "replicas": 0, "readyReplicas": 0}});
        assert_eq!(progress(&stopped_vm), ("0/0 ready".to_string(), true));
    }

    #[test]
    fn a_missing_image_on_every_instance_is_one_group() {
        let failed = |name| {
            instance(
                name,
                Some("n1"),
                json!({"phase": "Failed", "ready": false, "reason": "ErrImageNotFound",
                       "message": "image does-not-exist:1 is not in this node's image store nor on any peer"}),
            )
        };
        let mut d = deployment();
        d["status"] = json!({"replicas": 2, "readyReplicas": 0});
        let instances = [failed("web-1"), failed("web-0")];
        let facts = Facts {
            instances: &instances,
            ..Facts::default()
        };
        assert_eq!(
            summary(&d, &facts),
            (
                "0/2 ready: 2 Failed (image pull failed: image does-not-exist:1 is not in this \
                 node's image store nor on any peer)"
                    .to_string(),
                false
            )
        );
    }

    #[test]
    fn pending_reasons_from_the_scheduler_placement_and_node_conditions() {
        let unschedulable = instance(
            "web-0",
            None,
            json!({"phase": "Pending", "ready": false, "reason": "Unschedulable",
                   "message": "0/3 nodes are available: 3 insufficient cpu."}),
        );
        let unplaced = instance("web-1", None, Value::Null);
        let unstarted = instance("web-2", Some("n2"), Value::Null);
        let nodes = [json!({"name": "n2", "conditions": [
            {"reason": "NetworkSetupFailed", "message": "iptables: not found"}]})];
        assert_eq!(
            explain_with(&[unschedulable, unplaced, unstarted], &[], &nodes),
            "1 Pending (unschedulable: 0/3 nodes are available: 3 insufficient cpu.), \
             1 Pending (waiting for placement), \
             1 Pending (not started on n2 yet; node n2: NetworkSetupFailed: iptables: not found)"
        );
    }

    #[test]
    fn crash_loops_name_the_last_exit() {
        let looping = instance(
            "web-0",
            Some("n1"),
            json!({"phase": "CrashLoopBackOff", "ready": false, "restarts": 4,
                   "reason": "CrashLoopBackOff", "message": "back-off 8s restarting",
                   "lastTermination": {"exitCode": 1, "reason": "Error", "message": "exit code 1",
                                       "finishedAt": "2026-01-01T00:00:00Z"}}),
        );
        let oom = instance(
            "web-1",
            Some("n1"),
            json!({"phase": "Pending", "ready": false, "restarts": 1,
                   "lastTermination": {"exitCode": 137, "reason": "OOMKilled",
                                       "message": "the memory limit was exceeded",
                                       "finishedAt": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(
            explain_with(&[looping, oom], &[], &[]),
            "1 CrashLoopBackOff (crash loop, last exit Error (exit code 1)), \
             1 Pending (restarting, last exit OOMKilled (exit code 137; the memory limit was exceeded))"
        );
    }

    #[test]
    fn ready_instances_say_nothing_but_their_warnings_and_workload_events_are_kept() {
        let nat = json!([{"reason": "NoOutboundNAT", "message": "install iptables"}]);
        let ready = |name| {
            instance(
                name,
                Some("n1"),
                json!({"phase": "Running", "ready": true, "warnings": nat}),
            )
        };
        let instances = [ready("web-0"), ready("web-1")];
        assert_eq!(
            explain_with(&instances, &[], &[]),
            "warning: NoOutboundNAT on 2 instances (install iptables)"
        );
        let mut d = deployment();
        d["status"] = json!({"replicas": 2, "readyReplicas": 2});
        let facts = Facts {
            instances: &instances,
            ..Facts::default()
        };
        assert_eq!(
            summary(&d, &facts),
            (
                "2/2 ready; warning: NoOutboundNAT on 2 instances (install iptables)".into(),
                true
            )
        );
        d["status"]["condition"] = json!("ProgressDeadlineExceeded");
        assert!(summary(&d, &facts)
            .0
            .ends_with("; progress deadline exceeded"));
        let events = [
            event(
                "Deployment",
                "web",
                "RolledBack",
                "old",
                "2026-01-01T00:00:00Z",
            ),
            event(
                "Deployment",
                "web",
                "RolledBack",
                "new",
                "2026-01-01T00:00:09Z",
            ),
            event(
                "Deployment",
                "other",
                "RolledBack",
                "not mine",
                "2026-01-01T00:00:09Z",
            ),
        ];
        assert_eq!(explain_with(&[], &events, &[]), "RolledBack: new");
        assert_eq!(explain_with(&[], &[], &[]), "");
    }

    #[test]
    fn an_instance_without_a_status_reason_takes_its_latest_warning_event() {
        let running = instance(
            "web-0",
            Some("n1"),
            json!({"phase": "Running", "ready": false}),
        );
        assert_eq!(
            explain_with(std::slice::from_ref(&running), &[], &[]),
            "1 Running (started, not ready yet)"
        );
        let events = [event(
            "Instance",
            "web-0",
            "Preempted",
            "evicted from n1",
            "2026-01-01T00:00:00Z",
        )];
        assert_eq!(
            explain_with(&[running], &events, &[]),
            "1 Running (Preempted: evicted from n1)"
        );
    }

    #[test]
    fn many_distinct_reasons_are_cut_to_a_count() {
        let instances: Vec<Value> = (0..5)
            .map(|n| {
                instance(
                    &format!("web-{n}"),
                    Some("n1"),
                    json!({"phase": "Failed", "ready": false, "reason": format!("R{n}")}),
                )
            })
            .collect();
        assert_eq!(
            explain_with(&instances, &[], &[]),
            "1 Failed (R0), 1 Failed (R1), 1 Failed (R2), 2 more not ready"
        );
    }
}
