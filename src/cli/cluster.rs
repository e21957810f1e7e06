//! `weir cluster describe | health` and `weir log-dirs describe`.

use super::output::{table, ClientArgs, Json, Output};
use crate::client::{Admin, Problem};

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Lists the brokers and the controller leader.
    Describe,
    /// Lists what is wrong: Raft groups fail-stopped on a broker (the
    /// controller's, or a partition replica's, with the cause), brokers not
    /// live or not answering. Exits 1 if anything is listed, 0 if healthy.
    Health,
}

#[derive(Debug, clap::Args)]
pub struct LogDirsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: LogDirsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LogDirsCommand {
    /// Every live broker's data directory and the size of each partition
    /// replica in it.
    Describe {
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
    },
}

/// Runs `weir cluster ...`: the output, and whether the cluster is healthy
/// (always true but for `health`, whose exit status says it).
pub fn run_cluster(args: &ClusterArgs) -> Result<(String, bool), String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    let out = args.client.output;
    super::output::runtime()?.block_on(async {
        let admin = Admin::connect(config).await.map_err(|e| e.to_string())?;
        if let ClusterCommand::Health = args.command {
            let problems = admin.health().await.map_err(|e| e.to_string())?;
            return Ok((health(&problems, out), problems.is_empty()));
        }
        let d = admin.describe_cluster().await.map_err(|e| e.to_string())?;
        let text = match out {
            Output::Table => {
                let rows: Vec<Vec<String>> = d
                    .brokers
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.to_string(),
                            b.client_addr.clone(),
                            b.peer_addr.clone(),
                            if b.live { "yes" } else { "no" }.into(),
                            if b.id == d.controller_id { "yes" } else { "" }.into(),
                        ]
                    })
                    .collect();
                let controller = if d.controller_id == 0 {
                    "none".to_string()
                } else {
                    d.controller_id.to_string()
                };
                format!("Controller: {controller}\n")
                    + &table(
                        &["ID", "CLIENT-ADDR", "PEER-ADDR", "LIVE", "CONTROLLER"],
                        &rows,
                    )
            }
            Output::Json => {
                Json::obj([
                    ("controller_id", Json::UInt(d.controller_id)),
                    (
                        "brokers",
                        Json::Arr(
                            d.brokers
                                .iter()
                                .map(|b| {
                                    Json::obj([
                                        ("id", Json::UInt(b.id)),
                                        ("client_addr", Json::str(b.client_addr.clone())),
                                        ("peer_addr", Json::str(b.peer_addr.clone())),
                                        ("live", Json::Bool(b.live)),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                ])
                .render()
                    + "\n"
            }
        };
        Ok((text, true))
    })
}

fn health(problems: &[Problem], out: Output) -> String {
    match out {
        Output::Table if problems.is_empty() => {
            "Healthy: every broker live, no failed Raft group.\n".into()
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = problems
                .iter()
                .map(|p| vec![p.broker_id.to_string(), p.what.clone(), p.cause.clone()])
                .collect();
            table(&["BROKER", "FAILED", "CAUSE"], &rows)
        }
        Output::Json => {
            Json::obj([
                ("healthy", Json::Bool(problems.is_empty())),
                (
                    "problems",
                    Json::Arr(
                        problems
                            .iter()
                            .map(|p| {
                                Json::obj([
                                    ("broker_id", Json::UInt(p.broker_id)),
                                    ("failed", Json::str(p.what.clone())),
                                    ("cause", Json::str(p.cause.clone())),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ])
            .render()
                + "\n"
        }
    }
}

pub fn run_log_dirs(args: &LogDirsArgs) -> Result<String, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    let out = args.client.output;
    super::output::runtime()?.block_on(async {
        let admin = Admin::connect(config).await.map_err(|e| e.to_string())?;
        let LogDirsCommand::Describe { topic } = &args.command;
        let topics: Vec<String> = match topic {
            Some(t) => {
                admin
                    .client()
                    .refresh_topic(t)
                    .await
                    .map_err(|e| e.to_string())?;
                vec![t.clone()]
            }
            None => Vec::new(),
        };
        let dirs = admin
            .describe_log_dirs(&topics)
            .await
            .map_err(|e| e.to_string())?;
        Ok(match out {
            Output::Table => {
                let mut rows = Vec::new();
                for d in &dirs {
                    if let Some(e) = &d.error {
                        rows.push(vec![
                            d.broker_id.to_string(),
                            format!("(unreachable: {e})"),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                            String::new(),
                        ]);
                    }
                    for p in &d.partitions {
                        rows.push(vec![
                            d.broker_id.to_string(),
                            d.data_dir.clone(),
                            p.topic.clone(),
                            p.partition.to_string(),
                            p.size_bytes.to_string(),
                            p.log_start_offset.to_string(),
                            p.log_end_offset.to_string(),
                        ]);
                    }
                }
                table(
                    &[
                        "BROKER",
                        "DATA-DIR",
                        "TOPIC",
                        "PARTITION",
                        "SIZE-BYTES",
                        "LOG-START",
                        "LOG-END",
                    ],
                    &rows,
                )
            }
            Output::Json => {
                Json::Arr(
                    dirs.iter()
                        .map(|d| {
                            Json::obj([
                                ("broker_id", Json::UInt(d.broker_id)),
                                ("data_dir", Json::str(d.data_dir.clone())),
                                (
                                    "error",
                                    d.error.clone().map(Json::Str).unwrap_or(Json::Null),
                                ),
                                (
                                    "partitions",
                                    Json::Arr(
                                        d.partitions
                                            .iter()
                                            .map(|p| {
                                                Json::obj([
                                                    ("topic", Json::str(p.topic.clone())),
                                                    ("partition", Json::UInt(p.partition as u64)),
                                                    ("size_bytes", Json::UInt(p.size_bytes)),
                                                    (
                                                        "log_start_offset",
                                                        Json::Int(p.log_start_offset),
                                                    ),
                                                    ("log_end_offset", Json::Int(p.log_end_offset)),
                                                    (
                                                        "failed",
                                                        if p.failed.is_empty() {
                                                            Json::Null
                                                        } else {
                                                            Json::str(p.failed.clone())
                                                        },
                                                    ),
                                                ])
                                            })
                                            .collect(),
                                    ),
                                ),
                            ])
                        })
                        .collect(),
                )
                .render()
                    + "\n"
            }
        })
    })
}
