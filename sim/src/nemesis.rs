//! Faults, drawn from the seed and applied from the simulation loop (the
//! only place that holds the `Sim`).

use crate::history::Trace;
use crate::rot::FsHandles;
use crate::SpaceHandle;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use weir::io::{DiskSpace, FaultConfig, FaultKind as DiskFault};

/// The kinds of fault a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut one broker off from every other broker: usually the broker that
    /// acknowledged the latest write (a leader), else a random one.
    Isolate,
    /// Split the brokers into a random minority and majority.
    Split,
    /// Jepsen's bridge: two halves that cannot reach each other, and one
    /// broker in the middle that reaches both (so each half sees a
    /// majority through it, and a leader on one side keeps a quorum that
    /// the other side's replicas cannot see).
    Bridge,
    /// Crash a broker (unsynced writes are lost), restart it at the heal.
    Crash,
    /// Slow every link of one broker; also draws the run's base latency.
    Delay,
    /// Every broker crashes at once (a power loss): whatever was not
    /// fsynced is lost everywhere; all restart at the heal.
    Power,
    /// Seeded disk errors (EIO, ENOSPC, short reads, bit flips) on every
    /// broker for the whole safety phase, via `weir::io::FaultyDisk`.
    Disk,
    /// A client asks a partition's leader to hand leadership to another
    /// replica (the TransferLeader request). An action, not an episode: it
    /// may fire again while another fault is in force.
    Transfer,
    /// One broker's traffic stops in both directions and arrives in a burst
    /// when it resumes (turmoil's hold and release on all its links).
    Pause,
    /// One broker's links lose messages at a seeded rate (each loss drops
    /// everything in flight on the link, so its TCP connections stall and
    /// are reset by timeouts) and get per-link latencies, so messages on
    /// different links reorder.
    Lossy,
    /// The `admin` client connects to a broker's peer port and sends a
    /// hostile or forged peer frame (seeded: a heartbeat committing beyond
    /// the log, misnumbered entries, an append response beyond the log, a
    /// foreign snapshot, a local-only message type, a message claiming
    /// another sender, a stranger's frame, garbage, a half-sent large
    /// frame). An action, like `transfer`. Opt-in (not in the default set).
    Forge,
    /// One broker's disk reports less free space than its reserve
    /// (`storage_min_free_bytes`) until the heal: it refuses produces with
    /// OUT_OF_SPACE while it leads, and everything else goes on (turmoil's
    /// filesystem has no size, so only the reported space changes).
    Full,
    /// Bit rot: one byte of a committed batch's records flipped on disk in
    /// one replica of a partition (sealed or active segment; each
    /// partition's victim replica drawn once per run, so never a majority;
    /// see `rot.rs`). An action, like `transfer`; brokers find it by CRC
    /// (fetch, replication, a scrub every few seconds in these runs) and
    /// repair it from a healthy replica. Opt-in (not in the default set).
    Rot,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Bridge,
        FaultKind::Crash,
        FaultKind::Delay,
        FaultKind::Power,
        FaultKind::Disk,
        FaultKind::Transfer,
        FaultKind::Pause,
        FaultKind::Lossy,
        FaultKind::Forge,
        FaultKind::Full,
        FaultKind::Rot,
    ];

    /// The default set: all but `Disk`, whose storage errors still make
    /// raft-rs panic in a broker (see docs/simulation.md).
    pub const DEFAULT: [FaultKind; 9] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Bridge,
        FaultKind::Crash,
        FaultKind::Delay,
        FaultKind::Power,
        FaultKind::Transfer,
        FaultKind::Pause,
        FaultKind::Lossy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::Bridge => "bridge",
            FaultKind::Crash => "crash",
            FaultKind::Delay => "delay",
            FaultKind::Power => "power",
            FaultKind::Disk => "disk",
            FaultKind::Transfer => "transfer",
            FaultKind::Pause => "pause",
            FaultKind::Lossy => "lossy",
            FaultKind::Forge => "forge",
            FaultKind::Full => "full",
            FaultKind::Rot => "rot",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// What a full disk (the `full` fault) reports: less free space than the
/// default reserve of a disk this size (5%, at most 1 GiB).
const FULL_FREE_BYTES: u64 = 256 << 20;
const FULL_TOTAL_BYTES: u64 = 64 << 30;

/// The host name of broker `id`.
pub fn broker_host(id: u64) -> String {
    format!("b{id}")
}

/// What the nemesis asks the simulation's admin client to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Move the leadership of `partition` (an index over every topic's
    /// partitions, as in the history) to one of its other replicas, the
    /// `pick`-th modulo their number.
    Transfer { partition: u32, pick: u64 },
    /// Send hostile frame number `kind` (modulo the kinds) to broker
    /// `broker`'s peer port, claiming to be broker `claim`, for Raft group
    /// `group`.
    Forge {
        broker: u64,
        claim: u64,
        kind: u64,
        group: u64,
    },
}

/// What the seed chose: how often faults come and how likely each is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub interval_ms: u64,
    pub weights: Vec<(FaultKind, f64)>,
    /// The base maximum message latency of every link.
    pub max_latency_ms: u64,
    /// The maximum latency of a slowed link.
    pub slow_latency_ms: u64,
    /// Disk fault rates for the safety phase, if disk faults are on.
    pub disk: Option<FaultConfig>,
    /// The chance that a nemesis tick with one fault in force adds a second
    /// one instead of healing it.
    pub overlap: f64,
    /// `lossy`: the chance that a message on a lossy link is lost (with
    /// everything then in flight on that link).
    pub loss_rate: f64,
    /// `lossy`: each lossy link's maximum latency is drawn up to this.
    pub jitter_ms: u64,
}

impl Plan {
    pub fn draw(rng: &mut ChaCha8Rng, kinds: &[FaultKind]) -> Plan {
        let delay = kinds.contains(&FaultKind::Delay);
        Plan {
            interval_ms: rng.gen_range(500..3000),
            weights: kinds
                .iter()
                .filter(|k| **k != FaultKind::Disk)
                .map(|k| (*k, rng.gen_range(0.1..1.0)))
                .collect(),
            max_latency_ms: if delay { rng.gen_range(5..60) } else { 5 },
            slow_latency_ms: rng.gen_range(100..800),
            disk: kinds.contains(&FaultKind::Disk).then(|| disk_config(rng)),
            overlap: rng.gen_range(0.2..0.7),
            loss_rate: rng.gen_range(0.005..0.05),
            jitter_ms: rng.gen_range(10..200),
        }
    }
}

/// `FaultyDisk`'s random rates, scaled down: every failed append or fsync
/// stops a replica until its broker restarts, so full rates would leave
/// nothing running after the first second.
fn disk_config(rng: &mut ChaCha8Rng) -> FaultConfig {
    let mut c = FaultConfig::random(rng);
    let scale = rng.gen_range(0.01..0.2);
    for k in DiskFault::ALL {
        *c.probability_mut(k) *= scale;
    }
    c
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "every {}ms:", self.interval_ms)?;
        for (k, w) in &self.weights {
            write!(f, " {}={:.2}", k.name(), w)?;
        }
        write!(
            f,
            " latency<={}ms slow<={}ms",
            self.max_latency_ms, self.slow_latency_ms
        )?;
        write!(f, " overlap={:.2}", self.overlap)?;
        if self.weights.iter().any(|(k, _)| *k == FaultKind::Lossy) {
            write!(
                f,
                " loss={:.4} jitter<={}ms",
                self.loss_rate, self.jitter_ms
            )?;
        }
        if let Some(d) = &self.disk {
            write!(f, " disk:")?;
            for k in DiskFault::ALL {
                write!(f, " {}={:.5}", k.name(), d.probability(k))?;
            }
        }
        Ok(())
    }
}

/// A fault in force, remembered so it can be healed exactly.
#[derive(Debug, Clone)]
enum Active {
    Cut(Vec<u64>, Vec<u64>),
    Crashed(u64),
    PowerLoss,
    Slow(u64),
    Paused(u64),
    /// The lossy broker and the maximum latency of each of its links.
    Lossy(u64, Vec<(String, u64)>),
    /// The broker whose disk reports itself full.
    Full(u64),
}

impl Active {
    /// Its kind, for the overlap rules (both cuts count as `split`).
    fn kind(&self) -> FaultKind {
        match self {
            Active::Cut(..) => FaultKind::Split,
            Active::Crashed(_) => FaultKind::Crash,
            Active::PowerLoss => FaultKind::Power,
            Active::Slow(_) => FaultKind::Delay,
            Active::Paused(_) => FaultKind::Pause,
            Active::Lossy(..) => FaultKind::Lossy,
            Active::Full(_) => FaultKind::Full,
        }
    }

    /// Its name in the trace: a cut is an `isolate` or a `split`.
    fn label(&self) -> &'static str {
        match self {
            Active::Cut(..) => "partition",
            other => other.kind().name(),
        }
    }

    /// The broker this fault is about, which a second fault leaves alone
    /// (cuts have none: a crash during a split is the point).
    fn victim(&self) -> Option<u64> {
        match self {
            Active::Crashed(b)
            | Active::Slow(b)
            | Active::Paused(b)
            | Active::Lossy(b, _)
            | Active::Full(b) => Some(*b),
            Active::Cut(..) | Active::PowerLoss => None,
        }
    }
}

/// Applies and heals faults on the simulation.
pub struct Nemesis {
    pub plan: Plan,
    rng: ChaCha8Rng,
    brokers: u64,
    /// The faults in force, oldest first (at most two).
    active: Vec<Active>,
    next_ms: u64,
    /// A broker known to lead some partition, set by the caller.
    pub leader: Option<u64>,
    /// Partitions over every topic, set by the caller (for `transfer`).
    pub partitions: u32,
    /// Every client host, whose links to a paused or lossy broker are
    /// affected too; set by the caller.
    pub clients: Vec<String>,
    /// Requests for the admin client, taken by the caller.
    pub requests: Vec<Request>,
    /// Each broker's disk space as its SimDisk reports it (for `full`),
    /// set by the caller.
    pub disk_space: BTreeMap<u64, SpaceHandle>,
    /// Each broker's filesystem (for `rot`), filled in by the broker hosts.
    pub fs: FsHandles,
    /// `rot`: each partition directory's one victim replica.
    rot_victims: BTreeMap<String, u64>,
}

impl Nemesis {
    pub fn new(seed: u64, brokers: u64, kinds: &[FaultKind]) -> Nemesis {
        // Its own stream, so that workload changes do not move the faults.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
        let plan = Plan::draw(&mut rng, kinds);
        Nemesis {
            plan,
            rng,
            brokers,
            active: Vec::new(),
            next_ms: 0,
            leader: None,
            partitions: 0,
            clients: Vec::new(),
            requests: Vec::new(),
            disk_space: BTreeMap::new(),
            fs: FsHandles::default(),
            rot_victims: BTreeMap::new(),
        }
    }

    /// Called every step of the safety phase: when the interval has passed,
    /// injects a fault if none is in force; with one in force, adds a
    /// second (with the plan's overlap chance) or heals it; with two, heals
    /// the newer.
    pub fn tick(&mut self, sim: &mut turmoil::Sim, now_ms: u64, trace: &mut Trace) {
        if now_ms < self.next_ms {
            return;
        }
        let jitter = self.rng.gen_range(0..=self.plan.interval_ms / 2);
        self.next_ms = now_ms + self.plan.interval_ms + jitter;
        let second = match self.active.as_slice() {
            [] => false,
            [only] if only.kind() != FaultKind::Power => self.rng.gen_bool(self.plan.overlap),
            _ => {
                self.heal_newest(sim, now_ms, trace);
                return;
            }
        };
        if self.active.len() == 1 && !second {
            self.heal_newest(sim, now_ms, trace);
            return;
        }
        match self.choose() {
            Some(kind) => self.inject(kind, sim, now_ms, trace),
            None if second => self.heal_newest(sim, now_ms, trace),
            None => {}
        }
    }

    /// Picks a fault by weight, or none (weights sum plus one "no fault").
    /// With a fault in force, not its kind and not a power loss.
    fn choose(&mut self) -> Option<FaultKind> {
        let in_force: Vec<FaultKind> = self.active.iter().map(Active::kind).collect();
        let allowed = |k: FaultKind| {
            in_force.is_empty()
                || (k != FaultKind::Power
                    && !in_force.contains(&k)
                    // Every cut counts as a split: never two at once.
                    && !(matches!(k, FaultKind::Isolate | FaultKind::Bridge)
                        && in_force.contains(&FaultKind::Split)))
        };
        let weights: Vec<(FaultKind, f64)> = self
            .plan
            .weights
            .iter()
            .filter(|(k, _)| allowed(*k))
            .copied()
            .collect();
        let total: f64 = weights.iter().map(|(_, w)| w).sum::<f64>() + 0.3;
        let mut r = self.rng.gen_range(0.0..total);
        for (k, w) in &weights {
            if r < *w {
                return Some(*k);
            }
            r -= w;
        }
        None
    }

    /// A random broker that no fault in force is about, if any is left.
    fn random_broker(&mut self) -> Option<u64> {
        let taken: Vec<u64> = self.active.iter().filter_map(Active::victim).collect();
        let free: Vec<u64> = (1..=self.brokers).filter(|b| !taken.contains(b)).collect();
        free.choose(&mut self.rng).copied()
    }

    /// Mostly (with chance `p`) the latest known leader, else a random
    /// broker; never one a fault in force is about.
    fn leader_or_random(&mut self, p: f64) -> Option<u64> {
        let taken: Vec<u64> = self.active.iter().filter_map(Active::victim).collect();
        let at_leader = self.rng.gen_bool(p);
        match self.leader {
            Some(l) if at_leader && !taken.contains(&l) => Some(l),
            _ => self.random_broker(),
        }
    }

    fn inject(&mut self, kind: FaultKind, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        if kind == FaultKind::Transfer {
            self.transfer(now, trace);
            return;
        }
        if kind == FaultKind::Forge {
            self.forge(now, trace);
            return;
        }
        if kind == FaultKind::Rot {
            self.rot(now, trace);
            return;
        }
        let Some(active) = self.draw(kind) else {
            return;
        };
        if let Some(first) = self.active.first() {
            let line = format!(
                "nemesis overlap: {} while {} is in force",
                active.label(),
                first.label()
            );
            trace.push(now as u128, line);
        }
        self.apply(&active, sim, now, trace);
        self.active.push(active);
        self.reassert(sim);
    }

    /// Asks the admin client to move a random partition's leadership.
    fn transfer(&mut self, now: u64, trace: &mut Trace) {
        if self.partitions == 0 {
            return;
        }
        let partition = self.rng.gen_range(0..self.partitions);
        let pick = self.rng.gen_range(0..self.brokers);
        self.requests.push(Request::Transfer { partition, pick });
        let line = format!("nemesis transfer leadership of partition {partition} (pick {pick})");
        trace.push(now as u128, line);
    }

    /// Asks the admin client to send a hostile peer frame to a broker.
    fn forge(&mut self, now: u64, trace: &mut Trace) {
        let broker = self.rng.gen_range(1..=self.brokers);
        // Another member (a stranger only in a one-broker cluster).
        let claim = broker % self.brokers + 1;
        let kind = self.rng.gen_range(0..64);
        // Mostly the controller's group, which every broker hosts.
        let group = match self.rng.gen_bool(0.5) {
            true => 0,
            false => self.rng.gen_range(1..=8),
        };
        self.requests.push(Request::Forge {
            broker,
            claim,
            kind,
            group,
        });
        let line = format!("nemesis forge to b{broker} as b{claim}: kind {kind}, group {group}");
        trace.push(now as u128, line);
    }

    /// Flips a byte of a committed batch in one replica's log.
    fn rot(&mut self, now: u64, trace: &mut Trace) {
        let fs = self.fs.borrow();
        let line = match crate::rot::rot(&fs, &mut self.rot_victims, &mut self.rng) {
            Some(f) => format!(
                "nemesis rot b{}: {} byte {} (batch at offset {}, {} segment) ^= {:#04x}",
                f.broker,
                f.file.display(),
                f.position,
                f.base_offset,
                if f.sealed { "sealed" } else { "active" },
                f.mask
            ),
            None => "nemesis rot: no batch to damage yet".into(),
        };
        trace.push(now as u128, line);
    }

    /// The fault's victims and parameters; `None` if no broker is left.
    fn draw(&mut self, kind: FaultKind) -> Option<Active> {
        let active = match kind {
            FaultKind::Isolate => {
                let victim = self.leader_or_random(0.75)?;
                let rest = (1..=self.brokers).filter(|b| *b != victim).collect();
                Active::Cut(vec![victim], rest)
            }
            FaultKind::Split => {
                let mut all: Vec<u64> = (1..=self.brokers).collect();
                all.shuffle(&mut self.rng);
                let minority = self.rng.gen_range(1..=(self.brokers as usize - 1) / 2 + 1);
                let rest = all.split_off(minority.min(all.len() - 1));
                Active::Cut(all, rest)
            }
            FaultKind::Bridge => {
                // The bridge is cut from no one; the rest split in halves
                // with every link between the halves cut.
                let mut all: Vec<u64> = (1..=self.brokers).collect();
                all.shuffle(&mut self.rng);
                let mut rest = all.split_off(1);
                if rest.len() < 2 {
                    return None;
                }
                let right = rest.split_off(rest.len() / 2);
                Active::Cut(rest, right)
            }
            FaultKind::Crash => Active::Crashed(self.random_broker()?),
            FaultKind::Power => Active::PowerLoss,
            FaultKind::Delay => Active::Slow(self.random_broker()?),
            FaultKind::Pause => Active::Paused(self.leader_or_random(0.5)?),
            FaultKind::Full => Active::Full(self.leader_or_random(0.75)?),
            FaultKind::Lossy => {
                let b = self.leader_or_random(0.5)?;
                let base = self.plan.max_latency_ms;
                let links = self
                    .others(b)
                    .into_iter()
                    .map(|h| (h, base + self.rng.gen_range(0..=self.plan.jitter_ms)))
                    .collect();
                Active::Lossy(b, links)
            }
            // Continuous, not an episode: never among the weights.
            FaultKind::Disk | FaultKind::Transfer | FaultKind::Forge | FaultKind::Rot => {
                return None
            }
        };
        Some(active)
    }

    /// Every host but broker `b`: the other brokers, then the clients.
    fn others(&self, b: u64) -> Vec<String> {
        (1..=self.brokers)
            .filter(|o| *o != b)
            .map(broker_host)
            .chain(self.clients.iter().cloned())
            .collect()
    }

    fn apply(&mut self, a: &Active, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        let line = match a {
            Active::Cut(left, right) => {
                for_pairs(left, right, |x, y| sim.partition(x, y));
                format!("nemesis partition {left:?} | {right:?}")
            }
            Active::Crashed(b) => {
                sim.crash(broker_host(*b));
                format!("nemesis crash b{b}")
            }
            Active::PowerLoss => {
                for b in 1..=self.brokers {
                    sim.crash(broker_host(b));
                }
                "nemesis power loss: every broker crashed".into()
            }
            Active::Slow(b) => {
                self.set_latency(sim, *b, self.plan.slow_latency_ms);
                format!("nemesis slow b{b}")
            }
            Active::Paused(b) => {
                self.hold(sim, *b, true);
                format!("nemesis pause b{b}: its traffic is held both ways")
            }
            Active::Lossy(b, links) => {
                set_lossy(sim, *b, links, self.plan.loss_rate);
                let maxima: Vec<String> =
                    links.iter().map(|(h, ms)| format!("{h}<={ms}")).collect();
                format!(
                    "nemesis lossy b{b}: loss {:.4} per message, latency ms {}",
                    self.plan.loss_rate,
                    maxima.join(" ")
                )
            }
            Active::Full(b) => {
                self.set_full(*b, true);
                format!("nemesis full b{b}: its disk reports {FULL_FREE_BYTES} bytes free")
            }
        };
        trace.push(now as u128, line);
    }

    /// Makes broker `b`'s disk report itself full (below the default
    /// reserve of 1 GiB), or never full again.
    fn set_full(&self, b: u64, full: bool) {
        if let Some(h) = self.disk_space.get(&b) {
            *h.lock().unwrap_or_else(|e| e.into_inner()) = full.then_some(DiskSpace {
                free_bytes: FULL_FREE_BYTES,
                total_bytes: FULL_TOTAL_BYTES,
            });
        }
    }

    /// Every link of `b` gets maximum latency `ms`.
    fn set_latency(&self, sim: &mut turmoil::Sim, b: u64, ms: u64) {
        let host = broker_host(b);
        for o in self.others(b) {
            sim.set_link_max_message_latency(host.as_str(), o, Duration::from_millis(ms));
        }
    }

    /// Holds (or releases) every link of `b`, to brokers and clients.
    fn hold(&self, sim: &mut turmoil::Sim, b: u64, hold: bool) {
        let host = broker_host(b);
        for o in self.others(b) {
            if hold {
                sim.hold(host.as_str(), o);
            } else {
                sim.release(host.as_str(), o);
            }
        }
    }

    /// Heals every fault in force, newest first.
    pub fn heal(&mut self, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        while !self.active.is_empty() {
            self.heal_newest(sim, now, trace);
        }
    }

    /// Heals the newest fault in force, then puts back what healing it may
    /// have undone of the other (a repair or release also clears holds and
    /// cuts on the same links).
    fn heal_newest(&mut self, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        let Some(a) = self.active.pop() else {
            return;
        };
        let line = match a {
            Active::Cut(left, right) => {
                for_pairs(&left, &right, |x, y| sim.repair(x, y));
                format!("nemesis repair {left:?} | {right:?}")
            }
            Active::Crashed(b) => {
                sim.bounce(broker_host(b));
                format!("nemesis restart b{b}")
            }
            Active::PowerLoss => {
                for b in 1..=self.brokers {
                    sim.bounce(broker_host(b));
                }
                "nemesis power back: every broker restarted".into()
            }
            Active::Slow(b) => {
                self.set_latency(sim, b, self.plan.max_latency_ms);
                format!("nemesis unslow b{b}")
            }
            Active::Paused(b) => {
                self.hold(sim, b, false);
                format!("nemesis resume b{b}: held traffic delivered")
            }
            Active::Lossy(b, links) => {
                let base = self.plan.max_latency_ms;
                let restored: Vec<(String, u64)> =
                    links.into_iter().map(|(h, _)| (h, base)).collect();
                set_lossy(sim, b, &restored, 0.0);
                format!("nemesis lossless b{b}")
            }
            Active::Full(b) => {
                self.set_full(b, false);
                format!("nemesis space freed on b{b}")
            }
        };
        trace.push(now as u128, line);
        self.reassert(sim);
    }

    /// Re-applies the link state of the faults in force, cuts last so that
    /// a partition wins over a hold on the same link. Crashes need nothing.
    fn reassert(&self, sim: &mut turmoil::Sim) {
        for a in &self.active {
            match a {
                Active::Slow(b) => self.set_latency(sim, *b, self.plan.slow_latency_ms),
                Active::Lossy(b, links) => set_lossy(sim, *b, links, self.plan.loss_rate),
                _ => {}
            }
        }
        for a in &self.active {
            if let Active::Paused(b) = a {
                self.hold(sim, *b, true);
            }
        }
        for a in &self.active {
            if let Active::Cut(left, right) = a {
                for_pairs(left, right, |x, y| sim.partition(x, y));
            }
        }
    }
}

/// Sets the loss rate and the per-link maximum latency of `b`'s links.
fn set_lossy(sim: &mut turmoil::Sim, b: u64, links: &[(String, u64)], rate: f64) {
    let host = broker_host(b);
    for (o, ms) in links {
        sim.set_link_fail_rate(host.as_str(), o.as_str(), rate);
        sim.set_link_max_message_latency(host.as_str(), o.as_str(), Duration::from_millis(*ms));
    }
}

fn for_pairs(left: &[u64], right: &[u64], mut f: impl FnMut(String, String)) {
    for l in left {
        for r in right {
            f(broker_host(*l), broker_host(*r));
        }
    }
}
