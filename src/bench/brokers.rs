//! The brokers' side of a produce or e2e run: each broker's Raft driver
//! timings (replication/timings.rs) over the run, reset before it and read
//! after it through `DescribeBrokerStats`. With them a latency spike in the
//! client's figures can be put down to a slow driver round (CPU), a slow
//! group commit (the disk), a late tick (the driver task not scheduled), or
//! none of these (the network, the client).

use crate::cli::output::Json;
use crate::client::Admin;
use crate::proto::DurationSummary;

/// One broker's driver timings over a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTimings {
    pub broker_id: u64,
    pub round: DurationSummary,
    pub group_commit: DurationSummary,
    pub tick_late: DurationSummary,
}

/// Starts every broker's timings afresh. Best effort: a run goes on without
/// them (an older broker, a broker down), and reports none.
pub async fn reset(admin: &Admin) -> bool {
    admin.broker_stats(true).await.is_ok()
}

/// Every broker's timings since the reset; empty if any broker cannot say.
pub async fn read(admin: &Admin) -> Vec<BrokerTimings> {
    let Ok(stats) = admin.broker_stats(false).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in stats {
        let (Some(round), Some(group_commit), Some(tick_late)) =
            (s.driver_round, s.group_commit, s.tick_late)
        else {
            return Vec::new();
        };
        out.push(BrokerTimings {
            broker_id: s.broker_id,
            round,
            group_commit,
            tick_late,
        });
    }
    out
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn summary_json(s: &DurationSummary) -> Json {
    let num = |us: u64| Json::Num(ms(us));
    Json::obj([
        ("count", Json::UInt(s.count)),
        ("p50", num(s.p50_us)),
        ("p99", num(s.p99_us)),
        ("p999", num(s.p999_us)),
        ("max", num(s.max_us)),
    ])
}

/// `[{"broker", "round_ms": {...}, "group_commit_ms": {...}, "tick_late_ms": {...}}]`.
pub fn json(timings: &[BrokerTimings]) -> Json {
    Json::Arr(
        timings
            .iter()
            .map(|t| {
                Json::obj([
                    ("broker", Json::UInt(t.broker_id)),
                    ("round_ms", summary_json(&t.round)),
                    ("group_commit_ms", summary_json(&t.group_commit)),
                    ("tick_late_ms", summary_json(&t.tick_late)),
                ])
            })
            .collect(),
    )
}

fn summary_text(s: &DurationSummary) -> String {
    format!(
        "p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us)
    )
}

/// One line per broker, durations in ms.
pub fn text(timings: &[BrokerTimings]) -> String {
    let mut out = String::new();
    for t in timings {
        out.push_str(&format!(
            "broker {} ms: driver round {} | group commit ({}) {} | tick late {}\n",
            t.broker_id,
            summary_text(&t.round),
            t.group_commit.count,
            summary_text(&t.group_commit),
            summary_text(&t.tick_late),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p50_us: u64, max_us: u64) -> DurationSummary {
        DurationSummary {
            count: 10,
            p50_us,
            p99_us: max_us,
            p999_us: max_us,
            max_us,
        }
    }

    #[test]
    fn renders_each_broker_in_ms() {
        let t = vec![BrokerTimings {
            broker_id: 2,
            round: s(150, 12_500),
            group_commit: s(1_000, 40_000),
            tick_late: s(20, 300),
        }];
        let j = json(&t).render();
        assert!(
            j.starts_with(r#"[{"broker":2,"round_ms":{"count":10,"p50":0.15,"p99":12.5"#),
            "{j}"
        );
        assert!(
            j.contains(r#""group_commit_ms":{"count":10,"p50":1,"#),
            "{j}"
        );
        let line = text(&t);
        assert!(
            line.contains("broker 2 ms: driver round p50 0.15"),
            "{line}"
        );
        assert!(line.contains("group commit (10) p50 1.00"), "{line}");
        assert!(line.contains("tick late p50 0.02 p99 0.30"), "{line}");
    }
}
