//! Containers as a workload kind of the one supervisor ([`crate::supervise`]): start an
//! instance's container with its veth and stable address (its image, volumes and claims
//! made ready first), probe it (liveness, readiness, and the periodic push of its claims),
//! sample its cgroup usage, tell why it ended (exit code, OOM kill, failed liveness
//! probe), and on stop end it politely and remove the container, its veth and scratch
//! volumes. Adoption, restart with backoff, records and statuses are the supervisor's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::time::Instant as Tick;

use super::health::{self, Health, ProbeSettings, ProbeTracker, Target};
use super::{claims, configs, images, translate, usage, Agent, Shared};
use crate::model::instance::reasons;
use crate::model::workload::PullPolicy;
use crate::model::{InstanceSpec, InstanceStatus};
use crate::store::ObjectKey;
use crate::supervise::{
    self, CpuRate, Ended, Exit, Probe, Record, Run, StartError, Unit, Workload,
};

/// The container id: unique per instance incarnation, readable, at most 64 characters.
pub fn container_id(namespace: &str, name: &str, uid: &str) -> String {
    let uid: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let mut base = format!("{namespace}.{name}");
    base.truncate(64 - 1 - uid.len());
    format!("{base}.{uid}")
}

/// What the agent keeps per instance beside the supervisor's fields.
pub struct Container {
    pub id: String,
    /// emptyDir volumes, `<volumes>/<namespace>/<name>/`.
    pub scratch: PathBuf,
    /// Several containers or init containers: the pod's part ([`super::pod`]).
    pub pod: Option<super::pod::Pod>,
}

/// One probe, its count of results and when it runs next.
pub(super) struct Scheduled {
    pub(super) settings: ProbeSettings,
    tracker: ProbeTracker,
    pub(super) next: Tick,
}

impl Scheduled {
    pub(super) fn new(settings: Option<ProbeSettings>, start: Tick) -> Option<Scheduled> {
        settings.map(|s| Scheduled {
            tracker: ProbeTracker::new(&s),
            next: start + s.initial_delay,
            settings: s,
        })
    }

    /// Runs the probe once: whether it passed and its failure.
    pub(super) async fn run(&mut self, target: Target) -> (Health, Option<String>) {
        self.next = Tick::now() + self.settings.period;
        let s = self.settings.clone();
        let result = tokio::task::spawn_blocking(move || {
            health::check(&target, &s).map_err(|e| crate::error_chain(&e))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        (self.tracker.record(result.is_ok()), result.err())
    }
}

/// A running container's probes, and the push of its claims to peers.
pub struct Probes {
    target: Target,
    liveness: Option<Scheduled>,
    readiness: Option<Scheduled>,
    claims: Vec<String>,
    claim_prints: HashMap<String, u64>,
    next_claims: Tick,
    /// ConfigMap and Secret volumes are refreshed in place from then on.
    next_config: Option<Tick>,
    /// A pod's containers are looked at then ([`super::pod::tick`]).
    next_pod: Option<Tick>,
}

/// How often ConfigMap and Secret volumes are compared with the store and rewritten when
/// they changed (kubelet syncs about once a minute; we read a local replica, so often).
const CONFIG_SYNC: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
pub enum Due {
    Liveness,
    Readiness,
    Claims,
    Config,
    Pod,
}

/// The claims an instance mounts.
fn claim_names(spec: &InstanceSpec) -> Vec<String> {
    spec.pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.clone()))
        .collect()
}

impl Workload for Agent {
    type Spec = InstanceSpec;
    type State = Container;
    type Probes = Probes;
    type Due = Due;

    const RECORD_PREFIX: &'static str = super::RECORD_PREFIX;
    const NOUN: &'static str = "container";

    /// The container instances (VM instances are the director's).
    fn select(spec: InstanceSpec) -> Option<InstanceSpec> {
        (!spec.is_vm()).then_some(spec)
    }

    fn revision(spec: &InstanceSpec) -> String {
        spec.revision.clone().unwrap_or_default()
    }

    fn needs_network(_: &InstanceSpec) -> bool {
        true
    }

    fn restart_policy(spec: &InstanceSpec) -> Option<&str> {
        spec.pod.restart_policy.as_deref()
    }

    fn state(node: &Shared, key: &ObjectKey, uid: &str, status: &mut InstanceStatus) -> Container {
        let id = container_id(&key.namespace, &key.name, uid);
        status.container_id = id.clone();
        Container {
            scratch: node.dirs.volumes.join(&key.namespace).join(&key.name),
            pod: None,
            id,
        }
    }

    /// Claims are restored from peers before the first start.
    async fn prepare(unit: &mut Unit<Agent>) {
        let claims = claim_names(&unit.spec);
        if !claims.is_empty() {
            claims::restore(&unit.node, &unit.key.namespace, &claims).await;
        }
    }

    /// Creates, starts and wires up the container. On failure nothing is left behind.
    async fn start(unit: &mut Unit<Agent>) -> Result<(i32, u64), StartError> {
        let allow = unit.node.settings.allow_privileged;
        if let Err(e) = translate::check_security(&unit.spec, allow) {
            // Refused as written: not tried again until the spec changes.
            let mut e = retried(reasons::INVALID_SPEC, e.to_string());
            e.retry = false;
            return Err(e);
        }
        if translate::is_pod(&unit.spec) {
            unit.state.pod = Some(super::pod::Pod::new(&unit.spec, &unit.state.id));
            return super::pod::start(unit).await;
        }
        let node = unit.node.clone();
        let paths = translate::Paths {
            images: node.dirs.images.clone(),
            log: unit.log.clone(),
            scratch: unit.state.scratch.clone(),
            claims: node.dirs.claims.join(&unit.key.namespace),
        };
        let network = node
            .network
            .get()
            .expect("waited for before the first start");
        let ip = unit.record.ip.expect("given with the record");
        let bridge = crate::container::Network::Bridge {
            bridge: network.bridge.clone(),
            address: format!("{ip}/{}", network.subnet.prefix),
        };
        warn_unenforced(unit);
        let id = &unit.state.id;
        let main = translate::main_container(&unit.spec)
            .map_err(|e| retried(reasons::INVALID_SPEC, e.to_string()))?;
        let env = config_volumes(unit, ip.to_string(), &[main])
            .await?
            .pop()
            .unwrap_or_default();
        let mut spec =
            translate::container_spec(id, &unit.key.name, &unit.spec, &paths, bridge, env)
                .map_err(|e| retried(reasons::INVALID_SPEC, e.to_string()))?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = translate::resolv_conf(
            &unit.spec,
            &unit.key.namespace,
            network.subnet.gateway(),
            &node.cluster_domain,
            &host_resolv,
        )
        .map_err(|e| retried(reasons::INVALID_SPEC, e.to_string()))?;
        let main = translate::main_container(&unit.spec)
            .map_err(|e| retried(reasons::INVALID_SPEC, e.to_string()))?;
        let secrets: Vec<String> = (unit.spec.pod.image_pull_secrets.iter().flatten())
            .map(|s| s.name.clone())
            .collect();
        let want = images::Wanted {
            instance: &unit.key,
            image: &spec.image.name,
            policy: PullPolicy::of(&main.image, main.image_pull_policy.as_deref()),
            secrets: &secrets,
        };
        if let Err((reason, message)) = images::ensure(&node, &want).await {
            let reason = images::backing_off(&unit.status.reason, reason);
            return Err(retried(reason, message));
        }
        if let Some(text) = resolv {
            // Beside the instance's emptyDir volumes (whose names cannot hold a '.'); goes
            // with them when the instance stops.
            let file = unit.state.scratch.join("resolv.conf");
            std::fs::create_dir_all(&unit.state.scratch)
                .and_then(|_| std::fs::write(&file, text))
                .map_err(|e| retried("ContainerCannotRun", format!("{}: {e}", file.display())))?;
            spec.mounts.push(crate::container::BindMount {
                host_path: file,
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
        let _permit = node.starts.acquire().await.expect("never closed");
        let t0 = Instant::now();
        // A container of ours left from a crash mid-start has the same id.
        remove_container(&node, &unit.key, id).await;
        let pid = node
            .containers
            .run(&spec)
            .await
            .map_err(|e| retried(reasons::CONTAINER_CANNOT_RUN, crate::error_chain(&e)))?;
        let ticks = supervise::start_ticks(pid).unwrap_or(0);
        node.metrics
            .start_duration
            .observe(t0.elapsed().as_secs_f64());
        Ok((pid, ticks))
    }

    /// Liveness and readiness from the main container's probes; ready at once without a
    /// readiness probe.
    fn probes(unit: &mut Unit<Agent>, run: &Run) -> (Probes, bool) {
        let is_pod = translate::is_pod(&unit.spec);
        if is_pod && unit.state.pod.is_none() {
            // Adopted: its containers are looked up on the first tick.
            unit.state.pod = Some(super::pod::Pod::new(&unit.spec, &unit.state.id));
        }
        let c = translate::main_container(&unit.spec)
            .ok()
            .filter(|_| !is_pod);
        let ports = c.map(translate::named_ports).unwrap_or_default();
        let settings = |p: &Option<crate::model::workload::Probe>| -> Option<ProbeSettings> {
            health::settings(p.as_ref()?, &ports).ok()
        };
        let start = Tick::now();
        let probes = Probes {
            target: Target {
                ip: IpAddr::V4(unit.record.ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                pid: run.pid,
                exe: unit.node.containers.exe().to_path_buf(),
                bundle: Some(unit.node.containers.bundle(&unit.state.id)),
            },
            liveness: Scheduled::new(c.and_then(|c| settings(&c.liveness_probe)), start),
            readiness: Scheduled::new(c.and_then(|c| settings(&c.readiness_probe)), start),
            claims: claim_names(&unit.spec),
            claim_prints: HashMap::new(),
            next_claims: start,
            next_config: has_config_volumes(&unit.spec).then_some(start + CONFIG_SYNC),
            next_pod: is_pod.then_some(start),
        };
        let ready = probes.readiness.is_none() && !is_pod;
        (probes, ready)
    }

    fn next_probe(p: &Probes) -> Option<(Tick, Due)> {
        // On a tie the earlier in this list goes first.
        [
            p.liveness.as_ref().map(|s| (s.next, Due::Liveness)),
            p.readiness.as_ref().map(|s| (s.next, Due::Readiness)),
            (!p.claims.is_empty()).then_some((p.next_claims, Due::Claims)),
            p.next_config.map(|at| (at, Due::Config)),
            p.next_pod.map(|at| (at, Due::Pod)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
    }

    async fn probe(unit: &mut Unit<Agent>, p: &mut Probes, due: Due) -> Probe {
        match due {
            Due::Liveness => {
                let s = p.liveness.as_mut().expect("due only with the probe");
                match s.run(p.target.clone()).await {
                    (Health::Failing, why) => Probe::Failed(format!(
                        "liveness probe failed {} times: {}",
                        s.settings.failure_threshold,
                        why.unwrap_or_default()
                    )),
                    _ => Probe::Nothing,
                }
            }
            Due::Readiness => {
                let s = p.readiness.as_mut().expect("due only with the probe");
                let (health, why) = s.run(p.target.clone()).await;
                Probe::Ready {
                    ready: health == Health::Passing,
                    message: why.unwrap_or_default(),
                }
            }
            Due::Claims => {
                p.next_claims = Tick::now() + claims::SYNC_EVERY;
                let (node, ns) = (&unit.node, &unit.key.namespace);
                claims::push_changed(node, ns, &p.claims, &mut p.claim_prints).await;
                Probe::Nothing
            }
            Due::Pod => {
                p.next_pod = Some(Tick::now() + super::pod::TICK);
                super::pod::tick(unit).await
            }
            Due::Config => {
                p.next_config = Some(Tick::now() + CONFIG_SYNC);
                refresh_config_volumes(unit).await;
                Probe::Nothing
            }
        }
    }

    /// From the container's cgroup.
    fn usage(unit: &mut Unit<Agent>, _: i32, cpu: &mut CpuRate) -> Option<(u64, u64)> {
        let id = &unit.state.id;
        let millis = usage::cpu_nanos(id).and_then(|n| cpu.sample(Instant::now(), n))?;
        let memory = usage::memory_working_set(id)?;
        unit.node.metrics.record_usage(&unit.key, millis, memory);
        Some((millis, memory))
    }

    /// Why it ended (an OOM kill first); the container is removed.
    async fn inspect(unit: &mut Unit<Agent>, exit: Exit) -> Ended {
        if unit.state.pod.is_some() {
            return super::pod::inspect(unit).await;
        }
        let oom = crate::container::runtime::oom_kills(&unit.state.id).unwrap_or(0) > 0;
        remove_container(&unit.node, &unit.key, &unit.state.id).await;
        let code = match &exit {
            Exit::Code(code) => *code,
            Exit::Unhealthy(_) => None,
        };
        let (reason, message) = match exit {
            _ if oom => ("OOMKilled", "the memory limit was exceeded".to_string()),
            Exit::Unhealthy(m) => ("LivenessProbeFailed", m),
            Exit::Code(Some(0)) => ("Completed", String::new()),
            Exit::Code(Some(c)) => ("Error", format!("exit code {c}")),
            Exit::Code(None) => ("Error", "the container ended".to_string()),
        };
        Ended {
            reason,
            exit_code: code,
            message,
            succeeded: reason == "Completed",
            reboot: false,
        }
    }

    /// SIGTERM, the pod's grace period, then the container and its scratch volumes go.
    async fn stop(unit: &mut Unit<Agent>) {
        if translate::is_pod(&unit.spec) {
            if unit.state.pod.is_none() {
                unit.state.pod = Some(super::pod::Pod::new(&unit.spec, &unit.state.id));
            }
            super::pod::stop(unit).await;
            remove_volumes(&unit.key, unit.state.scratch.clone()).await;
            return;
        }
        let node = unit.node.clone();
        if let (Some(pid), Some(ticks)) = (unit.record.pid, unit.record.ticks) {
            let grace = (unit.spec.pod.termination_grace_period_seconds)
                .unwrap_or(30)
                .clamp(0, 300) as u64;
            let _ = node.containers.kill(&unit.state.id, "TERM").await;
            let _ =
                tokio::time::timeout(Duration::from_secs(grace), supervise::wait_exit(pid, ticks))
                    .await;
        }
        remove_container(&node, &unit.key, &unit.state.id).await;
        remove_volumes(&unit.key, unit.state.scratch.clone()).await;
    }

    async fn remove_leftover(node: &Shared, key: &ObjectKey, record: &Record) {
        let id = container_id(&key.namespace, &key.name, &record.uid);
        tracing::info!(instance = %key, container = %id, "removing a container no longer assigned here");
        if let Err(e) = node.containers.remove(&id).await {
            let error = crate::error_chain(&e);
            tracing::warn!(instance = %key, %error, "removing a leftover container");
        }
        // A pod's containers and sandbox.
        let members = format!("{id}+");
        for c in node.containers.list().await.unwrap_or_default() {
            if c.id.starts_with(&members) {
                let _ = node.containers.remove(&c.id).await;
            }
        }
        if let (Some(pid), Some(ticks)) = (record.pid, record.ticks) {
            if supervise::alive(pid, ticks) {
                // SAFETY: kill(2) with a pid we recorded and whose start time still matches.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = crate::container::sandbox::remove_instance_cgroups(&id);
        let _ = std::fs::remove_dir_all(node.logs.join(&key.namespace).join(&key.name));
        node.network.detach(&id);
        remove_volumes(key, node.dirs.volumes.join(&key.namespace).join(&key.name)).await;
    }

    /// Containers under our runtime root with no record were left by a crash mid-start.
    async fn clean_unrecorded(node: &Shared, records: &HashMap<ObjectKey, Record>) {
        let known: std::collections::BTreeSet<String> = records
            .iter()
            .map(|(k, r)| container_id(&k.namespace, &k.name, &r.uid))
            .collect();
        match node.containers.list().await {
            Ok(list) => {
                let ours = |id: &str| {
                    known.contains(id) || id.split_once('+').is_some_and(|(p, _)| known.contains(p))
                };
                for c in list.iter().filter(|c| !ours(&c.id)) {
                    tracing::info!(container = %c.id, "removing an unrecorded container");
                    let _ = node.containers.remove(&c.id).await;
                }
            }
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "listing containers"),
        }
    }

    fn forget(&self, key: &ObjectKey) {
        self.metrics.forget(key);
    }
}

fn has_config_volumes(spec: &InstanceSpec) -> bool {
    (spec.pod.volumes.iter().flatten()).any(|v| v.config_map.is_some() || v.secret.is_some())
}

/// An instance's volumes (emptyDir, ConfigMap, Secret) and their tmpfs mounts go.
async fn remove_volumes(key: &ObjectKey, scratch: PathBuf) {
    let removed = tokio::task::spawn_blocking(move || {
        crate::container::volume::remove_volumes(&scratch).map_err(|e| e.one_line())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = removed {
        tracing::warn!(instance = %key, error = %e, "removing the instance's volumes");
    }
}

/// Fields accepted but not acted on here, as status warnings (once each).
pub(super) fn warn_unenforced(unit: &mut Unit<Agent>) {
    let mut found = Vec::new();
    if let Ok(ignored) = translate::check_security(&unit.spec, true) {
        found.extend(
            ignored
                .into_iter()
                .map(|f| format!("{f} is not acted on by this node")),
        );
    }
    for v in unit.spec.pod.volumes.iter().flatten() {
        let Some(e) = &v.empty_dir else { continue };
        if e.size_limit.is_some() && e.medium.as_deref() != Some("Memory") {
            found.push(format!(
                "volume {}: emptyDir.sizeLimit is enforced only with medium Memory (a tmpfs); on disk it is not",
                v.name
            ));
        }
    }
    for message in found {
        if !unit.status.warnings.iter().any(|w| w.message == message) {
            tracing::warn!(instance = %unit.key, "{message}");
            unit.status
                .warnings
                .push(crate::model::instance::StatusWarning {
                    reason: "FieldNotEnforced".into(),
                    message,
                });
        }
    }
}

/// Waits (Pending, `CreateContainerConfigError`) for a ConfigMap or Secret.
fn waiting(message: String) -> StartError {
    StartError {
        reason: configs::WAITING_REASON,
        message,
        retry: true,
        wait: true,
    }
}

/// Resolves each container's environment and writes its ConfigMap and Secret volumes
/// (Secrets and Memory emptyDirs on a tmpfs). Everything is resolved before anything is
/// written, so a missing key leaves nothing behind.
pub(super) async fn config_volumes(
    unit: &Unit<Agent>,
    pod_ip: String,
    containers: &[&crate::model::workload::Container],
) -> Result<Vec<Vec<crate::container::EnvVar>>, StartError> {
    let node = &unit.node;
    let pod = &unit.spec.pod;
    let sources = configs::fetch(&node.control, &unit.key.namespace, pod);
    let fields = configs::Fields {
        name: unit.key.name.clone(),
        namespace: unit.key.namespace.clone(),
        pod_ip,
        node_name: node.node.clone(),
    };
    let env = (containers.iter())
        .map(|c| configs::env(c, &sources, &fields))
        .collect::<Result<Vec<_>, _>>()
        .map_err(waiting)?;
    let mut writes = Vec::new();
    for v in pod.volumes.iter().flatten() {
        let files = configs::volume_files(v, &sources).map_err(waiting)?;
        let size = v
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .map(|q| q.bytes());
        writes.push((
            unit.state.scratch.join(&v.name),
            configs::on_tmpfs(v),
            size,
            files,
        ));
    }
    let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
        for (dir, tmpfs, size, files) in writes {
            if tmpfs {
                crate::container::volume::mount_tmpfs(&dir, size).map_err(|e| e.one_line())?;
            }
            if let Some(files) = files {
                crate::container::volume::write_atomic(&dir, &files).map_err(|e| e.one_line())?;
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    written.map_err(|m| retried("VolumeSetupFailed", m))?;
    Ok(env)
}

/// Rewrites the ConfigMap and Secret volumes whose data changed (atomically: a reader sees
/// the old files or the new ones). A source that went missing keeps its last files.
async fn refresh_config_volumes(unit: &Unit<Agent>) {
    let sources = configs::fetch(&unit.node.control, &unit.key.namespace, &unit.spec.pod);
    let mut writes = Vec::new();
    for v in unit.spec.pod.volumes.iter().flatten() {
        if let Ok(Some(files)) = configs::volume_files(v, &sources) {
            let tmpfs = configs::on_tmpfs(v);
            writes.push((
                v.name.clone(),
                unit.state.scratch.join(&v.name),
                tmpfs,
                files,
            ));
        }
    }
    let key = unit.key.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for (name, dir, tmpfs, files) in writes {
            // A Secret's files only ever on its tmpfs (a no-op when it is mounted).
            if tmpfs {
                if let Err(e) = crate::container::volume::mount_tmpfs(&dir, None) {
                    tracing::warn!(instance = %key, volume = %name, error = %e.one_line(), "mounting a volume's tmpfs");
                    continue;
                }
            }
            match crate::container::volume::write_atomic(&dir, &files) {
                Ok(true) => tracing::info!(instance = %key, volume = %name, "volume updated in place"),
                Ok(false) => {}
                Err(e) => tracing::warn!(instance = %key, volume = %name, error = %e.one_line(), "updating a volume"),
            }
        }
    })
    .await;
}

/// A start failure tried again with backoff.
pub(super) fn retried(reason: &'static str, message: String) -> StartError {
    StartError {
        reason,
        message,
        retry: true,
        wait: false,
    }
}

async fn remove_container(node: &Shared, key: &ObjectKey, id: &str) {
    if let Err(e) = node.containers.remove(id).await {
        let error = crate::error_chain(&e);
        tracing::warn!(instance = %key, %error, "removing the container");
    }
    let (network, id) = (node.network.clone(), id.to_string());
    let _ = tokio::task::spawn_blocking(move || network.detach(&id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_unique_per_incarnation_and_short() {
        let a = container_id("default", "web-0", "0123abcd-ef01-...");
        assert_eq!(a, "default.web-0.0123abcd");
        assert_ne!(a, container_id("default", "web-0", "99999999-0000"));
        let long = container_id(&"n".repeat(63), &"x".repeat(200), "deadbeef-1");
        assert_eq!(long.len(), 64);
        assert!(long.ends_with(".deadbeef"));
        crate::container::spec::validate_id(&long).unwrap();
    }
}
