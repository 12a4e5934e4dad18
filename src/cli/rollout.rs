//! `omnicloud rollout status|history|undo deployment/NAME`: follow a rollout, list the
//! revisions the Deployment's status keeps, and put an earlier template back.

use clap::Subcommand;
use serde_json::Value;

use super::{output, wait, Conn, Format};
use crate::client::{Client, ClientError};
use crate::model::status::DeploymentStatus;
use crate::model::{Kind, PodTemplate};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Follow the rollout until every replica runs the current revision and is ready.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// deployment/NAME
        target: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// The revisions kept (revisionHistoryLimit), newest last.
    History {
        #[command(flatten)]
        conn: Conn,
        target: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Freeze the rollout at the current revision (scaling still applies).
    Pause {
        #[command(flatten)]
        conn: Conn,
        target: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Continue a paused rollout.
    Resume {
        #[command(flatten)]
        conn: Conn,
        target: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Roll back to the previous revision (or --to-revision).
    Undo {
        #[command(flatten)]
        conn: Conn,
        target: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(long)]
        to_revision: Option<String>,
    },
}

fn deployment_name(target: &str) -> Result<String, ClientError> {
    let (kind, name) = target
        .split_once('/')
        .ok_or_else(|| ClientError::Other(format!("{target:?}: expected deployment/NAME")))?;
    if Kind::parse(kind) != Some(Kind::Deployment) {
        return Err(ClientError::Other(format!(
            "{target:?}: rollouts are for deployments"
        )));
    }
    Ok(name.to_string())
}

fn path(ns: &Option<String>, name: &str) -> String {
    format!(
        "/v1/namespaces/{}/deployments/{name}",
        ns.as_deref().unwrap_or("default")
    )
}

fn images(template: &PodTemplate) -> String {
    let images: Vec<&str> = template
        .spec
        .containers
        .iter()
        .map(|c| c.image.as_str())
        .collect();
    images.join(",")
}

/// The Deployment object `d`'s status.
fn status(d: &Value) -> DeploymentStatus {
    crate::model::status::of(d.get("status"))
}

pub fn run(cmd: RolloutCommand) -> Result<(), ClientError> {
    match cmd {
        RolloutCommand::Status {
            conn,
            target,
            namespace,
            timeout,
        } => {
            let name = deployment_name(&target)?;
            let client = conn.client();
            let t = wait::Target {
                kind: Kind::Deployment,
                namespace: namespace.clone().unwrap_or_else(|| "default".into()),
                name: name.clone(),
            };
            wait::wait(&client, &[t], timeout)?;
            println!("deployment/{name} successfully rolled out");
            Ok(())
        }
        RolloutCommand::History {
            conn,
            target,
            namespace,
            output: format,
        } => {
            let name = deployment_name(&target)?;
            let d = conn.client().get_json(&path(&namespace, &name))?;
            let st = status(&d);
            let history = serde_json::to_value(&st.history).expect("JSON");
            match format {
                Format::Json => output::print_json(&history),
                Format::Yaml => output::print_yaml(&history),
                _ => {
                    let rows = st
                        .history
                        .iter()
                        .map(|h| {
                            let current = h.revision == st.revision;
                            vec![
                                h.revision.clone(),
                                if current { "*" } else { "" }.into(),
                                h.since.clone(),
                                images(&h.template),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        output::table(&["REVISION", "CURRENT", "SINCE", "IMAGES"], rows)
                    );
                }
            }
            Ok(())
        }
        RolloutCommand::Pause {
            conn,
            target,
            namespace,
        } => set_paused(&conn.client(), &namespace, &deployment_name(&target)?, true),
        RolloutCommand::Resume {
            conn,
            target,
            namespace,
        } => set_paused(
            &conn.client(),
            &namespace,
            &deployment_name(&target)?,
            false,
        ),
        RolloutCommand::Undo {
            conn,
            target,
            namespace,
            to_revision,
        } => {
            let name = deployment_name(&target)?;
            let client = conn.client();
            undo(&client, &namespace, &name, to_revision)
        }
    }
}

fn set_paused(
    client: &Client,
    namespace: &Option<String>,
    name: &str,
    paused: bool,
) -> Result<(), ClientError> {
    let p = path(namespace, name);
    let mut d = client.get_json(&p)?;
    d["spec"]["paused"] = Value::Bool(paused);
    if let Some(o) = d.as_object_mut() {
        o.remove("status");
    }
    client.send("PUT", &p, "application/json", &d.to_string())?;
    println!(
        "deployment/{name} {}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}

fn undo(
    client: &Client,
    namespace: &Option<String>,
    name: &str,
    to: Option<String>,
) -> Result<(), ClientError> {
    let p = path(namespace, name);
    let mut d = client.get_json(&p)?;
    let st = status(&d);
    let entry = match &to {
        Some(r) => st.history.iter().find(|h| h.revision == *r),
        None => st.history.iter().rev().find(|h| h.revision != st.revision),
    }
    .ok_or_else(|| {
        ClientError::Other(match &to {
            Some(r) => format!("deployment/{name} has no revision {r} (see rollout history)"),
            None => format!("deployment/{name} has no earlier revision to roll back to"),
        })
    })?
    .clone();
    d["spec"]["template"] = serde_json::to_value(&entry.template).expect("JSON");
    if let Some(o) = d.as_object_mut() {
        o.remove("status");
    }
    client.send("PUT", &p, "application/json", &d.to_string())?;
    println!(
        "deployment/{name} rolled back to revision {}",
        entry.revision
    );
    Ok(())
}
