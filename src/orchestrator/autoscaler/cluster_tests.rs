//! The cluster autoscaler's decisions on hand-made inputs with a fake clock.

use super::*;
use crate::model::capacity::{NodeGroupScaling, ScaleDownRule, ScaleUpRule};
use crate::model::event::EventReason;
use crate::model::DurationStr;

const MI: u64 = 1 << 20;
const T0: u64 = 1_700_000_000_000;

fn dur(s: &str) -> Option<DurationStr> {
    Some(serde_json::from_value(serde_json::json!(s)).unwrap())
}

/// decisionTime 30s, emptyTime 60s, no cooldowns, threshold 30%.
fn group(name: &str, min: i64, max: i64) -> NodeGroup {
    NodeGroup {
        name: name.into(),
        node_class: Some("small".into()),
        min_size: min,
        max_size: max,
        scaling_policy: Some(NodeGroupScaling {
            scale_up: Some(ScaleUpRule {
                decision_time: dur("30s"),
                ..Default::default()
            }),
            scale_down: Some(ScaleDownRule {
                utilization_threshold: Some(30),
                empty_time: dur("60s"),
                cooldown: dur("0s"),
            }),
        }),
    }
}

const SMALL: Size = Size {
    cpu_millis: 1000,
    memory_bytes: 512 * MI,
};

fn resolved(spec: &NodeGroup) -> Group<'_> {
    Group {
        spec,
        class: Some((
            "small".into(),
            SMALL,
            Size {
                cpu_millis: 1000,
                memory_bytes: 528 * MI,
            },
        )),
        scheduled: None,
    }
}

fn pending(name: &str, cpu: u64, waited_s: u64) -> Pending {
    Pending {
        key: format!("default/{name}"),
        need: Size {
            cpu_millis: cpu,
            memory_bytes: 64 * MI,
        },
        since_ms: T0 - waited_s * 1000,
    }
}

fn worker(vm: &str, joined: bool, placed: &[u64], requested_ago_s: u64) -> Worker {
    Worker {
        vm: vm.into(),
        group: "gp".into(),
        node: format!("{vm}-0"),
        requested_ms: T0 - requested_ago_s * 1000,
        joined,
        capacity: SMALL,
        placed: placed
            .iter()
            .map(|c| Size {
                cpu_millis: *c,
                memory_bytes: 16 * MI,
            })
            .collect(),
    }
}

fn inputs<'a>(groups: Vec<Group<'a>>, pending: Vec<Pending>, workers: Vec<Worker>) -> Inputs<'a> {
    Inputs {
        now_ms: T0,
        groups,
        pending,
        workers,
        directors: vec![Size {
            cpu_millis: 16_000,
            memory_bytes: 64 << 30,
        }],
        orchestrators: 1,
        placed_containers: 0,
        agent_room: vec![],
        taken: BTreeSet::new(),
        limits: Limits::default(),
    }
}

fn reasons(d: &[Decision]) -> Vec<EventReason> {
    d.iter().map(|d| d.reason).collect()
}

fn created(d: &[Decision]) -> Vec<String> {
    d.iter()
        .filter_map(|d| match &d.action {
            Some(Action::Create(n)) => Some(n.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn deleted(d: &[Decision]) -> Vec<String> {
    d.iter()
        .filter_map(|d| match &d.action {
            Some(Action::Delete(n)) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn unschedulable_instances_ask_for_a_worker_only_after_the_decision_time() {
    let g = group("gp", 0, 5);
    let mut m = Memory::default();
    let early = decide(
        &inputs(vec![resolved(&g)], vec![pending("web-0", 500, 20)], vec![]),
        &mut m,
    );
    assert!(early.is_empty(), "{early:?}");
    let d = decide(
        &inputs(vec![resolved(&g)], vec![pending("web-0", 500, 31)], vec![]),
        &mut m,
    );
    assert_eq!(reasons(&d), ["TriggeredScaleUp"]);
    assert_eq!(created(&d), ["gp-0"]);
    assert!(d[0].message.contains("decisionTime"), "{}", d[0].message);
    assert!(d[0].message.contains("default/web-0"), "{}", d[0].message);
}

#[test]
fn demand_is_packed_into_workers_and_max_size_holds() {
    let g = group("gp", 0, 2);
    let mut m = Memory::default();
    // Three instances of 800m: one per 1-cpu worker; max 2.
    let three = || {
        (0..3)
            .map(|i| pending(&format!("web-{i}"), 800, 40))
            .collect()
    };
    let d = decide(&inputs(vec![resolved(&g)], three(), vec![]), &mut m);
    assert_eq!(reasons(&d), ["TriggeredScaleUp", "ScaleUpLimited"]);
    assert_eq!(created(&d), ["gp-0", "gp-1"]);
    assert!(d[1].message.contains("maxSize 2"), "{}", d[1].message);
    // Next sync: the two are booting and cover two; the third still hits maxSize.
    let booting = vec![worker("gp-0", false, &[], 5), worker("gp-1", false, &[], 5)];
    let d = decide(&inputs(vec![resolved(&g)], three(), booting), &mut m);
    assert_eq!(reasons(&d), ["ScaleUpLimited"]);
    assert!(created(&d).is_empty());
    // Small instances share a worker: four of 200m need one.
    let g = group("gp", 0, 5);
    let small = (0..4)
        .map(|i| pending(&format!("s-{i}"), 200, 40))
        .collect();
    let d = decide(&inputs(vec![resolved(&g)], small, vec![]), &mut m);
    assert_eq!(created(&d), ["gp-0"]);
}

#[test]
fn a_booting_worker_covers_the_demand_it_was_made_for() {
    let g = group("gp", 0, 5);
    let d = decide(
        &inputs(
            vec![resolved(&g)],
            vec![pending("web-0", 500, 100)],
            vec![worker("gp-0", false, &[], 60)],
        ),
        &mut Memory::default(),
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn min_size_and_a_scheduled_pool_are_floors() {
    let g = group("gp", 2, 5);
    let d = decide(
        &inputs(vec![resolved(&g)], vec![], vec![]),
        &mut Memory::default(),
    );
    assert_eq!(reasons(&d), ["ScaleUpToMinSize"]);
    assert_eq!(created(&d), ["gp-0", "gp-1"]);
    let mut sched = resolved(&g);
    sched.scheduled = Some((9, "business-hours".into()));
    let mut inp = inputs(vec![sched], vec![], vec![worker("gp-0", true, &[500], 900)]);
    inp.taken.extend(["gp-0".to_string(), "gp-1".to_string()]);
    let d = decide(&inp, &mut Memory::default());
    assert_eq!(reasons(&d), ["ScheduledScaleUp"]);
    assert!(d[0].message.contains("business-hours"), "{}", d[0].message);
    // Capped at maxSize 5; names skip the taken ones.
    assert_eq!(created(&d), ["gp-2", "gp-3", "gp-4", "gp-5"]);
}

#[test]
fn scale_up_cooldown_no_director_and_director_room_limit() {
    let mut g = group("gp", 0, 5);
    g.scaling_policy
        .as_mut()
        .unwrap()
        .scale_up
        .as_mut()
        .unwrap()
        .cooldown = dur("60s");
    let d = decide(
        &inputs(
            vec![resolved(&g)],
            vec![pending("a", 800, 100), pending("b", 800, 100)],
            vec![worker("gp-0", false, &[], 10)],
        ),
        &mut Memory::default(),
    );
    assert_eq!(reasons(&d), ["ScaleUpLimited"]);
    assert!(d[0].message.contains("cooldown 60s"), "{}", d[0].message);

    let g = group("gp", 0, 5);
    let mut inp = inputs(vec![resolved(&g)], vec![pending("a", 800, 100)], vec![]);
    inp.directors.clear();
    let d = decide(&inp, &mut Memory::default());
    assert_eq!(reasons(&d), ["ScaleUpLimited"]);
    assert!(
        d[0].message.contains("no alive director"),
        "{}",
        d[0].message
    );

    // Room for one 1-cpu VM on a 1.5-cpu director.
    let mut inp = inputs(
        vec![resolved(&g)],
        vec![pending("a", 800, 100), pending("b", 800, 100)],
        vec![],
    );
    inp.directors = vec![Size {
        cpu_millis: 1500,
        memory_bytes: 4 << 30,
    }];
    let d = decide(&inp, &mut Memory::default());
    assert_eq!(reasons(&d), ["TriggeredScaleUp", "ScaleUpLimited"]);
    assert_eq!(created(&d), ["gp-0"]);
    assert!(d[1].message.contains("room for 1 more"), "{}", d[1].message);
}

#[test]
fn bootstrap_limits_cap_the_scale_up() {
    let g = group("gp", 0, 10);
    // directorRatio 1:2 with one director: two worker VMs at most, two exist.
    let mut inp = inputs(
        vec![resolved(&g)],
        vec![pending("a", 800, 100)],
        vec![
            worker("gp-0", true, &[900], 900),
            worker("gp-1", true, &[900], 900),
        ],
    );
    inp.limits.director_ratio = Some((1, 2));
    let d = decide(&inp, &mut Memory::default());
    assert_eq!(reasons(&d), ["ScaleUpLimited"]);
    assert!(
        d[0].message.contains("directorRatio 1:2"),
        "{}",
        d[0].message
    );

    // orchestratorRatio 1:3, one orchestrator, two placed: one more container counts.
    let mut inp = inputs(
        vec![resolved(&g)],
        vec![
            pending("a", 800, 100),
            pending("b", 800, 90),
            pending("c", 800, 80),
        ],
        vec![],
    );
    inp.limits.orchestrator_ratio = Some((1, 3));
    inp.placed_containers = 2;
    let d = decide(&inp, &mut Memory::default());
    assert_eq!(reasons(&d), ["ScaleUpLimited", "TriggeredScaleUp"]);
    assert_eq!(created(&d), ["gp-0"]);
    assert!(
        d[0].message
            .contains("2 unschedulable instance(s) not counted"),
        "{}",
        d[0].message
    );

    // minimumReservedCapacity 50: a 1-cpu worker offers 500m.
    let mut inp = inputs(vec![resolved(&g)], vec![pending("big", 600, 100)], vec![]);
    inp.limits.reserve_pct = 50;
    assert!(decide(&inp, &mut Memory::default()).is_empty());
    let mut inp = inputs(
        vec![resolved(&g)],
        vec![pending("a", 400, 100), pending("b", 400, 100)],
        vec![],
    );
    inp.limits.reserve_pct = 50;
    let d = decide(&inp, &mut Memory::default());
    assert_eq!(
        created(&d),
        ["gp-0", "gp-1"],
        "one 400m instance per 500m of usable room"
    );
}

#[test]
fn an_empty_worker_goes_after_the_empty_time_but_not_below_the_floor() {
    let g = group("gp", 0, 5);
    let mut m = Memory::default();
    let ws = || {
        vec![
            worker("gp-0", true, &[], 900),
            worker("gp-1", true, &[700], 900),
        ]
    };
    let mut inp = inputs(vec![resolved(&g)], vec![], ws());
    assert!(decide(&inp, &mut m).is_empty(), "unneeded from now");
    inp.now_ms += 59_000;
    assert!(decide(&inp, &mut m).is_empty(), "not yet 60s");
    inp.now_ms += 2_000;
    let d = decide(&inp, &mut m);
    assert_eq!(reasons(&d), ["ScaleDownEmpty"]);
    assert_eq!(deleted(&d), ["gp-0"]);
    assert!(d[0].message.contains("emptyTime 60s"), "{}", d[0].message);

    // minSize 2 keeps both.
    let g2 = group("gp", 2, 5);
    let mut m = Memory::default();
    let mut inp = inputs(vec![resolved(&g2)], vec![], ws());
    decide(&inp, &mut m);
    inp.now_ms += 120_000;
    assert!(decide(&inp, &mut m).is_empty());

    // The scale-down cooldown after the last scale-up.
    let mut g3 = group("gp", 0, 5);
    g3.scaling_policy
        .as_mut()
        .unwrap()
        .scale_down
        .as_mut()
        .unwrap()
        .cooldown = dur("10m");
    let mut m = Memory::default();
    let mut inp = inputs(
        vec![resolved(&g3)],
        vec![],
        vec![worker("gp-0", true, &[], 100)],
    );
    decide(&inp, &mut m);
    inp.now_ms += 120_000;
    assert!(
        decide(&inp, &mut m).is_empty(),
        "cooling down (last add 220s ago)"
    );
    inp.now_ms += 400_000;
    assert_eq!(deleted(&decide(&inp, &mut m)), ["gp-0"]);
}

#[test]
fn a_worker_that_is_needed_again_starts_its_empty_time_over() {
    let g = group("gp", 0, 5);
    let mut m = Memory::default();
    let mut inp = inputs(
        vec![resolved(&g)],
        vec![],
        vec![worker("gp-0", false, &[], 50)],
    );
    decide(&inp, &mut m);
    inp.now_ms += 40_000;
    inp.pending = vec![pending("late", 500, 0)];
    inp.pending[0].since_ms = inp.now_ms - 31_000;
    assert!(
        decide(&inp, &mut m).is_empty(),
        "the booting worker covers it"
    );
    inp.pending.clear();
    inp.now_ms += 40_000;
    assert!(decide(&inp, &mut m).is_empty(), "unneeded from now on");
    inp.now_ms += 40_000;
    assert!(
        decide(&inp, &mut m).is_empty(),
        "40s unneeded since the demand went"
    );
    inp.now_ms += 21_000;
    assert_eq!(deleted(&decide(&inp, &mut m)), ["gp-0"]);
}

#[test]
fn an_underused_worker_goes_only_when_its_instances_fit_elsewhere() {
    let g = group("gp", 0, 5);
    let mut m = Memory::default();
    let mut inp = inputs(
        vec![resolved(&g)],
        vec![],
        vec![worker("gp-0", true, &[100], 900)],
    );
    decide(&inp, &mut m);
    inp.now_ms += 61_000;
    assert!(decide(&inp, &mut m).is_empty(), "no other agent has room");
    inp.agent_room = vec![Size {
        cpu_millis: 500,
        memory_bytes: 1 << 30,
    }];
    let mut m = Memory::default();
    decide(&inp, &mut m);
    inp.now_ms += 61_000;
    let d = decide(&inp, &mut m);
    assert_eq!(reasons(&d), ["ScaleDownUnderused"]);
    assert!(
        d[0].message.contains("utilizationThreshold 30%"),
        "{}",
        d[0].message
    );
}

#[test]
fn a_worker_that_never_joins_is_given_up_and_the_group_backs_off() {
    let g = group("gp", 0, 5);
    let mut m = Memory::default();
    let inp = inputs(
        vec![resolved(&g)],
        vec![pending("a", 500, 1000)],
        vec![worker("gp-0", false, &[], 16 * 60)],
    );
    let d = decide(&inp, &mut m);
    assert_eq!(reasons(&d), ["ScaleDownUnregistered", "ScaleUpLimited"]);
    assert_eq!(deleted(&d), ["gp-0"]);
    assert!(d[1].message.contains("never joined"), "{}", d[1].message);
    let mut inp = inputs(vec![resolved(&g)], vec![pending("a", 500, 1000)], vec![]);
    inp.now_ms += 1000;
    let d = decide(&inp, &mut m);
    assert_eq!(reasons(&d), ["ScaleUpLimited"]);
    assert!(d[0].message.contains("never joined"), "{}", d[0].message);
}

#[test]
fn a_missing_node_class_is_reported() {
    let g = group("gp", 0, 5);
    let mut r = resolved(&g);
    r.class = None;
    let d = decide(&inputs(vec![r], vec![], vec![]), &mut Memory::default());
    assert_eq!(reasons(&d), ["ScaleUpLimited"]);
    assert!(
        d[0].message.contains("NodeClass small does not exist"),
        "{}",
        d[0].message
    );
}
