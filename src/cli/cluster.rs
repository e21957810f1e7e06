//! `weir cluster describe` and `weir log-dirs describe`.

use super::output::{table, ClientArgs, Json, Output};
use crate::client::Admin;

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

pub fn run_cluster(args: &ClusterArgs) -> Result<String, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    let out = args.client.output;
    super::output::runtime()?.block_on(async {
        let admin = Admin::connect(config).await.map_err(|e| e.to_string())?;
        let ClusterCommand::Describe = args.command;
        let d = admin.describe_cluster().await.map_err(|e| e.to_string())?;
        Ok(match out {
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
        })
    })
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
