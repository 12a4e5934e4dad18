//! Autoscaling, on the Raft leader: the HorizontalPodAutoscaler, the
//! VerticalPodAutoscaler's recommendations (`vpa`: pure; written to its status), the
//! cluster autoscaler (`cluster`: pure decisions; `workers`: worker VirtualMachines) and
//! scheduled scaling (`schedule`: the PredictiveBootstrapScaler).
//!
//! One task per node; it acts only while its node leads. Every `sync_period` it reads the
//! HPAs, their targets and instances from the local replica, scrapes the custom metrics
//! the HPAs name, runs the algorithm (`hpa`, `behavior`: pure) for each HPA, and writes
//! through Raft: the target's `Scale` (refused by a ResourceQuota or scaling policy, which
//! becomes a FailedRescale event and an AbleToScale=False condition), the HPA's status,
//! and an Event for every rescale with its inputs (`omnicloud scaling history`). Between
//! syncs it feeds the leader's metric buffer (`metrics`) from committed Instance changes.
//!
//! Each sync first runs the cluster autoscaler and the schedules (their events are
//! decisions too), then the HPAs and VPAs.
//!
//! State kept by the leader only (recommendation and scale history per HPA, the metric
//! buffer) is dropped when leadership is lost, as a restarted Kubernetes controller
//! manager forgets it.
//!
//! May call: `model`, `store` (commands), `cluster` (members, the clock), `config` (its
//! settings), `orchestrator::controllers` (views, events).

pub mod behavior;
pub mod cluster;
pub mod horizontal;
pub mod hpa;
pub mod metrics;
pub mod schedule;
pub mod vpa;
pub mod workers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::controllers::events::{EventDraft, Recorder};
use super::controllers::{
    key_of, load_all, rfc3339_seconds, status_change, version, ControllerMetrics, InstanceView,
};
use super::ControlPlane;
use crate::cluster::identity::now_ms;
/// `[autoscaler]` of the node config, which owns the type.
pub use crate::config::AutoscalerSettings;
use crate::model::event::EventReason;
use crate::model::{Kind, Resource, Spec};
use crate::store::{ChangeType, Command, Rejection};
use horizontal::Scaled;
use hpa::{History, Metric, Timing};
use metrics::{IngestStatus, MetricName, MetricStore};

/// What the loop keeps between syncs while leading.
#[derive(Default)]
struct State {
    /// Some HPA existed at the last sync (else nothing is buffered).
    active: bool,
    store: MetricStore,
    histories: HashMap<String, History>,
    recorder: Recorder,
    cluster: workers::ClusterState,
}

/// How the leader reaches workloads' metrics endpoints on other nodes (through their API).
pub struct Scraping {
    /// This node's name.
    pub node: String,
    pub node_token: String,
    /// API address of every member, by node name.
    pub apis: BTreeMap<String, String>,
}

pub fn spawn(
    control: ControlPlane,
    gossip: crate::cluster::Gossip,
    settings: AutoscalerSettings,
    metrics: ControllerMetrics,
    (node, node_token): (String, String),
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.sync_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = control.subscribe();
        let mut state = State::default();
        let mut leading = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                c = changes.recv() => {
                    match c {
                        Ok(c) if leading
                            && c.key.kind == Kind::Instance
                            && c.change != ChangeType::Deleted =>
                        {
                            let now = now_ms();
                            if let Some(s) = workers::provisioned(&mut state.cluster, &c.object, now) {
                                metrics.worker_provision.observe(s);
                            }
                            if state.active {
                                ingest(&mut state.store, &c.object);
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    }
                    continue;
                }
                _ = stop.changed() => return,
            }
            if !control.is_leader() {
                if leading {
                    state = State::default();
                    leading = false;
                }
                continue;
            }
            leading = true;
            let members = gossip.members().await;
            if !infrastructure(&control, &members, &mut state, &metrics).await {
                continue;
            }
            let scraping = Scraping {
                node: node.clone(),
                node_token: node_token.clone(),
                apis: members
                    .iter()
                    .map(|m| (m.meta.name.clone(), m.meta.api_addr.to_string()))
                    .collect(),
            };
            sync(&control, &settings, &mut state, &metrics, &scraping).await;
        }
    });
}

fn ingest(store: &mut MetricStore, object: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(object) else {
        return;
    };
    let meta = &v["metadata"];
    let (Some(ns), Some(name), Some(uid)) = (
        meta["namespace"].as_str(),
        meta["name"].as_str(),
        meta["uid"].as_str(),
    ) else {
        return;
    };
    let status: IngestStatus = serde_json::from_value(v["status"].clone()).unwrap_or_default();
    store.ingest((ns, name, uid), &status, now_ms());
}

/// Scrapes the custom metrics HPAs name from their targets' ready instances into the
/// buffer; returns the failures by metric name (the last one seen).
async fn scrape_all(
    jobs: Vec<(String, String, String, MetricName, String)>,
    store: &mut MetricStore,
    settings: &AutoscalerSettings,
    token: &str,
) -> BTreeMap<String, String> {
    let timeout = (settings.sync_period / 2).min(Duration::from_secs(2));
    let window = settings.sync_period.as_millis() as u64;
    let tasks = jobs
        .into_iter()
        .map(|(ns, name, uid, metric, url)| async move {
            let MetricName::Custom(m) = &metric else {
                unreachable!("only custom metrics are scraped")
            };
            let (u, m2, t) = (url.clone(), m.clone(), token.to_string());
            let result = tokio::task::spawn_blocking(move || metrics::scrape(&u, &m2, timeout, &t))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            (ns, name, uid, metric, result)
        });
    let mut errors = BTreeMap::new();
    for (ns, name, uid, metric, result) in futures::future::join_all(tasks).await {
        let MetricName::Custom(m) = &metric else {
            continue;
        };
        match result {
            Ok(v) => store.record((&ns, &name, &uid), metric.clone(), now_ms(), v, window),
            Err(e) => {
                errors.insert(m.clone(), e);
            }
        }
    }
    errors
}

/// The cluster autoscaler and the schedules; false when a write failed (not leading).
async fn infrastructure(
    control: &ControlPlane,
    members: &[crate::cluster::MemberView],
    state: &mut State,
    metrics: &ControllerMetrics,
) -> bool {
    let now = now_ms();
    let now_text = rfc3339_seconds(now);
    let directors = members
        .iter()
        .filter(|m| {
            m.status != crate::cluster::MemberStatus::Down
                && m.meta.roles.contains(&crate::model::Role::Director)
        })
        .count();
    let (mut commands, mut events) = schedule::plan(control, directors, now, &now_text);
    let (c, e) = workers::plan(control, members, &mut state.cluster, now);
    commands.extend(c);
    events.extend(e);
    metrics.count(&events);
    commands.extend(state.recorder.commands(events, &now_text));
    for command in commands {
        match control.write_local(command).await {
            Ok(r) => {
                if let Some(e) = r.rejection {
                    tracing::debug!(?e, "autoscaler write refused; decided again next sync");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "autoscaler write not written");
                return false;
            }
        }
    }
    true
}

/// One sync of the HPAs and VPAs:
///
/// 1. The autoscalers, their targets and instances; with none, nothing is buffered.
/// 2. The instances' usage and readiness from their statuses into the metric buffer
///    (instances that are gone are forgotten).
/// 3. The custom metrics the HPAs name, scraped from their targets' ready instances.
/// 4. Each HPA decided, its target scaled, its status written ([`sync_hpas`]).
/// 5. Each VPA's recommendation written to its status.
/// 6. The events of the sync recorded.
///
/// A write that fails (not leading any more) ends the sync.
async fn sync(
    control: &ControlPlane,
    settings: &AutoscalerSettings,
    state: &mut State,
    metrics: &ControllerMetrics,
    scraping: &Scraping,
) {
    // 1.
    let hpas = load_all(control, Kind::HorizontalPodAutoscaler);
    let vpas = load_all(control, Kind::VerticalPodAutoscaler);
    let instances = load_all(control, Kind::Instance);
    state.active = !hpas.is_empty() || !vpas.is_empty();
    if !state.active {
        state.histories.clear();
        state.store = MetricStore::default();
        return;
    }
    let mut workloads = load_all(control, Kind::Deployment);
    workloads.extend(load_all(control, Kind::StatefulSet));
    let now = now_ms();
    // 2.
    ingest_statuses(&mut state.store, &instances, now);
    let views: Vec<InstanceView> = instances.iter().filter_map(InstanceView::of).collect();
    // 3.
    let jobs = scrape_jobs(&hpas, &workloads, &views, scraping);
    let scrape_errors = scrape_all(jobs, &mut state.store, settings, &scraping.node_token).await;
    // 4.
    let pass = HpaPass {
        control,
        workloads: &workloads,
        views: &views,
        scrape_errors: &scrape_errors,
        timing: Timing {
            now_ms: now,
            cpu_initialization_period_ms: settings.cpu_initialization_period.as_millis() as u64,
            initial_readiness_delay_ms: settings.initial_readiness_delay.as_millis() as u64,
        },
        windows: horizontal::Windows {
            window_ms: settings.metric_window.as_millis() as u64,
            // A sample older than a few periods is stale (its agent stopped reporting).
            max_age_ms: 4 * (settings.metric_window.max(settings.sync_period)).as_millis() as u64,
            now_ms: now,
        },
        now_text: rfc3339_seconds(now),
    };
    let mut events = Vec::new();
    if sync_hpas(&pass, &hpas, state, &mut events).await.is_err() {
        return;
    }
    // 5.
    for v in &vpas {
        let Some(status) = vpa_status(v, &workloads, &views, &state.store, &pass.now_text) else {
            continue;
        };
        if let Some(command) = status_change(v, &status) {
            if control.write_local(command).await.is_err() {
                return;
            }
        }
    }
    // 6.
    metrics.count(&events);
    for command in state.recorder.commands(events, &pass.now_text) {
        if control.write_local(command).await.is_err() {
            return;
        }
    }
}

/// Step 2: every instance's reported usage and readiness into the buffer, and the buffer
/// cut to the instances that still exist.
fn ingest_statuses(store: &mut MetricStore, instances: &[Resource], now: u64) {
    for i in instances {
        let status: IngestStatus = i
            .status
            .clone()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let ns = i.metadata.namespace.as_deref().unwrap_or("");
        store.ingest((ns, &i.metadata.name, &i.metadata.uid), &status, now);
    }
    let live: HashSet<(&str, &str)> = instances
        .iter()
        .map(|i| {
            (
                i.metadata.namespace.as_deref().unwrap_or(""),
                i.metadata.uid.as_str(),
            )
        })
        .collect();
    store.retain(|ns, _, uid| live.contains(&(ns, uid)));
}

/// The instances `target` owns.
fn owned<'a>(views: &[InstanceView<'a>], target: &Resource) -> Vec<InstanceView<'a>> {
    views
        .iter()
        .filter(|i| i.owned_by(target.kind, &target.metadata.uid))
        .cloned()
        .collect()
}

/// Step 3: one scrape per ready instance of each HPA's target, per custom metric:
/// (namespace, name, uid, metric, url).
fn scrape_jobs(
    hpas: &[Resource],
    workloads: &[Resource],
    views: &[InstanceView],
    scraping: &Scraping,
) -> Vec<(String, String, String, MetricName, String)> {
    let mut jobs = Vec::new();
    for hpa in hpas {
        let Some(Spec::HorizontalPodAutoscaler(spec)) = &hpa.spec else {
            continue;
        };
        let Some(target) = horizontal::target(hpa, spec, workloads) else {
            continue;
        };
        let endpoint = horizontal::template(target).and_then(metrics::scrape_endpoint);
        for m in hpa::metrics_of(spec) {
            let Metric::PodsAverage { name, .. } = m else {
                continue;
            };
            let Some((port, path)) = &endpoint else {
                continue;
            };
            for i in owned(views, target)
                .iter()
                .filter(|i| i.ready() && !i.status.ip.is_empty())
            {
                let node = i.node().unwrap_or_default();
                let Some(url) = metrics::scrape_url(
                    &scraping.node,
                    node,
                    scraping.apis.get(node).map(String::as_str),
                    (i.namespace(), i.name(), &i.status.ip),
                    *port,
                    path,
                ) else {
                    continue;
                };
                jobs.push((
                    i.namespace().to_string(),
                    i.name().to_string(),
                    i.resource.metadata.uid.clone(),
                    MetricName::Custom(name.clone()),
                    url,
                ));
            }
        }
    }
    jobs
}

/// What one sync's HPAs share.
struct HpaPass<'a> {
    control: &'a ControlPlane,
    workloads: &'a [Resource],
    views: &'a [InstanceView<'a>],
    scrape_errors: &'a BTreeMap<String, String>,
    timing: Timing,
    windows: horizontal::Windows,
    now_text: String,
}

/// A write failed (not leading any more): the sync ends.
struct Stopped;

/// Step 4: each HPA with an existing target that no earlier HPA claimed is decided
/// ([`sync_hpa`]); the histories of HPAs that are gone are dropped.
async fn sync_hpas(
    pass: &HpaPass<'_>,
    hpas: &[Resource],
    state: &mut State,
    events: &mut Vec<EventDraft>,
) -> Result<(), Stopped> {
    let mut claimed: HashSet<String> = HashSet::new();
    let mut keys = HashSet::new();
    for hpa in hpas {
        let Some(Spec::HorizontalPodAutoscaler(spec)) = &hpa.spec else {
            continue;
        };
        let key = key_of(hpa).to_string();
        keys.insert(key.clone());
        let Some(target) = horizontal::target(hpa, spec, pass.workloads) else {
            events.push(EventDraft::warning(
                hpa,
                EventReason::FailedGetScale,
                format!(
                    "the scale target {}/{} does not exist",
                    spec.scale_target_ref.kind, spec.scale_target_ref.name
                ),
                horizontal::SOURCE,
            ));
            continue;
        };
        let target_key = key_of(target).to_string();
        if !claimed.insert(target_key.clone()) {
            events.push(EventDraft::warning(
                hpa,
                EventReason::AmbiguousSelector,
                format!("another HorizontalPodAutoscaler already scales {target_key}; this one is ignored"),
                horizontal::SOURCE,
            ));
            continue;
        }
        sync_hpa(pass, (hpa, spec, target), key, state, events).await?;
    }
    state.histories.retain(|k, _| keys.contains(k));
    Ok(())
}

/// One HPA: the algorithm's decision, the target's Scale written (a refusal is a
/// FailedRescale; a conflict waits for the next sync), the events, and the HPA's status.
async fn sync_hpa(
    pass: &HpaPass<'_>,
    (hpa, spec, target): (&Resource, &crate::model::HpaSpec, &Resource),
    key: String,
    state: &mut State,
    events: &mut Vec<EventDraft>,
) -> Result<(), Stopped> {
    let current = target.replicas().unwrap_or(0);
    let mine = owned(pass.views, target);
    let pods = horizontal::pods(&mine, &state.store);
    let observed = horizontal::observe(
        &hpa::metrics_of(spec),
        &mine,
        &state.store,
        pass.windows,
        pass.scrape_errors,
    );
    let history = state.histories.entry(key).or_default();
    let d = hpa::decide(spec, current, &pods, &observed, history, pass.timing);
    let mut scaled = Scaled::No;
    if d.rescale {
        let command = Command::Scale {
            key: key_of(target),
            replicas: d.desired,
            expected_version: version(target),
        };
        scaled = match pass.control.write_local(command).await {
            Ok(r) => match r.rejection {
                None => Scaled::Yes,
                // Moved meanwhile: decide again next sync with fresh state.
                Some(Rejection::Conflict { .. }) => return Ok(()),
                Some(e) => Scaled::Refused(e.to_string()),
            },
            Err(e) => {
                tracing::debug!(error = %e, "autoscaler scale not written");
                return Err(Stopped);
            }
        };
        let message = horizontal::event_message(&d);
        match &scaled {
            Scaled::Yes => {
                let now = pass.timing.now_ms;
                history.record_scale(&hpa::Behavior::of(spec), current, d.desired, now);
                events.push(EventDraft::normal(
                    hpa,
                    EventReason::SuccessfulRescale,
                    message,
                    horizontal::SOURCE,
                ));
            }
            Scaled::Refused(why) => events.push(EventDraft::warning(
                hpa,
                EventReason::FailedRescale,
                format!("{message}; refused: {why}"),
                horizontal::SOURCE,
            )),
            Scaled::No => {}
        }
    } else if let Some(c) = d
        .conditions
        .iter()
        .find(|c| c.kind == "ScalingActive" && !c.status)
    {
        if c.reason != "ScalingDisabled" {
            events.push(EventDraft::warning(
                hpa,
                EventReason::FailedComputeMetricsReplicas,
                c.message.clone(),
                horizontal::SOURCE,
            ));
        }
    }
    let status = horizontal::status(hpa, spec, &d, &scaled, &pass.now_text);
    if let Some(command) = status_change(hpa, &status) {
        if let Err(e) = pass.control.write_local(command).await {
            tracing::debug!(error = %e, "HPA status not written");
            return Err(Stopped);
        }
    }
    Ok(())
}

/// A VPA's new status from its target's usage history in the buffer.
fn vpa_status(
    v: &Resource,
    workloads: &[Resource],
    views: &[InstanceView],
    store: &MetricStore,
    now: &str,
) -> Option<serde_json::Value> {
    let Some(Spec::VerticalPodAutoscaler(spec)) = &v.spec else {
        return None;
    };
    let ns = v.metadata.namespace.as_deref();
    let target = workloads.iter().find(|w| {
        w.kind.as_str() == spec.target_ref.kind
            && w.metadata.name == spec.target_ref.name
            && w.metadata.namespace.as_deref() == ns
    });
    let Some(target) = target else {
        let why = format!(
            "the target {}/{} does not exist",
            spec.target_ref.kind, spec.target_ref.name
        );
        return Some(vpa::status(v.status.as_ref(), &[], Some(&why), now));
    };
    let containers: Vec<String> = horizontal::template(target)
        .map(|t| t.spec.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let mut h = vpa::UsageHistory::default();
    let (mut first, mut last) = (u64::MAX, 0);
    for i in views
        .iter()
        .filter(|i| i.owned_by(target.kind, &target.metadata.uid))
    {
        let key = (i.namespace(), i.name(), i.resource.metadata.uid.as_str());
        let cpu = store.points(key, &MetricName::Cpu);
        for (at, milli) in &cpu {
            first = first.min(*at);
            last = last.max(*at);
            h.cpu_millis.push(*milli as f64);
        }
        h.samples += cpu.len();
        let peak = store
            .points(key, &MetricName::Memory)
            .iter()
            .map(|p| p.1)
            .max();
        if let Some(p) = peak {
            h.memory_peaks.push(p as f64 / 1000.0);
        }
    }
    h.span_ms = last.saturating_sub(first);
    let recs = vpa::recommend(spec, &containers, &h);
    Some(vpa::status(v.status.as_ref(), &recs, None, now))
}
