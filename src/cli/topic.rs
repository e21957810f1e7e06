//! `weir topic create | list | describe | delete | alter-config |
//! transfer-leader`.

use super::output::{id_array, ids, key_value, table, ClientArgs, Json, Output};
use crate::client::{Admin, Error, TopicDesc};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Creates a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// A topic setting, key=value (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Lists the topics.
    List,
    /// Shows a topic's partitions (leader, replicas, in-sync, offsets,
    /// size) and its configuration.
    Describe { name: String },
    /// Deletes a topic and its data.
    Delete { name: String },
    /// Sets or removes topic settings.
    AlterConfig {
        name: String,
        /// key=value to set (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A key to reset to its default (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Moves a partition's leadership to another of its replicas (the
    /// preferred replica takes it back later, as in Kafka).
    TransferLeader {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        /// The broker id to lead the partition.
        #[arg(long)]
        to: u64,
    },
}

pub fn run(args: &TopicArgs) -> Result<String, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    let out = args.client.output;
    super::output::runtime()?.block_on(async {
        let admin = Admin::connect(config).await.map_err(|e| e.to_string())?;
        run_on(&admin, &args.command, out)
            .await
            .map_err(|e| e.to_string())
    })
}

async fn run_on(admin: &Admin, cmd: &TopicCommand, out: Output) -> Result<String, Error> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut map = BTreeMap::new();
            for c in configs {
                let (k, v) = key_value(c, "--config").map_err(Error::Invalid)?;
                map.insert(k, v);
            }
            admin
                .create_topic(name, *partitions, *replication_factor, map)
                .await?;
            wait_for_leaders(admin, name).await;
            Ok(match out {
                Output::Table => format!(
                    "Created topic {name} ({partitions} partition{}, replication factor {replication_factor}).\n",
                    if *partitions == 1 { "" } else { "s" }
                ),
                Output::Json => {
                    Json::obj([
                        ("name", Json::str(name.clone())),
                        ("partitions", Json::UInt(*partitions as u64)),
                        ("replication_factor", Json::UInt(*replication_factor as u64)),
                    ])
                    .render()
                        + "\n"
                }
            })
        }
        TopicCommand::List => {
            let names = admin.list_topics().await?;
            Ok(match out {
                Output::Table => names.iter().map(|n| format!("{n}\n")).collect(),
                Output::Json => {
                    Json::Arr(names.into_iter().map(Json::Str).collect()).render() + "\n"
                }
            })
        }
        TopicCommand::Describe { name } => {
            let d = admin.describe_topic(name).await?;
            Ok(match out {
                Output::Table => describe_table(&d),
                Output::Json => describe_json(&d).render() + "\n",
            })
        }
        TopicCommand::Delete { name } => {
            // Name the topic when it does not exist, before asking the
            // controller.
            admin.client().refresh_topic(name).await?;
            admin.delete_topic(name).await?;
            Ok(match out {
                Output::Table => format!("Deleted topic {name}.\n"),
                Output::Json => Json::obj([("deleted", Json::str(name.clone()))]).render() + "\n",
            })
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                return Err(Error::Invalid(
                    "nothing to change; pass --set key=value or --delete key".into(),
                ));
            }
            let mut map = BTreeMap::new();
            for c in set {
                let (k, v) = key_value(c, "--set").map_err(Error::Invalid)?;
                map.insert(k, v);
            }
            admin.alter_config(name, map, delete.clone()).await?;
            Ok(match out {
                Output::Table => format!("Altered the configuration of topic {name}.\n"),
                Output::Json => Json::obj([("altered", Json::str(name.clone()))]).render() + "\n",
            })
        }
        TopicCommand::TransferLeader {
            topic,
            partition,
            to,
        } => {
            admin.transfer_leader(topic, *partition, *to).await?;
            Ok(match out {
                Output::Table => {
                    format!("Broker {to} now leads partition {partition} of topic {topic}.\n")
                }
                Output::Json => {
                    Json::obj([
                        ("topic", Json::str(topic.clone())),
                        ("partition", Json::UInt(*partition as u64)),
                        ("leader", Json::UInt(*to)),
                    ])
                    .render()
                        + "\n"
                }
            })
        }
    }
}

/// Waits (a few seconds at most) until the new topic is visible with a
/// leader on every partition, so that a produce right after works.
async fn wait_for_leaders(admin: &Admin, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(t) = admin.client().refresh_topic(name).await {
            if !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader_id != 0) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn leader(l: u64) -> String {
    if l == 0 {
        "none".into()
    } else {
        l.to_string()
    }
}

fn describe_table(d: &TopicDesc) -> String {
    let mut s = format!("Topic: {}  Partitions: {}\n", d.name, d.partitions.len());
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                leader(p.leader),
                ids(&p.replicas),
                ids(&p.in_sync),
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
                p.size_bytes.to_string(),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "IN-SYNC",
            "LOG-START",
            "HIGH-WATERMARK",
            "SIZE-BYTES",
        ],
        &rows,
    ));
    // A fail-stopped replica serves nothing until its broker restarts: say
    // so, with the cause, rather than let it pass for a lagging follower.
    for p in &d.partitions {
        for (broker, cause) in &p.failed {
            s.push_str(&format!(
                "FAILED: partition {} on broker {broker}: {cause}\n",
                p.partition
            ));
        }
    }
    s.push_str("Config:\n");
    for (k, v) in &d.config {
        s.push_str(&format!("  {k}={v}\n"));
    }
    s
}

pub fn describe_json(d: &TopicDesc) -> Json {
    Json::obj([
        ("name", Json::str(d.name.clone())),
        (
            "partitions",
            Json::Arr(
                d.partitions
                    .iter()
                    .map(|p| {
                        Json::obj([
                            ("partition", Json::UInt(p.partition as u64)),
                            (
                                "leader",
                                if p.leader == 0 {
                                    Json::Null
                                } else {
                                    Json::UInt(p.leader)
                                },
                            ),
                            ("replicas", id_array(&p.replicas)),
                            ("in_sync", id_array(&p.in_sync)),
                            ("log_start_offset", Json::Int(p.log_start_offset)),
                            ("high_watermark", Json::Int(p.high_watermark)),
                            ("size_bytes", Json::UInt(p.size_bytes)),
                            (
                                "failed",
                                Json::Arr(
                                    p.failed
                                        .iter()
                                        .map(|(broker, cause)| {
                                            Json::obj([
                                                ("broker", Json::UInt(*broker)),
                                                ("cause", Json::str(cause.clone())),
                                            ])
                                        })
                                        .collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "config",
            Json::Obj(
                d.config
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::str(v.clone())))
                    .collect(),
            ),
        ),
    ])
}
