//! `weir consume TOPIC`: prints records, by default their values, or as
//! `--format` says (kcat's placeholders).

use super::output::{ClientArgs, Json, Output};
use crate::client::{Client, Consumer, ConsumerConfig, ConsumerRecord, StartAt};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub topic: String,
    /// Start at the first record (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    pub offset: Option<i64>,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Stop when no record arrived for this long.
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<u64>,
    /// %k key, %v value, %p partition, %o offset, %t timestamp, %h headers,
    /// \n newline, \t tab, %% percent. Default: %v.
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
}

/// Renders a record as `fmt` says, kcat style.
pub fn format_record(fmt: &str, r: &ConsumerRecord) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let text = |b: &Option<bytes::Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('k') => out.push_str(&text(&r.key)),
                Some('v') => out.push_str(&text(&r.value)),
                Some('p') => out.push_str(&r.partition.to_string()),
                Some('o') => out.push_str(&r.offset.to_string()),
                Some('t') => out.push_str(&r.timestamp_ms.to_string()),
                Some('T') => out.push_str(&r.topic),
                Some('h') => out.push_str(
                    &r.headers
                        .iter()
                        .map(|h| format!("{}={}", h.key, text(&h.value)))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some('%') => out.push('%'),
                Some(o) => {
                    out.push('%');
                    out.push(o);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn record_json(r: &ConsumerRecord) -> Json {
    let text = |b: &Option<bytes::Bytes>| match b {
        Some(b) => Json::Str(String::from_utf8_lossy(b).into_owned()),
        None => Json::Null,
    };
    Json::obj([
        ("topic", Json::str(r.topic.to_string())),
        ("partition", Json::UInt(r.partition as u64)),
        ("offset", Json::Int(r.offset)),
        ("key", text(&r.key)),
        ("value", text(&r.value)),
        ("timestamp", Json::Int(r.timestamp_ms)),
        (
            "headers",
            Json::Obj(
                r.headers
                    .iter()
                    .map(|h| (h.key.clone(), text(&h.value)))
                    .collect(),
            ),
        ),
    ])
}

/// How long fetches fail before a consumer without --timeout-ms says so on
/// stderr (and again every such interval).
const FAILING_WARN_AFTER: Duration = Duration::from_secs(10);

pub fn run(args: &ConsumeArgs) -> Result<String, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    let out = args.client.output;
    let start = match (args.from_beginning, args.offset) {
        (_, Some(o)) if o < 0 => {
            return Err(format!("--offset {o} is negative; offsets start at 0"))
        }
        (_, Some(o)) => StartAt::Offset(o),
        (true, None) => StartAt::Earliest,
        (false, None) => StartAt::Latest,
    };
    if args.max_messages == Some(0) {
        return Ok(String::new());
    }
    super::output::runtime()?.block_on(async {
        let client = Client::connect(config).await.map_err(|e| e.to_string())?;
        let mut consumer = Consumer::new(client, ConsumerConfig::default());
        match args.partition {
            Some(p) => consumer.assign(&args.topic, p, start).await,
            None => consumer.assign_topic(&args.topic, start).await,
        }
        .map_err(|e| e.to_string())?;
        let idle_limit = args.timeout_ms.map(Duration::from_millis);
        let mut printed = 0u64;
        let mut idle_since = tokio::time::Instant::now();
        let mut warned_at = None;
        let stdout = std::io::stdout();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            let wait = match idle_limit {
                Some(l) => l
                    .saturating_sub(idle_since.elapsed())
                    .min(Duration::from_millis(500)),
                None => Duration::from_millis(500),
            };
            let records = tokio::select! {
                r = consumer.poll(wait) => r.map_err(|e| e.to_string())?,
                _ = &mut ctrl_c => break,
            };
            if records.is_empty() {
                let idle = idle_since.elapsed();
                // Fetches failing all along are an error, not an empty topic.
                let failing = consumer.failing().map(|e| e.to_string());
                if let Some(l) = idle_limit {
                    if idle >= l {
                        if let Some(e) = failing {
                            return Err(format!(
                                "no record arrived for {} ms and fetching {} keeps failing: {e}",
                                l.as_millis(),
                                args.topic
                            ));
                        }
                        break;
                    }
                }
                // Without a timeout, say so on stderr now and then.
                if let Some(e) = failing {
                    if idle >= FAILING_WARN_AFTER
                        && warned_at
                            .is_none_or(|w: tokio::time::Instant| w.elapsed() >= FAILING_WARN_AFTER)
                    {
                        eprintln!("weir consume: fetching {} keeps failing: {e}", args.topic);
                        warned_at = Some(tokio::time::Instant::now());
                    }
                }
                continue;
            }
            idle_since = tokio::time::Instant::now();
            let mut lock = stdout.lock();
            for r in &records {
                let line = match out {
                    Output::Json => record_json(r).render() + "\n",
                    Output::Table => format_record(args.format.as_deref().unwrap_or("%v"), r),
                };
                if lock.write_all(line.as_bytes()).is_err() {
                    // stdout closed (`| head`): stop quietly.
                    return Ok(String::new());
                }
                printed += 1;
                if Some(printed) == args.max_messages {
                    let _ = lock.flush();
                    return Ok(String::new());
                }
            }
            let _ = lock.flush();
        }
        Ok(String::new())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Header;

    #[test]
    fn kcat_placeholders() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            key: Some("k".into()),
            value: Some("v".into()),
            timestamp_ms: 1000,
            headers: vec![Header {
                key: "a".into(),
                value: Some("b".into()),
            }],
        };
        assert_eq!(
            format_record("%k=%v %p/%o@%t [%h] %%", &r),
            "k=v 2/7@1000 [a=b] %\n"
        );
        assert_eq!(format_record("%v\\t%k\\n", &r), "v\tk\n");
        let keyless = ConsumerRecord { key: None, ..r };
        assert_eq!(format_record("%k|%v", &keyless), "|v\n");
    }
}
