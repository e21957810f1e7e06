//! Idle partitions stop ticking (quiescence, see replication/driver.rs) and
//! still fail over: three brokers, a topic of RF 3, one write per
//! partition; every group on every broker goes quiet; the broker leading a
//! partition is killed, and the partition elects a new leader, keeps the
//! acknowledged record and takes new writes. Idle leaders stay put: no
//! election while everything is quiet (a leader that went quiet before its
//! followers heard its broker's report made them time out and depose it).
//! With `quiesce` off no group ever goes quiet (the counter is not
//! trivially equal).

mod common;

use common::*;
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;

const TOPIC: &str = "idle";
const PARTITIONS: u32 = 4;

/// (groups, quiescent) of every running broker, in id order.
async fn quiet_counts(cluster: &Cluster) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for id in cluster.running.keys() {
        let c = cluster.connect(*id).await;
        match call(
            &c,
            Req::DescribeBrokerStats(DescribeBrokerStatsRequest::default()),
        )
        .await
        {
            Resp::DescribeBrokerStats(s) => {
                assert_eq!(s.broker_id, *id);
                out.push((s.groups, s.groups_quiescent));
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    out
}

async fn write_each_partition(cluster: &Cluster, value: &str) -> Vec<i64> {
    let mut offsets = Vec::new();
    for p in 0..PARTITIONS {
        let batch = batch_of(&[event("k", value)]);
        let offset = eventually(30, "an acknowledged write", || {
            let batch = batch.clone();
            async move {
                for id in cluster.running.keys() {
                    let c = cluster.connect(*id).await;
                    let r = produce(&c, TOPIC, p, &batch, Acks::All).await;
                    if r.error.is_none() {
                        return Some(r.base_offset);
                    }
                }
                None
            }
        })
        .await;
        offsets.push(offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_go_quiet_and_still_fail_over() {
    let mut cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let a = admin(&cluster, create(TOPIC, PARTITIONS, 3)).await;
    assert!(a.error.is_none(), "{:?}", a.error);
    let first = write_each_partition(&cluster, "before").await;

    // Every group on every broker: the topic's and the controller's.
    let counts = eventually(30, "every group to go quiet", || async {
        let counts = quiet_counts(&cluster).await;
        counts
            .iter()
            .all(|(groups, quiet)| *groups == PARTITIONS + 1 && quiet == groups)
            .then_some(counts)
    })
    .await;
    assert_eq!(counts.len(), 3);

    let leader = leaders(&cluster, TOPIC, PARTITIONS).await[0];
    cluster.kill(leader);
    // The followers' groups were quiet: they wake once the dead broker's
    // leader reports stop, elect a leader, and take writes again.
    let second = write_each_partition(&cluster, "after").await;
    for p in 0..PARTITIONS as usize {
        assert!(second[p] > first[p], "partition {p}: {second:?} {first:?}");
    }
    let new_leader = leaders(&cluster, TOPIC, PARTITIONS).await[0];
    assert_ne!(new_leader, leader);
    let c = cluster.connect(new_leader).await;
    let records = read_all(&c, TOPIC, 0).await;
    let values: Vec<&[u8]> = records
        .iter()
        .filter_map(|r| r.event.value.as_deref())
        .collect();
    assert_eq!(values, vec![&b"before"[..], &b"after"[..]]);
}

/// (leader, leader epoch) of every partition of `topic`, as broker 1 sees
/// them (it hosts a replica of each, so it answers from its own groups).
async fn leaders_and_epochs(cluster: &Cluster, topic: &str) -> Vec<(u64, u64)> {
    let c = cluster.connect(1).await;
    let Resp::Metadata(m) = call(
        &c,
        Req::Metadata(MetadataRequest {
            topics: vec![topic.into()],
        }),
    )
    .await
    else {
        panic!("not a metadata answer")
    };
    m.topics[0]
        .partitions
        .iter()
        .map(|p| (p.leader_id, p.leader_epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_leaders_stay_put() {
    const TOPIC: &str = "still";
    const PARTITIONS: u32 = 8;
    let cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let a = admin(&cluster, create(TOPIC, PARTITIONS, 3)).await;
    assert!(a.error.is_none(), "{:?}", a.error);
    eventually(30, "every group to go quiet", || async {
        quiet_counts(&cluster)
            .await
            .iter()
            .all(|(groups, quiet)| *groups == PARTITIONS + 1 && quiet == groups)
            .then_some(())
    })
    .await;
    let before = leaders_and_epochs(&cluster, TOPIC).await;
    assert!(before.iter().all(|(l, e)| *l != 0 && *e != 0), "{before:?}");
    // Many election timeouts (10 to 20 ticks of 20 ms) of silence.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(leaders_and_epochs(&cluster, TOPIC).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quiescence_every_group_keeps_ticking() {
    let cluster = Cluster::start_with(3, |c| c.driver.quiesce = false).await;
    wait_for_cluster(&cluster).await;
    let a = admin(&cluster, create(TOPIC, PARTITIONS, 3)).await;
    assert!(a.error.is_none(), "{:?}", a.error);
    write_each_partition(&cluster, "v").await;
    // Longer than the quiet cluster above needs (a few ticks after the
    // reports arrive), with 20 ms ticks.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for (groups, quiet) in quiet_counts(&cluster).await {
        assert_eq!(groups, PARTITIONS + 1);
        assert_eq!(quiet, 0);
    }
}
