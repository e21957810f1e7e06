//! The client commands as a user runs them: the real `weir` binary against
//! real `weir broker` processes. Covers the README's quickstart and
//! three-broker walkthrough command by command, Kafka-compatible key
//! partitioning, `--output json`, and every error path's message and exit
//! code.

mod common;

use common::{free_ports, spawn_broker_process, BrokerProcess};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn start_broker() -> BrokerProcess {
    let b = spawn_broker_process();
    wait_ready(&b.bootstrap, 1);
    b
}

/// Runs `weir ARGS` with WEIR_BOOTSTRAP set and `stdin` piped in.
fn weir(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(WEIR)
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let out = weir(bootstrap, args, stdin);
    assert!(
        out.status.success(),
        "weir {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its one line of stderr.
fn fails(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let out = weir(bootstrap, args, stdin);
    assert!(!out.status.success(), "weir {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    err
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Waits until `live` brokers are live and a controller is elected.
fn wait_ready(bootstrap: &str, live: usize) {
    assert!(ready(bootstrap, live), "cluster at {bootstrap} not ready");
}

fn ready(bootstrap: &str, live: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = weir(bootstrap, &["cluster", "describe", "--output", "json"], "");
        if out.status.success() {
            let v = json(&String::from_utf8_lossy(&out.stdout));
            let n = v["brokers"]
                .as_array()
                .map(|b| b.iter().filter(|b| b["live"] == true).count())
                .unwrap_or(0);
            if n >= live && v["controller_id"].as_u64().unwrap_or(0) != 0 {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The README's quickstart, command by command.
#[test]
fn quickstart_round_trip() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();
    let out = ok(
        bs,
        &["topic", "create", "quickstart-events", "--partitions", "3"],
        "",
    );
    assert!(out.contains("Created topic quickstart-events"), "{out}");
    ok(
        bs,
        &["produce", "quickstart-events"],
        "first event\nsecond event\n",
    );
    ok(
        bs,
        &["produce", "quickstart-events", "--key-separator", ":"],
        "user-1:signed up\nuser-2:signed up\nuser-1:logged in\n",
    );
    let out = ok(
        bs,
        &[
            "consume",
            "quickstart-events",
            "--from-beginning",
            "--max-messages",
            "5",
        ],
        "",
    );
    let mut values: Vec<&str> = out.lines().collect();
    values.sort();
    assert_eq!(
        values,
        [
            "first event",
            "logged in",
            "second event",
            "signed up",
            "signed up"
        ]
    );
    let out = ok(
        bs,
        &[
            "consume",
            "quickstart-events",
            "--from-beginning",
            "--max-messages",
            "5",
            "--format",
            "%p/%o %k=%v",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 5, "{out}");
    // Same key, same partition, in order.
    let user1: Vec<&str> = out.lines().filter(|l| l.contains(" user-1=")).collect();
    assert_eq!(user1.len(), 2, "{out}");
    assert_eq!(user1[0].split('/').next(), user1[1].split('/').next());
    assert!(user1[0].ends_with("signed up") && user1[1].ends_with("logged in"));
    // Offset 0 holds the leader's control batch: records start at 1.
    assert!(!out.contains("/0 "), "control batch leaked: {out}");
    let out = ok(bs, &["topic", "describe", "quickstart-events"], "");
    assert!(
        out.contains("Topic: quickstart-events  Partitions: 3"),
        "{out}"
    );
    assert!(out.contains("retention.ms="), "{out}");
    let v = json(&ok(
        bs,
        &["topic", "describe", "quickstart-events", "--output", "json"],
        "",
    ));
    let total: i64 = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_i64().unwrap())
        .sum();
    // 5 records and one control batch per partition.
    assert_eq!(total, 5 + 3);
    // --timeout-ms ends a consumer that would otherwise follow.
    let out = ok(
        bs,
        &[
            "consume",
            "quickstart-events",
            "--from-beginning",
            "--timeout-ms",
            "1000",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 5);
    let out = ok(bs, &["topic", "list"], "");
    assert_eq!(out, "quickstart-events\n");
    ok(
        bs,
        &[
            "topic",
            "alter-config",
            "quickstart-events",
            "--set",
            "retention.ms=60000",
        ],
        "",
    );
    let v = json(&ok(
        bs,
        &["topic", "describe", "quickstart-events", "--output", "json"],
        "",
    ));
    assert_eq!(v["config"]["retention.ms"], "60000");
    ok(
        bs,
        &[
            "topic",
            "alter-config",
            "quickstart-events",
            "--delete",
            "retention.ms",
        ],
        "",
    );
    ok(bs, &["topic", "delete", "quickstart-events"], "");
    assert_eq!(ok(bs, &["topic", "list"], ""), "");
}

/// Kafka's murmur2 of each key (Kafka's own Utils test vectors).
const KAFKA_MURMUR2: &[(&str, i32)] = &[
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    (
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
        -58897971,
    ),
    ("abc", 479470107),
];

#[test]
fn keys_land_on_the_partition_kafka_gives() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();
    const PARTITIONS: u32 = 7;
    ok(bs, &["topic", "create", "keyed", "--partitions", "7"], "");
    let lines: String = KAFKA_MURMUR2
        .iter()
        .map(|(k, _)| format!("{k}|value of {k}\n"))
        .collect();
    ok(bs, &["produce", "keyed", "--key-separator", "|"], &lines);
    let out = ok(
        bs,
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "--max-messages",
            "6",
            "--format",
            "%k %p %v",
        ],
        "",
    );
    for (key, hash) in KAFKA_MURMUR2 {
        let expected = ((*hash & 0x7fff_ffff) as u32) % PARTITIONS;
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} not consumed: {out}"));
        assert_eq!(
            line,
            format!("{key} {expected} value of {key}"),
            "partition of {key}"
        );
    }
    // An explicit partition overrides the key; headers and JSON records.
    ok(
        bs,
        &[
            "produce",
            "keyed",
            "--partition",
            "5",
            "--key-separator",
            ":",
            "--header",
            "source=test",
            "--acks",
            "1",
        ],
        "abc:\"quoted\"\n",
    );
    let out = ok(
        bs,
        &[
            "consume",
            "keyed",
            "--partition",
            "5",
            "--offset",
            "0",
            "--max-messages",
            "100",
            "--timeout-ms",
            "1000",
            "--output",
            "json",
        ],
        "",
    );
    let last = json(out.lines().last().unwrap());
    for k in [
        "topic",
        "partition",
        "offset",
        "key",
        "value",
        "timestamp",
        "headers",
    ] {
        assert!(last.get(k).is_some(), "record JSON lacks {k}: {last}");
    }
    assert_eq!(last["key"], "abc");
    assert_eq!(last["value"], "\"quoted\"");
    assert_eq!(last["partition"], 5);
    assert_eq!(last["headers"]["source"], "test");
    let out = ok(
        bs,
        &[
            "consume",
            "keyed",
            "--partition",
            "5",
            "--offset",
            "0",
            "--max-messages",
            "100",
            "--timeout-ms",
            "1000",
            "--format",
            "%h %k",
        ],
        "",
    );
    assert!(out.lines().any(|l| l == "source=test abc"), "{out}");
    // acks=0 writes too (no offsets come back).
    ok(
        bs,
        &["produce", "keyed", "--acks", "0", "--partition", "6"],
        "fire\n",
    );
}

#[test]
fn json_output_carries_the_documented_keys() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();
    ok(
        bs,
        &[
            "topic",
            "create",
            "docs",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    ok(bs, &["produce", "docs"], "one\ntwo\n");
    let v = json(&ok(
        bs,
        &["topic", "describe", "docs", "--output", "json"],
        "",
    ));
    assert_eq!(v["name"], "docs");
    assert_eq!(v["config"]["retention.ms"], "3600000");
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for p in parts {
        for k in [
            "partition",
            "leader",
            "replicas",
            "in_sync",
            "log_start_offset",
            "high_watermark",
            "size_bytes",
        ] {
            assert!(p.get(k).is_some(), "partition JSON lacks {k}: {p}");
        }
        assert_eq!(p["replicas"], serde_json::json!([1]));
    }
    let sizes: u64 = parts
        .iter()
        .map(|p| p["size_bytes"].as_u64().unwrap())
        .sum();
    assert!(sizes > 0);
    let v = json(&ok(bs, &["topic", "list", "--output", "json"], ""));
    assert_eq!(v, serde_json::json!(["docs"]));
    let v = json(&ok(bs, &["cluster", "describe", "--output", "json"], ""));
    assert_eq!(v["controller_id"], 1);
    assert_eq!(v["brokers"][0]["client_addr"], bs);
    let v = json(&ok(
        bs,
        &[
            "log-dirs", "describe", "--topic", "docs", "--output", "json",
        ],
        "",
    ));
    let dir = &v[0];
    assert_eq!(dir["broker_id"], 1);
    assert_eq!(dir["partitions"].as_array().unwrap().len(), 2);
    assert!(dir["partitions"][0]["size_bytes"].as_u64().unwrap() > 0);
    let out = ok(bs, &["log-dirs", "describe"], "");
    assert!(out.starts_with("BROKER"), "{out}");
}

#[test]
fn errors_say_what_went_wrong_and_exit_non_zero() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();
    let e = fails(bs, &["produce", "missing"], "x\n");
    assert!(
        e.contains("topic 'missing' does not exist") && e.contains("weir topic create missing"),
        "{e}"
    );
    let e = fails(bs, &["consume", "missing", "--max-messages", "1"], "");
    assert!(e.contains("'missing'"), "{e}");
    let e = fails(bs, &["topic", "describe", "missing"], "");
    assert!(e.contains("'missing'"), "{e}");
    let e = fails(bs, &["topic", "delete", "missing"], "");
    assert!(e.contains("'missing'"), "{e}");
    let e = fails(
        bs,
        &[
            "topic",
            "transfer-leader",
            "--topic",
            "missing",
            "--partition",
            "0",
            "--to",
            "1",
        ],
        "",
    );
    assert!(e.contains("'missing'"), "{e}");
    let e = fails(
        bs,
        &["topic", "create", "t", "--replication-factor", "3"],
        "",
    );
    assert!(
        e.contains("replication factor 3 exceeds the 1 live broker")
            && e.contains("--replication-factor 1"),
        "{e}"
    );
    let e = fails(
        bs,
        &["topic", "create", "t", "--config", "retention.ms"],
        "",
    );
    assert!(e.contains("key=value"), "{e}");
    ok(bs, &["topic", "create", "t"], "");
    let e = fails(bs, &["topic", "create", "t"], "");
    assert!(e.contains("already exists"), "{e}");
    let e = fails(bs, &["produce", "t", "--partition", "4"], "x\n");
    assert!(e.contains("partition 4 does not exist"), "{e}");
    let e = fails(
        bs,
        &["produce", "t", "--key-separator", ":"],
        "no separator\n",
    );
    assert!(e.contains("no key separator"), "{e}");
    let e = fails(bs, &["topic", "alter-config", "t"], "");
    assert!(e.contains("--set"), "{e}");
    let e = fails(
        bs,
        &["consume", "t", "--partition", "9", "--max-messages", "1"],
        "",
    );
    assert!(e.contains("partition 9 does not exist"), "{e}");
    let e = fails(bs, &["produce", "t", "--acks", "2"], "");
    assert!(e.contains("--acks"), "{e}");
    let e = fails("not-an-address", &["topic", "list"], "");
    assert!(e.contains("host:port"), "{e}");
    // Nobody listens: a clear message within a few seconds.
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let started = Instant::now();
    let e = fails(&dead, &["topic", "list"], "");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.contains("cannot reach any broker") && e.contains("--bootstrap"),
        "{e}"
    );
    // An address nobody answers from (no route, or packets dropped): still
    // a message within a few seconds, not a hang.
    let started = Instant::now();
    let e = fails("10.255.255.1:7400", &["topic", "list"], "");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(e.contains("10.255.255.1:7400"), "{e}");
    // The flag and its alias win over the environment.
    let out = ok(&dead, &["topic", "list", "--bootstrap", bs], "");
    assert_eq!(out, "t\n");
    let out = ok(&dead, &["topic", "list", "--bootstrap-server", bs], "");
    assert_eq!(out, "t\n");
}

fn pid_of(dir: &Path, n: u32) -> String {
    std::fs::read_to_string(dir.join(format!("broker-{n}.pid")))
        .unwrap()
        .trim()
        .to_string()
}

/// The README's three-broker walkthrough: scripts/three-brokers.sh, a topic
/// of replication factor 3, one broker stopped, reads and writes go on.
#[test]
fn three_broker_cluster_survives_a_stopped_broker() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("weir-cluster");
    // A base port with 3 free blocks of two is unlikely to clash; retry a
    // few bases if the script's brokers cannot bind.
    // Below the ephemeral range (32768+) that other tests' free ports use.
    let base = 10000 + (std::process::id() % 1000) * 20;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/three-brokers.sh");
    let started = Command::new("sh")
        .arg(script)
        .env("WEIR", WEIR)
        .env("WEIR_CLUSTER_DIR", &cluster_dir)
        .env("WEIR_BASE_PORT", base.to_string())
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let stdout = String::from_utf8(started.stdout).unwrap();
    let bs = format!(
        "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
        base + 10,
        base + 20
    );
    assert!(
        stdout.contains(&format!("export WEIR_BOOTSTRAP={bs}")),
        "{stdout}"
    );
    struct Stop(std::path::PathBuf, &'static str);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("sh")
                .arg(self.1)
                .arg("stop")
                .env("WEIR_CLUSTER_DIR", &self.0)
                .status();
        }
    }
    let _stop = Stop(cluster_dir.clone(), script);
    if !ready(&bs, 3) {
        let logs: String = (1..=3)
            .map(|n| {
                let log = std::fs::read_to_string(cluster_dir.join(format!("broker-{n}.log")));
                format!("broker {n}: {}\n", log.unwrap_or_default())
            })
            .collect();
        panic!("three brokers at {bs} not ready; logs:\n{logs}");
    }
    let out = ok(&bs, &["cluster", "describe"], "");
    assert_eq!(
        out.lines().filter(|l| l.contains(" yes")).count(),
        3,
        "{out}"
    );
    ok(
        &bs,
        &[
            "topic",
            "create",
            "replicated-events",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        "",
    );
    ok(&bs, &["produce", "replicated-events"], "one\ntwo\nthree\n");
    let out = ok(
        &bs,
        &[
            "topic",
            "transfer-leader",
            "--topic",
            "replicated-events",
            "--partition",
            "0",
            "--to",
            "3",
        ],
        "",
    );
    assert!(
        out.contains("Broker 3 now leads partition 0 of topic replicated-events"),
        "{out}"
    );
    let e = fails(
        &bs,
        &[
            "topic",
            "transfer-leader",
            "--topic",
            "replicated-events",
            "--partition",
            "0",
            "--to",
            "9",
        ],
        "",
    );
    assert!(e.contains("broker 9 holds no replica"), "{e}");
    // Stop broker 2.
    let killed = Command::new("kill")
        .arg(pid_of(&cluster_dir, 2))
        .status()
        .unwrap();
    assert!(killed.success());
    // Writes and reads go on; leaders move to the two live brokers.
    ok(&bs, &["produce", "replicated-events"], "four\n");
    let out = ok(
        &bs,
        &[
            "consume",
            "replicated-events",
            "--from-beginning",
            "--max-messages",
            "4",
        ],
        "",
    );
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(got, ["four", "one", "three", "two"]);
    let out = ok(&bs, &["topic", "describe", "replicated-events"], "");
    assert!(out.contains("Partitions: 3"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = json(&ok(
            &bs,
            &["topic", "describe", "replicated-events", "--output", "json"],
            "",
        ));
        let leaders: Vec<u64> = v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["leader"].as_u64().unwrap_or(0))
            .collect();
        if leaders.iter().all(|l| *l == 1 || *l == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders stayed on broker 2: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The controller notices broker 2 is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ok(&bs, &["cluster", "describe"], "");
        if out
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains(" no"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "broker 2 still live: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Splits a shell command line into words (single and double quotes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Every `weir` command in the README is one these tests run (`weir
/// broker` and `weir bench` are run by their own tests, see below).
#[test]
fn every_readme_command_is_tested() {
    let readme = include_str!("../README.md");
    let source: String = include_str!("cli_client.rs")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        // rustfmt's trailing commas
        .replace(",]", "]");
    let mut in_code = false;
    let mut checked = 0;
    let mut continued = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            continued.push_str(head);
            continued.push(' ');
            continue;
        }
        let full = std::mem::take(&mut continued) + line;
        let Some(at) = full
            .find("weir ")
            .filter(|at| *at == 0 || full[..*at].trim_end().ends_with('|'))
        else {
            continue;
        };
        let words = shell_words(&full[at..]);
        // `weir broker` is run by tests/cli_broker.rs and the three-broker
        // script; `weir bench ...` by tests/cli_bench.rs and
        // tests/cli_bench_client.rs, with small sizes instead of the
        // README's measurement-sized ones.
        if matches!(words.get(1).map(String::as_str), Some("broker" | "bench")) {
            continue;
        }
        let needle: String = format!(
            "[{}]",
            words[1..]
                .iter()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
        assert!(
            source.contains(&needle),
            "README command `{full}` is not run by tests/cli_client.rs ({needle})"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} README commands found");
}

/// Without --max-messages a consumer follows new records until Ctrl-C.
#[test]
fn consume_follows_until_interrupted() {
    let b = start_broker();
    let bs = b.bootstrap.as_str();
    ok(bs, &["topic", "create", "live"], "");
    let child = Command::new(WEIR)
        .args(["consume", "live", "--format", "%o %v"])
        .env("WEIR_BOOTSTRAP", bs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It starts at the end: written after it started, then seen.
    std::thread::sleep(Duration::from_millis(1000));
    ok(bs, &["produce", "live"], "new 1\nnew 2\n");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 new 1\n2 new 2\n");
}
