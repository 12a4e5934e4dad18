//! An instance with several containers (or init containers): a pod. Its sandbox, a
//! `__pause` process ([`crate::container::sandbox`]), holds the instance's network
//! namespace, veth and address; the supervisor ([`crate::supervise::Unit`]) supervises the
//! sandbox as the instance's process, and this module the containers inside it:
//!
//! 1. start: the sandbox, its veth; ConfigMap/Secret volumes and env; every image; then the
//!    init containers one at a time, each to exit 0 (a failure ends the start with
//!    `Init:Error`, then `Init:CrashLoopBackOff`, and the supervisor's backoff retries it);
//!    then the app containers, each joining the sandbox's network namespace (a sidecar
//!    reaches the others on localhost), each in its own cgroup under the instance's;
//! 2. every [`TICK`]: a container that ended is restarted by the restart policy with its
//!    own backoff (`restartCount`, `CrashLoopBackOff` in its state), its own liveness and
//!    readiness probes run; the instance is ready when every container is;
//! 3. stop: the containers (SIGTERM, the grace period, removed), the sandbox, its veth, the
//!    instance's cgroup and the containers' logs go.
//!
//! Each container logs to `<logs>/<namespace>/<instance>/<container>.log`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::Instant as Tick;

use super::health::{Health, ProbeSettings, Target};
use super::supervisor::{retried, Scheduled};
use super::{images, translate, Agent};
use crate::container::{sandbox, ContainerSpec, Network};
use crate::model::event::EventReason;
use crate::model::instance::{reasons, ContainerState, ContainerStatus, Phase, Termination};
use crate::model::workload::{Container, PullPolicy};
use crate::supervise::{self, now_rfc3339, Backoff, Ended, Probe, StartError, Unit};

/// How often the containers are looked at (ends, restarts due, probes due).
pub const TICK: Duration = Duration::from_millis(250);

/// One app container of a pod.
pub struct Member {
    pub name: String,
    pub id: String,
    run: Option<Running>,
    backoff: Backoff,
    /// When it starts again; None while it runs or once it is done for good.
    restart_at: Option<Tick>,
    done: bool,
    liveness: Option<Scheduled>,
    readiness: Option<Scheduled>,
}

struct Running {
    pid: i32,
    started: Instant,
    exit: JoinHandle<Option<i32>>,
}

/// What the agent keeps per pod.
pub struct Pod {
    pub members: Vec<Member>,
    /// The app containers' specs, made at start (a restart runs the same spec).
    specs: Vec<ContainerSpec>,
    /// Adopted from a previous node process: the containers are looked up on the first tick.
    adopt: bool,
    last_rotate: Instant,
}

impl Pod {
    pub fn new(spec: &crate::model::InstanceSpec, parent: &str) -> Pod {
        Pod {
            members: (spec.pod.containers.iter())
                .map(|c| Member {
                    name: c.name.clone(),
                    id: crate::container::spec::member_id(parent, &c.name),
                    run: None,
                    backoff: Backoff::default(),
                    restart_at: None,
                    done: false,
                    liveness: None,
                    readiness: None,
                })
                .collect(),
            specs: Vec::new(),
            adopt: true,
            last_rotate: Instant::now(),
        }
    }

    /// Every container id the pod may have on this node (init containers too).
    pub fn all_ids(spec: &crate::model::InstanceSpec, parent: &str) -> Vec<String> {
        spec.pod
            .containers_with_paths("")
            .map(|(_, c)| crate::container::spec::member_id(parent, &c.name))
            .collect()
    }
}

fn pod(unit: &mut Unit<Agent>) -> &mut Pod {
    unit.state.pod.as_mut().expect("a pod instance")
}

fn log_of(unit: &Unit<Agent>, container: &str) -> PathBuf {
    crate::supervise::logs::container_log_path(
        &unit.node.logs,
        &unit.key.namespace,
        &unit.key.name,
        container,
    )
}

/// Starts the sandbox and then the containers; on failure nothing is left running.
pub async fn start(unit: &mut Unit<Agent>) -> Result<(i32, u64), StartError> {
    let node = unit.node.clone();
    let network = node
        .network
        .get()
        .expect("waited for before the first start");
    let ip = unit.record.ip.expect("given with the record");
    let exe = node.containers.exe().to_path_buf();
    let id = unit.state.id.clone();
    let started = tokio::task::spawn_blocking(move || -> Result<(i32, u64), String> {
        let pid = sandbox::spawn_pause(&exe).map_err(|e| e.one_line())?;
        let ticks = supervise::start_ticks(pid).unwrap_or(0);
        if let Err(e) = network.attach(&id, pid, ip) {
            kill_sandbox_now(pid);
            return Err(e.one_line());
        }
        Ok((pid, ticks))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
    .map_err(|m| {
        retried(
            reasons::CONTAINER_CANNOT_RUN,
            format!("instance sandbox: {m}"),
        )
    })?;
    let (pid, ticks) = started;
    match start_in(unit, pid).await {
        Ok(()) => Ok((pid, ticks)),
        Err(e) => {
            remove_all(unit, Some((pid, ticks)), Duration::ZERO).await;
            Err(e)
        }
    }
}

async fn start_in(unit: &mut Unit<Agent>, sandbox_pid: i32) -> Result<(), StartError> {
    let netns = sandbox::netns_path(sandbox_pid);
    let (inits, apps) = build_specs(unit, &netns).await?;
    run_inits(unit, inits).await?;
    unit.status.phase = Phase::Pending;
    unit.status.reason = "PodInitializing".into();
    unit.status.message.clear();
    pod(unit).specs = apps;
    pod(unit).adopt = false;
    for i in 0..pod(unit).members.len() {
        start_member(unit, i)
            .await
            .map_err(|m| retried(reasons::CONTAINER_CANNOT_RUN, m))?;
    }
    Ok(())
}

/// ConfigMap/Secret volumes and env, images and resolv.conf: the container specs of the
/// init containers and of the app containers, every one joining `netns`.
async fn build_specs(
    unit: &mut Unit<Agent>,
    netns: &std::path::Path,
) -> Result<(Vec<ContainerSpec>, Vec<ContainerSpec>), StartError> {
    let node = unit.node.clone();
    super::supervisor::warn_unenforced(unit);
    let inits: Vec<Container> = unit.spec.pod.init_containers.clone().unwrap_or_default();
    let apps = unit.spec.pod.containers.clone();
    let all: Vec<(String, &Container)> = (inits.iter().enumerate())
        .map(|(i, c)| (format!("spec.pod.initContainers[{i}]"), c))
        .chain((apps.iter().enumerate()).map(|(i, c)| (format!("spec.pod.containers[{i}]"), c)))
        .collect();
    let refs: Vec<&Container> = all.iter().map(|(_, c)| *c).collect();
    let ip = unit.record.ip.map(|i| i.to_string()).unwrap_or_default();
    let envs = super::supervisor::config_volumes(unit, ip, &refs).await?;
    let secrets: Vec<String> = (unit.spec.pod.image_pull_secrets.iter().flatten())
        .map(|s| s.name.clone())
        .collect();
    let mut pulled: Vec<&str> = Vec::new();
    for c in &refs {
        if pulled.contains(&c.image.trim()) {
            continue;
        }
        pulled.push(c.image.trim());
        let want = images::Wanted {
            instance: &unit.key,
            image: c.image.trim(),
            policy: PullPolicy::of(&c.image, c.image_pull_policy.as_deref()),
            secrets: &secrets,
        };
        if let Err((reason, message)) = images::ensure(&node, &want).await {
            let reason = images::backing_off(&unit.status.reason, reason);
            return Err(retried(reason, message));
        }
    }
    let resolv = resolv_file(unit)?;
    let mut specs = Vec::new();
    for ((path, c), env) in all.iter().zip(envs) {
        let paths = translate::Paths {
            images: node.dirs.images.clone(),
            log: log_of(unit, &c.name),
            scratch: unit.state.scratch.clone(),
            claims: node.dirs.claims.join(&unit.key.namespace),
        };
        let id = crate::container::spec::member_id(&unit.state.id, &c.name);
        let join = Network::Join {
            netns: netns.to_path_buf(),
        };
        let mut spec =
            translate::member_spec(c, path, &id, &unit.key.name, &unit.spec, &paths, join, env)
                .map_err(|e| retried(reasons::INVALID_SPEC, e.to_string()))?;
        if let Some(file) = resolv.as_ref().filter(|_| !translate::own_resolv_conf(c)) {
            spec.mounts.push(crate::container::BindMount {
                host_path: file.clone(),
                container_path: "/etc/resolv.conf".into(),
                read_only: false,
            });
        }
        for m in &spec.mounts {
            if m.host_path.starts_with(&node.dirs.volumes)
                || m.host_path.starts_with(&node.dirs.claims)
            {
                let _ = std::fs::create_dir_all(&m.host_path);
            }
        }
        specs.push(spec);
    }
    let apps = specs.split_off(inits.len());
    Ok((specs, apps))
}

/// The instance's resolv.conf, written beside its emptyDirs (None: every container mounts
/// its own).
fn resolv_file(unit: &Unit<Agent>) -> Result<Option<PathBuf>, StartError> {
    let network = unit.node.network.get().expect("up before a start");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let text = translate::resolv_conf(
        &unit.spec,
        &unit.key.namespace,
        network.subnet.gateway(),
        &unit.node.cluster_domain,
        &host,
    )
    .map_err(|e| retried(reasons::INVALID_SPEC, e.to_string()))?;
    let Some(text) = text else { return Ok(None) };
    let file = unit.state.scratch.join("resolv.conf");
    std::fs::create_dir_all(&unit.state.scratch)
        .and_then(|_| std::fs::write(&file, text))
        .map_err(|e| retried("ContainerCannotRun", format!("{}: {e}", file.display())))?;
    Ok(Some(file))
}

/// Runs the init containers in order, each to its end; the first that does not exit 0
/// ends the start (`Init:Error`, `Init:CrashLoopBackOff` when it failed before).
async fn run_inits(unit: &mut Unit<Agent>, inits: Vec<ContainerSpec>) -> Result<(), StartError> {
    let n = inits.len();
    let names: Vec<String> = (unit.spec.pod.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect();
    if unit.status.init_container_statuses.len() != n {
        unit.status.init_container_statuses = (names.iter())
            .map(|name| ContainerStatus {
                name: name.clone(),
                state: ContainerState::Waiting {
                    reason: "PodInitializing".into(),
                    message: String::new(),
                },
                ..Default::default()
            })
            .collect();
    }
    for (i, spec) in inits.into_iter().enumerate() {
        let failed_before = matches!(
            unit.status.init_container_statuses[i].state,
            ContainerState::Terminated { exit_code, .. } if exit_code != Some(0)
        );
        if failed_before {
            unit.status.init_container_statuses[i].restart_count += 1;
        }
        unit.status.phase = Phase::Pending;
        unit.status.reason = format!("Init:{i}/{n}");
        unit.status.message = format!("running init container {}", names[i]);
        unit.status.init_container_statuses[i].state = ContainerState::Running {
            started_at: now_rfc3339(),
        };
        unit.status.init_container_statuses[i].container_id = spec.id.clone();
        unit.report();
        let code = run_to_end(unit, &spec).await?;
        let (reason, message) = match code {
            Some(0) => ("Completed", String::new()),
            Some(c) => ("Error", format!("exit code {c}")),
            None => ("Error", "the container ended".to_string()),
        };
        unit.status.init_container_statuses[i].state = ContainerState::Terminated {
            exit_code: code,
            reason: reason.into(),
            message: message.clone(),
            finished_at: now_rfc3339(),
        };
        if code != Some(0) {
            let looping = matches!(
                unit.status.reason.as_str(),
                "Init:Error" | "Init:CrashLoopBackOff"
            ) || failed_before;
            let reason = if looping {
                "Init:CrashLoopBackOff"
            } else {
                "Init:Error"
            };
            let message = format!("init container {} failed: {message}", names[i]);
            let warning = format!("back-off restarting failed init container {}", names[i]);
            images::event(&unit.node, &unit.key, true, EventReason::BackOff, warning);
            let mut e = retried(reason, message);
            e.retry = unit.spec.pod.restart_policy.as_deref() != Some("Never");
            return Err(e);
        }
    }
    Ok(())
}

/// Runs one init container and waits for its end (a stop asked for meanwhile ends it).
async fn run_to_end(
    unit: &mut Unit<Agent>,
    spec: &ContainerSpec,
) -> Result<Option<i32>, StartError> {
    let node = unit.node.clone();
    let _ = node.containers.remove(&spec.id).await;
    let pid = {
        let _permit = node.starts.acquire().await.expect("never closed");
        node.containers
            .run(spec)
            .await
            .map_err(|e| retried(reasons::CONTAINER_CANNOT_RUN, crate::error_chain(&e)))?
    };
    let ticks = supervise::start_ticks(pid).unwrap_or(0);
    let mut stop = unit.stop.clone();
    let code = tokio::select! {
        code = supervise::wait_exit(pid, ticks) => code,
        _ = supervise::stopped(&mut stop) => {
            let _ = node.containers.remove(&spec.id).await;
            return Err(StartError {
                reason: "Terminating",
                message: "stopped while an init container ran".into(),
                retry: false,
                wait: true,
            });
        }
    };
    let _ = node.containers.remove(&spec.id).await;
    Ok(code)
}

/// (Re)starts app container `i` from its spec.
async fn start_member(unit: &mut Unit<Agent>, i: usize) -> Result<(), String> {
    let node = unit.node.clone();
    let spec = pod(unit).specs[i].clone();
    let _ = node.containers.remove(&spec.id).await;
    let pid = {
        let _permit = node.starts.acquire().await.expect("never closed");
        let t0 = Instant::now();
        let pid = node
            .containers
            .run(&spec)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        node.metrics
            .start_duration
            .observe(t0.elapsed().as_secs_f64());
        pid
    };
    let ticks = supervise::start_ticks(pid).unwrap_or(0);
    watch_member(unit, i, pid, ticks);
    Ok(())
}

/// Container `i` runs as `pid`: its exit is awaited, its probes scheduled, its status says so.
fn watch_member(unit: &mut Unit<Agent>, i: usize, pid: i32, ticks: u64) {
    let c = unit.spec.pod.containers[i].clone();
    let ports = translate::named_ports(&c);
    let settings = |p: &Option<crate::model::workload::Probe>| -> Option<ProbeSettings> {
        super::health::settings(p.as_ref()?, &ports).ok()
    };
    let now = Tick::now();
    let m = &mut pod(unit).members[i];
    m.run = Some(Running {
        pid,
        started: Instant::now(),
        exit: tokio::spawn(supervise::wait_exit(pid, ticks)),
    });
    m.restart_at = None;
    m.liveness = Scheduled::new(settings(&c.liveness_probe), now);
    m.readiness = Scheduled::new(settings(&c.readiness_probe), now);
    let ready = m.readiness.is_none();
    let id = m.id.clone();
    let s = status_of(unit, i);
    s.state = ContainerState::Running {
        started_at: now_rfc3339(),
    };
    s.ready = ready;
    s.container_id = id;
}

fn status_of(unit: &mut Unit<Agent>, i: usize) -> &mut ContainerStatus {
    let names: Vec<String> = unit
        .spec
        .pod
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let statuses = &mut unit.status.container_statuses;
    if statuses.len() != names.len() {
        *statuses = names
            .into_iter()
            .map(|name| ContainerStatus {
                name,
                ..Default::default()
            })
            .collect();
    }
    &mut statuses[i]
}

/// One look at the containers: ends, restarts due, probes due. The instance's readiness.
pub async fn tick(unit: &mut Unit<Agent>) -> Probe {
    if pod(unit).adopt {
        adopt(unit).await;
    }
    let before = (
        unit.status.container_statuses.clone(),
        unit.status.reason.clone(),
    );
    for i in 0..pod(unit).members.len() {
        look_at(unit, i).await;
    }
    let members = &unit.state.pod.as_ref().expect("a pod instance").members;
    let all_done = members.iter().all(|m| m.done);
    let ready = !all_done
        && (unit.status.container_statuses.iter()).all(|s| s.ready)
        && unit.status.container_statuses.len() == members.len();
    unit.status.restarts = (unit.status.container_statuses.iter())
        .map(|s| s.restart_count)
        .sum();
    let waiting = (unit.status.container_statuses.iter()).find_map(|s| match &s.state {
        ContainerState::Waiting { reason, message } => Some((reason.clone(), message.clone())),
        _ => None,
    });
    if let Some((reason, message)) = waiting {
        unit.status.reason = reason;
        unit.status.message = message;
    } else if unit.status.reason == "PodInitializing"
        || unit.status.reason == reasons::CRASH_LOOP_BACK_OFF
        || unit.status.reason.starts_with("Init:")
    {
        unit.status.reason.clear();
        unit.status.message.clear();
    }
    if all_done {
        // Nothing will run again: the sandbox goes, and with it this run of the instance.
        if let Some(pid) = unit.record.pid {
            // SAFETY: kill(2) with a pid we started and still supervise.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let not_ready: Vec<String> = (unit.status.container_statuses.iter())
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    if (
        unit.status.container_statuses.clone(),
        unit.status.reason.clone(),
    ) != before
        && ready == unit.status.ready
    {
        unit.report();
    }
    rotate_logs(unit).await;
    Probe::Ready {
        ready,
        message: if not_ready.is_empty() {
            String::new()
        } else {
            format!("containers with unready status: [{}]", not_ready.join(" "))
        },
    }
}

async fn look_at(unit: &mut Unit<Agent>, i: usize) {
    let ip = IpAddr::V4(unit.record.ip.unwrap_or(Ipv4Addr::UNSPECIFIED));
    let exe = unit.node.containers.exe().to_path_buf();
    let id = pod(unit).members[i].id.clone();
    let bundle = unit.node.containers.bundle(&id);
    let m = &mut pod(unit).members[i];
    if let Some(run) = &m.run {
        if run.exit.is_finished() {
            let run = m.run.take().expect("just seen");
            let code = run.exit.await.unwrap_or(None);
            ended(unit, i, Some(code), None, run.started).await;
            return;
        }
        let target = Target {
            ip,
            pid: run.pid,
            exe,
            bundle: Some(bundle),
        };
        let now = Tick::now();
        if let Some(s) = m.liveness.as_mut().filter(|s| s.next <= now) {
            if let (Health::Failing, why) = s.run(target.clone()).await {
                let message = format!(
                    "liveness probe failed {} times: {}",
                    s.settings.failure_threshold,
                    why.unwrap_or_default()
                );
                let run = m.run.take().expect("runs");
                let id = m.id.clone();
                let _ = unit.node.containers.remove(&id).await;
                run.exit.abort();
                ended(unit, i, None, Some(message), run.started).await;
                return;
            }
        }
        let m = &mut pod(unit).members[i];
        if let Some(s) = m.readiness.as_mut().filter(|s| s.next <= now) {
            let (health, _) = s.run(target).await;
            status_of(unit, i).ready = health == Health::Passing;
        }
        return;
    }
    if m.restart_at.is_some_and(|at| at <= Tick::now()) {
        let name = m.name.clone();
        status_of(unit, i).restart_count += 1;
        if let Err(message) = start_member(unit, i).await {
            tracing::warn!(instance = %unit.key, container = %name, %message, "container did not start");
            let m = &mut pod(unit).members[i];
            let delay = m.backoff.next_delay(Duration::ZERO);
            m.restart_at = Some(Tick::now() + delay);
            status_of(unit, i).state = ContainerState::Waiting {
                reason: reasons::CONTAINER_CANNOT_RUN.into(),
                message,
            };
        }
    }
}

/// Container `i` ended (`code`: its exit, None when it was ended for its liveness probe):
/// its termination recorded, its restart scheduled by the restart policy.
async fn ended(
    unit: &mut Unit<Agent>,
    i: usize,
    code: Option<Option<i32>>,
    unhealthy: Option<String>,
    started: Instant,
) {
    let id = pod(unit).members[i].id.clone();
    let oom = crate::container::runtime::oom_kills(&id).unwrap_or(0) > 0;
    let _ = unit.node.containers.remove(&id).await;
    let exit_code = code.flatten();
    let (reason, message) = match (oom, unhealthy, exit_code) {
        (true, _, _) => ("OOMKilled", "the memory limit was exceeded".to_string()),
        (_, Some(m), _) => ("LivenessProbeFailed", m),
        (_, _, Some(0)) => ("Completed", String::new()),
        (_, _, Some(c)) => ("Error", format!("exit code {c}")),
        _ => ("Error", "the container ended".to_string()),
    };
    let name = pod(unit).members[i].name.clone();
    tracing::info!(instance = %unit.key, container = %name, reason, %message, "container ended");
    let finished_at = now_rfc3339();
    let restart = match unit.spec.pod.restart_policy.as_deref().unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => reason != "Completed",
        _ => true,
    };
    let m = &mut pod(unit).members[i];
    let delay = m.backoff.next_delay(started.elapsed());
    let looping = m.backoff.crash_looping();
    m.liveness = None;
    m.readiness = None;
    if restart {
        m.restart_at = Some(Tick::now() + delay);
    } else {
        m.done = true;
    }
    let termination = Termination {
        exit_code,
        reason: reason.into(),
        message: message.clone(),
        finished_at: finished_at.clone(),
    };
    let s = status_of(unit, i);
    s.ready = false;
    s.last_termination = Some(termination.clone());
    s.state = if restart && looping {
        ContainerState::Waiting {
            reason: reasons::CRASH_LOOP_BACK_OFF.into(),
            message: format!(
                "back-off {}s restarting failed container={name}",
                delay.as_secs()
            ),
        }
    } else {
        ContainerState::Terminated {
            exit_code,
            reason: reason.into(),
            message,
            finished_at,
        }
    };
    if restart {
        let text = format!(
            "container {name} ended ({reason}); restarting in {}s",
            delay.as_secs()
        );
        images::event(
            &unit.node,
            &unit.key,
            reason != "Completed",
            EventReason::BackOff,
            text,
        );
    }
    unit.status.last_termination = Some(termination);
    unit.report();
}

/// After a node restart: the specs again, and each container still running adopted (the
/// others start at once).
async fn adopt(unit: &mut Unit<Agent>) {
    pod(unit).adopt = false;
    let Some(sandbox_pid) = unit.record.pid else {
        return;
    };
    let netns = sandbox::netns_path(sandbox_pid);
    match build_specs(unit, &netns).await {
        Ok((_, apps)) => pod(unit).specs = apps,
        Err(e) => {
            tracing::warn!(instance = %unit.key, reason = e.reason, message = %e.message, "rebuilding an adopted pod's specs");
            return;
        }
    }
    for i in 0..pod(unit).members.len() {
        let id = pod(unit).members[i].id.clone();
        let state = unit.node.containers.state(&id).await.ok();
        let live = state.and_then(|s| {
            let pid = s.pid?;
            (s.status == crate::container::Status::Running)
                .then(|| Some((pid, supervise::start_ticks(pid)?)))
                .flatten()
        });
        match live {
            Some((pid, ticks)) => watch_member(unit, i, pid, ticks),
            None => pod(unit).members[i].restart_at = Some(Tick::now()),
        }
    }
}

/// Why the sandbox ended: every container done (by the restart policy), or the sandbox
/// died (then the whole instance starts again). Whatever still runs is removed.
pub async fn inspect(unit: &mut Unit<Agent>) -> Ended {
    let all_done = pod(unit).members.iter().all(|m| m.done);
    remove_all(unit, None, Duration::ZERO).await;
    let failed = (unit.status.container_statuses.iter()).find(|s| {
        !matches!(
            &s.state,
            ContainerState::Terminated {
                exit_code: Some(0),
                ..
            }
        )
    });
    match (all_done, failed) {
        (true, None) => Ended {
            reason: "Completed",
            exit_code: Some(0),
            message: String::new(),
            succeeded: true,
            reboot: false,
        },
        (true, Some(s)) => Ended {
            reason: "Error",
            exit_code: s.last_termination.as_ref().and_then(|t| t.exit_code),
            message: format!("container {} failed", s.name),
            succeeded: false,
            reboot: false,
        },
        (false, _) => Ended {
            reason: "Error",
            exit_code: None,
            message: "the instance sandbox ended".into(),
            succeeded: false,
            reboot: false,
        },
    }
}

/// Stops the containers politely (SIGTERM, then the grace period), then removes them, the
/// sandbox, its veth, the instance's cgroup and the containers' logs.
pub async fn stop(unit: &mut Unit<Agent>) {
    let grace = (unit.spec.pod.termination_grace_period_seconds)
        .unwrap_or(30)
        .clamp(0, 300) as u64;
    let sandbox = unit.record.pid.zip(unit.record.ticks);
    remove_all(unit, sandbox, Duration::from_secs(grace)).await;
    let dir = unit
        .node
        .logs
        .join(&unit.key.namespace)
        .join(&unit.key.name);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

/// Ends every container of the pod (init containers too), waiting up to `grace` for a
/// polite end; then the sandbox (when given), the veth and the instance's cgroup.
async fn remove_all(unit: &mut Unit<Agent>, sandbox: Option<(i32, u64)>, grace: Duration) {
    let node = unit.node.clone();
    let ids = Pod::all_ids(&unit.spec, &unit.state.id);
    let running: Vec<Running> = pod(unit)
        .members
        .iter_mut()
        .filter_map(|m| m.run.take())
        .collect();
    if !grace.is_zero() && !running.is_empty() {
        for id in &ids {
            let _ = node.containers.kill(id, "TERM").await;
        }
        let all = futures::future::join_all(running.into_iter().map(|r| r.exit));
        let _ = tokio::time::timeout(grace, all).await;
    }
    for id in &ids {
        let _ = node.containers.remove(id).await;
    }
    let (network, parent) = (node.network.clone(), unit.state.id.clone());
    let _ = tokio::task::spawn_blocking(move || {
        if let Some((pid, ticks)) = sandbox {
            if supervise::alive(pid, ticks) {
                kill_sandbox_now(pid);
            }
        }
        network.detach(&parent);
        if let Err(e) = sandbox::remove_instance_cgroups(&parent) {
            tracing::warn!(instance = %parent, error = %e.one_line(), "removing the instance's cgroup");
        }
    })
    .await;
}

/// SIGKILL to the sandbox; it is reaped by the supervisor's wait (or by a later reap).
fn kill_sandbox_now(pid: i32) {
    // SAFETY: kill(2) with the pid of the pause process we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Reap it here when it is ours; another waiter (the supervisor) may be first.
    for _ in 0..50 {
        match crate::container::runtime::try_reap(pid) {
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}

/// The containers' logs rotate like an instance log (every few seconds is enough).
async fn rotate_logs(unit: &mut Unit<Agent>) {
    if pod(unit).last_rotate.elapsed() < Duration::from_secs(5) {
        return;
    }
    pod(unit).last_rotate = Instant::now();
    let logs: Vec<PathBuf> = (unit.spec.pod.containers_with_paths(""))
        .map(|(_, c)| log_of(unit, &c.name))
        .collect();
    let (max, keep) = (
        unit.node.settings.log_max_bytes,
        unit.node.settings.log_keep,
    );
    let _ = tokio::task::spawn_blocking(move || {
        for log in logs {
            let _ = crate::supervise::logs::rotate_if_needed(&log, max, keep);
        }
    })
    .await;
}
