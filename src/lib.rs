//! omnicloud: one binary that forms a self-bootstrapping cluster.
//!
//! Module map. Dependencies point down the list (`use crate::` paths outside tests;
//! `scripts/check-module-cycles.sh` fails on any cycle between these modules); only `node`
//! wires the actors together:
//!
//! | module         | job                                                                  |
//! |----------------|----------------------------------------------------------------------|
//! | `cli`          | the `omnicloud` command line; client verbs talk HTTPS to `api`;      |
//! |                | `login` writes the client config                                     |
//! | `chaos`        | `omnicloud chaos`: local cluster, seeded kill -9s, invariant report; |
//! |                | campaigns (`--history`): nodes in network namespaces, partitions,   |
//! |                | pauses, loss, a register/CAS history judged by `checker/` (Porcupine)|
//! | `client`       | the blocking HTTP client of `api` trusting the cluster CA, the client |
//! |                | config (`config`), and why a workload is not ready yet (`why`,      |
//! |                | `look`), for `cli` and `chaos`                                       |
//! | `node`         | composition root: store, identity, tokens, control plane, API server |
//! | `api`          | actix-web REST API (HTTPS; `tls`: plain HTTP refused), watch streams, |
//! |                | health, `/metrics`, dashboard, instance logs and exec (WebSocket)    |
//! |                | from any node; Pod Security admission of pod specs (`pod_security`)  |
//! | `auth`         | who calls and what they may: tokens (hash only), node credentials,   |
//! |                | RBAC over Role/Binding kinds and built-in roles, audit log, rate     |
//! |                | limits; the API asks it on every request                            |
//! | `agent`        | the container workload kind: runs the instances placed on this node  |
//! |                | (several containers of one instance share a `__pause` sandbox's netns)|
//! | `appliance`    | `omnicloud init` (PID 1 of a worker VM or USB stick), `install`,      |
//! |                | `usb prepare` (a cluster's CA and token for its sticks)             |
//! | `director`     | the VM workload kind: one `__vmm` process per VM instance placed here |
//! | `net`          | node networking from committed state: cross-node routes (host-gw,   |
//! |                | VXLAN), the Services data plane (iptables), LoadBalancer address    |
//! |                | announcement, the embedded cluster DNS (hickory)                     |
//! | `supervise`    | the one supervisor the kinds plug into: reconcile loop, one task per |
//! |                | instance, records, adoption, backoff, statuses, the node network    |
//! | `net`          | node networking: routes to every peer's instance subnet (host-gw on  |
//! |                | one L2 segment, VXLAN across routers), following membership        |
//! | `orchestrator` | Raft node (openraft); on the leader the scheduler, controllers and   |
//! |                | autoscalers (`autoscaler`: HPA, VPA recommender, metric buffers,     |
//! |                | cluster autoscaler asking directors for worker VMs, schedules)       |
//! | `container`    | OCI containers (libcontainer, `__container` helper, `__pause` sandbox;|
//! |                | `exec` enters a running one for `omnicloud exec` and exec probes),  |
//! |                | images, registry pulls (oci-client: TLS, tokens, mirrors, pull       |
//! |                | secrets), bridge                                                     |
//! | `vmm`          | microVMs on KVM: memory, vCPU threads, boot, devices, `__vmm` helper |
//! | `cluster`      | gossip membership (foca), admission (cluster id, name ownership),    |
//! |                | host facts and roles, authenticated RPC over mutual TLS, the cluster |
//! |                | CA and certificates (`pki`), the join exchange (`join`), the wall    |
//! |                | clock (`now_ms`)                                                     |
//! | `config`       | node config: TOML file, `OMNICLOUD_*` env, flags; owns the settings  |
//! |                | each room is handed (`RaftSettings`, `RegistrySettings`, ...)        |
//! | `store`        | redb: Raft log, replicated state machine, snapshots, local reads     |
//! | `model`        | resource kinds, manifest parsing, validation, quantities, `Subnet`,  |
//! |                | Pod Security levels and rules (`pod_security`) (pure data)           |
//!
//! Not yet: the PredictiveBootstrapScaler's metricTriggers; a guest agent on the VMs' COM2
//! channel.

pub mod agent;
pub mod api;
pub mod appliance;
pub mod auth;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod container;
pub mod director;
pub mod model;
pub mod net;
pub mod node;
pub mod orchestrator;
pub mod store;
pub mod supervise;
pub mod vmm;

/// Property tests: `PROPTEST_CASES` when set (for long runs), else the test's `default`.
#[cfg(test)]
pub(crate) fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// `omnicloud node`: load the config, start the node, serve until a signal.
pub fn run_node(flags: config::NodeFlags) -> ExitCode {
    let config = match config::NodeConfig::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("omnicloud")
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async {
        let node = node::Node::build(config).await?;
        node.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error with every source in its chain, on one line (a source whose text the message
/// already holds is not repeated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg.replace('\n', " ")
}
