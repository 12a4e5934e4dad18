//! The node network every workload kind shares: one [`NodeNet`] handle per node process
//! (made by `node.rs`, given to the agent and the director) that sets up the node bridge
//! and subnet once, when the first instance needs it, says once when it came up degraded,
//! and hands instances their addresses from the one node subnet.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::container::network::{Degraded, NodeNetwork, Subnet};
use crate::model::event::EventReason;
use crate::orchestrator::ControlPlane;
use crate::store::ObjectKey;

use super::TICK;

/// Serializes instance address allocation on this node (agent and director draw from one
/// node subnet) with the record write that claims the address.
pub static ADDRESS_LOCK: Mutex<()> = Mutex::new(());

/// Local record prefixes whose records hold an `ip` field: every address in use here.
const ADDRESS_RECORDS: [&str; 2] = ["agent/", "director/"];

/// The node bridge and subnet, once leased and set up; shared by every reconciler of the
/// node process (cloning shares it).
#[derive(Clone)]
pub struct NodeNet {
    bridge: String,
    /// The cluster CIDR (traffic to it is not masqueraded).
    cluster: Subnet,
    state: Arc<watch::Sender<Option<NodeNetwork>>>,
    /// One setup at a time: the agent and the director may both need it in the same pass.
    setup: Arc<tokio::sync::Mutex<()>>,
    /// Why the last setup failed (cleared when it succeeds): said once per distinct reason.
    failure: Arc<Mutex<Option<String>>>,
}

impl NodeNet {
    /// The handle for the node bridge `bridge` in the cluster CIDR `cluster`, not set up
    /// yet.
    pub fn new(bridge: &str, cluster: Subnet) -> NodeNet {
        NodeNet {
            bridge: bridge.to_string(),
            cluster,
            state: Arc::new(watch::channel(None).0),
            setup: Arc::new(tokio::sync::Mutex::new(())),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Why the network could not be set up, while it is not up.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("network failure").clone()
    }

    /// The network, once it is up.
    pub fn get(&self) -> Option<NodeNetwork> {
        self.state.borrow().clone()
    }

    /// Waits until the network is up; None when `stop` is set first.
    pub async fn wait(&self, stop: &mut watch::Receiver<bool>) -> Option<NodeNetwork> {
        let mut rx = self.state.subscribe();
        tokio::select! {
            n = rx.wait_for(|n| n.is_some()) => n.ok().and_then(|n| n.clone()),
            _ = stop.wait_for(|s| *s) => None,
        }
    }

    /// Sets the network up once the orchestrator has leased `node` a subnet (a no-op when
    /// it is up or the lease is not in the local replica yet; a failure is logged and tried
    /// again on the next call). A degraded network is announced once.
    pub async fn ensure(&self, control: &ControlPlane, node: &str) {
        let _one = self.setup.lock().await;
        if self.get().is_some() {
            return;
        }
        let Some(subnet) = node_subnet(control, node) else {
            return;
        };
        let (bridge, cluster) = (self.bridge.clone(), self.cluster);
        let failed = match tokio::task::spawn_blocking(move || {
            NodeNetwork::ensure(&bridge, subnet, cluster)
        })
        .await
        {
            Ok(Ok(n)) => {
                tracing::info!(bridge = %n.bridge, subnet = %n.subnet, "instance network ready");
                if let Some(d) = n.degraded {
                    announce_degraded(control, node, d);
                }
                if self
                    .failure
                    .lock()
                    .expect("network failure")
                    .take()
                    .is_some()
                {
                    announce(
                        control,
                        node,
                        false,
                        EventReason::NetworkReady,
                        "the instance network is up".into(),
                    );
                }
                self.state.send_replace(Some(n));
                return;
            }
            Ok(Err(e)) => crate::error_chain(&e),
            Err(e) => format!("network setup panicked: {e}"),
        };
        // A node-level fault: said once per distinct reason (log and Warning event), and in
        // the status of every instance waiting for it (`Unit::new`), not every second.
        let mut last = self.failure.lock().expect("network failure");
        if last.as_deref() != Some(failed.as_str()) {
            tracing::error!(error = %failed, "setting up the instance network; instances wait for it");
            announce(
                control,
                node,
                true,
                EventReason::NetworkSetupFailed,
                failed.clone(),
            );
            *last = Some(failed);
        }
    }

    /// Detaches the instance `id` (a container id) from the bridge, if the network is up.
    pub fn detach(&self, id: &str) {
        if let Some(n) = self.get() {
            n.detach(id);
        }
    }
}

/// The lowest free address of `subnet` (hold [`ADDRESS_LOCK`] until it is recorded).
pub fn free_address(store: &crate::store::Store, subnet: Subnet) -> Option<Ipv4Addr> {
    subnet.allocate(&used_addresses(store))
}

/// The instance addresses this node's agent and director hold (hold [`ADDRESS_LOCK`]).
pub fn used_addresses(store: &crate::store::Store) -> BTreeSet<Ipv4Addr> {
    ADDRESS_RECORDS
        .iter()
        .flat_map(|p| store.local_scan(p).unwrap_or_default())
        .filter_map(|(_, v)| {
            let v: serde_json::Value = serde_json::from_slice(&v).ok()?;
            v["ip"].as_str()?.parse().ok()
        })
        .collect()
}

/// The instance subnet the orchestrator leased this node, from the local replica.
pub fn node_subnet(control: &ControlPlane, node: &str) -> Option<Subnet> {
    use crate::model::{Kind, Resource, Spec};
    let bytes = control
        .reader()
        .get(&ObjectKey::new(Kind::NodeSubnet, "", node))
        .ok()??;
    let r = Resource::from_stored(serde_json::from_slice(&bytes).ok()?).ok()?;
    match r.spec {
        Some(Spec::NodeSubnet(s)) => Subnet::parse(&s.cidr),
        _ => None,
    }
}

/// Says once, when this node's instance network came up without something instances can
/// run without (e.g. outbound NAT): a warning in the node log and a Warning event about the
/// node (`omnicloud get events`). The network is set up once per node process when complete
/// or degraded, so this runs once, not on every pass.
pub fn announce_degraded(control: &ControlPlane, node: &str, degraded: Degraded) {
    let reason = match degraded {
        Degraded::NoOutboundNat => EventReason::NoOutboundNat,
        Degraded::NoServiceDataPlane => EventReason::NoServiceDataPlane,
    };
    announce(control, node, true, reason, degraded.message().into());
}

/// An event about this node from the node network (a Warning is a node condition in
/// `omnicloud nodes` until a Normal event from the same source follows).
fn announce(
    control: &ControlPlane,
    node: &str,
    warning: bool,
    reason: EventReason,
    message: String,
) {
    use crate::orchestrator::controllers::events::{EventDraft, Recorder};
    let draft = EventDraft {
        namespace: crate::store::state_machine::DEFAULT_NAMESPACE.into(),
        kind: "Node".into(),
        name: node.to_string(),
        warning,
        reason,
        message,
        source: "node-network".into(),
    };
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Logs the warning (once) and makes the event's write.
    let writes = Recorder::default().commands(vec![draft], &now);
    let control = control.clone();
    tokio::spawn(async move {
        for command in writes {
            for _ in 0..30 {
                match control.write(command.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "writing the network warning event; retrying");
                        tokio::time::sleep(TICK).await;
                    }
                }
            }
        }
    });
}
