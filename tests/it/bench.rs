//! `kvctl bench` against a real cluster: the JSON report has the documented shape and a
//! healthy cluster produces no errors.

use std::process::Command;

use crate::common::TestCluster;
use serde_json::Value;

#[test]
fn bench_reports_json_without_errors() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[0, 1, 2]);
    let output = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .arg("--seeds")
        .arg(cluster.urls().join(","))
        .args(["--json", "bench", "--requests", "200", "--clients", "4"])
        .args(["--read-ratio", "0.5", "--keys", "50"])
        .output()
        .expect("run kvctl bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kvctl bench failed: {stderr}");
    assert!(stderr.is_empty(), "no progress line with --json: {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(report["requests"], 200, "{report}");
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(report["errorsTotal"], 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["clients"], 4);
    assert!(report["throughputPerSecond"].as_f64().unwrap() > 0.0);
    let puts = report["puts"]["count"].as_u64().unwrap();
    let reads = report["reads"]["count"].as_u64().unwrap();
    assert_eq!(puts + reads, 200, "{report}");
    assert!(
        puts > 0 && reads > 0,
        "both kinds at read ratio 0.5: {report}"
    );
    for section in [&report, &report["puts"], &report["reads"]] {
        let latency = &section["latencyMs"];
        for name in ["mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(latency[name].as_f64().is_some(), "{name} in {latency}");
        }
        assert!(latency["p50"].as_f64() <= latency["max"].as_f64());
    }
}

#[test]
fn bench_rejects_bad_options_with_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--seeds", "http://127.0.0.1:1", "bench", "--clients", "0"])
        .output()
        .expect("run kvctl bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--clients"), "{stderr}");
}
