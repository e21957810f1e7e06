//! The fault schedule: every 1 to 3 s one fault, drawn from the seed, on a
//! broker drawn from the seed, lasting 0.5 to 2.5 s, then healed before the
//! next. So at most one broker is down at a time.

use crate::cluster::Cluster;
use crate::Options;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL one broker, start it again later.
    Kill,
    /// SIGSTOP one broker, SIGCONT it later.
    Pause,
    /// SIGTERM one broker (a clean shutdown), start it again later.
    Restart,
    /// Destructive, outside the failure model: stop every broker, delete
    /// every data directory, start them again. Acknowledged writes are
    /// lost; the checkers must say so.
    Wipe,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            "restart" => Ok(Fault::Restart),
            "wipe" => Ok(Fault::Wipe),
            other => Err(format!(
                "unknown fault '{other}': expected kill, pause, restart or wipe"
            )),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Restart => "restart",
            Fault::Wipe => "wipe",
        };
        f.write_str(name)
    }
}

/// The nemesis thread; joining it gives one line per fault applied.
pub struct Nemesis(std::thread::JoinHandle<Vec<String>>);

impl Nemesis {
    pub fn join(self) -> Vec<String> {
        self.0
            .join()
            .unwrap_or_else(|_| vec!["the nemesis thread panicked".into()])
    }
}

/// Starts injecting faults for `o.duration_secs`.
pub fn start(cluster: Arc<Mutex<Cluster>>, o: &Options) -> Nemesis {
    let (faults, seed, duration) = (o.faults.clone(), o.seed, o.duration_secs);
    Nemesis(std::thread::spawn(move || {
        run(&cluster, &faults, seed, Duration::from_secs(duration))
    }))
}

fn run(cluster: &Mutex<Cluster>, faults: &[Fault], seed: u64, duration: Duration) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut log = Vec::new();
    let start = Instant::now();
    let ids = cluster.lock().unwrap().ids();
    while !faults.is_empty() {
        std::thread::sleep(Duration::from_millis(rng.gen_range(1_000..3_000)));
        if start.elapsed() >= duration {
            break;
        }
        let fault = faults[rng.gen_range(0..faults.len())];
        let id = ids[rng.gen_range(0..ids.len())];
        let lasts = Duration::from_millis(rng.gen_range(500..2_500));
        let at_ms = start.elapsed().as_millis();
        let result = apply(cluster, fault, id, &ids, lasts);
        let line = match (fault, result) {
            (Fault::Wipe, Ok(())) => format!("{at_ms:>6} ms wipe of every broker"),
            (_, Ok(())) => format!("{at_ms:>6} ms {fault} broker {id} for {lasts:?}"),
            (_, Err(e)) => format!("{at_ms:>6} ms {fault} broker {id} failed: {e}"),
        };
        eprintln!("chaos: {line}");
        log.push(line);
    }
    log
}

fn apply(
    cluster: &Mutex<Cluster>,
    fault: Fault,
    id: u64,
    ids: &[u64],
    lasts: Duration,
) -> Result<(), String> {
    let c = || cluster.lock().unwrap();
    match fault {
        Fault::Kill => c().kill(id)?,
        Fault::Pause => c().pause(id)?,
        Fault::Restart => c().stop(id)?,
        Fault::Wipe => {
            for i in ids {
                c().kill(*i)?;
            }
            for i in ids {
                c().wipe(*i)?;
            }
        }
    }
    std::thread::sleep(lasts);
    c().heal()
}
