//! `weir bench log` as a user runs it: the built binary, its JSON output and
//! its answers to bad flags.

use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run the weir binary")
}

/// The value of `"key": <value>` in a flat JSON object, as text.
fn field<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let start = object.find(&pattern)? + pattern.len();
    let rest = &object[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn number(object: &str, key: &str) -> f64 {
    let text = field(object, key).unwrap_or_else(|| panic!("no {key:?} in {object}"));
    text.parse()
        .unwrap_or_else(|_| panic!("{key:?} is {text:?}, not a number, in {object}"))
}

#[test]
fn bench_log_prints_one_json_object_per_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir(&[
        "bench",
        "log",
        "--dir",
        dir.path().to_str().unwrap(),
        "--total-mb",
        "2",
        "--repeat",
        "1",
        "--record-sizes",
        "100",
        "--batch-bytes",
        "4096",
        "--output",
        "json",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}\nstdout: {stdout}");

    // A JSON array of flat objects (values are numbers or booleans, so no
    // braces or brackets hide inside strings).
    let body = stdout.trim();
    assert!(
        body.starts_with('[') && body.ends_with(']'),
        "not an array: {body}"
    );
    let objects: Vec<&str> = body[1..body.len() - 1]
        .split('}')
        .map(|s| s.trim().trim_start_matches(',').trim())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(objects.len(), 1, "one configuration: {body}");
    let object = objects[0];
    assert!(object.starts_with('{'), "{object}");
    assert_eq!(
        object.matches('{').count(),
        1,
        "flat object expected: {object}"
    );

    assert_eq!(number(object, "record_size_bytes"), 100.0);
    let batch = number(object, "batch_size_bytes");
    assert!(batch > 100.0 && batch <= 4096.0, "batch of {batch} bytes");
    assert!(number(object, "records_per_batch") >= 1.0);
    assert_eq!(number(object, "runs"), 1.0);
    let written = number(object, "written_bytes");
    assert!(
        written > 1.9 * 1024.0 * 1024.0 && written <= 2.0 * 1024.0 * 1024.0,
        "{written}"
    );
    for key in [
        "log_append_mib_per_s",
        "raw_write_mib_per_s",
        "append_ratio",
        "records_per_s",
        "log_read_mib_per_s",
        "raw_read_mib_per_s",
        "read_ratio",
    ] {
        let v = number(object, key);
        assert!(v > 0.0 && v.is_finite(), "{key} = {v} in {object}");
    }
    let dropped = field(object, "page_cache_dropped").unwrap();
    assert!(dropped == "true" || dropped == "false", "{dropped}");

    // Everything it wrote is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Bad input exits with code 2 and one line on stderr naming the flag.
fn assert_rejected(args: &[&str], flag: &str) {
    let out = weir(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed results");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} should name {flag}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_flags_are_rejected_with_one_clear_line() {
    assert_rejected(&["bench", "log", "--record-sizes", "0"], "--record-sizes");
    assert_rejected(&["bench", "log", "--batch-bytes", "abc"], "--batch-bytes");
    assert_rejected(
        &["bench", "log", "--batch-bytes", "4096,2000000"],
        "--batch-bytes",
    );
    assert_rejected(&["bench", "log", "--total-mb", "0"], "--total-mb");
    assert_rejected(&["bench", "log", "--repeat", "0"], "--repeat");
    assert_rejected(&["bench", "log", "--output", "xml"], "--output");
    // Each flag is fine alone; together a batch cannot hold one record.
    assert_rejected(
        &[
            "bench",
            "log",
            "--record-sizes",
            "100,5000",
            "--batch-bytes",
            "4096",
        ],
        "--record-sizes 5000",
    );
}
