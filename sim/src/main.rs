//! `weir-sim`: runs seeded cluster simulations and checks their histories.
//! See docs/simulation.md.

use clap::Parser;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use weir_sim::cluster::{self, Options, RunResult};
use weir_sim::nemesis::FaultKind;

#[derive(Parser, Debug)]
#[command(
    name = "weir-sim",
    about = "Deterministic simulation of a Weir cluster under faults"
)]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a range of seeds, A..B (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Print every run's full event trace.
    #[arg(long)]
    trace: bool,
    #[arg(long, default_value_t = 3)]
    brokers: u64,
    /// Simulated seconds of the safety phase (with faults).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Simulated seconds the quiet phase may last at most.
    #[arg(long, default_value_t = 60)]
    quiet: u64,
    /// Simulated seconds after the faults stop within which every partition
    /// must acknowledge a write (the `unavailable` check).
    #[arg(long, default_value_t = 20)]
    available_within: u64,
    /// Faults to draw from: isolate, split, bridge, crash, delay, power, disk,
    /// transfer, pause, lossy, forge, full, rot; or "none".
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "isolate,split,bridge,crash,delay,power,transfer,pause,lossy"
    )]
    faults: Vec<String>,
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    #[arg(long, default_value_t = 3)]
    producers: u32,
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    #[arg(long, default_value_t = 8)]
    keys: u32,
    /// Produces of batches only a broker may write (a Raft conf change in a
    /// control batch) sent during the safety phase; each must be refused.
    #[arg(long, default_value_t = 0)]
    hostile_writes: u32,
    /// Seeds run at once, each in its own worker process [default: the
    /// number of CPUs]. The output is the same for any value.
    #[arg(long)]
    jobs: Option<usize>,
    /// Internal: run only this seed and end with a summary line for the
    /// parent `weir-sim` (see `run_seed_in_worker`).
    #[arg(long, hide = true)]
    worker_seed: Option<u64>,
    /// Switch on a deliberate broker bug: ack-before-commit, fetch-beyond-hw,
    /// skip-fsync, follower-restamps, skip-seal-sync, trust-peers,
    /// skip-crc-check.
    #[arg(long, value_delimiter = ',')]
    inject_bug: Vec<String>,
}

/// The injectable bugs by name.
pub fn bug_bits(names: &[String]) -> Result<u32, String> {
    names.iter().try_fold(0, |bits, n| match n.as_str() {
        "ack-before-commit" => Ok(bits | weir::bugs::ACK_BEFORE_COMMIT),
        "fetch-beyond-hw" => Ok(bits | weir::bugs::FETCH_BEYOND_HW),
        "skip-fsync" => Ok(bits | weir::bugs::SKIP_FSYNC),
        "follower-restamps" => Ok(bits | weir::bugs::FOLLOWER_RESTAMPS),
        "skip-seal-sync" => Ok(bits | weir::bugs::SKIP_SEAL_SYNC),
        "trust-peers" => Ok(bits | weir::bugs::TRUST_PEERS),
        "skip-crc-check" => Ok(bits | weir::bugs::SKIP_CRC_CHECK),
        other => Err(format!(
            "unknown bug {other:?} (known: ack-before-commit, fetch-beyond-hw, skip-fsync, \
             follower-restamps, skip-seal-sync, trust-peers, skip-crc-check)"
        )),
    })
}

fn options(a: &Args) -> Result<Options, String> {
    let faults = a
        .faults
        .iter()
        .filter(|f| f.as_str() != "none")
        .map(|f| FaultKind::parse(f).ok_or(format!("unknown fault {f:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if a.brokers == 0 || a.partitions == 0 || a.keys == 0 {
        return Err("--brokers, --partitions and --keys must be at least 1".into());
    }
    if a.replication_factor as u64 > a.brokers || a.replication_factor == 0 {
        return Err(format!(
            "--replication-factor must be 1 to --brokers ({})",
            a.brokers
        ));
    }
    Ok(Options {
        seed: 0,
        brokers: a.brokers,
        duration_s: a.duration,
        quiet_s: a.quiet,
        available_within_s: a.available_within,
        faults,
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        producers: a.producers,
        consumers: a.consumers,
        keys: a.keys,
        hostile_writes: a.hostile_writes,
        bugs: bug_bits(&a.inject_bug)?,
    })
}

fn seeds(a: &Args) -> Result<std::ops::Range<u64>, String> {
    if let Some(s) = a.seed {
        return Ok(s..s + 1);
    }
    let Some(r) = &a.seeds else {
        return Ok(0..1);
    };
    let (lo, hi) = r
        .split_once("..")
        .ok_or(format!("--seeds wants A..B, got {r:?}"))?;
    let parse = |s: &str| s.parse::<u64>().map_err(|e| format!("--seeds {r:?}: {e}"));
    Ok(parse(lo)?..parse(hi)?)
}

/// One run's output, as `weir-sim` prints it; the trace line first so a
/// failure is easy to replay.
fn report(out: &mut String, r: &RunResult, seed: u64, print_trace: bool) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "seed={seed} trace={:016x}", r.trace.hash());
    if print_trace {
        for line in &r.trace.lines {
            let _ = writeln!(out, "  | {line}");
        }
    }
    let counts: Vec<String> = r
        .report
        .counts()
        .iter()
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    let _ = writeln!(
        out,
        "  {} writes ({} acked), {} records read, {:.0} simulated s; anomalies: {}",
        r.report.writes,
        r.report.acked,
        r.report.records_read,
        r.simulated.as_secs_f64(),
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(" ")
        }
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  seed={seed} ERROR: {e}");
    }
    for a in r.report.anomalies.iter().take(20) {
        let _ = writeln!(out, "  seed={seed} {a}");
    }
}

/// One finished seed: its whole output and what the totals need.
struct Done {
    seed: u64,
    output: String,
    passed: bool,
    simulated: f64,
    writes: usize,
    acked: usize,
    records: usize,
    anomalies: BTreeMap<String, usize>,
}

/// Starts the line a worker process ends its output with: the seed's
/// [`Done`] figures, for the parent's totals (never shown to the user).
const WORKER_SUMMARY: &str = "@weir-sim-worker-done";

impl Done {
    /// The figures as one line: passed, simulated seconds (Rust's
    /// shortest round-trip form, so the sum is the same as in-process),
    /// writes, acked, records, then `name=count` per anomaly.
    fn summary(&self) -> String {
        let mut line = format!(
            "{WORKER_SUMMARY} {} {} {} {} {}",
            self.passed, self.simulated, self.writes, self.acked, self.records
        );
        for (name, n) in &self.anomalies {
            let _ = write!(line, " {name}={n}");
        }
        line
    }

    /// Reads back a worker's output: everything before the summary line is
    /// the seed's output. `None` if the worker did not finish properly.
    fn from_worker(seed: u64, stdout: &str) -> Option<Done> {
        let (output, line) = stdout.rsplit_once(WORKER_SUMMARY)?;
        let mut f = line.split_whitespace();
        let mut d = Done {
            seed,
            output: output.to_string(),
            passed: f.next()?.parse().ok()?,
            simulated: f.next()?.parse().ok()?,
            writes: f.next()?.parse().ok()?,
            acked: f.next()?.parse().ok()?,
            records: f.next()?.parse().ok()?,
            anomalies: BTreeMap::new(),
        };
        for pair in f {
            let (name, n) = pair.split_once('=')?;
            d.anomalies.insert(name.to_string(), n.parse().ok()?);
        }
        Some(d)
    }
}

/// Runs one seed in this process and renders its output.
fn run_seed(base: &Options, seed: u64, print_trace: bool) -> Done {
    let o = Options {
        seed,
        ..base.clone()
    };
    let mut output = format!("seed={seed} plan: {}\n", cluster::plan(&o));
    let r = cluster::run(&o);
    report(&mut output, &r, seed, print_trace);
    Done {
        seed,
        output,
        passed: r.passed(),
        simulated: r.simulated.as_secs_f64(),
        writes: r.report.writes,
        acked: r.report.acked,
        records: r.report.records_read,
        anomalies: r
            .report
            .counts()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// Runs one seed in a worker process: this program again, with the same
/// arguments and `--worker-seed`. A process and not a thread because tokio
/// numbers tasks from one process-wide counter and a crashed host drops its
/// tasks in an order that depends on those numbers: two simulations on two
/// threads of one process change each other's traces.
fn run_seed_in_worker(seed: u64) -> Done {
    let failed = |why: String| Done {
        seed,
        output: format!("seed={seed} plan: ?\n  seed={seed} ERROR: {why}\n"),
        passed: false,
        simulated: 0.0,
        writes: 0,
        acked: 0,
        records: 0,
        anomalies: BTreeMap::new(),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(format!("cannot find weir-sim to start a worker: {e}")),
    };
    let out = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--worker-seed")
        .arg(seed.to_string())
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(out) => Done::from_worker(seed, &String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| failed(format!("worker process failed: {}", out.status))),
        Err(e) => failed(format!("cannot start a worker process: {e}")),
    }
}

/// The seeds to run at once: `--jobs`, else one per CPU, never more than
/// there are seeds.
fn jobs(a: &Args, seeds: u64) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = a.jobs.unwrap_or(cpus).max(1) as u64;
    n.min(seeds.max(1)) as usize
}

/// Runs every seed of `range`: in this process one after another with one
/// job, else `jobs` worker processes at a time. Outputs are printed in seed
/// order as soon as all earlier seeds are done, so the output does not
/// depend on `jobs`.
fn run_all(base: &Options, range: std::ops::Range<u64>, jobs: usize, trace: bool) -> Totals {
    let mut t = Totals::default();
    let mut print = |d: Done| {
        let _ = std::io::stdout().lock().write_all(d.output.as_bytes());
        t.add(&d);
    };
    if jobs <= 1 {
        for seed in range {
            print(run_seed(base, seed, trace));
        }
        return t;
    }
    let next = AtomicU64::new(range.start);
    let (tx, rx) = mpsc::channel::<Done>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (tx, next, end) = (tx.clone(), &next, range.end);
            s.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end || tx.send(run_seed_in_worker(seed)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // Finished seeds wait here until every earlier one is printed.
        let mut pending = BTreeMap::new();
        let mut want = range.start;
        for done in rx {
            pending.insert(done.seed, done);
            while let Some(d) = pending.remove(&want) {
                print(d);
                want += 1;
            }
        }
    });
    t
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (base, range) = match options(&args).and_then(|o| Ok((o, seeds(&args)?))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("weir-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.worker_seed {
        let d = run_seed(&base, seed, args.trace);
        println!("{}{}", d.output, d.summary());
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let n = range.end.saturating_sub(range.start);
    let t = run_all(&base, range, jobs(&args, n), args.trace);
    t.print(n, started.elapsed().as_secs_f64());
    if t.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a range of seeds checked and found.
#[derive(Default)]
struct Totals {
    failed: Vec<u64>,
    simulated: f64,
    writes: usize,
    acked: usize,
    records: usize,
    anomalies: BTreeMap<String, usize>,
}

impl Totals {
    fn add(&mut self, d: &Done) {
        if !d.passed {
            self.failed.push(d.seed);
        }
        self.simulated += d.simulated;
        self.writes += d.writes;
        self.acked += d.acked;
        self.records += d.records;
        for (name, n) in &d.anomalies {
            *self.anomalies.entry(name.clone()).or_default() += n;
        }
    }

    /// The summary; its last line is the verdict.
    fn print(&self, n: u64, wall: f64) {
        let found: Vec<String> = self
            .anomalies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "checked {} produce attempts ({} acked) and {} records read; anomalies: {}",
            self.writes,
            self.acked,
            self.records,
            if found.is_empty() {
                "none".into()
            } else {
                found.join(" ")
            }
        );
        println!(
            "wall {wall:.1}s: {:.1} seeds/min, {:.1} simulated s per wall s",
            n as f64 * 60.0 / wall.max(1e-9),
            self.simulated / wall.max(1e-9)
        );
        if !self.failed.is_empty() {
            println!("failing seeds: {:?}", self.failed);
        }
        println!(
            "{} seeds passed, {} failed",
            n - self.failed.len() as u64,
            self.failed.len()
        );
    }
}
