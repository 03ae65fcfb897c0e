//! Resident memory of the `verge` daemon running the quickstart deployment (goal ≤ 20 MB).
//!
//! Builds the release `verge` and the sample components, runs `verge run --deployment
//! samples/quickstart/deployment.json` in a fresh data directory, waits until both modules run,
//! and samples `VmRSS` from `/proc/<pid>/status` every 100 ms for `VERGE_BENCH_RSS_SECS` seconds
//! (default 20) while the sensor sends one reading a second and the filter forwards alerts.
//! It does this twice: first with an empty compile cache (the components are compiled with
//! Cranelift at deploy, which shows in the peak), then again on the same data directory (the
//! components load from the cache, as on every start after the first). Reports steady (median)
//! and peak RSS, and writes `target/bench/rss.json`.

// Bench code: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use verge_bench::report::write_json;

const GOAL_MB: f64 = 20.0;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build() -> PathBuf {
    let root = verge_tests::workspace();
    let status = cargo()
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "verge",
            "--bin",
            "verge",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "building verge failed");
    verge_tests::guest("temp-sensor");
    verge_tests::target_dir().join("release").join("verge")
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

fn running(verge: &Path, data: &Path) -> bool {
    let out = Command::new(verge)
        .arg("-d")
        .arg(data)
        .args(["list", "--json"])
        .output();
    let Ok(out) = out else { return false };
    let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    let modules = list["modules"].as_array().cloned().unwrap_or_default();
    let running = |name: &str| {
        modules
            .iter()
            .any(|m| m["name"] == name && m["status"] == "running")
    };
    running("SimulatedTemperatureSensor") && running("filtermodule")
}

struct Run {
    steady_mb: f64,
    anon_mb: f64,
    file_mb: f64,
    peak_mb: f64,
    start_s: f64,
}

fn run(verge: &Path, data: &Path, secs: u64) -> Run {
    let manifest = verge_tests::workspace().join("samples/quickstart/deployment.json");
    let started = Instant::now();
    let mut child: Child = Command::new(verge)
        .arg("run")
        .arg("-d")
        .arg(data)
        .arg("--deployment")
        .arg(&manifest)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !running(verge, data) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the quickstart did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let start_s = started.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Some(kb) = status_kb(child.id(), "VmRSS:") {
            samples.push(kb);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let peak = status_kb(child.id(), "VmHWM:").unwrap_or(0);
    let anon = status_kb(child.id(), "RssAnon:").unwrap_or(0);
    let file = status_kb(child.id(), "RssFile:").unwrap_or(0);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let mb = |kb: u64| kb as f64 / 1024.0;
    Run {
        steady_mb: mb(median),
        anon_mb: mb(anon),
        file_mb: mb(file),
        peak_mb: mb(peak),
        start_s,
    }
}

fn main() {
    let secs = std::env::var("VERGE_BENCH_RSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let verge = build();
    let data = std::env::temp_dir().join(format!("verge-bench-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let cold = run(&verge, &data, secs);
    let warm = run(&verge, &data, secs);
    let _ = std::fs::remove_dir_all(&data);
    println!("resident memory of `verge run` with the quickstart deployment ({secs} s samples)");
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>8} {:>8}  goal",
        "run", "steady MB", "anon MB", "file MB", "peak MB", "start s"
    );
    for (name, r) in [
        ("first start (compiles)", &cold),
        ("next starts (cache)", &warm),
    ] {
        let pass = if r.steady_mb <= GOAL_MB {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "{name:<28} {:>10.1} {:>9.1} {:>9.1} {:>8.1} {:>8.2}  steady <= {GOAL_MB} MB {pass}",
            r.steady_mb, r.anon_mb, r.file_mb, r.peak_mb, r.start_s
        );
    }
    let json = serde_json::json!({
        "scenario": "daemon-rss-quickstart",
        "seconds_sampled": secs,
        "goal_mb": GOAL_MB,
        "first_start": {"steady_mb": cold.steady_mb, "anon_mb": cold.anon_mb, "file_mb": cold.file_mb, "peak_mb": cold.peak_mb, "start_s": cold.start_s},
        "next_starts": {"steady_mb": warm.steady_mb, "anon_mb": warm.anon_mb, "file_mb": warm.file_mb, "peak_mb": warm.peak_mb, "start_s": warm.start_s},
    });
    write_json("rss", &json);
}
