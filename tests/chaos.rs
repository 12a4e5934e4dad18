//! `omnicloud chaos` end to end, as root with real containers: 5 node processes on
//! loopback, 10 seeded kill -9s and restarts while writes stream in, then the report must
//! show no lost acknowledged write, no StatefulSet identity running twice, and every
//! workload back at its desired replicas. Skips loudly without root or the test images
//! (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;
use serde_json::Value;

#[test]
fn ten_kills_lose_no_acknowledged_write_and_every_workload_comes_back() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let workload = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chaos.yaml");
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--nodes",
            "5",
            "--kills",
            "10",
            "--interval",
            "12s",
            "--down",
            "4s",
            "--seed",
            "42",
            "--settle",
            "120s",
            "--cidr",
            "10.78.0.0/16",
            "--bridge-prefix",
            "ochaost",
            "-o",
            "json",
        ])
        .arg("--workload")
        .arg(&workload)
        .arg("--import")
        .arg(&layout)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    println!("{pretty}");
    assert_eq!(report["kills"].as_array().unwrap().len(), 10, "{pretty}");
    assert!(
        report["writesAcknowledged"].as_u64().unwrap() > 100,
        "{pretty}"
    );
    assert_eq!(report["writesLost"], serde_json::json!([]), "{pretty}");
    assert_eq!(
        report["writesFound"], report["writesAcknowledged"],
        "{pretty}"
    );
    assert_eq!(
        report["duplicateIdentities"],
        serde_json::json!([]),
        "{pretty}"
    );
    assert_eq!(report["notRestored"], serde_json::json!([]), "{pretty}");
    assert!(
        report["kills"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["recoveredAfterSecs"].is_f64()),
        "{pretty}"
    );
    assert_eq!(report["verdict"], "PASS", "{pretty}");
    assert!(out.status.success(), "{stderr}");
    // The same seed picks the same victims.
    let victims: Vec<&str> = report["kills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["node"].as_str().unwrap())
        .collect();
    assert_eq!(victims.len(), 10);
    // Nothing is left running: no node, no container, no watchdog.
    for i in 0..5 {
        let dir = data.path().join(format!("chaos-{i}"));
        assert!(
            common::containers(&dir).is_empty(),
            "containers left in {}",
            dir.display()
        );
    }
    let left = Command::new("pgrep")
        .args(["-f", &data.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes left behind"
    );
}

#[test]
fn bad_chaos_options_are_refused_by_name() {
    for (args, want) in [
        (
            vec!["--nodes", "3", "--targets", "5"],
            "--targets: node 5 does not exist",
        ),
        (
            vec!["--interval", "2s", "--down", "5s"],
            "--interval must be longer than --down",
        ),
        (
            vec!["--workload", "/no/such.yaml"],
            "--workload /no/such.yaml",
        ),
    ] {
        let out = Command::new(BIN).arg("chaos").args(&args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A run that fails after starting a node (here: importing images that do not exist) ends
/// that node before it exits; it used to return the error and leave the node running.
#[test]
fn a_run_that_fails_half_way_leaves_no_process_behind() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--nodes",
            "2",
            "--kills",
            "0",
            "--roles",
            "orchestrator",
            "--cidr",
            "10.82.0.0/16",
            "--bridge-prefix",
            "ochaosf",
            "--import",
            "/no/such/layout",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("importing images into chaos-0"), "{stderr}");
    let log = std::fs::read_to_string(data.path().join("chaos-0/node.log")).unwrap();
    assert!(log.contains("chaos-0"), "the node never started:\n{log}");
    let left = Command::new("pgrep")
        .args(["-af", &data.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Instance and VM kills: the agent restarts a SIGKILLed container, the director a
/// SIGKILLed VMM; each kill is followed by the instance running and ready again.
#[test]
fn killed_instances_and_vms_come_back_and_the_run_passes() {
    let Some(layout) = common::images::layout() else {
        return;
    };
    let Some(kernel) = common::guest::elf() else {
        return;
    };
    let workload = tempfile::NamedTempFile::new().unwrap();
    let chaos_yaml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chaos.yaml"))
            .unwrap();
    std::fs::write(
        workload.path(),
        format!(
            "{chaos_yaml}---\napiVersion: omnicloud.io/v1\nkind: VirtualMachine\nmetadata: {{name: vm}}\n\
             spec: {{replicas: 2, cpu: {{cores: 1}}, memory: {{guest: 16Mi}}, kernel: {}, cmdline: omnicloud.hold}}\n",
            kernel.display()
        ),
    )
    .unwrap();
    for (kill, cidr, prefix) in [
        ("instances", "10.79.0.0/16", "ochaosi"),
        ("vms", "10.80.0.0/16", "ochaosv"),
    ] {
        let out = Command::new(BIN)
            .args([
                "chaos",
                "--kill",
                kill,
                "--nodes",
                "3",
                "--kills",
                "3",
                "--interval",
                "4s",
                "--seed",
                "9",
                "--settle",
                "60s",
                "--roles",
                "orchestrator,agent,director",
                "--cidr",
                cidr,
                "--bridge-prefix",
                prefix,
                "-o",
                "json",
            ])
            .arg("--workload")
            .arg(workload.path())
            .arg("--import")
            .arg(&layout)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{kill}: no JSON report ({e}); stderr:\n{stderr}"));
        let pretty = serde_json::to_string_pretty(&report).unwrap();
        println!("{pretty}");
        let kills = report["kills"].as_array().unwrap();
        assert_eq!(kills.len(), 3, "{kill}: {pretty}");
        for k in kills {
            let victim = k["node"].as_str().unwrap();
            let is_vm = victim.starts_with("default/vm-");
            assert_eq!(is_vm, kill == "vms", "{kill} killed {victim}");
        }
        assert!(
            kills.iter().any(|k| k["recoveredAfterSecs"].is_f64()),
            "{kill}: {pretty}"
        );
        assert_eq!(report["verdict"], "PASS", "{kill}: {pretty}\n{stderr}");
    }
}
