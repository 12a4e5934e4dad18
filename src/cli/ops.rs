//! Verbs that run things on this machine rather than ask a node: `chaos`, `install`,
//! `uninstall`.

use super::{output, Format};
use crate::client::ClientError;

pub fn chaos(args: crate::chaos::ChaosArgs) -> Result<(), ClientError> {
    let json = matches!(args.output, Format::Json);
    if args.history.is_some() {
        let report = crate::chaos::run_campaign(args).map_err(ClientError::Other)?;
        if json {
            output::print_json(&serde_json::to_value(&report).expect("JSON"));
        } else {
            print!("{}", crate::chaos::campaign::render(&report));
        }
        if report.verdict != "PASS" {
            return Err(ClientError::Other(format!(
                "the checker judged the history {} (verdict FAIL)",
                report.linearizability
            )));
        }
        return Ok(());
    }
    let report = crate::chaos::run(args).map_err(ClientError::Other)?;
    if json {
        output::print_json(&serde_json::to_value(&report).expect("JSON"));
    } else {
        print!("{}", crate::chaos::render(&report));
    }
    if report.verdict != "PASS" {
        return Err(ClientError::Other(
            "the chaos run broke an invariant (verdict FAIL)".into(),
        ));
    }
    Ok(())
}

pub fn install(args: crate::appliance::install::InstallArgs) -> Result<(), ClientError> {
    for step in crate::appliance::install::install(&args).map_err(appliance_error)? {
        println!("{step}");
    }
    Ok(())
}

pub fn uninstall(args: crate::appliance::install::UninstallArgs) -> Result<(), ClientError> {
    for step in crate::appliance::install::uninstall(&args).map_err(appliance_error)? {
        println!("{step}");
    }
    Ok(())
}

/// `omnicloud usb prepare OUT`: the sticks' files, and what to copy where.
pub fn usb(cmd: crate::appliance::UsbCommand) -> Result<(), ClientError> {
    let crate::appliance::UsbCommand::Prepare { out, secret, join } = cmd;
    let token = crate::appliance::sticks::prepare(&out, secret.as_deref(), join.as_deref())
        .map_err(appliance_error)?;
    let (seed, join_dir) = (out.join("seed"), out.join("join"));
    println!(
        "join token: {token} (also in {})",
        out.join("join.token").display()
    );
    println!(
        "seed stick: copy {}/* (tls/ca.crt, tls/ca.key, omnicloud.conf) onto its OMNICONFIG partition; tls/ca.key issues every node's certificate: keep it like a password",
        seed.display()
    );
    println!(
        "other sticks: copy {}/* (tls/ca.crt, omnicloud.conf) onto each one's OMNICONFIG partition{}",
        join_dir.display(),
        if join.is_some() { "" } else { " and set join= to the seed's address" }
    );
    Ok(())
}

/// The appliance's error with its causes, as the CLI prints errors.
fn appliance_error(e: crate::appliance::ApplianceError) -> ClientError {
    ClientError::Other(crate::error_chain(&e))
}

/// `omnicloud login`: what a client config holds.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// API server URL, https://HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// API token (a node's <data-dir>/admin.token).
    #[arg(long, env = "OMNICLOUD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The cluster CA certificate (a node's <data-dir>/tls/ca.crt; default: a local
    /// node's).
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Data dir of a local node, to find its CA.
    #[arg(long, env = "OMNICLOUD_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Checks that the server answers with this CA and token, then writes the client config
/// (nothing is written when the check fails).
pub fn login(args: LoginArgs) -> Result<(), ClientError> {
    use crate::client::config::{self, ClientConfig};
    if !args.server.starts_with("https://") {
        return Err(ClientError::Other(format!(
            "--server {}: expected an https:// URL (the API serves HTTPS only)",
            args.server
        )));
    }
    let ca = match &args.ca {
        Some(file) => config::discover_ca(Some(file), None),
        None => {
            let dir = args
                .data_dir
                .clone()
                .unwrap_or_else(crate::config::default_data_dir);
            let file = crate::cluster::pki::TlsDir::of(&dir).ca_crt();
            match file.exists() {
                true => config::discover_ca(Some(&file), None),
                false => Err(format!(
                    "--ca: no CA given and none at {}: pass the cluster's <data-dir>/tls/ca.crt",
                    file.display()
                )),
            }
        }
    }
    .map_err(ClientError::Other)?
    .expect("a CA was read");
    let client =
        crate::client::Client::with_ca(&args.server, Some(args.token.clone()), Some(ca.clone()));
    client.get_json("/v1/nodes")?;
    let path = config::path();
    ClientConfig {
        server: args.server.trim_end_matches('/').to_string(),
        token: args.token,
        ca,
    }
    .save(&path)
    .map_err(ClientError::Other)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `omnicloud certs`: this node's certificates (local, from its data dir).
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// When the cluster CA and this node's certificate expire.
    Status {
        /// Data dir of the node.
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Renew this node's certificate: now on the seed (it holds the CA key), at the node's
    /// next start elsewhere (it asks its seed again). Nodes also renew by themselves at
    /// start when fewer than 30 days are left.
    Rotate {
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
}

pub fn certs(cmd: CertsCommand) -> Result<(), ClientError> {
    use crate::cluster::pki::{self, TlsDir};
    let (CertsCommand::Status { data_dir } | CertsCommand::Rotate { data_dir }) = &cmd;
    let dir = data_dir
        .clone()
        .unwrap_or_else(crate::config::default_data_dir);
    let tls = TlsDir::of(&dir);
    let fail = |e: pki::PkiError| ClientError::Other(crate::error_chain(&e));
    match cmd {
        CertsCommand::Status { .. } => {
            let now = std::time::SystemTime::now();
            let found = pki::status(&tls).map_err(fail)?;
            if found.is_empty() {
                return Err(ClientError::Other(format!(
                    "no certificates in {}",
                    tls.0.display()
                )));
            }
            println!("{:<10} {:<22} DAYS LEFT", "FILE", "EXPIRES");
            for (name, expires) in found {
                let left = expires
                    .duration_since(now)
                    .map_or(0, |d| d.as_secs() / 86_400);
                let when = humantime::format_rfc3339_seconds(expires).to_string();
                println!("{name:<10} {when:<22} {left}");
            }
            Ok(())
        }
        CertsCommand::Rotate { .. } => {
            if !tls.node_crt().exists() {
                return Err(ClientError::Other(format!(
                    "no node certificate in {}",
                    tls.0.display()
                )));
            }
            if tls.ca_key().exists() {
                // The names it had: read back from the certificate being replaced.
                let sans = pki::sans_of(&tls.read(&tls.node_crt()).map_err(fail)?).map_err(fail)?;
                pki::issue_own(&tls, &sans).map_err(fail)?;
                println!(
                    "renewed {}; restart the node to serve it",
                    tls.node_crt().display()
                );
            } else {
                std::fs::remove_file(tls.node_crt()).map_err(|e| {
                    ClientError::Other(format!("{}: {e}", tls.node_crt().display()))
                })?;
                println!(
                    "removed {}; the node gets a new one from its seed at its next start",
                    tls.node_crt().display()
                );
            }
            Ok(())
        }
    }
}
