//! Verbs that run things on this machine rather than ask a node: `chaos`, `install`,
//! `uninstall`.

use super::{output, Format};
use crate::client::ClientError;

pub fn chaos(args: crate::chaos::ChaosArgs) -> Result<(), ClientError> {
    let json = matches!(args.output, Format::Json);
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
    let client = crate::client::Client::with_ca(
        &args.server,
        Some(args.token.clone()),
        Some(ca.clone()),
    );
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
