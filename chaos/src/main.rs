//! `weir-chaos`: one chaos experiment against a real cluster on this
//! machine. Exit status 0 if the checkers found nothing wrong, 1 if they
//! did, 2 if the experiment could not run.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_chaos::{Fault, Options};

#[derive(Parser)]
#[command(
    about = "Kill, pause and restart the brokers of a real Weir cluster under a checked workload"
)]
struct Args {
    /// The weir binary the brokers run.
    #[arg(long, default_value = "target/release/weir")]
    weir: PathBuf,
    /// Where the brokers' data and logs go (default: a new temp directory,
    /// removed afterwards unless the run fails).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    brokers: u64,
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    #[arg(long, default_value_t = 3)]
    producers: u32,
    #[arg(long, default_value_t = 8)]
    keys: u32,
    /// Seconds of faults.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Faults to draw from: kill, pause, restart; wipe deletes every
    /// broker's data (to see the checkers catch the loss).
    #[arg(long, default_value = "kill,pause,restart", value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Seed of the fault schedule and the workload's keys.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Client port of broker 1 (broker i: base + 10 (i - 1), peers the next).
    #[arg(long, default_value_t = 19400)]
    base_port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (dir, keep) = match &args.dir {
        Some(d) => (d.clone(), true),
        None => (
            std::env::temp_dir().join(format!("weir-chaos-{}", std::process::id())),
            false,
        ),
    };
    let o = Options {
        weir: args.weir,
        dir: dir.clone(),
        brokers: args.brokers,
        partitions: args.partitions,
        producers: args.producers,
        keys: args.keys,
        duration_secs: args.duration,
        faults: args.faults,
        seed: args.seed,
        base_port: args.base_port,
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "chaos: seed={} brokers={} partitions={} faults={} for {} s",
        o.seed,
        o.brokers,
        o.partitions,
        o.faults
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(","),
        o.duration_secs
    );
    let result = runtime.block_on(weir_chaos::run(&o));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e} (data and broker logs in {})", dir.display());
            return ExitCode::from(2);
        }
    };
    let r = &outcome.report;
    println!(
        "{} writes ({} acked), {} records read, {} faults; anomalies: {:?}",
        r.writes,
        r.acked,
        r.records_read,
        outcome.faults.len(),
        r.counts()
    );
    for a in r.anomalies.iter().filter(|a| a.is_failure()).take(20) {
        println!("  {a}");
    }
    if r.failed() {
        println!(
            "FAILED (seed {}; data and broker logs in {})",
            o.seed,
            dir.display()
        );
        return ExitCode::from(1);
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("passed");
    ExitCode::SUCCESS
}
