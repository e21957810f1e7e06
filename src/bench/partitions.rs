//! `weir bench partitions --count N`: what many partitions cost a running
//! cluster. Creates one topic of N partitions (replication factor 3 by
//! default), waits until every partition has a leader and the groups have
//! settled, then asks every broker for its own CPU time and resident memory
//! (`DescribeBrokerStats`, read from /proc by the broker) over a window
//! while idle and over a window under a light load spread across all
//! partitions. Memory per partition replica is the growth of the brokers'
//! resident memory from before the topic existed, over the replicas added.

use crate::cli::output::{ClientArgs, Json, Output};
use crate::client::{Admin, Client, Producer, ProducerConfig, ProducerRecord};
use crate::proto::DescribeBrokerStatsResponse as Stats;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Partitions one run creates at most.
pub const COUNT_MAX: u32 = 100_000;
/// Longest measuring window, in seconds.
const MEASURE_SECS_MAX: u64 = 3_600;
/// How long the run waits for every partition to have a leader.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct PartitionsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Partitions to create.
    #[arg(long)]
    pub count: u32,
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
    /// The topic to create (it must not exist: its memory is measured).
    #[arg(long, default_value = "weir-bench-partitions")]
    pub topic: String,
    /// Seconds to wait once every partition has a leader, so that the
    /// groups settle before the idle window.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// Seconds of each measuring window (idle, then under load).
    #[arg(long, default_value_t = 10)]
    pub measure_secs: u64,
    /// Records per second of the light load, sent round-robin to every
    /// partition (acks=all).
    #[arg(long, default_value_t = 1_000)]
    pub load_rate: u64,
    /// Bytes of each record's value under load.
    #[arg(long = "record-size", default_value_t = 100, value_name = "BYTES")]
    pub record_size_bytes: usize,
    /// Keep the topic afterwards (by default it is deleted).
    #[arg(long)]
    pub keep: bool,
}

impl PartitionsArgs {
    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 || self.count > COUNT_MAX {
            return Err(format!("--count must be between 1 and {COUNT_MAX}"));
        }
        if self.measure_secs == 0 || self.measure_secs > MEASURE_SECS_MAX {
            return Err(format!(
                "--measure-secs must be between 1 and {MEASURE_SECS_MAX}"
            ));
        }
        if self.settle_secs > MEASURE_SECS_MAX {
            return Err(format!("--settle-secs must be at most {MEASURE_SECS_MAX}"));
        }
        if self.record_size_bytes > super::client::RECORD_SIZE_MAX_BYTES {
            return Err(format!(
                "--record-size must be at most {} bytes",
                super::client::RECORD_SIZE_MAX_BYTES
            ));
        }
        Ok(())
    }
}

/// One broker's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerUse {
    pub broker_id: u64,
    /// Raft groups hosted once the topic exists (the controller's included).
    pub groups: u32,
    pub groups_leading: u32,
    /// Groups not ticked at the end of the idle window.
    pub groups_quiescent: u32,
    /// CPU time over wall time, in percent of one core.
    pub idle_cpu_percent: Option<f64>,
    pub load_cpu_percent: Option<f64>,
    pub resident_before_bytes: Option<u64>,
    pub resident_idle_bytes: Option<u64>,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionsReport {
    pub partitions: u32,
    pub replication_factor: u32,
    pub brokers: Vec<BrokerUse>,
    /// Records per second actually sent under load.
    pub load_records_per_sec: f64,
    /// From the create request until every partition had a leader.
    pub create_secs: f64,
}

impl PartitionsReport {
    /// Summed over the brokers, in percent of one core; None if any broker
    /// could not say.
    pub fn idle_cpu_percent(&self) -> Option<f64> {
        self.brokers.iter().map(|b| b.idle_cpu_percent).sum()
    }

    pub fn load_cpu_percent(&self) -> Option<f64> {
        self.brokers.iter().map(|b| b.load_cpu_percent).sum()
    }

    /// Growth of resident memory over the replicas added, in bytes.
    pub fn resident_bytes_per_replica(&self) -> Option<f64> {
        let mut grown = 0i64;
        for b in &self.brokers {
            grown += b.resident_idle_bytes? as i64 - b.resident_before_bytes? as i64;
        }
        let replicas = u64::from(self.partitions) * u64::from(self.replication_factor);
        (replicas > 0).then(|| grown as f64 / replicas as f64)
    }
}

pub fn run(args: &PartitionsArgs) -> Result<PartitionsReport, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    super::client::runtime()?.block_on(async {
        let client = Client::connect(config).await.map_err(|e| e.to_string())?;
        let admin = Admin::new(client.clone());
        let before = stats(&admin).await?;
        let created = Instant::now();
        create(&admin, args).await?;
        wait_for_leaders(&client, &args.topic, args.count).await?;
        let create_secs = created.elapsed().as_secs_f64();
        eprintln!(
            "{} partitions have leaders; settling for {} s",
            args.count, args.settle_secs
        );
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let window = Duration::from_secs(args.measure_secs);
        eprintln!("measuring idle for {} s", args.measure_secs);
        let (idle_start, idle_end, idle_wall) = idle_window(&admin, window).await?;
        eprintln!(
            "measuring under {} records/s for {} s",
            args.load_rate, args.measure_secs
        );
        let (load_start, load_end, load_wall, sent) = load_window(&client, &admin, args).await?;
        if !args.keep {
            if let Err(e) = admin.delete_topic(&args.topic).await {
                eprintln!("note: could not delete topic '{}': {e}", args.topic);
            }
        }
        let brokers = idle_end
            .values()
            .map(|end| {
                let id = end.broker_id;
                let find = |v: &BTreeMap<u64, Stats>| v.get(&id).cloned();
                BrokerUse {
                    broker_id: id,
                    groups: end.groups,
                    groups_leading: end.groups_leading,
                    groups_quiescent: end.groups_quiescent,
                    idle_cpu_percent: cpu_percent(find(&idle_start), Some(end), idle_wall),
                    load_cpu_percent: cpu_percent(
                        find(&load_start),
                        find(&load_end).as_ref(),
                        load_wall,
                    ),
                    resident_before_bytes: find(&before).and_then(|s| s.resident_bytes),
                    resident_idle_bytes: end.resident_bytes,
                }
            })
            .collect();
        Ok(PartitionsReport {
            partitions: args.count,
            replication_factor: args.replication_factor,
            brokers,
            load_records_per_sec: sent as f64 / load_wall.as_secs_f64().max(1e-9),
            create_secs,
        })
    })
}

/// Every live broker's stats, by broker id. A broker that has just
/// started may not count itself live yet: wait a little for at least one.
async fn stats(admin: &Admin) -> Result<BTreeMap<u64, Stats>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = admin
            .broker_stats(false)
            .await
            .map_err(|e| format!("cannot read the brokers' stats: {e}"))?;
        if !all.is_empty() {
            return Ok(all.into_iter().map(|s| (s.broker_id, s)).collect());
        }
        if Instant::now() >= deadline {
            return Err("no broker reports itself live; is the cluster up?".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(admin: &Admin, args: &PartitionsArgs) -> Result<(), String> {
    admin
        .create_topic(
            &args.topic,
            args.count,
            args.replication_factor,
            BTreeMap::new(),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot create topic '{}': {e} (the run measures the memory a new topic \
                 takes: delete an old one first or pass another --topic)",
                args.topic
            )
        })
}

async fn wait_for_leaders(client: &Client, topic: &str, count: u32) -> Result<(), String> {
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    loop {
        if let Ok(t) = client.refresh_topic(topic).await {
            let led = t.partitions.iter().filter(|p| p.leader_id != 0).count();
            if led == count as usize {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "topic '{topic}' still has partitions without a leader after {} s",
                LEADERS_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

type Window = (BTreeMap<u64, Stats>, BTreeMap<u64, Stats>, Duration);

async fn idle_window(admin: &Admin, window: Duration) -> Result<Window, String> {
    let start = stats(admin).await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let end = stats(admin).await?;
    Ok((start, end, t0.elapsed()))
}

/// Sends `load_rate` records per second round-robin over every partition
/// for the window; returns the stats around it and the records sent.
async fn load_window(
    client: &Client,
    admin: &Admin,
    args: &PartitionsArgs,
) -> Result<(BTreeMap<u64, Stats>, BTreeMap<u64, Stats>, Duration, u64), String> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let value = Bytes::from(vec![b'x'; args.record_size_bytes]);
    let start = stats(admin).await?;
    let t0 = Instant::now();
    let window = Duration::from_secs(args.measure_secs);
    let mut sent = 0u64;
    let mut deliveries = Vec::new();
    while t0.elapsed() < window {
        let due = t0 + Duration::from_secs_f64(sent as f64 / args.load_rate.max(1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
            continue;
        }
        let partition = (sent % u64::from(args.count)) as u32;
        let rec = ProducerRecord::new(args.topic.clone(), value.clone()).partition(partition);
        let d = producer.send(rec).await.map_err(|e| e.to_string())?;
        deliveries.push(d);
        sent += 1;
    }
    let end = stats(admin).await?;
    let wall = t0.elapsed();
    producer.flush().await;
    for d in deliveries {
        d.await
            .map_err(|e| format!("a record under load failed: {e}"))?;
    }
    Ok((start, end, wall, sent))
}

fn cpu_percent(start: Option<Stats>, end: Option<&Stats>, wall: Duration) -> Option<f64> {
    let used = end?.cpu_time_ms?.checked_sub(start?.cpu_time_ms?)?;
    Some(used as f64 / wall.as_millis().max(1) as f64 * 100.0)
}

fn opt(x: Option<f64>) -> Json {
    x.map_or(Json::Null, |v| Json::Num((v * 100.0).round() / 100.0))
}

pub fn render(r: &PartitionsReport, output: Output) -> String {
    match output {
        Output::Json => {
            let brokers = r
                .brokers
                .iter()
                .map(|b| {
                    Json::obj([
                        ("broker_id", Json::UInt(b.broker_id)),
                        ("groups", Json::UInt(u64::from(b.groups))),
                        ("groups_leading", Json::UInt(u64::from(b.groups_leading))),
                        (
                            "groups_quiescent",
                            Json::UInt(u64::from(b.groups_quiescent)),
                        ),
                        ("idle_cpu_percent", opt(b.idle_cpu_percent)),
                        ("load_cpu_percent", opt(b.load_cpu_percent)),
                        (
                            "resident_idle_bytes",
                            b.resident_idle_bytes.map_or(Json::Null, Json::UInt),
                        ),
                    ])
                })
                .collect();
            Json::obj([
                ("partitions", Json::UInt(u64::from(r.partitions))),
                (
                    "replication_factor",
                    Json::UInt(u64::from(r.replication_factor)),
                ),
                ("idle_cpu_percent", opt(r.idle_cpu_percent())),
                ("load_cpu_percent", opt(r.load_cpu_percent())),
                ("load_records_per_sec", opt(Some(r.load_records_per_sec))),
                ("create_secs", opt(Some(r.create_secs))),
                (
                    "resident_bytes_per_replica",
                    opt(r.resident_bytes_per_replica()),
                ),
                ("brokers", Json::Arr(brokers)),
            ])
            .render()
                + "\n"
        }
        Output::Table => render_table(r),
    }
}

fn render_table(r: &PartitionsReport) -> String {
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.2}%"));
    let mut out = format!(
        "{} partitions, replication factor {}: all led {:.1} s after the create request; \
         idle CPU {} of one core in total, {} under {:.0} records/s\n",
        r.partitions,
        r.replication_factor,
        r.create_secs,
        pct(r.idle_cpu_percent()),
        pct(r.load_cpu_percent()),
        r.load_records_per_sec
    );
    if let Some(b) = r.resident_bytes_per_replica() {
        out.push_str(&format!(
            "resident memory per partition replica: {:.1} KiB\n",
            b / 1024.0
        ));
    }
    out.push_str("broker  groups  leading  quiescent  idle cpu  load cpu  rss MiB\n");
    for b in &r.brokers {
        let rss = b.resident_idle_bytes.map_or("n/a".to_string(), |v| {
            format!("{:.1}", v as f64 / 1048576.0)
        });
        out.push_str(&format!(
            "{:<7} {:<7} {:<8} {:<10} {:<9} {:<9} {}\n",
            b.broker_id,
            b.groups,
            b.groups_leading,
            b.groups_quiescent,
            pct(b.idle_cpu_percent),
            pct(b.load_cpu_percent),
            rss
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: u64, before: u64, idle: u64, cpu: Option<f64>) -> BrokerUse {
        BrokerUse {
            broker_id: id,
            groups: 10,
            groups_leading: 3,
            groups_quiescent: 9,
            idle_cpu_percent: cpu,
            load_cpu_percent: Some(10.0),
            resident_before_bytes: Some(before),
            resident_idle_bytes: Some(idle),
        }
    }

    #[test]
    fn totals_and_memory_per_replica() {
        let r = PartitionsReport {
            partitions: 10,
            replication_factor: 3,
            brokers: vec![
                broker(1, 1000, 11_000, Some(1.0)),
                broker(2, 1000, 21_000, Some(2.0)),
                broker(3, 1000, 1000, Some(0.5)),
            ],
            load_records_per_sec: 100.0,
            create_secs: 1.0,
        };
        assert_eq!(r.idle_cpu_percent(), Some(3.5));
        assert_eq!(r.load_cpu_percent(), Some(30.0));
        // 30,000 bytes grown over 30 replicas.
        assert_eq!(r.resident_bytes_per_replica(), Some(1000.0));
        let json = render(&r, Output::Json);
        assert!(json.contains("\"idle_cpu_percent\":3.5"), "{json}");
        assert!(
            json.contains("\"resident_bytes_per_replica\":1000"),
            "{json}"
        );
    }

    #[test]
    fn a_broker_without_figures_makes_the_total_unknown() {
        let r = PartitionsReport {
            partitions: 1,
            replication_factor: 3,
            brokers: vec![broker(1, 0, 0, Some(1.0)), broker(2, 0, 0, None)],
            load_records_per_sec: 0.0,
            create_secs: 1.0,
        };
        assert_eq!(r.idle_cpu_percent(), None);
        assert!(render(&r, Output::Table).contains("n/a"));
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let at = |ms| Stats {
            cpu_time_ms: Some(ms),
            ..Default::default()
        };
        let p = cpu_percent(Some(at(100)), Some(&at(150)), Duration::from_secs(1));
        assert_eq!(p, Some(5.0));
        // A restarted broker's counter goes backwards: no figure.
        assert_eq!(
            cpu_percent(Some(at(150)), Some(&at(100)), Duration::from_secs(1)),
            None
        );
    }
}
