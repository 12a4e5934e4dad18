//! `--wait`: follow workloads until they converge (every replica created, ready, and of
//! the current generation), with a live status line that says why they are not there yet
//! (`why`: instance reasons, Warning events, node conditions), or fail at `--timeout`
//! saying what is still missing and why.

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::look::{events, instances_of, nodes};
use crate::client::why::{self, Facts};
use crate::client::{Client, ClientError};
use crate::model::Kind;

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the workload has converged (all replicas ready).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A workload to wait for.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// The kinds that converge (the ones with replicas); others are applied and not waited for.
fn waits_for(kind: Kind) -> bool {
    kind.has_replicas()
}

/// Events older than the wait (less this slack for clocks between client and leader) are
/// about an earlier change, not about this one.
const EVENT_SLACK: Duration = Duration::from_secs(5);

/// "deployment/web 0/2 ready: 2 Failed (image pull failed: ...)" and whether it converged.
fn look(client: &Client, t: &Target, since: SystemTime) -> Result<(String, bool), ClientError> {
    let path = format!(
        "/v1/namespaces/{}/{}/{}",
        t.namespace,
        t.kind.plural(),
        t.name
    );
    let o = client.get_json(&path)?;
    let instances = instances_of(client, t.kind, &t.namespace, &t.name);
    let (_, done) = why::progress(&o);
    // Node conditions explain only instances that say nothing themselves.
    let unexplained = instances.iter().any(|i| {
        i["status"]["ready"] != true && i["status"]["reason"].as_str().unwrap_or("").is_empty()
    });
    let (events, nodes) = match done {
        true => (Vec::new(), Vec::new()),
        false if unexplained => (events(client, &t.namespace, since), nodes(client)),
        false => (events(client, &t.namespace, since), Vec::new()),
    };
    let facts = Facts {
        instances: &instances,
        events: &events,
        nodes: &nodes,
    };
    let (text, done) = why::summary(&o, &facts);
    Ok((
        format!("{}/{} {text}", t.kind.as_str().to_lowercase(), t.name),
        done,
    ))
}

/// Polls until every target has converged; prints progress and its reasons to stderr (a
/// live line on a terminal, a line per change otherwise).
pub fn wait(client: &Client, targets: &[Target], timeout: Duration) -> Result<(), ClientError> {
    let targets: Vec<&Target> = targets.iter().filter(|t| waits_for(t.kind)).collect();
    let live = std::io::stderr().is_terminal();
    let bar = if live {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}").expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let since = SystemTime::now() - EVENT_SLACK;
    let mut last = String::new();
    loop {
        let mut lines = Vec::new();
        let mut all = true;
        for t in &targets {
            let (line, done) = look(client, t, since)?;
            all &= done;
            lines.push(line);
        }
        let text = lines.join(" | ");
        let line = format!("{text} ({}s)", start.elapsed().as_secs());
        if live {
            bar.set_message(line);
        } else if text != last {
            eprintln!("{line}");
            last = text;
        }
        if all {
            bar.finish();
            if live {
                eprintln!();
            }
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bar.abandon();
            if live {
                eprintln!();
            }
            let waited = humantime::format_duration(timeout);
            return Err(ClientError::Other(match lines.as_slice() {
                [one] => format!("timed out after {waited}: {one}"),
                many => format!("timed out after {waited}:\n  {}", many.join("\n  ")),
            }));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_with_replicas_is_waited_for() {
        // StatefulSets converge like the others (`statefulset scale --wait` waits).
        for kind in [Kind::Deployment, Kind::StatefulSet, Kind::VirtualMachine] {
            assert!(waits_for(kind), "{kind}");
        }
        assert!(!waits_for(Kind::HorizontalPodAutoscaler));
        assert!(!waits_for(Kind::Namespace));
    }
}
