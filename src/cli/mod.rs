//! The `omnicloud` command line: `node` runs a node; every other verb is a client of the
//! HTTPS API (`--server`, else the client config's, else https://127.0.0.1:7070), trusting
//! the cluster CA (`--ca`, the client config `omnicloud login` writes, a local node's).
//!
//! Blocking (ureq), no async runtime. May call: `model` (kind names), `config`/`node`
//! (default data dir and token file names), the pure HPA algorithm (`autoscaling simulate`).

mod access;
mod autoscale;
mod completion;
mod create;
mod exec;
mod images;
mod nodes;
mod ops;
pub mod output;
mod pull;
mod resources;
mod rollout;
mod scaling;
mod statefulset;
mod top;
mod vms;
mod wait;
pub(crate) use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::{discover_token, urlencode, Client, ClientError};
use crate::config::NodeFlags;
use crate::model::Kind;
use output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "omnicloud",
    version,
    about = "Self-bootstrapping cluster: one binary, gossip, Raft, containers and microVMs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (a new cluster, or --join an existing one).
    Node(NodeFlags),
    /// PID 1 of a worker VM or USB-booted machine: plan from the kernel command line, mount,
    /// configure the network, run the node (`--dry-run` prints the plan).
    Init(crate::appliance::InitArgs),
    /// Create or update resources from a YAML/JSON file ("-" for stdin); multi-document
    /// files apply all-or-nothing.
    Apply {
        #[command(flatten)]
        conn: Conn,
        /// File to apply (repeatable), or "-" for stdin.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Namespace for documents that name none.
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
    /// Create a Secret (generic, docker-registry) or a ConfigMap from literals and files.
    #[command(subcommand)]
    Create(create::CreateCommand),
    /// List resources of a kind, or show one.
    Get {
        #[command(flatten)]
        conn: Conn,
        /// Kind (deployments, deploy, sts, hpa, ...), or KIND/NAME.
        kind: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Label selector, e.g. app=web,tier!=db.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
        /// After listing, keep printing changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// Show one resource in detail.
    Describe {
        #[command(flatten)]
        conn: Conn,
        /// KIND/NAME, or KIND NAME.
        target: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Delete a resource.
    Delete {
        #[command(flatten)]
        conn: Conn,
        /// KIND/NAME, or KIND NAME.
        target: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Set the replica count of a Deployment, StatefulSet or VirtualMachine.
    Scale {
        #[command(flatten)]
        conn: Conn,
        /// KIND/NAME, or KIND NAME.
        target: String,
        name: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        replicas: i64,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Only scale if the object is still at this resourceVersion.
        #[arg(long)]
        resource_version: Option<u64>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
    /// Measured cpu and memory against requests and capacity.
    #[command(subcommand)]
    Top(top::TopCommand),
    /// Free cpu and memory per node, as requests leave it.
    #[command(name = "scaling-capacity")]
    ScalingCapacity {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// How many more replicas of a workload fit, by its requests.
    #[command(name = "scaling-headroom")]
    ScalingHeadroom {
        #[command(flatten)]
        conn: Conn,
        /// deployment/NAME or statefulset/NAME (default namespace).
        target: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Cluster diagnostics.
    #[command(subcommand)]
    Debug(top::DebugCommand),
    /// Scaling decisions the controllers made (from their events).
    #[command(subcommand)]
    Scaling(scaling::ScalingCommand),
    /// Create or update a workload's HorizontalPodAutoscaler.
    #[command(subcommand)]
    Autoscale(autoscale::AutoscaleCommand),
    /// HorizontalPodAutoscalers: status, and what a metric value would do.
    #[command(subcommand)]
    Autoscaling(autoscale::AutoscalingCommand),
    /// VerticalPodAutoscaler recommendations.
    #[command(subcommand)]
    Vpa(autoscale::VpaCommand),
    /// StatefulSet verbs in the seed's form.
    #[command(subcommand, name = "statefulset", alias = "sts")]
    StatefulSet(statefulset::StatefulSetCommand),
    /// Follow, list and undo Deployment rollouts.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Install this binary as a systemd service (config, token, data dir, unit).
    Install(crate::appliance::install::InstallArgs),
    /// USB sticks: `usb prepare OUT` makes a cluster's CA and token for its sticks.
    #[command(subcommand)]
    Usb(crate::appliance::UsbCommand),
    /// Remove what `install` wrote (the data dir only with --purge).
    Uninstall(crate::appliance::install::UninstallArgs),
    /// A resilience run: a local cluster, random kill -9s on a schedule, and a verdict.
    Chaos(crate::chaos::ChaosArgs),
    /// VM replicas: list, serial logs, start and stop.
    #[command(subcommand)]
    Vms(vms::VmsCommand),
    /// An instance's stdout and stderr, from whichever node runs it.
    Logs {
        #[command(flatten)]
        conn: Conn,
        /// Instance name (e.g. web-0), or instance/NAME.
        instance: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Keep printing what it writes.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// One container of a multi-container instance (default: the first).
        #[arg(short, long)]
        container: Option<String>,
    },
    /// Run a command in an instance's container, from any node: `exec [-it] web-0 -- sh`.
    /// Exits with the command's exit code (127: not found, 126: cannot run).
    Exec(exec::ExecArgs),
    /// The node's image store (`<data-dir>/images`).
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Cluster members: roles, gossip status, Raft role, capacity.
    Nodes {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// The control plane itself.
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
    /// Demo workloads for examples and tests (what the toolbox image runs).
    #[command(subcommand)]
    Workload(WorkloadCommand),
    /// Container runtime helper, run by the node itself (single-threaded libcontainer).
    #[command(name = "__container", hide = true)]
    Container(crate::container::HelperArgs),
    /// Holds a multi-container instance's network namespace, run by the agent.
    #[command(name = "__pause", hide = true)]
    Pause,
    /// Fencing watchdog beside an agent node: ends its StatefulSet containers when the node
    /// loses the leader or dies.
    #[command(name = "__fence", hide = true)]
    Fence(crate::agent::fence::FenceArgs),
    /// microVM helper: one VM per process, run by the director.
    #[command(name = "__vmm", hide = true)]
    Vmm(crate::vmm::HelperArgs),
    /// Shell completion script, e.g. `source <(omnicloud completion bash)`.
    Completion(completion::CompletionArgs),
    /// Write a client config (server, cluster CA, token) that every client verb reads; copy
    /// it to a laptop (default ~/.config/omnicloud/client.toml, or OMNICLOUD_CLIENT_CONFIG).
    Login(ops::LoginArgs),
    /// This node's certificates: `status` (expiry), `rotate` (renew).
    #[command(subcommand)]
    Certs(ops::CertsCommand),
    /// Users' API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Mutating and refused API requests, from every node's audit log.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// Only this user's requests.
        #[arg(long)]
        user: Option<String>,
        /// Only the last span, e.g. 10m, 2h.
        #[arg(long)]
        since: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Client and server versions.
    Version {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum BootstrapCommand {
    /// Raft leader, term, commit index, each voter's lag, role counts against policy.
    Status {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// HTTP server: /health, /, /burn?ms=N (burns CPU), /metrics.
    Http {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

/// How to reach the API.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// API server URL (default: the client config's, else https://127.0.0.1:7070).
    #[arg(long, env = "OMNICLOUD_SERVER", global = true)]
    pub server: Option<String>,
    /// The cluster CA certificate to trust (default: the client config's, else
    /// <data-dir>/tls/ca.crt of a local node).
    #[arg(long, env = "OMNICLOUD_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// API token (default: <data-dir>/admin.token of a local node).
    #[arg(long, env = "OMNICLOUD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir of a local node, to find its admin token.
    #[arg(long, env = "OMNICLOUD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// Where a client goes when nothing says.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7070";

impl Conn {
    /// The server URL, token and CA (PEM) this command uses: the flags, else the client
    /// config, else a local node's data dir.
    pub fn resolve(&self) -> (String, Option<String>, Option<String>) {
        let saved = crate::client::config::ClientConfig::load();
        let server = self
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| saved.map(|c| c.server).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let ca = crate::client::config::discover_ca(self.ca.as_deref(), self.data_dir.as_deref())
            .unwrap_or_else(|e| {
                eprintln!("warning: {e}");
                None
            });
        let token = discover_token(self.token.clone(), self.data_dir.clone());
        (server, token, ca)
    }

    fn client(&self) -> Client {
        let (server, token, ca) = self.resolve();
        Client::with_ca(&server, token, ca)
    }
}

/// Runs a client command; prints errors the way scripts and people both can read.
pub fn run(command: Command) -> ExitCode {
    if let Command::Exec(args) = command {
        return exec::run(args);
    }
    match dispatch(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                ClientError::Api { field, .. }
                    if !field.is_empty() && !e.to_string().contains(field.as_str()) =>
                {
                    eprintln!("error: {e} (field {field})")
                }
                _ => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<(), ClientError> {
    match command {
        Command::Node(_) | Command::Init(_) => unreachable!("main runs the node and init"),
        Command::Exec(_) => unreachable!("run runs exec"),
        Command::Image(cmd) => images::run(cmd),
        Command::Completion(args) => completion::run(args),
        Command::Rollout(cmd) => rollout::run(cmd),
        Command::Vms(cmd) => vms::run(cmd),
        Command::Chaos(args) => ops::chaos(args),
        Command::Install(args) => ops::install(args),
        Command::Usb(cmd) => ops::usb(cmd),
        Command::Login(args) => ops::login(args),
        Command::Certs(cmd) => ops::certs(cmd),
        Command::Uninstall(args) => ops::uninstall(args),
        Command::Scaling(cmd) => scaling::run(cmd),
        Command::Autoscale(cmd) => autoscale::configure(cmd),
        Command::Autoscaling(cmd) => autoscale::run(cmd),
        Command::Vpa(cmd) => autoscale::vpa(cmd),
        Command::Top(cmd) => top::top(cmd),
        Command::ScalingCapacity { conn, output } => top::capacity(conn, None, output),
        Command::ScalingHeadroom {
            conn,
            target,
            output,
        } => top::capacity(conn, Some(target), output),
        Command::Debug(cmd) => top::debug(cmd),
        Command::StatefulSet(cmd) => statefulset::run(cmd),
        Command::Create(cmd) => create::run(cmd),
        Command::Token(cmd) => access::token(cmd),
        Command::Audit {
            conn,
            user,
            since,
            output,
        } => access::audit(conn, user, since, output),
        Command::Nodes { conn, output } => {
            let v = conn.client().get_json("/v1/nodes")?;
            nodes::print_list(&v, output);
            Ok(())
        }
        Command::Bootstrap(BootstrapCommand::Status { conn, output }) => {
            let v = conn.client().get_json("/v1/cluster/status")?;
            match output {
                Format::Json => output::print_json(&v),
                Format::Yaml => output::print_yaml(&v),
                _ => print!("{}", output::bootstrap_status(&v)),
            }
            Ok(())
        }
        Command::Container(args) => {
            crate::container::helper::main(args).map_err(|e| ClientError::Other(e.one_line()))
        }
        Command::Pause => {
            crate::container::sandbox::pause_main().map_err(|e| ClientError::Other(e.one_line()))
        }
        Command::Fence(args) => {
            crate::agent::fence::watchdog(args);
            Ok(())
        }
        Command::Vmm(args) => {
            crate::vmm::helper::main(args).map_err(|e| ClientError::Other(e.one_line()))
        }
        Command::Workload(WorkloadCommand::Http { port }) => {
            crate::agent::workload::serve_http(port)
                .map_err(|e| ClientError::Other(format!("workload http: {e}")))
        }
        Command::Apply {
            conn,
            files,
            namespace,
            output,
            wait,
        } => resources::apply(&conn.client(), &files, namespace, output, &wait),
        Command::Get {
            conn,
            kind,
            name,
            namespace,
            all_namespaces,
            selector,
            output,
            watch,
        } => {
            if nodes::is_node_kind(&kind) {
                return nodes::get(
                    &conn.client(),
                    &kind,
                    name,
                    selector.as_deref(),
                    output,
                    watch,
                );
            }
            let (kind, name) = split_target(&kind, name)?;
            let ns = if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| "default".into()))
            };
            let client = conn.client();
            match name {
                Some(name) => resources::get_one(
                    &client,
                    kind,
                    &name,
                    ns.as_deref().unwrap_or("default"),
                    output,
                ),
                None => resources::get_list(
                    &client,
                    kind,
                    ns.as_deref(),
                    selector.as_deref(),
                    output,
                    watch,
                ),
            }
        }
        Command::Logs {
            conn,
            instance,
            namespace,
            follow,
            tail,
            container,
        } => {
            let name = instance.strip_prefix("instance/").unwrap_or(&instance);
            let opts = LogOptions {
                follow,
                tail,
                container,
            };
            stream_log(&conn, namespace.as_deref(), name, &opts)
        }
        Command::Describe {
            conn,
            target,
            name,
            namespace,
        } => {
            if nodes::is_node_kind(&target) {
                return nodes::describe(&conn.client(), &target, name);
            }
            let (kind, name) = split_target(&target, name)?;
            let name = name.ok_or_else(|| ClientError::Other("describe needs KIND/NAME".into()))?;
            let client = conn.client();
            let o = client.get_json(&object_path(kind, namespace.as_deref(), &name))?;
            print!("{}", output::describe(&o));
            if kind == Kind::Service {
                let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
                let ep = client
                    .get_json(&format!("/v1/namespaces/{ns}/endpoints/{name}"))
                    .ok();
                print!("{}", output::service_section(&o, ep.as_ref()));
            }
            if kind.has_replicas() {
                println!(
                    "{:<20}{}",
                    "Replicas:",
                    crate::client::look::replicas_line(&client, kind, &o)
                );
            }
            if kind.namespaced() && kind != Kind::Event {
                let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
                let events = client.get_json(&format!("/v1/namespaces/{ns}/events"))?;
                let mine: Vec<&serde_json::Value> = events["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| {
                        e["spec"]["involvedObject"]["kind"] == kind.as_str()
                            && e["spec"]["involvedObject"]["name"] == name.as_str()
                    })
                    .collect();
                print!("{}", output::events_section(&mine));
            }
            Ok(())
        }
        Command::Delete {
            conn,
            target,
            name,
            namespace,
            output,
        } => {
            let (kind, name) = split_target(&target, name)?;
            let name = name.ok_or_else(|| ClientError::Other("delete needs KIND/NAME".into()))?;
            let o = conn
                .client()
                .delete(&object_path(kind, namespace.as_deref(), &name))?;
            match output {
                Format::Json => output::print_json(&o),
                Format::Yaml => output::print_yaml(&o),
                _ => println!("{}/{} deleted", kind.as_str().to_lowercase(), name),
            }
            Ok(())
        }
        Command::Scale {
            conn,
            target,
            name,
            replicas,
            namespace,
            resource_version,
            output,
            wait,
        } => {
            let (kind, name) = split_target(&target, name)?;
            let name = name.ok_or_else(|| ClientError::Other("scale needs KIND/NAME".into()))?;
            if !kind.has_replicas() {
                return Err(ClientError::Other(format!(
                    "{kind} has no replicas to scale"
                )));
            }
            if replicas < 0 {
                return Err(ClientError::Other(format!(
                    "--replicas must be >= 0, got {replicas}"
                )));
            }
            let mut body = json!({"spec": {"replicas": replicas}});
            if let Some(rv) = resource_version {
                body["metadata"] = json!({"resourceVersion": rv.to_string()});
            }
            let path = format!("{}/scale", object_path(kind, namespace.as_deref(), &name));
            let o = conn
                .client()
                .send("PUT", &path, "application/json", &body.to_string())?;
            match output {
                Format::Json => output::print_json(&o),
                Format::Yaml => output::print_yaml(&o),
                _ => println!(
                    "{}/{} scaled to {replicas}",
                    kind.as_str().to_lowercase(),
                    name
                ),
            }
            if wait.wait {
                let target = wait::Target {
                    kind,
                    namespace: namespace.unwrap_or_else(|| "default".into()),
                    name,
                };
                wait::wait(&conn.client(), &[target], wait.timeout)?;
            }
            Ok(())
        }
        Command::Version { conn, output } => {
            let server = conn.client().get_json("/v1/version");
            let v = json!({
                "client": env!("CARGO_PKG_VERSION"),
                "server": server.as_ref().map(|s| s["version"].clone()).unwrap_or(Value::Null),
            });
            match output {
                Format::Json => output::print_json(&v),
                Format::Yaml => output::print_yaml(&v),
                _ => {
                    println!("Client: {}", env!("CARGO_PKG_VERSION"));
                    match &server {
                        Ok(s) => println!(
                            "Server: {} (node {})",
                            s["version"].as_str().unwrap_or("?"),
                            s["node"].as_str().unwrap_or("?")
                        ),
                        Err(e) => println!("Server: unavailable ({e})"),
                    }
                }
            }
            server.map(|_| ())
        }
    }
}

/// `deployment/web`, or `deployment web`.
fn split_target(target: &str, name: Option<String>) -> Result<(Kind, Option<String>), ClientError> {
    let (kind_text, inline_name) = match target.split_once('/') {
        Some((k, n)) => (k, Some(n.to_string())),
        None => (target, None),
    };
    let kind = Kind::parse(kind_text).ok_or_else(|| {
        let mut known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        known.push("nodes");
        ClientError::Other(format!(
            "unknown kind \"{kind_text}\"; expected one of {}",
            known.join(", ")
        ))
    })?;
    match (inline_name, name) {
        (Some(_), Some(extra)) => Err(ClientError::Other(format!(
            "unexpected argument \"{extra}\" after {target}"
        ))),
        (n, m) => Ok((kind, n.or(m))),
    }
}

fn collection_path(kind: Kind, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if kind.namespaced() => format!("/v1/namespaces/{ns}/{}", kind.plural()),
        _ => format!("/v1/{}", kind.plural()),
    }
}

fn object_path(kind: Kind, ns: Option<&str>, name: &str) -> String {
    format!(
        "{}/{name}",
        collection_path(kind, Some(ns.unwrap_or("default")))
    )
}

/// What `logs` asks for beside the instance.
#[derive(Debug, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail: Option<usize>,
    /// One container of a multi-container instance.
    pub container: Option<String>,
}

/// An instance's log (a container's output, a VM's serial console) to stdout, from the
/// node that runs it.
fn stream_log(
    conn: &Conn,
    namespace: Option<&str>,
    name: &str,
    opts: &LogOptions,
) -> Result<(), ClientError> {
    let ns = namespace.unwrap_or("default");
    let follow = opts.follow;
    let mut path = format!("/v1/namespaces/{ns}/instances/{name}/log?follow={follow}");
    if let Some(n) = opts.tail {
        path.push_str(&format!("&tail={n}"));
    }
    if let Some(c) = &opts.container {
        path.push_str(&format!("&container={c}"));
    }
    conn.client().copy_to(&path, &mut std::io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_in_both_forms() {
        let (k, n) = split_target("deployment/web-frontend", None).unwrap();
        assert_eq!((k, n.as_deref()), (Kind::Deployment, Some("web-frontend")));
        let (k, n) = split_target("deployment", Some("web-frontend".into())).unwrap();
        assert_eq!((k, n.as_deref()), (Kind::Deployment, Some("web-frontend")));
        let (k, n) = split_target("sts", None).unwrap();
        assert_eq!((k, n), (Kind::StatefulSet, None));
        assert!(split_target("gizmo/x", None)
            .unwrap_err()
            .to_string()
            .contains("unknown kind \"gizmo\""));
    }

    #[test]
    fn seed_scale_form_parses() {
        let cli = Cli::try_parse_from([
            "omnicloud",
            "scale",
            "deployment/web-frontend",
            "--replicas=15",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Scale { replicas: 15, .. }));
    }

    #[test]
    fn paths() {
        assert_eq!(
            collection_path(Kind::Deployment, Some("a")),
            "/v1/namespaces/a/deployments"
        );
        assert_eq!(
            collection_path(Kind::PriorityClass, Some("a")),
            "/v1/priorityclasses"
        );
        assert_eq!(
            object_path(Kind::Deployment, None, "w"),
            "/v1/namespaces/default/deployments/w"
        );
        assert_eq!(
            urlencode("app=web,x in (a,b)"),
            "app%3Dweb%2Cx%20in%20%28a%2Cb%29"
        );
    }
}
