//! The `weir` command line: the broker, the client commands (topics,
//! produce, consume, cluster) and benchmarks.

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use weir::bench;

/// Exit code for bad command-line input, as clap uses.
const EXIT_USAGE: u8 = 2;
/// Exit code for a benchmark that failed while running (a disk error).
const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "weir", version, about = "Weir: an event streaming platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a broker until Ctrl-C or SIGTERM. With no flags: a single-broker
    /// cluster, id 1, data in ./weir-data, clients on 127.0.0.1:7400, peers
    /// on 127.0.0.1:7401.
    Broker(weir::cli::broker::BrokerArgs),
    /// Creates, lists, describes, deletes and configures topics.
    Topic(weir::cli::topic::TopicArgs),
    /// Writes one record per line of stdin to a topic.
    Produce(weir::cli::produce::ProduceArgs),
    /// Reads records of a topic and prints them.
    Consume(weir::cli::consume::ConsumeArgs),
    /// Describes the cluster (brokers, the controller leader) and its
    /// health (fail-stopped Raft groups).
    Cluster(weir::cli::cluster::ClusterArgs),
    /// Describes the brokers' data directories: size of each partition.
    LogDirs(weir::cli::cluster::LogDirsArgs),
    /// Measures this machine through Weir's storage.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Partition log append and read throughput against raw file writes
    /// (with fsync) and reads.
    Log(bench::log::LogArgs),
    /// Producer throughput and acknowledgement latency against a cluster.
    Produce(bench::client::ProduceArgs),
    /// Consumer throughput reading a topic from the beginning.
    Consume(bench::client::ConsumeArgs),
    /// Latency from send to receipt by a consumer, at a fixed rate.
    E2e(bench::client::E2eArgs),
    /// Creates N partitions and reports the brokers' CPU use and memory
    /// while idle and under a light load across all of them.
    Partitions(bench::partitions::PartitionsArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Broker(args) => broker(&args),
        Command::Bench {
            bench: Bench::Log(args),
        } => bench_log(&args),
        Command::Bench {
            bench: Bench::Produce(args),
        } => bench_client(args.validate(), args.client.output, || {
            bench::client::run_produce(&args)
        }),
        Command::Bench {
            bench: Bench::Consume(args),
        } => bench_client(args.validate(), args.client.output, || {
            bench::client::run_consume(&args)
        }),
        Command::Bench {
            bench: Bench::E2e(args),
        } => bench_client(args.validate(), args.client.output, || {
            bench::client::run_e2e(&args)
        }),
        Command::Bench {
            bench: Bench::Partitions(args),
        } => bench_partitions(&args),
        Command::Topic(args) => client_command(weir::cli::topic::run(&args)),
        Command::Produce(args) => client_command(weir::cli::produce::run(&args)),
        Command::Consume(args) => client_command(weir::cli::consume::run(&args)),
        Command::Cluster(args) => match weir::cli::cluster::run_cluster(&args) {
            // `cluster health` prints what is wrong and exits 1.
            Ok((out, healthy)) => {
                let _ = std::io::stdout().write_all(out.as_bytes());
                if healthy {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FAILURE)
                }
            }
            Err(msg) => client_command(Err(msg)),
        },
        Command::LogDirs(args) => client_command(weir::cli::cluster::run_log_dirs(&args)),
    }
}

/// Prints a client command's output, or its error as one line on stderr.
fn client_command(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(msg) => {
            let line = msg.replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn broker(args: &weir::cli::broker::BrokerArgs) -> ExitCode {
    let resolved = match weir::cli::broker::resolve(args) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match weir::cli::broker::run(resolved) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn bench_log(args: &bench::log::LogArgs) -> ExitCode {
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        return ExitCode::from(EXIT_USAGE);
    }
    let rows = match bench::log::run(args, &mut std::io::stderr()) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: weir bench log failed: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let out = bench::log::render(&rows, args.output, args.warm_reads);
    // A closed stdout (`| head`) is not worth a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// Runs a client benchmark: bad flags exit with the usage code, a failed
/// run with the failure code, each as one line on stderr.
fn bench_client(
    valid: Result<(), String>,
    output: weir::cli::output::Output,
    run: impl FnOnce() -> Result<bench::client::Summary, String>,
) -> ExitCode {
    if let Err(msg) = valid {
        eprintln!("error: {msg}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run() {
        Ok(summary) => {
            let out = bench::client::render(&summary, output);
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {}", msg.replace('\n', " "));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn bench_partitions(args: &bench::partitions::PartitionsArgs) -> ExitCode {
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        return ExitCode::from(EXIT_USAGE);
    }
    match bench::partitions::run(args) {
        Ok(report) => {
            let out = bench::partitions::render(&report, args.client.output);
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {}", msg.replace('\n', " "));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Prints a clap error as one line on stderr (help and version print as
/// clap does) and returns the exit code. Clap's own rendering spreads an
/// error over several lines with a usage block; one line is easier to read
/// in a script's log and to grep.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {}
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid command line");
    // Keep the hints (suggestions, allowed values); drop the usage block.
    let tips: Vec<&str> = lines
        .filter(|l| l.starts_with("tip:") || l.starts_with("[possible values"))
        .collect();
    let mut msg = first.to_string();
    for tip in tips {
        msg.push_str("; ");
        msg.push_str(tip);
    }
    eprintln!("{msg} (see --help)");
    ExitCode::from(EXIT_USAGE)
}
