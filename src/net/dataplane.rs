//! Applies the Services data plane ([`super::service::payload`]) on this node: one task
//! that reads Services, Endpoints, this node's instances (hostPorts) and its subnet from
//! the local replica when any of them changes (and every [`RESYNC`], repairing what was
//! changed behind its back), and runs one `iptables-restore --noflush` when the rules
//! differ from the kernel's.
//!
//! Idempotent: after a node restart the same state gives the same rules (chains are
//! rewritten whole; jumps are added only when missing). The rules stay while the node is
//! stopped (its containers keep running and stay reachable); [`purge`] removes every
//! chain and jump of ours (`uninstall --purge`). Without `iptables-restore` the node says
//! so once (the `announce` callback: a Warning event on the node) and runs without
//! Services rather than failing.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::service::{payload, Current, HostPort, Inputs, ServiceView};
use crate::model::instance::InstanceStatus;
use crate::model::service::Protocol;
use crate::model::{Kind, Resource, Spec, Subnet};
use crate::orchestrator::ControlPlane;
use crate::store::ObjectKey;

/// Full re-check of the kernel's rules even without a change.
pub const RESYNC: Duration = Duration::from_secs(30);
/// Pause after a change so a burst costs one apply.
const SETTLE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{0} is not installed (apt-get install iptables)")]
    Missing(&'static str),
    #[error("running {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
}

fn run(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, DataplaneError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataplaneError::Missing(tool),
            _ => DataplaneError::Spawn { tool, source: e },
        })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(text.as_bytes())
            .map_err(|e| DataplaneError::Spawn { tool, source: e })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| DataplaneError::Spawn { tool, source: e })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(DataplaneError::Failed {
            tool,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// What of ours the kernel holds now.
pub fn current() -> Result<Current, DataplaneError> {
    Ok(Current::parse(&run("iptables-save", &[], None)?))
}

/// Makes the kernel hold the rules of `inputs`: reads the current rules, applies the
/// difference as one `iptables-restore --noflush`. Returns whether anything was applied.
pub fn sync(inputs: &Inputs) -> Result<bool, DataplaneError> {
    let now = current()?;
    match payload(inputs, &now) {
        Some(p) => {
            run("iptables-restore", &["--noflush"], Some(&p))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Removes every chain and jump of ours (`uninstall --purge`, tests). Missing iptables:
/// nothing to remove.
pub fn purge() -> Result<(), DataplaneError> {
    match sync(&Inputs::default()) {
        Err(DataplaneError::Missing(_)) => Ok(()),
        other => other.map(|_| ()),
    }
}

fn load(control: &ControlPlane, kind: Kind) -> Vec<Resource> {
    match control.reader().resources(kind) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, %kind, "reading the store for the service data plane");
            Vec::new()
        }
    }
}

/// The data plane's inputs from the local replica.
pub fn inputs(control: &ControlPlane, node: &str, cluster_cidr: Subnet) -> Inputs {
    let endpoints = load(control, Kind::Endpoints);
    let services = load(control, Kind::Service)
        .into_iter()
        .filter_map(|r| {
            let Some(Spec::Service(spec)) = r.spec else {
                return None;
            };
            let ns = r.metadata.namespace.unwrap_or_default();
            let ep = endpoints.iter().find_map(|e| match &e.spec {
                Some(Spec::Endpoints(ep))
                    if e.metadata.name == r.metadata.name
                        && e.metadata.namespace.as_deref() == Some(ns.as_str()) =>
                {
                    Some(ep.clone())
                }
                _ => None,
            });
            Some(ServiceView {
                namespace: ns,
                name: r.metadata.name,
                spec,
                endpoints: ep,
            })
        })
        .collect();
    let local_subnet = control
        .reader()
        .get(&ObjectKey::new(Kind::NodeSubnet, "", node))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .and_then(|v| Resource::from_stored(v).ok())
        .and_then(|r| match r.spec {
            Some(Spec::NodeSubnet(s)) => Subnet::parse(&s.cidr),
            _ => None,
        });
    Inputs {
        services,
        host_ports: host_ports(&load(control, Kind::Instance), node),
        cluster_cidr: Some(cluster_cidr),
        local_subnet,
    }
}

/// The hostPorts of the running instances on `node` that have an address.
pub fn host_ports(instances: &[Resource], node: &str) -> Vec<HostPort> {
    let mut out = Vec::new();
    for r in instances {
        let Some(Spec::Instance(spec)) = &r.spec else {
            continue;
        };
        let status: InstanceStatus = r
            .status
            .clone()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let Ok(ip) = status.ip.parse() else { continue };
        if spec.node_name.as_deref() != Some(node) {
            continue;
        }
        let instance = format!(
            "{}/{}",
            r.metadata.namespace.as_deref().unwrap_or_default(),
            r.metadata.name
        );
        for p in spec
            .pod
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
        {
            let (Some(hp), Ok(cp)) = (
                p.host_port.filter(|h| *h > 0),
                u16::try_from(p.container_port),
            ) else {
                continue;
            };
            let Ok(host_port) = u16::try_from(hp) else {
                continue;
            };
            out.push(HostPort {
                instance: instance.clone(),
                ip,
                host_port,
                container_port: cp,
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
            });
        }
    }
    out
}

/// Says once that the node runs without a Services data plane (`Degraded::NoServiceDataPlane`).
pub type Announce = Arc<dyn Fn() + Send + Sync>;

/// The node's data plane task: syncs on every relevant change and every [`RESYNC`].
pub fn spawn(
    control: ControlPlane,
    node: String,
    cluster_cidr: Subnet,
    announce: Announce,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut changes = control.subscribe();
        let mut tick = tokio::time::interval(RESYNC);
        let mut last: Option<(String, Instant)> = None;
        let mut degraded = false;
        loop {
            tokio::select! {
                _ = tick.tick() => last = None,
                c = changes.recv() => match c {
                    Err(broadcast::error::RecvError::Closed) => return,
                    Ok(c) if !matches!(c.key.kind, Kind::Service | Kind::Endpoints | Kind::Instance | Kind::NodeSubnet) => continue,
                    _ => {}
                },
                _ = stop.changed() => return,
            }
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            let inputs = inputs(&control, &node, cluster_cidr);
            // The rules wanted from scratch: when unchanged since the last apply (and
            // the resync is not due), the kernel needs nothing.
            let fingerprint = payload(&inputs, &Current::default()).unwrap_or_default();
            if last.as_ref().is_some_and(|(f, _)| *f == fingerprint) {
                continue;
            }
            let wanted = !fingerprint.is_empty();
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || sync(&inputs)).await;
            match result {
                Ok(Ok(applied)) => {
                    if applied {
                        tracing::debug!(took = ?started.elapsed(), "service rules applied");
                    }
                    last = Some((fingerprint, Instant::now()));
                }
                // Said only once something needs the rules: a node without Services
                // lacks nothing.
                Ok(Err(DataplaneError::Missing(tool))) => {
                    if !degraded && wanted {
                        degraded = true;
                        tracing::warn!(
                            "{tool} is not installed: this node runs without Services' data plane"
                        );
                        announce();
                    }
                    last = Some((fingerprint, Instant::now()));
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::error_chain(&e), "applying the service rules; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "the service rules task panicked"),
            }
        }
    });
}
