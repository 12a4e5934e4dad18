//! The LoadBalancer announcing task of an agent node: every second, on membership events
//! and on committed changes it lists the LoadBalancer Services with an allocated address
//! (local replica), the agent nodes gossip does not hold down (with their advertised
//! address), picks the addresses this node announces (`lb::mine`) and makes its interfaces
//! hold exactly those (`announce::Announcer`). On stop it releases them, so that the next
//! announcer takes over as soon as gossip says this node left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::announce::Announcer;
use super::lb::{self, Candidate};
use crate::cluster::Gossip;
use crate::model::{Kind, Spec};
use crate::orchestrator::ControlPlane;

const TICK: Duration = Duration::from_secs(1);

/// Every allocated LoadBalancer address in the local replica.
fn lb_addresses(control: &ControlPlane) -> BTreeSet<Ipv4Addr> {
    let services = control
        .reader()
        .resources(Kind::Service)
        .unwrap_or_default();
    services
        .iter()
        .filter_map(|r| match &r.spec {
            Some(Spec::Service(s)) => s.lb_ip(),
            _ => None,
        })
        .collect()
}

/// Agent nodes gossip does not hold down, with their advertised IPv4 address.
async fn candidates(gossip: &Gossip) -> Vec<(String, Ipv4Addr)> {
    super::live_members(gossip)
        .await
        .into_iter()
        .filter(|(m, _)| m.meta.roles.contains(&crate::model::Role::Agent))
        .map(|(m, ip)| (m.meta.name, ip))
        .collect()
}

/// Starts the task; it ends (after releasing its addresses) when `stop` is set. Await the
/// handle on shutdown so that the release finishes.
pub fn spawn(
    control: ControlPlane,
    gossip: Gossip,
    node: String,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let announcer = match Announcer::new() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "LoadBalancer addresses: not announced by this node");
                return;
            }
        };
        let mut events = gossip.subscribe();
        let mut committed = control.subscribe();
        let mut tick = tokio::time::interval(TICK);
        let mut said = String::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = events.recv() => {}
                _ = committed.recv() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let ips = lb_addresses(&control);
            let result = async {
                let addrs = if ips.is_empty() {
                    Vec::new()
                } else {
                    announcer.addresses().await?
                };
                let nodes = candidates(&gossip).await;
                let cands: Vec<Candidate> = nodes
                    .iter()
                    .map(|(name, address)| Candidate {
                        name,
                        address: *address,
                    })
                    .collect();
                let mine = lb::mine(&node, &ips, |ip| Announcer::lan_of(&addrs, ip), &cands);
                announcer.reconcile(&mine).await
            }
            .await;
            match result {
                Ok(_) => said.clear(),
                Err(e) => {
                    let text = crate::error_chain(&e);
                    if text != said {
                        tracing::warn!(error = %text, "LoadBalancer addresses");
                        said = text;
                    }
                }
            }
        }
        if let Err(e) = announcer.reconcile(&BTreeSet::new()).await {
            tracing::warn!(error = %crate::error_chain(&e), "releasing LoadBalancer addresses on stop");
        }
    })
}
