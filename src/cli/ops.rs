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

/// The appliance's error with its causes, as the CLI prints errors.
fn appliance_error(e: crate::appliance::ApplianceError) -> ClientError {
    ClientError::Other(crate::error_chain(&e))
}
