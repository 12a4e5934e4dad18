//! `omnicloud scaling history [--period 24h] [--component NAME]`: the controllers'
//! scaling decisions (the events they left), newest last.

use std::time::{Duration, SystemTime};

use clap::Subcommand;
use serde_json::Value;

use super::{output, Conn, Format};
use crate::client::ClientError;
use crate::model::event::EventReason;

#[derive(Debug, Subcommand)]
pub enum ScalingCommand {
    /// Scaling decisions over a period, optionally for one workload.
    History {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        period: Duration,
        /// Only this workload (deployment, statefulset or instance name).
        #[arg(long)]
        component: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

pub fn run(cmd: ScalingCommand) -> Result<(), ClientError> {
    let ScalingCommand::History {
        conn,
        period,
        component,
        namespace,
        output: format,
    } = cmd;
    let path = match &namespace {
        Some(ns) => format!("/v1/namespaces/{ns}/events"),
        None => "/v1/events".to_string(),
    };
    let list = conn.client().get_json(&path)?;
    let since = SystemTime::now() - period;
    let mut items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let spec = &e["spec"];
            let recent = spec["lastTimestamp"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .is_some_and(|t| t >= since);
            let scaling = spec["reason"]
                .as_str()
                .and_then(EventReason::parse)
                .is_some_and(EventReason::is_scaling);
            let wanted = component.as_ref().is_none_or(|c| {
                spec["involvedObject"]["name"] == c.as_str()
                    || spec["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(c.as_str()))
            });
            recent && scaling && wanted
        })
        .cloned()
        .collect();
    items.sort_by_key(|e| {
        e["spec"]["lastTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    match format {
        Format::Json => output::print_json(&Value::Array(items)),
        Format::Yaml => output::print_yaml(&Value::Array(items)),
        _ => {
            let rows = items
                .iter()
                .map(|e| {
                    let s = &e["spec"];
                    vec![
                        s["lastTimestamp"].as_str().unwrap_or("").to_string(),
                        format!(
                            "{}/{}",
                            s["involvedObject"]["kind"]
                                .as_str()
                                .unwrap_or("")
                                .to_lowercase(),
                            s["involvedObject"]["name"].as_str().unwrap_or("")
                        ),
                        s["reason"].as_str().unwrap_or("").to_string(),
                        s["count"].as_u64().unwrap_or(1).to_string(),
                        s["message"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["TIME", "COMPONENT", "REASON", "COUNT", "MESSAGE"], rows)
            );
        }
    }
    Ok(())
}
