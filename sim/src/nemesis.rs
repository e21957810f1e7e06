//! Faults, drawn from the seed and applied from the simulation loop (the
//! only place that holds the `Sim`).

use crate::history::Trace;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use weir::io::{FaultConfig, FaultKind as DiskFault};

/// The kinds of fault a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut one broker off from every other broker: usually the broker that
    /// acknowledged the latest write (a leader), else a random one.
    Isolate,
    /// Split the brokers into a random minority and majority.
    Split,
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
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Crash,
        FaultKind::Delay,
        FaultKind::Power,
        FaultKind::Disk,
    ];

    /// The default set: all but `Disk`, whose storage errors still make
    /// raft-rs panic in a broker (see docs/simulation.md).
    pub const DEFAULT: [FaultKind; 5] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Crash,
        FaultKind::Delay,
        FaultKind::Power,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::Crash => "crash",
            FaultKind::Delay => "delay",
            FaultKind::Power => "power",
            FaultKind::Disk => "disk",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// The host name of broker `id`.
pub fn broker_host(id: u64) -> String {
    format!("b{id}")
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
        if let Some(d) = &self.disk {
            write!(f, " disk:")?;
            for k in DiskFault::ALL {
                write!(f, " {}={:.5}", k.name(), d.probability(k))?;
            }
        }
        Ok(())
    }
}

/// The fault in force, remembered so it can be healed exactly.
#[derive(Debug, Clone)]
enum Active {
    Cut(Vec<u64>, Vec<u64>),
    Crashed(u64),
    PowerLoss,
    Slow(u64),
}

/// Applies and heals faults on the simulation.
pub struct Nemesis {
    pub plan: Plan,
    rng: ChaCha8Rng,
    brokers: u64,
    active: Option<Active>,
    crashed: BTreeSet<u64>,
    next_ms: u64,
    /// A broker known to lead some partition, set by the caller.
    pub leader: Option<u64>,
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
            active: None,
            crashed: BTreeSet::new(),
            next_ms: 0,
            leader: None,
        }
    }

    /// Called every step of the safety phase: heals the fault in force or
    /// injects a new one when the interval has passed.
    pub fn tick(&mut self, sim: &mut turmoil::Sim, now_ms: u64, trace: &mut Trace) {
        if now_ms < self.next_ms {
            return;
        }
        let jitter = self.rng.gen_range(0..=self.plan.interval_ms / 2);
        self.next_ms = now_ms + self.plan.interval_ms + jitter;
        if self.active.is_some() {
            self.heal(sim, now_ms, trace);
        } else if let Some(kind) = self.choose() {
            self.inject(kind, sim, now_ms, trace);
        }
    }

    /// Picks a fault by weight, or none (weights sum plus one "no fault").
    fn choose(&mut self) -> Option<FaultKind> {
        let total: f64 = self.plan.weights.iter().map(|(_, w)| w).sum::<f64>() + 0.3;
        let mut r = self.rng.gen_range(0.0..total);
        for (k, w) in &self.plan.weights {
            if r < *w {
                return Some(*k);
            }
            r -= w;
        }
        None
    }

    fn random_broker(&mut self) -> u64 {
        self.rng.gen_range(1..=self.brokers)
    }

    fn inject(&mut self, kind: FaultKind, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        let active = match kind {
            FaultKind::Isolate => {
                // Mostly a leader: the one that acknowledged the latest write.
                let at_leader = self.rng.gen_bool(0.75);
                let victim = match self.leader {
                    Some(l) if at_leader => l,
                    _ => self.random_broker(),
                };
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
            FaultKind::Crash => Active::Crashed(self.random_broker()),
            FaultKind::Power => Active::PowerLoss,
            FaultKind::Delay => Active::Slow(self.random_broker()),
            // Continuous, not an episode: never among the weights.
            FaultKind::Disk => return,
        };
        self.apply(&active, sim, now, trace);
        self.active = Some(active);
    }

    fn apply(&mut self, a: &Active, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        match a {
            Active::Cut(left, right) => {
                for_pairs(left, right, |x, y| sim.partition(x, y));
                trace.push(
                    now as u128,
                    format!("nemesis partition {left:?} | {right:?}"),
                );
            }
            Active::Crashed(b) => {
                sim.crash(broker_host(*b));
                self.crashed.insert(*b);
                trace.push(now as u128, format!("nemesis crash b{b}"));
            }
            Active::PowerLoss => {
                for b in 1..=self.brokers {
                    sim.crash(broker_host(b));
                    self.crashed.insert(b);
                }
                trace.push(now as u128, "nemesis power loss: every broker crashed");
            }
            Active::Slow(b) => {
                let slow = Duration::from_millis(self.plan.slow_latency_ms);
                let others: Vec<u64> = (1..=self.brokers).filter(|o| o != b).collect();
                for_pairs(&[*b], &others, |x, y| {
                    sim.set_link_max_message_latency(x, y, slow)
                });
                trace.push(now as u128, format!("nemesis slow b{b}"));
            }
        }
    }

    /// Heals the fault in force.
    pub fn heal(&mut self, sim: &mut turmoil::Sim, now: u64, trace: &mut Trace) {
        let Some(a) = self.active.take() else {
            return;
        };
        match a {
            Active::Cut(left, right) => {
                for_pairs(&left, &right, |x, y| sim.repair(x, y));
                trace.push(now as u128, format!("nemesis repair {left:?} | {right:?}"));
            }
            Active::Crashed(b) => {
                sim.bounce(broker_host(b));
                self.crashed.remove(&b);
                trace.push(now as u128, format!("nemesis restart b{b}"));
            }
            Active::PowerLoss => {
                for b in 1..=self.brokers {
                    sim.bounce(broker_host(b));
                    self.crashed.remove(&b);
                }
                trace.push(now as u128, "nemesis power back: every broker restarted");
            }
            Active::Slow(b) => {
                let base = Duration::from_millis(self.plan.max_latency_ms);
                let others: Vec<u64> = (1..=self.brokers).filter(|o| *o != b).collect();
                for_pairs(&[b], &others, |x, y| {
                    sim.set_link_max_message_latency(x, y, base)
                });
                trace.push(now as u128, format!("nemesis unslow b{b}"));
            }
        }
    }
}

fn for_pairs(left: &[u64], right: &[u64], mut f: impl FnMut(String, String)) {
    for l in left {
        for r in right {
            f(broker_host(*l), broker_host(*r));
        }
    }
}
