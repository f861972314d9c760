//! `podmesh bench proxy` end to end at a tiny scale: the lab comes up, every configuration produces numbers, and
//! every podmesh response is a 200. Timings are not checked (CI machines are noisy; `bench/RESULTS.md` is where
//! numbers live).
//!
//! Needs root, like `netns.rs` (the benchmark builds its own private namespace tree, so nothing on the host
//! changes); without root the test says so and passes without running. nginx and HAProxy are optional: without
//! them their pairs are skipped, and the report must say what to install.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn installed(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(tool).is_file())
}

#[test]
fn bench_proxy_runs_end_to_end() {
    if !is_root() {
        eprintln!("SKIPPED bench_proxy_runs_end_to_end: needs root for network namespaces and iptables");
        return;
    }
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_podmesh"))
        .args(["bench", "proxy", "--rates", "200", "--duration", "0.5", "--sat-duration", "0.5"])
        .args(["--warmup", "0.2", "--rounds", "1", "--conns", "4", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podmesh bench proxy failed:\n{stderr}");
    eprintln!("{stderr}\n(took {:.1} s)", started.elapsed().as_secs_f64());
    assert!(started.elapsed() < Duration::from_secs(60), "the tiny benchmark took {:?}", started.elapsed());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}):\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    });

    let mut expected = vec!["direct", "podmesh"];
    let notes = report["notes"].to_string();
    for (config, tool) in [("nginx", "nginx"), ("haproxy", "haproxy")] {
        if installed(tool) {
            expected.push(config);
        } else {
            assert!(notes.contains("apt-get install -y nginx-light haproxy"), "no install hint for {tool}: {notes}");
            eprintln!("note: {tool} is not installed, so the {config} pair was not measured");
        }
    }
    let configs: Vec<&str> =
        report["settings"]["configs"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(configs, expected, "notes: {notes}");

    // Every configuration produced numbers for every test.
    let summary = report["summary"].as_array().unwrap();
    for config in &expected {
        for test in [serde_json::json!({ "rate": 200 }), Value::from("saturation")] {
            let row = summary
                .iter()
                .find(|r| r["config"] == *config && r["test"] == test)
                .unwrap_or_else(|| panic!("no {config} {test} in the summary: {summary:?}"));
            assert!(row["responses"].as_u64().unwrap() > 0, "{row}");
            for metric in ["rps", "p50_ms", "p99_ms", "max_ms"] {
                assert!(row[metric].as_f64().unwrap() > 0.0, "{config} {test} {metric}: {row}");
            }
            if *config != "direct" {
                assert!(row["added_p50_ms"].is_number(), "{row}");
                assert!(row["cpu_client_pct_per_1k"].is_number() && row["hwm_server_mib"].is_number(), "{row}");
            }
        }
    }

    // podmesh's responses were all 200, with no failed or unsent requests.
    assert_eq!(report["podmesh_all_200"], true);
    let records = report["records"].as_array().unwrap();
    let podmesh: Vec<&Value> = records.iter().filter(|r| r["config"] == "podmesh").collect();
    assert_eq!(podmesh.len(), 2, "one rate and saturation");
    for r in podmesh {
        let load = &r["load"];
        assert!(load["ok"].as_u64().unwrap() > 0, "{load}");
        assert_eq!(load["ok"], load["responses"], "{load}");
        for zero in ["non_200", "errors", "unsent"] {
            assert_eq!(load[zero], 0, "{zero}: {load}");
        }
    }
    // A verdict per target, whatever it is.
    assert_eq!(report["targets"].as_array().unwrap().len(), 6);
}
