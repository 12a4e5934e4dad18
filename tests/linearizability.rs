//! `omnicloud chaos --history`: short linearizability campaigns on 5 node processes in
//! network namespaces (real packets cut by iptables inside them), the register/CAS
//! workload, and the verdict of checker/ (Porcupine). Under partitions, pauses, kills and
//! loss the history must be valid; with the deliberate break (`--break-stale-reads`:
//! followers answer consistent reads without a read index) the same kind of run must be
//! judged invalid, naming operations. Two watchers follow the registers throughout and
//! must see every revision in order, exactly once, across reconnections. Needs root and Go (golang-go, to build checker/);
//! skips loudly without them (fails under OMNICLOUD_REQUIRE_ALL=1).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::netns::require;
use common::BIN;
use serde_json::Value;

/// One campaign at a time: each runs 5 nodes, and the machine has 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Builds checker/ (scripts/build-checker.sh); false after a loud skip.
fn checker_built() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        require("root (network namespaces, iptables)", "not root".into());
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-checker.sh");
    match Command::new(&script).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            if why.contains("go: command not found") || why.contains("go: not found") {
                require("Go (golang-go) to build checker/", why);
                return false;
            }
            panic!("scripts/build-checker.sh failed:\n{why}");
        }
        Err(e) => panic!("running {}: {e}", script.display()),
    }
}

/// Runs a campaign; (success, JSON report, stderr).
fn campaign(dir: &Path, faults: &str, kills: &str, extra: &[&str]) -> (bool, Value, String) {
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--netns",
            "--nodes",
            "5",
            "--roles",
            "orchestrator",
            "--faults",
            faults,
            "--kills",
            kills,
            "--interval",
            "7s",
            "--down",
            "3s",
            "--seed",
            "7",
            "--cidr",
            "10.79.0.0/16",
            "--bridge-prefix",
            "oclin",
            "-o",
            "json",
        ])
        .args(extra)
        .arg("--history")
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    (out.status.success(), report, stderr)
}

/// The figures a reader wants, printed with the test's output.
fn print_figures(report: &Value) {
    println!(
        "operations: {}; checked: {}; verdict: {}",
        report["outcomes"], report["checker"]["opsChecked"], report["linearizability"]
    );
    for a in report["availability"].as_array().unwrap() {
        println!(
            "availability during {}: {} of {} answered; on the nodes it did not hit: {} of {}",
            a["during"], a["ok"], a["operations"], a["elsewhereOk"], a["elsewhereOperations"]
        );
    }
    println!("watch: {}", report["watch"]);
    for f in report["faults"].as_array().unwrap() {
        println!(
            "fault {} on {} (leader was {}): writes resumed after {}s, recovered after {}s",
            f["kind"],
            f["nodes"],
            f["leader"],
            f["writesResumedAfterSecs"],
            f["recoveredAfterSecs"]
        );
    }
}

#[test]
fn partitions_of_every_shape_pauses_kills_and_loss_keep_the_register_linearizable() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !checker_built() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, report, stderr) = campaign(
        dir.path(),
        "partition-leader,partition-minority,partition-bridge,partition-ring,pause,kill,loss",
        "7",
        &[],
    );
    print_figures(&report);
    let pretty = serde_json::to_string_pretty(&report["checker"]).unwrap();
    assert_eq!(report["linearizability"], "valid", "{pretty}\n{stderr}");
    assert!(ok, "a valid history must exit 0: {stderr}");
    assert_eq!(report["verdict"], "PASS");
    let kinds: Vec<&str> = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "partition-leader",
            "partition-minority",
            "partition-bridge",
            "partition-ring",
            "pause",
            "kill",
            "loss"
        ]
    );
    assert!(
        report["checker"]["opsChecked"].as_u64().unwrap() > 200,
        "{pretty}"
    );
    // Every acknowledged operation was among those checked (and linearized: valid).
    assert!(
        report["checker"]["opsChecked"].as_u64() >= report["outcomes"]["ok"].as_u64(),
        "{pretty}"
    );
    // The majority side kept serving while a minority (or the old leader) was cut off.
    let during = |kind: &str| {
        report["availability"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["during"] == kind)
            .map(|a| a["elsewhereOk"].as_u64().unwrap())
            .unwrap()
    };
    assert!(during("partition-minority") > 0, "{report}");
    assert!(during("partition-leader") > 0, "{report}");
    // Every watcher saw every revision of the registers, in order, once, across reconnects.
    let watch = &report["watch"];
    assert_eq!(watch["ok"], true, "{watch}");
    assert_eq!(watch["watchers"], 2, "{watch}");
    assert!(watch["eventsSeen"].as_u64().unwrap() > 100, "{watch}");
    let timeline = std::fs::read_to_string(dir.path().join("timeline.html")).unwrap();
    assert!(timeline.contains("<html"), "the timeline is a page");
    assert!(dir.path().join("history.jsonl").is_file());
}

#[test]
fn stale_follower_reads_are_judged_not_linearizable() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !checker_built() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, report, stderr) = campaign(
        dir.path(),
        "partition-minority,pause,kill",
        "3",
        &["--break-stale-reads"],
    );
    print_figures(&report);
    let pretty = serde_json::to_string_pretty(&report["checker"]).unwrap();
    assert_eq!(report["linearizability"], "invalid", "{pretty}\n{stderr}");
    assert!(!ok, "an invalid history must exit non-zero");
    assert_eq!(report["verdict"], "FAIL");
    assert!(stderr.contains("judged the history invalid"), "{stderr}");
    let ops = report["checker"]["operations"].as_array().unwrap();
    assert!(!ops.is_empty(), "the verdict names operations: {pretty}");
    for op in ops {
        assert!(
            op["key"].as_str().unwrap().starts_with("chaos-reg-"),
            "{op}"
        );
        assert!(
            ["read", "write", "cas"].contains(&op["f"].as_str().unwrap()),
            "{op}"
        );
    }
}

#[test]
fn campaign_options_are_checked_before_anything_starts() {
    let refused = |args: &[&str], field: &str| {
        let out = Command::new(BIN).arg("chaos").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(field), "{args:?}: {stderr}");
    };
    refused(
        &[
            "--history",
            "/nonexistent-x",
            "--faults",
            "partition-leader",
        ],
        "--faults",
    );
    refused(&["--break-stale-reads"], "--history");
    refused(&["--clients", "3"], "--clients is for a campaign");
    refused(
        &["--history", "/nonexistent-x", "--faults", "teleport"],
        "teleport",
    );
}
