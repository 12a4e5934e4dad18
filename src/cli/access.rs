//! `omnicloud token create|list|revoke` (users' API tokens) and `omnicloud audit` (the
//! audit logs of every node, gathered through each node's API and merged by time).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use serde_json::{json, Value};

use super::{output, Conn, Format};
use crate::client::{urlencode, Client, ClientError};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// A new API token for a user, printed once (only its hash is kept).
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        user: String,
        /// How long it is valid, e.g. 24h, 30m (default: until revoked).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Every token: id, user, created, expires (never a secret).
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Revoke a token; it stops working on every node before this returns.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
}

fn time_of(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "never".into(),
    }
}

pub fn token(cmd: TokenCommand) -> Result<(), ClientError> {
    match cmd {
        TokenCommand::Create {
            conn,
            user,
            ttl,
            output,
        } => {
            let body = json!({ "user": user, "ttl": ttl });
            let v = conn.client().send(
                "POST",
                "/v1/auth/tokens",
                "application/json",
                &body.to_string(),
            )?;
            if output == Format::Json {
                output::print_json(&v);
            } else {
                eprintln!(
                    "token {} for user {} (expires: {}); it is shown only this once:",
                    v["id"].as_str().unwrap_or_default(),
                    user,
                    time_of(&v["expiresMs"])
                );
                println!("{}", v["token"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        TokenCommand::List { conn, output } => {
            let v = conn.client().get_json("/v1/auth/tokens")?;
            if output == Format::Json {
                output::print_json(&v);
                return Ok(());
            }
            let rows = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["user"].as_str().unwrap_or_default().to_string(),
                        time_of(&t["createdMs"]),
                        time_of(&t["expiresMs"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["ID", "USER", "CREATED", "EXPIRES"], rows)
            );
            Ok(())
        }
        TokenCommand::Revoke { conn, id } => {
            let v = conn
                .client()
                .delete(&format!("/v1/auth/tokens/{}", urlencode(&id)))?;
            let late: Vec<&str> = v["unconfirmedNodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if late.is_empty() {
                println!("token {id} revoked on every node");
            } else {
                println!(
                    "token {id} revoked; not yet confirmed by {} (they refuse it once they catch up)",
                    late.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// `omnicloud audit`: every reachable node's records, oldest first.
pub fn audit(
    conn: Conn,
    user: Option<String>,
    since: Option<String>,
    output: Format,
) -> Result<(), ClientError> {
    let since_ms = match since {
        Some(s) => {
            let d = humantime::parse_duration(&s)
                .map_err(|e| ClientError::Other(format!("--since \"{s}\": {e} (e.g. 10m, 2h)")))?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.saturating_sub(d).as_millis() as u64
        }
        None => 0,
    };
    let mut query = format!("?sinceMs={since_ms}");
    if let Some(u) = &user {
        query.push_str(&format!("&user={}", urlencode(u)));
    }
    let client = conn.client();
    let nodes = client.get_json("/v1/nodes")?;
    let (server, token, ca) = conn.resolve();
    let scheme = server.split_once("://").map_or("https", |(s, _)| s);
    let mut items: Vec<Value> = Vec::new();
    for n in nodes["items"].as_array().into_iter().flatten() {
        let (Some(name), Some(addr)) = (n["name"].as_str(), n["apiAddr"].as_str()) else {
            continue;
        };
        let node = Client::with_ca(&format!("{scheme}://{addr}"), token.clone(), ca.clone())
            .with_timeout(Duration::from_secs(5));
        match node.get_json(&format!("/v1/audit{query}")) {
            Ok(v) => items.extend(v["items"].as_array().cloned().unwrap_or_default()),
            Err(e) => eprintln!("warning: node {name}: {e}"),
        }
    }
    items.sort_by_key(|r| r["timeMs"].as_u64().unwrap_or(0));
    if output == Format::Json {
        output::print_json(&json!({ "items": items }));
        return Ok(());
    }
    let rows = items
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            vec![
                time_of(&r["timeMs"]),
                s("node"),
                s("user"),
                // The address without its port: the port of one connection says little.
                s("source")
                    .rsplit_once(':')
                    .map_or(s("source"), |(ip, _)| ip.to_string()),
                s("verb"),
                s("object"),
                r["code"].to_string(),
                s("result"),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &["TIME", "NODE", "USER", "SOURCE", "VERB", "OBJECT", "CODE", "RESULT"],
            rows
        )
    );
    Ok(())
}
