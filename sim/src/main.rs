//! `weir-sim`: runs seeded cluster simulations and checks their histories.
//! See docs/simulation.md.

use clap::Parser;
use std::collections::BTreeMap;
use std::process::ExitCode;
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
    /// Faults to draw from: isolate, split, crash, delay, power, disk,
    /// transfer, pause, lossy; or "none".
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "isolate,split,crash,delay,power,transfer,pause,lossy"
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
    /// Switch on a deliberate broker bug: ack-before-commit, fetch-beyond-hw, skip-fsync.
    #[arg(long, value_delimiter = ',')]
    inject_bug: Vec<String>,
}

/// The injectable bugs by name.
pub fn bug_bits(names: &[String]) -> Result<u32, String> {
    names.iter().try_fold(0, |bits, n| match n.as_str() {
        "ack-before-commit" => Ok(bits | weir::bugs::ACK_BEFORE_COMMIT),
        "fetch-beyond-hw" => Ok(bits | weir::bugs::FETCH_BEYOND_HW),
        "skip-fsync" => Ok(bits | weir::bugs::SKIP_FSYNC),
        other => Err(format!(
            "unknown bug {other:?} (known: ack-before-commit, fetch-beyond-hw, skip-fsync)"
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

/// Prints one run; the trace line first so a failure is easy to replay.
fn report(r: &RunResult, seed: u64, print_trace: bool) {
    println!("seed={seed} trace={:016x}", r.trace.hash());
    if print_trace {
        for line in &r.trace.lines {
            println!("  | {line}");
        }
    }
    let counts: Vec<String> = r
        .report
        .counts()
        .iter()
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    println!(
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
        println!("  seed={seed} ERROR: {e}");
    }
    for a in r.report.anomalies.iter().take(20) {
        println!("  seed={seed} {a}");
    }
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
    let started = Instant::now();
    let mut t = Totals::default();
    for seed in range.clone() {
        let o = Options {
            seed,
            ..base.clone()
        };
        println!("seed={seed} plan: {}", cluster::plan(&o));
        let r = cluster::run(&o);
        report(&r, seed, args.trace);
        t.add(seed, &r);
    }
    t.print(
        range.end.saturating_sub(range.start),
        started.elapsed().as_secs_f64(),
    );
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
    anomalies: BTreeMap<&'static str, usize>,
}

impl Totals {
    fn add(&mut self, seed: u64, r: &RunResult) {
        if !r.passed() {
            self.failed.push(seed);
        }
        self.simulated += r.simulated.as_secs_f64();
        self.writes += r.report.writes;
        self.acked += r.report.acked;
        self.records += r.report.records_read;
        for (name, n) in r.report.counts() {
            *self.anomalies.entry(name).or_default() += n;
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
