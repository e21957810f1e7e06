//! Placement: which brokers replicate each partition of a new topic.
//!
//! Deterministic, and balanced against the load already in the cluster
//! ([`PlacementLoad`]: replicas and preferred leaderships per broker), so
//! creating many small topics keeps the cluster balanced, not just each
//! topic.
//!
//! 1. Replicas: partition by partition, the `rf` live brokers holding the
//!    fewest replicas so far. Ties go round-robin over the sorted broker
//!    ids, continuing from where the partitions already in the cluster left
//!    off, so creating topics one by one deals replicas as creating one big
//!    topic would. This keeps replica counts within one of each other if
//!    they were, and fills up brokers that hold less (a new one) first.
//! 2. Leader (the first replica, the preferred leader): the member of the
//!    set leading the fewest partitions so far; on a tie, the member a
//!    schedule names, offset `j` in the set, where `j` steps once every
//!    `n / gcd(n, rf)` partitions, so that every `n` partitions lead once on
//!    every broker (Kafka's replica assignment shifts its followers for the
//!    same reason). In a fresh cluster this alone keeps leader counts
//!    within one.
//! 3. Repair: leaderships move along chains of partitions while that
//!    narrows leader counts (the cost-reducing paths of semi-matching),
//!    fixing what the greedy pass got wrong after deletions, new brokers or
//!    mixed replication factors. In a fresh cluster it finds nothing to do.
//!
//! Steps 1-3 run twice, with replica ties broken round-robin and by fewest
//! leaderships, and the better balanced result wins (round-robin on a tie):
//! the second helps when existing topics left replicas and leaderships on
//! different brokers.

use super::ClusterError;
use crate::proto::{ErrorCode, PartitionAssignment};
use std::collections::BTreeMap;

/// A topic may have at most this many partitions: each is a Raft group
/// with a log on every replica, and the bound keeps a create request from
/// asking for billions of them.
pub const PARTITIONS_MAX: u32 = 10_000;

/// How many replicas and preferred leaderships a broker holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerLoad {
    pub replicas: u64,
    pub leaders: u64,
}

/// The load on every broker from existing topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementLoad {
    brokers: BTreeMap<u64, BrokerLoad>,
}

impl PlacementLoad {
    /// Counts one partition's replicas and its preferred leader.
    pub fn add(&mut self, assignment: &PartitionAssignment) {
        self.add_replicas(&assignment.replicas, 0);
    }

    fn add_replicas(&mut self, replicas: &[u64], leader: usize) {
        for (i, broker) in replicas.iter().enumerate() {
            let load = self.brokers.entry(*broker).or_default();
            load.replicas += 1;
            load.leaders += u64::from(i == leader);
        }
    }

    fn move_leader(&mut self, from: u64, to: u64) {
        let from = self.brokers.entry(from).or_default();
        from.leaders = from.leaders.saturating_sub(1);
        self.brokers.entry(to).or_default().leaders += 1;
    }

    /// Replicas and partitions over every broker.
    fn totals(&self) -> (u64, u64) {
        self.brokers.values().fold((0, 0), |(r, l), b| {
            (r.wrapping_add(b.replicas), l.wrapping_add(b.leaders))
        })
    }

    /// The load on `broker` (zero if it holds nothing).
    pub fn of(&self, broker: u64) -> BrokerLoad {
        self.brokers.get(&broker).copied().unwrap_or_default()
    }
}

/// Assigns the partitions of a new topic to `brokers` (the live broker
/// ids; duplicates are ignored), giving partition `p` the Raft group
/// `first_group + p`.
pub fn assign(
    partitions: u32,
    replication_factor: u32,
    brokers: &[u64],
    first_group: u64,
    existing: &PlacementLoad,
) -> Result<Vec<PartitionAssignment>, ClusterError> {
    check_partitions(partitions)?;
    let mut brokers = brokers.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    let rf = check_replication_factor(replication_factor, brokers.len())?;
    if first_group.checked_add(u64::from(partitions)).is_none() {
        return Err(ClusterError::new(
            ErrorCode::Unknown,
            "the cluster has used up its Raft group ids",
        ));
    }
    let round_robin = place_all(&brokers, rf, partitions, existing, Ties::RoundRobin);
    let fewest_leaders = place_all(&brokers, rf, partitions, existing, Ties::FewestLeaders);
    let sets = if score(&brokers, &fewest_leaders.1) < score(&brokers, &round_robin.1) {
        fewest_leaders.0
    } else {
        round_robin.0
    };
    Ok(sets
        .into_iter()
        .zip(0..partitions)
        .map(|(set, partition)| PartitionAssignment {
            partition,
            group: first_group + u64::from(partition),
            replicas: set.leader_first(),
        })
        .collect())
}

/// Where partition `p` of the new topic falls in the round-robin that
/// placed every partition so far: creating topics one by one deals
/// replicas and leaders as creating one big topic would.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    /// Replicas dealt before this partition.
    slot: u64,
    /// Partitions placed before this one.
    partition: u64,
}

impl Cursor {
    /// The offset in the replica set of the leader the schedule names. In
    /// a fresh cluster the sets are windows of `rf` consecutive brokers
    /// dealt round-robin; within a cycle of `n / gcd(n, rf)` partitions the
    /// windows start at distinct multiples of the gcd, so a fixed offset per
    /// cycle leads a distinct residue class of brokers, and `gcd` cycles in
    /// a row lead every broker once.
    fn scheduled(self, n: usize, rf: usize) -> usize {
        let (n, rf) = (n as u128, rf as u128);
        (u128::from(self.partition) * gcd(n, rf) / n % rf) as usize
    }
}

/// How ties in replica counts are broken when picking a replica set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ties {
    /// The brokers after those the previous partitions took.
    RoundRobin,
    /// The brokers leading the fewest partitions, then round-robin.
    FewestLeaders,
}

/// Every partition's replica set, and the resulting load.
fn place_all(
    brokers: &[u64],
    rf: usize,
    partitions: u32,
    existing: &PlacementLoad,
    ties: Ties,
) -> (Vec<ReplicaSet>, PlacementLoad) {
    let mut load = existing.clone();
    let (slots, placed) = existing.totals();
    let mut sets: Vec<ReplicaSet> = (0..u64::from(partitions))
        .map(|p| {
            let cursor = Cursor {
                slot: slots.wrapping_add(p.wrapping_mul(rf as u64)),
                partition: placed.wrapping_add(p),
            };
            let set = place_one(brokers, rf, cursor, &load, ties);
            load.add_replicas(&set.replicas, set.leader);
            set
        })
        .collect();
    balance_leaders(&mut sets, &mut load);
    (sets, load)
}

/// Lower is better balanced: the spread of replica counts, then of leader
/// counts, then the sum of squared leader counts (which favours evening
/// out the middle too).
fn score(brokers: &[u64], load: &PlacementLoad) -> (u64, u64, u64) {
    let spread = |count: &dyn Fn(BrokerLoad) -> u64| {
        let counts = brokers.iter().map(|b| count(load.of(*b)));
        counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0)
    };
    let squares = brokers
        .iter()
        .map(|b| load.of(*b).leaders.saturating_pow(2))
        .fold(0u64, u64::saturating_add);
    (spread(&|l| l.replicas), spread(&|l| l.leaders), squares)
}

/// One partition's replicas in the order they were picked, and which of
/// them leads.
#[derive(Clone, Debug)]
struct ReplicaSet {
    replicas: Vec<u64>,
    leader: usize,
}

impl ReplicaSet {
    fn leader_id(&self) -> u64 {
        self.replicas[self.leader]
    }

    /// The leader, then the others in picking order.
    fn leader_first(self) -> Vec<u64> {
        let leader = self.leader_id();
        let others = self.replicas.iter().copied().filter(|b| *b != leader);
        std::iter::once(leader).chain(others).collect()
    }
}

fn check_partitions(partitions: u32) -> Result<(), ClusterError> {
    if partitions == 0 {
        return Err(ClusterError::new(
            ErrorCode::InvalidPartitions,
            "a topic needs at least 1 partition",
        ));
    }
    if partitions > PARTITIONS_MAX {
        return Err(ClusterError::new(
            ErrorCode::InvalidPartitions,
            format!("a topic can have at most {PARTITIONS_MAX} partitions, got {partitions}"),
        ));
    }
    Ok(())
}

/// The replication factor as a count, if the live brokers can hold it.
fn check_replication_factor(rf: u32, live: usize) -> Result<usize, ClusterError> {
    let invalid = |message: String| ClusterError::new(ErrorCode::InvalidReplicationFactor, message);
    if rf == 0 {
        return Err(invalid(
            "replication factor must be at least 1; use --replication-factor 1 or more".into(),
        ));
    }
    let fits = usize::try_from(rf).ok().filter(|rf| *rf <= live);
    match (fits, live) {
        (Some(rf), _) => Ok(rf),
        (None, 0) => Err(invalid(
            "no broker is live to hold replicas; start brokers and retry".into(),
        )),
        (None, _) => Err(invalid(format!(
            "replication factor {rf} exceeds the {live} live broker{}; start more brokers \
             or use --replication-factor {live}",
            if live == 1 { "" } else { "s" }
        ))),
    }
}

/// A partition's replicas: the `rf` brokers holding the fewest; and its
/// leader (see the module comment).
fn place_one(
    brokers: &[u64],
    rf: usize,
    cursor: Cursor,
    load: &PlacementLoad,
    ties: Ties,
) -> ReplicaSet {
    let n = brokers.len();
    // Round-robin: the brokers after those the previous partitions took.
    let start = (cursor.slot % n as u64) as usize;
    let mut candidates: Vec<u64> = (0..n).map(|k| brokers[(start + k) % n]).collect();
    // Stable, so equal keys stay in round-robin order.
    candidates.sort_by_key(|b| {
        let l = load.of(*b);
        match ties {
            Ties::RoundRobin => (l.replicas, 0),
            Ties::FewestLeaders => (l.replicas, l.leaders),
        }
    });
    candidates.truncate(rf);
    let replicas = candidates;
    let scheduled = cursor.scheduled(n, rf);
    let leader = (0..rf)
        .map(|k| (scheduled + k) % rf)
        .min_by_key(|&k| load.of(replicas[k]).leaders)
        .unwrap_or(scheduled);
    ReplicaSet { replicas, leader }
}

/// Moves leaderships between members of the new partitions' sets while
/// that narrows leader counts: along a chain of partitions (the first led
/// by a busy broker and holding a replica on the second broker, which leads
/// another holding a replica on the third, ...) each passes its leadership
/// to the next broker, so only the two ends change counts. No such chain
/// from a broker to one leading at least two fewer means the spread is as
/// small as these replica sets allow.
fn balance_leaders(sets: &mut [ReplicaSet], load: &mut PlacementLoad) {
    while let Some(chain) = find_chain(sets, load) {
        for (partition, to) in chain {
            let set = &mut sets[partition];
            let from = set.leader_id();
            load.move_leader(from, set.replicas[to]);
            set.leader = to;
        }
    }
}

/// A chain of (partition, index of its new leader) moving one leadership
/// from a broker to one leading at least two fewer partitions.
fn find_chain(sets: &[ReplicaSet], load: &PlacementLoad) -> Option<Vec<(usize, usize)>> {
    let mut led: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (partition, set) in sets.iter().enumerate() {
        led.entry(set.leader_id()).or_default().push(partition);
    }
    // No chain can end below the least leading member of any set.
    let floor = sets
        .iter()
        .flat_map(|set| &set.replicas)
        .map(|b| load.of(*b).leaders)
        .min()?;
    let mut sources: Vec<u64> = led.keys().copied().collect();
    sources.sort_by_key(|b| std::cmp::Reverse(load.of(*b).leaders));
    sources
        .into_iter()
        .take_while(|b| load.of(*b).leaders >= floor.saturating_add(2))
        .find_map(|source| chain_from(source, sets, &led, load))
}

/// Breadth-first from `source` over "leads a partition with a replica on";
/// the chain to the least leading broker reached, if it leads at least two
/// fewer than `source`.
fn chain_from(
    source: u64,
    sets: &[ReplicaSet],
    led: &BTreeMap<u64, Vec<usize>>,
    load: &PlacementLoad,
) -> Option<Vec<(usize, usize)>> {
    // broker -> (previous broker, partition, index of this broker in it)
    let mut reached: BTreeMap<u64, (u64, usize, usize)> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([source]);
    let mut best: Option<u64> = None;
    while let Some(broker) = queue.pop_front() {
        for &partition in led.get(&broker).map(Vec::as_slice).unwrap_or(&[]) {
            for (index, next) in sets[partition].replicas.iter().enumerate() {
                if *next == source || reached.contains_key(next) {
                    continue;
                }
                reached.insert(*next, (broker, partition, index));
                queue.push_back(*next);
                if best.is_none_or(|b| load.of(*next).leaders < load.of(b).leaders) {
                    best = Some(*next);
                }
            }
        }
    }
    let target = best.filter(|b| load.of(*b).leaders + 2 <= load.of(source).leaders)?;
    let mut chain = Vec::new();
    let mut at = target;
    while at != source {
        let (previous, partition, index) = reached.get(&at).copied()?;
        chain.push((partition, index));
        at = previous;
    }
    Some(chain)
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{QuickCheck, TestResult};
    use std::collections::BTreeSet;

    fn brokers(n: u64) -> Vec<u64> {
        (1..=n).collect()
    }

    /// Replica and leader counts over `brokers` of these assignments.
    fn counts(brokers: &[u64], load: &PlacementLoad) -> (Vec<u64>, Vec<u64>) {
        brokers
            .iter()
            .map(|b| (load.of(*b).replicas, load.of(*b).leaders))
            .unzip()
    }

    fn spread(v: &[u64]) -> u64 {
        v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
    }

    fn load_of(assignments: &[PartitionAssignment]) -> PlacementLoad {
        let mut load = PlacementLoad::default();
        assignments.iter().for_each(|a| load.add(a));
        load
    }

    /// Why a fresh placement is unbalanced or malformed, if it is.
    fn fault(n: u64, partitions: u32, rf: u32) -> Option<String> {
        let live = brokers(n);
        let a = assign(partitions, rf, &live, 1, &PlacementLoad::default()).unwrap();
        if a.len() != partitions as usize {
            return Some(format!("{} assignments", a.len()));
        }
        for (p, x) in a.iter().enumerate() {
            let distinct: BTreeSet<u64> = x.replicas.iter().copied().collect();
            if x.partition as usize != p || x.group != 1 + p as u64 {
                return Some(format!("numbering {x:?}"));
            }
            if x.replicas.len() != rf as usize || distinct.len() != rf as usize {
                return Some(format!("replicas {x:?}"));
            }
            if !distinct.iter().all(|b| live.contains(b)) {
                return Some(format!("dead broker {x:?}"));
            }
        }
        let (replicas, leaders) = counts(&live, &load_of(&a));
        if spread(&replicas) > 1 || spread(&leaders) > 1 {
            return Some(format!("replicas {replicas:?} leaders {leaders:?}"));
        }
        None
    }

    #[test]
    fn quickcheck_fresh_cluster_is_balanced() {
        fn prop(n: u8, partitions: u8, rf: u8) -> TestResult {
            let n = u64::from(n % 8 + 1);
            let partitions = u32::from(partitions % 64 + 1);
            let rf = u32::from(rf) % n as u32 + 1;
            match fault(n, partitions, rf) {
                None => TestResult::passed(),
                Some(why) => TestResult::error(format!("{n} {partitions} {rf}: {why}")),
            }
        }
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(500),
            prop as fn(u8, u8, u8) -> TestResult,
        );
    }

    /// The space is small enough to check whole.
    #[test]
    fn every_small_fresh_cluster_is_balanced() {
        for n in 1..=8u64 {
            for rf in 1..=n as u32 {
                for partitions in 1..=64 {
                    if let Some(why) = fault(n, partitions, rf) {
                        panic!("brokers {n} partitions {partitions} rf {rf}: {why}");
                    }
                }
            }
        }
    }

    /// Creates 60 topics one by one on `n` brokers; `shape(topic)` gives
    /// partitions and replication factor. Checks each create with
    /// `check(topic, replica counts, leader counts)`.
    fn create_many(n: u64, shape: impl Fn(u32) -> (u32, u32), check: impl Fn(u32, &[u64], &[u64])) {
        let live = brokers(n);
        let mut load = PlacementLoad::default();
        let mut group = 1;
        for topic in 0..60u32 {
            let (partitions, rf) = shape(topic);
            let a = assign(partitions, rf, &live, group, &load).unwrap();
            group += u64::from(partitions);
            a.iter().for_each(|x| load.add(x));
            let (replicas, leaders) = counts(&live, &load);
            check(topic, &replicas, &leaders);
        }
    }

    #[test]
    fn many_topics_stay_balanced() {
        let shapes: [fn(u32) -> u32; 3] = [|_| 1, |t| t % 3 + 1, |t| t * 7919 % 13 + 1];
        for shape in shapes {
            for n in 1..=8u64 {
                for rf in 1..=n as u32 {
                    create_many(
                        n,
                        |t| (shape(t), rf),
                        |t, replicas, leaders| {
                            assert!(
                                spread(replicas) <= 1 && spread(leaders) <= 1,
                                "n {n} rf {rf} topic {t}: {replicas:?} {leaders:?}"
                            )
                        },
                    );
                }
            }
        }
    }

    #[test]
    fn mixed_replication_factors_stay_nearly_balanced() {
        for n in 1..=8u64 {
            let shape = |t: u32| (t % 5 + 1, t % n as u32 + 1);
            create_many(n, shape, |t, replicas, leaders| {
                assert!(
                    spread(replicas) <= 1 && spread(leaders) <= 2,
                    "n {n} topic {t}: {replicas:?} {leaders:?}"
                )
            });
        }
    }

    #[test]
    fn deleting_topics_then_creating_does_not_unbalance() {
        let live = brokers(5);
        let mut topics: Vec<Vec<PartitionAssignment>> = Vec::new();
        let mut group = 1;
        for t in 0..60usize {
            if t % 3 == 2 {
                topics.remove(t * 31 % topics.len());
            }
            let before = load_of(&topics.concat());
            let a = assign(t as u32 % 4 + 1, 3, &live, group, &before).unwrap();
            group += a.len() as u64;
            topics.push(a);
            let after = load_of(&topics.concat());
            let (r0, l0) = counts(&live, &before);
            let (r1, l1) = counts(&live, &after);
            assert!(spread(&r1) <= spread(&r0).max(1), "{t}: {r0:?} -> {r1:?}");
            assert!(spread(&l1) <= spread(&l0).max(1), "{t}: {l0:?} -> {l1:?}");
        }
    }

    #[test]
    fn a_new_broker_catches_up() {
        let old = assign(30, 3, &[1, 2, 3], 1, &PlacementLoad::default()).unwrap();
        let mut load = load_of(&old);
        // Broker 4 joins: it is in every new partition until it holds as
        // many replicas as the others, and leads while it leads fewer.
        for group in 31..61 {
            let a = assign(1, 2, &[1, 2, 3, 4], group, &load).unwrap();
            let (replicas, leaders) = counts(&[1, 2, 3, 4], &load);
            assert_eq!(a[0].replicas.contains(&4), replicas[3] < replicas[0]);
            if leaders[3] + 1 < leaders[0] {
                assert_eq!(a[0].replicas[0], 4);
            }
            load.add(&a[0]);
        }
        let (replicas, leaders) = counts(&[1, 2, 3, 4], &load);
        assert_eq!(replicas, [40, 40, 40, 30]);
        assert_eq!(leaders, [15, 15, 15, 15]);
    }

    #[test]
    fn the_largest_topic_on_an_unbalanced_cluster_is_placed() {
        let live = brokers(60);
        let old = assign(PARTITIONS_MAX, 3, &live[..50], 1, &PlacementLoad::default()).unwrap();
        let load = load_of(&old);
        // Speed is a benchmark's business, not a test's: this only checks
        // that the largest topic on an unbalanced cluster is placed fully.
        let a = assign(PARTITIONS_MAX, 3, &live, 20_000, &load).unwrap();
        assert_eq!(a.len(), PARTITIONS_MAX as usize);
        let (replicas, leaders) = counts(&live, &load_of(&[old, a].concat()));
        assert!(
            spread(&replicas) <= 1 && spread(&leaders) <= 1,
            "{replicas:?} {leaders:?}"
        );
    }

    #[test]
    fn new_brokers_take_the_next_replicas() {
        let old = assign(6, 2, &[1, 2], 1, &PlacementLoad::default()).unwrap();
        let load = load_of(&old);
        let new = assign(2, 1, &[1, 2, 3, 4], 7, &load).unwrap();
        let hosts: BTreeSet<u64> = new.iter().map(|a| a.replicas[0]).collect();
        assert_eq!(hosts, BTreeSet::from([3, 4]));
    }

    #[test]
    fn deterministic_and_tolerant_of_unsorted_input() {
        let load = load_of(&assign(5, 2, &[1, 2, 3], 1, &PlacementLoad::default()).unwrap());
        let a = assign(7, 3, &[3, 1, 2, 5, 5], 6, &load).unwrap();
        let b = assign(7, 3, &[1, 2, 3, 5], 6, &load).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| !x.replicas.contains(&4)));
    }

    #[test]
    fn errors() {
        let none = PlacementLoad::default();
        let e = assign(0, 1, &[1], 1, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPartitions);
        assert_eq!(e.message, "a topic needs at least 1 partition");
        let e = assign(PARTITIONS_MAX + 1, 1, &[1], 1, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPartitions);

        let e = assign(1, 3, &[1], 1, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicationFactor);
        assert_eq!(
            e.message,
            "replication factor 3 exceeds the 1 live broker; start more brokers \
             or use --replication-factor 1"
        );
        let e = assign(1, 3, &[1, 2, 2], 1, &none).unwrap_err();
        assert_eq!(
            e.message,
            "replication factor 3 exceeds the 2 live brokers; start more brokers \
             or use --replication-factor 2"
        );
        let e = assign(1, 0, &[1], 1, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicationFactor);
        let e = assign(1, 1, &[], 1, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicationFactor);
        assert!(e.message.contains("no broker is live"), "{}", e.message);
        let e = assign(1, u32::MAX, &[1], 1, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicationFactor);
        assert!(assign(2, 1, &[1], u64::MAX - 1, &none).is_err());
        assert!(assign(1, 1, &[1], u64::MAX - 1, &none).is_ok());
    }
}
