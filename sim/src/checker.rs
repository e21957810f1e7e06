//! Checkers over a run's history, named as in Jepsen's Kafka checker.
//!
//! Each returns the anomalies it found; `check` runs them all. Only
//! `duplicate` is informational: a retried write of unknown outcome may
//! legitimately land twice.

#[cfg(test)]
use crate::history::{CorruptRead, Probe, ReplicaCheck};
use crate::history::{History, Outcome, Poll};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The value recorded for an offset covered by a control batch.
const CONTROL: &str = "<control>";

/// One anomaly: which checker found it and the offending records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub name: &'static str,
    pub detail: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.detail)
    }
}

impl Anomaly {
    /// Whether the anomaly fails the run.
    pub fn is_failure(&self) -> bool {
        // A duplicate may be a retried write of unknown outcome; an acks=1
        // write may be lost when its leader fails before replicating it.
        !matches!(self.name, "duplicate" | "lost-write-acks1")
    }
}

/// What a run's checkers found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub writes: usize,
    pub acked: usize,
    pub records_read: usize,
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.anomalies.iter().any(Anomaly::is_failure)
    }

    /// Anomaly counts by checker name, in name order.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c = BTreeMap::new();
        for a in &self.anomalies {
            *c.entry(a.name).or_default() += 1;
        }
        c
    }
}

/// (key, value) of a record, or of the control marker.
type Seen = (String, String);
/// Everything any consumer saw at each partition/offset.
pub type Reads = BTreeMap<(u32, i64), BTreeSet<Seen>>;

/// Runs every checker.
pub fn check(h: &History) -> Report {
    let (reads, mut anomalies) = inconsistent_offsets(h);
    anomalies.extend(lost_write(h, &reads));
    anomalies.extend(poll_order(h));
    anomalies.extend(aborted_read(h));
    anomalies.extend(duplicate(h));
    anomalies.extend(unavailable(h));
    anomalies.extend(replica_divergence(h));
    anomalies.extend(corrupt_read(h));
    Report {
        writes: h.writes.len(),
        acked: h
            .writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Acked { .. }))
            .count(),
        records_read: h.polls.iter().map(|p| records_from(p).count()).sum(),
        anomalies,
    }
}

/// The records a poll delivered: those at or past its start offset.
fn records_from(p: &Poll) -> impl Iterator<Item = &crate::history::Rec> {
    p.batches
        .iter()
        .flat_map(|b| b.records.iter())
        .filter(move |r| r.offset >= p.from)
}

/// `inconsistent-offsets`: two different records (or a record and a
/// control batch) seen at one partition/offset by any consumers. Returns
/// what was seen at each offset for the other checkers.
pub fn inconsistent_offsets(h: &History) -> (Reads, Vec<Anomaly>) {
    let mut seen: Reads = BTreeMap::new();
    let mut out = Vec::new();
    let mut note = |at: (u32, i64), now: Seen, out: &mut Vec<Anomaly>| {
        let all = seen.entry(at).or_default();
        if all.insert(now.clone()) && all.len() > 1 {
            let first = all.iter().find(|s| **s != now).cloned().unwrap_or_default();
            out.push(Anomaly {
                name: "inconsistent-offsets",
                detail: format!(
                    "partition {} offset {}: {:?} and {:?}",
                    at.0, at.1, first, now
                ),
            });
        }
    };
    for p in &h.polls {
        for b in &p.batches {
            if b.control {
                for o in b.base.max(p.from)..=b.last {
                    note((p.partition, o), (CONTROL.into(), CONTROL.into()), &mut out);
                }
            }
            for r in b.records.iter().filter(|r| r.offset >= p.from) {
                let now = (r.key.clone(), r.value.clone());
                note((p.partition, r.offset), now, &mut out);
            }
        }
    }
    (seen, out)
}

/// `lost-write`: an acknowledged record not read at its acknowledged
/// partition/offset with its key and value. An offset no consumer reached
/// is reported too: consumers must cover every acknowledged offset.
pub fn lost_write(h: &History, reads: &Reads) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for w in &h.writes {
        let Outcome::Acked { offset } = w.outcome else {
            continue;
        };
        let want = (w.key.clone(), w.value.clone());
        let got = reads.get(&(w.partition, offset));
        if !got.is_some_and(|g| g.contains(&want)) {
            out.push(Anomaly {
                name: if w.acks_all {
                    "lost-write"
                } else {
                    "lost-write-acks1"
                },
                detail: format!(
                    "acked {}={} at partition {} offset {offset} (producer {}), read {}",
                    w.key,
                    w.value,
                    w.partition,
                    w.producer,
                    got.map_or("nothing (never reached)".to_string(), |s| format!("{s:?}"))
                ),
            });
        }
    }
    out
}

/// `nonmonotonic-poll` and `poll-skip`: per consumer and partition, the
/// offsets delivered (records and control batch extents) must continue
/// exactly where the previous ones ended.
pub fn poll_order(h: &History) -> Vec<Anomaly> {
    let mut next: BTreeMap<(u32, u32), i64> = BTreeMap::new();
    let mut out = Vec::new();
    for p in &h.polls {
        let expect = next.entry((p.consumer, p.partition)).or_insert(p.from);
        for b in &p.batches {
            let start = b.base.max(p.from);
            if b.last < p.from {
                continue;
            }
            let anomaly = if start < *expect {
                Some("nonmonotonic-poll")
            } else if start > *expect {
                Some("poll-skip")
            } else {
                None
            };
            if let Some(name) = anomaly {
                out.push(Anomaly {
                    name,
                    detail: format!(
                        "consumer {} partition {}: expected offset {} next, got batch {}..={}",
                        p.consumer, p.partition, expect, b.base, b.last
                    ),
                });
            }
            out.extend(records_inside(p, b));
            *expect = b.last + 1;
        }
    }
    out
}

/// Records of a batch must be increasing and inside its extent.
fn records_inside(p: &Poll, b: &crate::history::BatchSeen) -> Option<Anomaly> {
    let offsets: Vec<i64> = b.records.iter().map(|r| r.offset).collect();
    let ordered = offsets.windows(2).all(|w| w[0] < w[1]);
    let inside = offsets.iter().all(|o| (b.base..=b.last).contains(o));
    (!ordered || !inside).then(|| Anomaly {
        name: "nonmonotonic-poll",
        detail: format!(
            "consumer {} partition {}: batch {}..={} holds offsets {offsets:?}",
            p.consumer, p.partition, b.base, b.last
        ),
    })
}

/// `aborted-read`: a record read that no producer attempt wrote, or whose
/// every attempt definitely failed.
pub fn aborted_read(h: &History) -> Vec<Anomaly> {
    let mut maybe_written: BTreeSet<(u32, &str, &str)> = BTreeSet::new();
    for w in &h.writes {
        if w.outcome != Outcome::Failed {
            maybe_written.insert((w.partition, &w.key, &w.value));
        }
    }
    let mut reported = BTreeSet::new();
    let mut out = Vec::new();
    for p in &h.polls {
        for r in records_from(p) {
            let k = (p.partition, r.key.as_str(), r.value.as_str());
            if !maybe_written.contains(&k) && reported.insert((p.partition, r.offset)) {
                out.push(Anomaly {
                    name: "aborted-read",
                    detail: format!(
                        "consumer {} read {}={} at partition {} offset {}, never (successfully) written",
                        p.consumer, r.key, r.value, p.partition, r.offset
                    ),
                });
            }
        }
    }
    out
}

/// `duplicate`: one produced record (values are unique per write) read at
/// two offsets. Informational.
pub fn duplicate(h: &History) -> Vec<Anomaly> {
    let mut at: BTreeMap<(u32, &str), BTreeSet<i64>> = BTreeMap::new();
    for p in &h.polls {
        for r in records_from(p) {
            at.entry((p.partition, r.value.as_str()))
                .or_default()
                .insert(r.offset);
        }
    }
    at.into_iter()
        .filter(|(_, offsets)| offsets.len() > 1)
        .map(|((partition, value), offsets)| Anomaly {
            name: "duplicate",
            detail: format!("{value} in partition {partition} at offsets {offsets:?}"),
        })
        .collect()
}

/// `replica-divergence`: once faults heal, replicas of a partition differ
/// somewhere below the high watermark (committed data must be identical,
/// byte for byte, on every replica).
pub fn replica_divergence(h: &History) -> Vec<Anomaly> {
    h.replica_checks
        .iter()
        .filter(|c| !c.differing.is_empty())
        .map(|c| Anomaly {
            name: "replica-divergence",
            detail: format!(
                "partition {} below offset {}: {}",
                c.partition,
                c.up_to,
                c.differing.join("; ")
            ),
        })
        .collect()
}

/// `corrupt-read`: a fetch returned a batch whose CRC-32C does not match
/// its bytes. A broker must check what it serves: a damaged replica answers
/// an error (and repairs itself), never the damaged bytes.
pub fn corrupt_read(h: &History) -> Vec<Anomaly> {
    h.corrupt_reads
        .iter()
        .map(|c| Anomaly {
            name: "corrupt-read",
            detail: format!(
                "consumer {} got a batch failing its CRC at offset {} of partition {} from broker {}",
                c.consumer, c.base, c.partition, c.broker
            ),
        })
        .collect()
}

/// `unavailable`: after the faults stop, a partition has no leader that
/// accepts and acknowledges a write within the stated bound.
pub fn unavailable(h: &History) -> Vec<Anomaly> {
    h.probes
        .iter()
        .filter(|p| p.acked_after_ms.is_none_or(|ms| ms > h.available_within_ms))
        .map(|p| Anomaly {
            name: "unavailable",
            detail: match p.acked_after_ms {
                Some(ms) => format!(
                    "partition {} acknowledged a write {ms} ms after the faults stopped (bound {} ms)",
                    p.partition, h.available_within_ms
                ),
                None => format!(
                    "partition {} acknowledged no write after the faults stopped (bound {} ms)",
                    p.partition, h.available_within_ms
                ),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{BatchSeen, Rec, Write};

    fn write(value: &str, outcome: Outcome) -> Write {
        Write {
            producer: 0,
            acks_all: true,
            partition: 0,
            key: "k".into(),
            value: value.into(),
            outcome,
        }
    }

    fn data(base: i64, values: &[&str]) -> BatchSeen {
        BatchSeen {
            base,
            last: base + values.len() as i64 - 1,
            control: false,
            records: values
                .iter()
                .enumerate()
                .map(|(i, v)| Rec {
                    offset: base + i as i64,
                    key: "k".into(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    fn control(base: i64) -> BatchSeen {
        BatchSeen {
            base,
            last: base,
            control: true,
            records: vec![],
        }
    }

    fn poll(consumer: u32, from: i64, batches: Vec<BatchSeen>) -> Poll {
        Poll {
            consumer,
            partition: 0,
            from,
            batches,
        }
    }

    fn names(h: &History) -> Vec<&'static str> {
        check(h).anomalies.iter().map(|a| a.name).collect()
    }

    fn clean() -> History {
        History {
            writes: vec![
                write("a", Outcome::Acked { offset: 1 }),
                write("b", Outcome::Acked { offset: 2 }),
            ],
            polls: vec![
                poll(0, 0, vec![control(0), data(1, &["a"])]),
                poll(0, 2, vec![data(1, &["a", "b"])]),
            ],
            probes: vec![Probe {
                partition: 0,
                acked_after_ms: Some(900),
            }],
            available_within_ms: 10_000,
            replica_checks: vec![],
            corrupt_reads: vec![],
        }
    }

    #[test]
    fn corrupt_read_is_caught() {
        let mut h = clean();
        assert!(corrupt_read(&h).is_empty());
        h.corrupt_reads.push(CorruptRead {
            consumer: 1,
            partition: 2,
            broker: 3,
            base: 40,
        });
        let found = check(&h).anomalies;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].name == "corrupt-read"
                && found[0].is_failure()
                && found[0]
                    .detail
                    .contains("offset 40 of partition 2 from broker 3"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn replica_divergence_is_caught() {
        let mut h = clean();
        h.replica_checks.push(ReplicaCheck {
            partition: 0,
            up_to: 5,
            differing: vec![],
            unread: vec![],
        });
        assert!(replica_divergence(&h).is_empty());
        h.replica_checks.push(ReplicaCheck {
            partition: 1,
            up_to: 9,
            differing: vec!["broker 3 differs at byte 120".into()],
            unread: vec![],
        });
        let found = replica_divergence(&h);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].is_failure() && found[0].detail.contains("broker 3"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn unavailable_is_caught() {
        let mut h = clean();
        h.probes.push(Probe {
            partition: 1,
            acked_after_ms: Some(12_000),
        });
        h.probes.push(Probe {
            partition: 2,
            acked_after_ms: None,
        });
        let found = unavailable(&h);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|a| a.name == "unavailable" && a.is_failure()));
        assert!(
            found[1].detail.contains("partition 2"),
            "{}",
            found[1].detail
        );
        assert!(
            check(&clean()).anomalies.is_empty(),
            "a probe within the bound passes"
        );
    }

    #[test]
    fn a_clean_history_passes() {
        let h = clean();
        let r = check(&h);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!((r.writes, r.acked, r.records_read), (2, 2, 2));
    }

    #[test]
    fn an_acks1_loss_is_reported_apart_and_allowed() {
        let mut h = clean();
        let mut w = write("c", Outcome::Acked { offset: 3 });
        w.acks_all = false;
        h.writes.push(w);
        let r = check(&h);
        assert_eq!(names(&h), ["lost-write-acks1"]);
        assert!(!r.failed(), "acks=1 losses do not fail the run");
    }

    #[test]
    fn lost_write_is_caught() {
        let mut h = clean();
        h.writes.push(write("c", Outcome::Acked { offset: 3 }));
        assert_eq!(names(&h), ["lost-write"]);
        // Read, but a different record sits at its offset.
        h.polls.push(poll(0, 3, vec![data(3, &["x"])]));
        h.writes.push(write("x", Outcome::Unknown));
        assert_eq!(names(&h), ["lost-write"]);
    }

    #[test]
    fn inconsistent_offsets_is_caught() {
        let mut h = clean();
        h.writes.push(write("z", Outcome::Unknown));
        h.polls.push(poll(1, 0, vec![control(0), data(1, &["z"])]));
        assert!(names(&h).contains(&"inconsistent-offsets"));
        // A control batch at one consumer, a record at another.
        let mut h = clean();
        h.polls.push(poll(1, 0, vec![data(0, &["a"])]));
        assert!(names(&h).contains(&"inconsistent-offsets"));
    }

    #[test]
    fn nonmonotonic_poll_is_caught() {
        let mut h = clean();
        h.polls.push(poll(0, 3, vec![data(2, &["b"])]));
        // from 3 clips batch 2..=2 away: fine. A batch going back is not.
        assert!(names(&h).is_empty());
        // Offset 3, then offset 3 again.
        h.writes.push(write("c", Outcome::Acked { offset: 3 }));
        h.polls
            .push(poll(0, 3, vec![data(3, &["c"]), data(3, &["c"])]));
        assert_eq!(names(&h), ["nonmonotonic-poll"]);
    }

    #[test]
    fn poll_skip_is_caught() {
        let mut h = clean();
        h.writes.push(write("d", Outcome::Acked { offset: 4 }));
        // Offset 3 (a committed control batch, say) is never delivered.
        h.polls.push(poll(0, 3, vec![data(4, &["d"])]));
        assert_eq!(names(&h), ["poll-skip"]);
    }

    #[test]
    fn aborted_read_is_caught() {
        let mut h = clean();
        h.writes.push(write("f", Outcome::Failed));
        h.polls.push(poll(0, 3, vec![data(3, &["f"])]));
        assert_eq!(names(&h), ["aborted-read"]);
        let mut h = clean();
        h.polls.push(poll(0, 3, vec![data(3, &["never-written"])]));
        assert_eq!(names(&h), ["aborted-read"]);
    }

    #[test]
    fn duplicate_is_reported_but_passes() {
        let mut h = clean();
        h.polls.push(poll(0, 3, vec![data(3, &["b"])]));
        let r = check(&h);
        assert_eq!(names(&h), ["duplicate"]);
        assert!(!r.failed());
    }
}
