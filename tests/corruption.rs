//! Damaged batches on one replica are found, never served, and repaired
//! from a healthy replica (issue 24): three brokers in one process on real
//! files; a byte flipped in a sealed segment of the leader (while it is
//! stopped) or of a follower (while it runs); consumers read every record
//! intact throughout, the damaged replica steps down, rebuilds the range by
//! itself (its files' CRCs all hold again) and leads again.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;
use weir::types::split_batches;

const TOPIC: &str = "t";
const BATCHES: usize = 60;

/// Three brokers; the topic's partition 0 has small segments so most of
/// the data sits in sealed ones. Returns the records written, in order.
async fn setup(scrub_bytes_per_sec: u64) -> (Cluster, Vec<(String, String)>) {
    let cluster = Cluster::start_with(3, |c| {
        c.scrub_bytes_per_sec = scrub_bytes_per_sec;
        // Passes back to back, so that a flip while running is found soon.
        c.scrub_interval_ms = 0;
    })
    .await;
    wait_for_cluster(&cluster).await;
    let mut req = create(TOPIC, 1, 3);
    if let Req::CreateTopic(ct) = &mut req {
        ct.configs.insert("segment.bytes".into(), "8192".into());
        // The test records carry a 2023 timestamp: keep them.
        ct.configs.insert("retention.ms".into(), "-1".into());
    }
    let created = admin(&cluster, req).await;
    assert!(created.error.is_none(), "{:?}", created.error);
    let leader = leaders(&cluster, TOPIC, 1).await[0];
    let c = cluster.connect(leader).await;
    let mut written = Vec::new();
    for i in 0..BATCHES {
        let value = format!("{i:04}-{}", "v".repeat(700));
        let b = batch_of(&[event(&format!("k{i}"), &value)]);
        let r = produce(&c, TOPIC, 0, &b, Acks::All).await;
        assert!(r.error.is_none(), "produce {i}: {:?}", r.error);
        written.push((format!("k{i}"), value));
    }
    (cluster, written)
}

/// The partition's directory on broker `id` and its group id.
fn partition_dir(cluster: &Cluster, id: u64) -> (PathBuf, u64) {
    let parts = cluster.data_dir(id).join("partitions");
    for e in std::fs::read_dir(&parts).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(group) = name.strip_prefix(&format!("{TOPIC}-0.")) {
            return (parts.join(&name), group.parse().unwrap());
        }
    }
    panic!("no directory for {TOPIC}-0 in {}", parts.display());
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Flips a byte inside the first batch's value of the first sealed segment
/// (its CRC then fails; nothing else about it changes).
fn flip_in_first_sealed(dir: &Path) -> PathBuf {
    let segs = segments(dir);
    assert!(segs.len() >= 3, "want sealed segments, got {segs:?}");
    flip_at_300(segs[0].clone())
}

/// Flips a byte inside the first batch's value of the active segment.
fn flip_in_active(dir: &Path) -> PathBuf {
    let path = segments(dir).pop().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    // Damage in the last batch is taken for a torn write (cut off and
    // fetched again from the leader): with a good batch after it, it is not.
    assert!(
        len > 1200,
        "the active segment holds two batches: {len} bytes"
    );
    flip_at_300(path)
}

fn flip_at_300(path: PathBuf) -> PathBuf {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 300).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], 300).unwrap();
    path
}

/// Whether every batch of every segment file in `dir` holds its CRC.
fn all_crcs_hold(dir: &Path) -> bool {
    segments(dir).iter().all(|p| {
        let bytes = std::fs::read(p).unwrap();
        split_batches(bytes.into(), usize::MAX).is_ok()
    })
}

/// Reads every record from offset 0 the way a consumer does: from the
/// leader the metadata names, retrying retriable errors, and failing the
/// test on any batch whose CRC does not hold.
async fn consume_all(cluster: &Cluster, want: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consume timed out at offset {offset}"
        );
        let leader = leaders(cluster, TOPIC, 1).await[0];
        let c = cluster.connect(leader).await;
        let req = Req::Fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: TOPIC.into(),
                partition: 0,
                offset,
                max_bytes: 64 * 1024,
                replica_read: false,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 64 * 1024,
        });
        let Ok(resp) = c.request(req, TIMEOUT).await else {
            continue;
        };
        let Some(Resp::Fetch(f)) = resp.body else {
            continue;
        };
        let p = &f.partitions[0];
        if let Some(e) = &p.error {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unknown);
            assert!(
                matches!(
                    code,
                    ErrorCode::StorageError | ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable
                ),
                "fetch at {offset} failed with a non-retriable error: {e:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let batches = split_batches(p.records.clone(), usize::MAX)
            .unwrap_or_else(|e| panic!("broker {leader} served a corrupt batch at {offset}: {e}"));
        for b in batches {
            if !b.is_control() {
                for r in b.records().unwrap() {
                    if r.offset >= offset {
                        let key = String::from_utf8(r.event.key.unwrap().to_vec()).unwrap();
                        let value = String::from_utf8(r.event.value.unwrap().to_vec()).unwrap();
                        out.push((key, value));
                    }
                }
            }
            offset = b.next_offset();
        }
    }
    out
}

async fn stop(cluster: &mut Cluster, id: u64) {
    cluster.running.remove(&id).unwrap().stop().await;
    // The aborted listener tasks close their ports when next polled.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Waits until broker `id`'s replica reports no damage and its files' CRCs
/// all hold, then until it leads again (it is the preferred leader).
async fn wait_repaired_and_leading(cluster: &Cluster, id: u64) {
    let (dir, group) = partition_dir(cluster, id);
    eventually(30, "the damaged replica to repair itself", || async {
        let board = &cluster.running[&id].board;
        let clean = board.get(group).is_some_and(|s| s.damaged.is_none());
        (clean && all_crcs_hold(&dir)).then_some(())
    })
    .await;
    eventually(30, "the repaired replica to lead again", || async {
        (leaders(cluster, TOPIC, 1).await[0] == id).then_some(())
    })
    .await;
}

/// Two more records, so that the active segment holds at least two
/// batches (two fit in a segment, so a roll before the first leaves both
/// in the new one).
async fn two_more(cluster: &Cluster, written: &mut Vec<(String, String)>) {
    let leader = leaders(cluster, TOPIC, 1).await[0];
    let c = cluster.connect(leader).await;
    for i in 0..2 {
        let value = format!("last-{i}-{}", "w".repeat(700));
        let r = produce(&c, TOPIC, 0, &batch_of(&[event("last", &value)]), Acks::All).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        written.push(("last".into(), value));
    }
}

/// Stops a broker, flips a byte in its active segment, restarts it: the
/// damaged batch is noted at open, nothing is cut off, the segment is
/// sealed and repaired from the leader; consumers read everything.
async fn active_case(leader_side: bool) {
    let (mut cluster, mut written) = setup(weir::broker::SCRUB_BYTES_PER_SEC_SUGGESTED).await;
    two_more(&cluster, &mut written).await;
    let leader = leaders(&cluster, TOPIC, 1).await[0];
    let victim = if leader_side {
        leader
    } else {
        (1..=3).find(|id| *id != leader).unwrap()
    };
    let (dir, _) = partition_dir(&cluster, victim);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(&mut cluster, victim).await;
    flip_in_active(&dir);
    assert!(!all_crcs_hold(&dir));
    cluster.start_broker(victim).await;
    let got = consume_all(&cluster, written.len()).await;
    assert_eq!(got, written);
    let (dir, group) = partition_dir(&cluster, victim);
    eventually(30, "the replica to repair itself", || async {
        let s = cluster.running[&victim].board.get(group)?;
        (s.damaged.is_none() && all_crcs_hold(&dir)).then_some(())
    })
    .await;
    if leader_side {
        wait_repaired_and_leading(&cluster, victim).await;
    }
    let got = consume_all(&cluster, written.len()).await;
    assert_eq!(got, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_the_active_segment_of_the_leader() {
    active_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_the_active_segment_of_a_follower() {
    active_case(false).await;
}

async fn leader_case(scrub_bytes_per_sec: u64) {
    let (mut cluster, written) = setup(scrub_bytes_per_sec).await;
    let leader = leaders(&cluster, TOPIC, 1).await[0];
    let (dir, group) = partition_dir(&cluster, leader);
    // Let the commit index be saved (every 20 ticks), so that the restart
    // does not read the damaged entry again as newly committed: a fetch or
    // the scrub must find it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(&mut cluster, leader).await;
    flip_in_first_sealed(&dir);
    assert!(!all_crcs_hold(&dir));
    cluster.start_broker(leader).await;
    if scrub_bytes_per_sec == 0 {
        // It is the preferred leader: it takes leadership back once caught
        // up, not knowing of its damage until a read meets it.
        eventually(30, "the restarted leader to lead again", || async {
            (leaders(&cluster, TOPIC, 1).await[0] == leader).then_some(())
        })
        .await;
    }
    let got = consume_all(&cluster, written.len()).await;
    assert_eq!(got, written);
    // The damage was found (by the consumer's read or the scrub).
    eventually(30, "the leader to find its damage", || async {
        let s = cluster.running[&leader].board.get(group)?;
        (s.damaged.is_some() || all_crcs_hold(&dir)).then_some(())
    })
    .await;
    wait_repaired_and_leading(&cluster, leader).await;
    let got = consume_all(&cluster, written.len()).await;
    assert_eq!(got, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_sealed_segment_of_the_leader_found_by_a_fetch() {
    // No scrub: a consumer's fetch meets the damage first.
    leader_case(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_sealed_segment_of_the_leader_found_by_the_scrub() {
    leader_case(weir::broker::SCRUB_BYTES_PER_SEC_SUGGESTED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_sealed_segment_of_a_running_follower_is_scrubbed_and_repaired() {
    let (cluster, written) = setup(weir::broker::SCRUB_BYTES_PER_SEC_SUGGESTED).await;
    let leader = leaders(&cluster, TOPIC, 1).await[0];
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (dir, group) = partition_dir(&cluster, follower);
    flip_in_first_sealed(&dir);
    eventually(30, "the scrub to find the damage", || async {
        let s = cluster.running[&follower].board.get(group)?;
        (s.damaged.is_some() || all_crcs_hold(&dir)).then_some(())
    })
    .await;
    eventually(30, "the follower to repair itself", || async {
        let s = cluster.running[&follower].board.get(group)?;
        (s.damaged.is_none() && all_crcs_hold(&dir)).then_some(())
    })
    .await;
    let got = consume_all(&cluster, written.len()).await;
    assert_eq!(got, written);
}
