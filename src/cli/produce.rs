//! `weir produce TOPIC`: one record per line of stdin.

use super::output::{key_value, ClientArgs, Json, Output};
use crate::client::{Acks, Client, Delivery, Error, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::BufRead;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub topic: String,
    /// Split each line at the first SEP: the text before is the key.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header k=v on every record (repeatable).
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// all, 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Write every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "all" | "-1" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        _ => Err(format!("'{s}' is not one of all, 1, 0")),
    }
}

/// Deliveries awaited at most before reading more lines.
const OUTSTANDING_MAX: usize = 10_000;
/// Longest line accepted, in bytes.
const LINE_MAX: usize = 1024 * 1024;

pub fn run(args: &ProduceArgs) -> Result<String, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = key_value(h, "--header")?;
        headers.push(crate::types::Header {
            key: k,
            value: Some(Bytes::from(v)),
        });
    }
    if let Some(sep) = &args.key_separator {
        if sep.is_empty() {
            return Err("--key-separator must not be empty; use e.g. --key-separator :".into());
        }
    }
    let out = args.client.output;
    super::output::runtime()?.block_on(async {
        let client = Client::connect(config).await.map_err(|e| e.to_string())?;
        // An unknown topic or partition is reported before reading stdin.
        let t = client
            .refresh_topic(&args.topic)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(p) = args.partition {
            if p as usize >= t.partitions.len() {
                return Err(format!(
                    "partition {p} does not exist: topic '{}' has {} partition(s); use --partition 0..{}",
                    args.topic,
                    t.partitions.len(),
                    t.partitions.len().saturating_sub(1)
                ));
            }
        }
        let producer = Producer::new(
            client,
            ProducerConfig {
                acks: args.acks,
                ..ProducerConfig::default()
            },
        );
        // Lines come from a thread: stdin blocks.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, String>>(1024);
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let item = line.map_err(|e| format!("cannot read stdin: {e}"));
                let stop = item.is_err();
                if tx.blocking_send(item).is_err() || stop {
                    return;
                }
            }
        });
        let mut waiting: VecDeque<Delivery> = VecDeque::new();
        let mut sent = 0u64;
        let mut first_error: Option<Error> = None;
        let mut line_no = 0u64;
        let topic: std::sync::Arc<str> = args.topic.as_str().into();
        while let Some(line) = rx.recv().await {
            let line = line?;
            line_no += 1;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.len() > LINE_MAX {
                return Err(format!(
                    "line {line_no} is {} bytes, more than the {LINE_MAX} allowed",
                    line.len()
                ));
            }
            let (key, value) = match &args.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                    None => {
                        return Err(format!(
                            "line {line_no} has no key separator '{sep}'; write key{sep}value \
                             or drop --key-separator"
                        ))
                    }
                },
                None => (None, line.to_string()),
            };
            let rec = ProducerRecord {
                topic: topic.clone(),
                partition: args.partition,
                key,
                value: Some(Bytes::from(value)),
                headers: headers.clone(),
                timestamp_ms: None,
            };
            let d = producer.send(rec).await.map_err(|e| e.to_string())?;
            waiting.push_back(d);
            sent += 1;
            while waiting.len() >= OUTSTANDING_MAX {
                if let Some(d) = waiting.pop_front() {
                    if let Err(e) = d.await {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        producer.flush().await;
        for d in waiting {
            if let Err(e) = d.await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e.to_string());
        }
        Ok(match out {
            Output::Table => String::new(),
            Output::Json => {
                Json::obj([
                    ("topic", Json::str(args.topic.clone())),
                    ("records", Json::UInt(sent)),
                ])
                .render()
                    + "\n"
            }
        })
    })
}
