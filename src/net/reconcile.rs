//! The routing task of a node: gathers the peers (gossip members that are not down, with
//! their advertised address, joined with the committed `NodeSubnet` leases of the local
//! replica), plans (`routes::plan`) and applies (`netlink`). Driven by membership events,
//! committed changes and a one-second tick; a plan that did not change is applied again
//! every [`RESYNC`] (repairs what someone else changed). When the node stops, every route and
//! link it owns is removed (peers drop their routes to it when gossip marks it down, so a
//! one-way half would only black-hole traffic). `purge` does the same without a node (for
//! `uninstall --purge`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::netlink::{Changes, Kernel};
use super::routes::{self, Local, Peer, Plan};
use super::NetError;
use crate::cluster::Gossip;
use crate::config::RoutingBackend;
use crate::model::{Kind, Spec, Subnet};
use crate::orchestrator::ControlPlane;

/// How often an unchanged plan is applied again.
pub const RESYNC: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);

/// What the routing task of one node needs.
#[derive(Clone, Debug)]
pub struct RoutingArgs {
    pub node: String,
    /// The node's advertised address: its underlay (the peers' route gateway, VXLAN local).
    pub advertise: IpAddr,
    pub backend: RoutingBackend,
}

/// The committed node subnet leases by node name.
fn leases(control: &ControlPlane) -> Vec<(String, Subnet)> {
    let subnets = control
        .reader()
        .resources(Kind::NodeSubnet)
        .unwrap_or_default();
    subnets
        .iter()
        .filter_map(|r| match &r.spec {
            Some(Spec::NodeSubnet(s)) => Some((r.metadata.name.clone(), Subnet::parse(&s.cidr)?)),
            _ => None,
        })
        .collect()
}

/// Members that are not down and hold a lease, with their advertised IPv4 address.
async fn peers(gossip: &Gossip, leases: &[(String, Subnet)]) -> Vec<Peer> {
    super::live_members(gossip)
        .await
        .into_iter()
        .filter_map(|(m, underlay)| {
            let subnet = leases.iter().find(|(n, _)| *n == m.meta.name)?.1;
            Some(Peer {
                name: m.meta.name,
                underlay,
                subnet,
            })
        })
        .collect()
}

fn log_changes(changes: &Changes) {
    for c in &changes.added {
        tracing::info!("routing: added {c}");
    }
    for c in &changes.removed {
        tracing::info!("routing: removed {c}");
    }
}

/// Starts the routing task; it ends (after removing what it owns) when `stop` is set.
/// Await the handle on shutdown so that removal finishes.
pub fn spawn(
    control: ControlPlane,
    gossip: Gossip,
    args: RoutingArgs,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let underlay_ip = match args.advertise {
            IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
            other => {
                tracing::info!(
                    advertise = %other,
                    "routing: no cross-node routes (the advertised address is not a routable IPv4 address)"
                );
                return;
            }
        };
        let kernel = match Kernel::connect() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "routing: no cross-node routes");
                return;
            }
        };
        run(&kernel, &control, &gossip, &args, underlay_ip, &mut stop).await;
        match kernel.clear().await {
            Ok(changes) => log_changes(&changes),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "routing: removing routes on stop")
            }
        }
    })
}

/// Plans and applies until `stop` is set.
async fn run(
    kernel: &Kernel,
    control: &ControlPlane,
    gossip: &Gossip,
    args: &RoutingArgs,
    underlay_ip: Ipv4Addr,
    stop: &mut watch::Receiver<bool>,
) {
    let mut events = gossip.subscribe();
    let mut committed = control.subscribe();
    let mut tick = tokio::time::interval(TICK);
    let mut applied: Option<(Plan, Instant)> = None;
    let mut said = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = events.recv() => {}
            _ = committed.recv() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let underlay = match kernel.underlay(underlay_ip).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                say_once(&mut said, format!("no interface holds the advertised address {underlay_ip}; no cross-node routes until one does"));
                continue;
            }
            Err(e) => {
                say_once(&mut said, crate::error_chain(&e));
                continue;
            }
        };
        let leases = leases(control);
        let local = Local {
            name: args.node.clone(),
            underlay: underlay_ip,
            connected: underlay.connected.clone(),
            subnet: leases
                .iter()
                .find(|(n, _)| *n == args.node)
                .map(|(_, s)| *s),
        };
        let plan = routes::plan(args.backend, &local, &peers(gossip, &leases).await);
        let fresh = applied
            .as_ref()
            .is_some_and(|(p, at)| *p == plan && at.elapsed() < RESYNC);
        if fresh {
            continue;
        }
        match kernel.apply(&plan, underlay_ip, &underlay).await {
            Ok(changes) => {
                log_changes(&changes);
                // This node's own lease not being there yet is normal right after start.
                let skipped: Vec<String> = plan
                    .skipped
                    .iter()
                    .filter(|(_, why)| *why != routes::Skip::NoLocalVtep)
                    .map(|(n, why)| format!("no route to node {n}: {why}"))
                    .collect();
                if !skipped.is_empty() {
                    say_once(&mut said, skipped.join("; "));
                } else if !plan.skipped.is_empty() {
                    tracing::debug!(skipped = ?plan.skipped, "routing: waiting for this node's lease");
                }
                applied = Some((plan, Instant::now()));
            }
            Err(e) => {
                say_once(&mut said, crate::error_chain(&e));
                applied = None;
            }
        }
    }
}

/// Logs a warning once per distinct text.
fn say_once(last: &mut String, text: String) {
    if *last != text {
        tracing::warn!("routing: {text}");
        *last = text;
    }
}

/// Removes every route and link omnicloud's routing made on this host (`uninstall
/// --purge`); callable outside a tokio runtime.
pub fn purge() -> Result<Changes, NetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetError::Runtime)?;
    runtime.block_on(async { Kernel::connect()?.clear().await })
}
