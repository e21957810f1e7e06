//! `weir bench produce | consume | e2e` as a user runs them: the built
//! binary against a spawned `weir broker`, small runs, their JSON keys and
//! their answers to bad flags.

mod common;

use common::{spawn_broker_process, BrokerProcess};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn weir(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(WEIR)
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap)
        .stdin(Stdio::null())
        .output()
        .expect("weir runs")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn start_broker() -> BrokerProcess {
    let b = spawn_broker_process();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = weir(&b.bootstrap, &["cluster", "describe", "--output", "json"]);
        if out.status.success() {
            let v = json(&String::from_utf8_lossy(&out.stdout));
            if v["controller_id"].as_u64().unwrap_or(0) != 0 {
                return b;
            }
        }
        assert!(Instant::now() < deadline, "broker not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a benchmark that must succeed; returns its JSON.
fn bench(bootstrap: &str, args: &[&str]) -> (serde_json::Value, String) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = weir(bootstrap, &all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "weir {all:?} failed: {stderr}");
    (json(&String::from_utf8_lossy(&out.stdout)), stderr)
}

fn positive(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"));
    assert!(x > 0.0, "{key} is {x} in {v}");
    x
}

#[test]
fn produce_then_consume_then_e2e() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();

    let (p, _) = bench(
        bs,
        &[
            "produce",
            "--topic",
            "bench",
            "--partitions",
            "2",
            "--records",
            "3000",
            "--record-size",
            "50",
            "--producers",
            "2",
            "--batch-records",
            "100",
        ],
    );
    assert_eq!(p["records"].as_u64(), Some(3000), "{p}");
    positive(&p, "records_per_sec");
    positive(&p, "mb_per_sec");
    let lat = &p["latency_ms"];
    for k in ["p50", "p99", "p999", "max"] {
        positive(lat, k);
    }
    assert!(lat["p50"].as_f64() <= lat["max"].as_f64(), "{p}");
    if std::fs::read_to_string("/proc/self/io").is_ok() {
        // The brokers can count their storage writes here: the run reports
        // disk bytes per byte of partition log.
        positive(&p, "write_amplification");
    }

    // Everything written, from the beginning (stops at the end offsets).
    let (c, _) = bench(bs, &["consume", "--topic", "bench"]);
    assert_eq!(c["records"].as_u64(), Some(3000), "{c}");
    positive(&c, "records_per_sec");
    positive(&c, "mb_per_sec");
    let (c, _) = bench(bs, &["consume", "--topic", "bench", "--records", "1000"]);
    assert!(c["records"].as_u64().unwrap_or(0) >= 1000, "{c}");

    let (e, _) = bench(
        bs,
        &[
            "e2e",
            "--topic",
            "bench",
            "--rate",
            "2000",
            "--records",
            "400",
        ],
    );
    assert_eq!(e["records"].as_u64(), Some(400), "{e}");
    for k in ["p50", "p99", "p999", "max"] {
        positive(&e["latency_ms"], k);
        positive(&e["latency_from_send_ms"], k);
        // Measured from the schedule, a record's latency includes any wait
        // to be sent, so it is never the shorter of the two.
        let (sched, sent) = (
            e["latency_ms"][k].as_f64().unwrap_or(0.0),
            e["latency_from_send_ms"][k].as_f64().unwrap_or(f64::MAX),
        );
        assert!(sched >= sent, "{k}: {sched} < {sent}: {e}");
    }
}

#[test]
fn partitions_reports_cpu_and_memory_then_deletes_its_topic() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();
    let (r, _) = bench(
        bs,
        &[
            "partitions",
            "--count",
            "3",
            "--replication-factor",
            "1",
            "--settle-secs",
            "1",
            "--measure-secs",
            "1",
            "--load-rate",
            "50",
        ],
    );
    assert_eq!(r["partitions"].as_u64(), Some(3), "{r}");
    let brokers = r["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1, "{r}");
    // The topic's three groups and the controller's.
    assert_eq!(brokers[0]["groups"].as_u64(), Some(4), "{r}");
    assert!(
        r["idle_cpu_percent"].as_f64().is_some_and(|x| x >= 0.0),
        "{r}"
    );
    positive(&r, "load_cpu_percent");
    positive(&r, "load_records_per_sec");
    assert!(r["resident_bytes_per_replica"].is_number(), "{r}");
    let out = weir(bs, &["topic", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(!listed.contains("weir-bench-partitions"), "{listed}");
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    // Checked before any connection: no broker needed.
    let nowhere = "127.0.0.1:1";
    for args in [
        &["bench", "produce", "--topic", "t", "--records", "0"][..],
        &["bench", "produce", "--topic", "t", "--acks", "2"],
        &["bench", "produce", "--topic", "t", "--record-size", "0"],
        &["bench", "produce", "--topic", "t", "--producers", "0"],
        &["bench", "produce", "--topic", "t", "--rate", "0"],
        &["bench", "produce", "--topic", "t", "--partitions", "0"],
        &["bench", "produce", "--records", "10"],
        &["bench", "consume", "--topic", "t", "--records", "x"],
        &["bench", "e2e", "--topic", "t", "--record-size", "4"],
        &["bench", "e2e", "--topic", "t", "--rate", "0"],
        &["bench", "partitions", "--count", "0"],
        &[
            "bench",
            "partitions",
            "--count",
            "10",
            "--measure-secs",
            "0",
        ],
    ] {
        let out = weir(nowhere, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("error"), "{args:?}: {err:?}");
    }
    // An unreachable cluster is a run failure: exit 1, one line.
    let out = weir(
        nowhere,
        &["bench", "produce", "--topic", "t", "--records", "10"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err:?}");
}

#[test]
fn unknown_topic_is_one_line() {
    let b = start_broker();
    let out = weir(
        &b.bootstrap,
        &["bench", "consume", "--topic", "missing", "--records", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err:?}");
}
