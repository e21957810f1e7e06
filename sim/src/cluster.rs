//! One simulated run: N real brokers on turmoil hosts (SimDisk,
//! SimNetwork), keyed acks=all producers and from-the-beginning consumers
//! on client hosts, faults from the seed in a safety phase, then a quiet
//! phase in which everything is healed and consumers catch up.

use crate::checker::{self, Report};
use crate::history::{
    BatchSeen, CorruptRead, History, Outcome, Poll, Probe, Rec, ReplicaCheck, Trace, Write,
};
use crate::nemesis::{broker_host, FaultKind, Nemesis, Request};
use crate::rot::FsHandles;
use crate::{SimDisk, SimNetwork, SpaceHandle};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir::broker::{self, BrokerConfig, Seams};
use weir::client::Connection;
use weir::io::net::NetworkRef;
use weir::io::{DiskRef, FaultConfig, FaultHandle, FaultyDisk};
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;
use weir::types::{BatchBuilder, BatchHeader, Event, RecordBatch, RecordError};

pub(crate) const TOPIC: &str = "sim";
/// The topic an admin client creates mid-run; its partitions follow the
/// first topic's in the history's partition numbering.
pub(crate) const NEW_TOPIC: &str = "sim-new";
/// How long the cluster may take to form and create the topic.
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// A client's wait for any one response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub brokers: u64,
    /// Simulated seconds of the safety phase (faults on).
    pub duration_s: u64,
    /// Simulated seconds the quiet phase may take at most.
    pub quiet_s: u64,
    /// The `unavailable` bound: simulated seconds after the faults stop
    /// within which every partition must acknowledge a write.
    pub available_within_s: u64,
    pub faults: Vec<FaultKind>,
    pub partitions: u32,
    pub replication_factor: u32,
    pub producers: u32,
    pub consumers: u32,
    pub keys: u32,
    /// Produces of batches only a broker may write (Weir's Raft conf change
    /// key in a control batch, see [`hostile`]) sent during the safety
    /// phase. Each must be refused (INVALID_RECORD); one accepted would
    /// fail-stop its partition on every replica, which the `unavailable`
    /// checker then reports, and is reported as `hostile-write-accepted`
    /// in the trace.
    pub hostile_writes: u32,
    /// Bit set of `weir::bugs` to switch on.
    pub bugs: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0,
            brokers: 3,
            duration_s: 20,
            quiet_s: 60,
            available_within_s: 20,
            faults: FaultKind::DEFAULT.to_vec(),
            partitions: 3,
            replication_factor: 3,
            producers: 3,
            consumers: 2,
            keys: 8,
            hostile_writes: 0,
            bugs: 0,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    pub plan: String,
    pub trace: Trace,
    pub history: History,
    pub report: Report,
    /// The run could not complete (setup or the simulation failed).
    pub error: Option<String>,
    pub simulated: Duration,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && !self.report.failed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Setup,
    Safety,
    Quiet,
}

/// The state client hosts and the simulation loop share (turmoil runs
/// every host on this thread).
pub(crate) struct World {
    phase: Phase,
    trace: Trace,
    history: History,
    /// The highest acknowledged offset per partition: consumers stop once
    /// past all of them in the quiet phase.
    acked_max: BTreeMap<u32, i64>,
    /// Producers started (the prober not included).
    producers: u32,
    /// Producers still running: consumers finish only after all have
    /// stopped, so no acknowledgement arrives after the last read.
    producers_left: u32,
    consumers_left: u32,
    /// The broker that acknowledged the latest write: a leader to isolate.
    last_leader: Option<u64>,
    setup_error: Option<String>,
    /// Partitions of the first topic: history partitions below this are
    /// its own, the rest the new topic's.
    base_partitions: u32,
    /// Partitions of the topic created mid-run, once it is usable.
    pub(crate) new_partitions: u32,
    /// The nemesis's requests for the admin client.
    pub(crate) admin_queue: VecDeque<Request>,
    /// Broker-wide tasks that ended (each restarted its broker): any fails
    /// the run.
    task_ends: Vec<String>,
}

impl World {
    /// Partitions over both topics, as numbered in the history.
    pub(crate) fn partitions(&self) -> u32 {
        self.base_partitions + self.new_partitions
    }

    /// The topic and partition of history partition `p`.
    pub(crate) fn locate(&self, p: u32) -> (&'static str, u32) {
        if p < self.base_partitions {
            (TOPIC, p)
        } else {
            (NEW_TOPIC, p - self.base_partitions)
        }
    }
}

pub(crate) type Shared = Rc<RefCell<World>>;

pub(crate) fn now_ms() -> u128 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis()
}

pub(crate) fn note(w: &Shared, event: String) {
    w.borrow_mut().trace.push(now_ms(), event);
}

/// The faults the seed chooses, as `run` will print them in the trace.
pub fn plan(o: &Options) -> String {
    let faults = Nemesis::new(o.seed, o.brokers, &o.faults).plan;
    format!(
        "{faults} group_commit={}ms hold={}ms bursts={}%",
        simulated_sync_ms(o.seed),
        group_commit_hold_ms(o.seed),
        burst_percent(o.seed)
    )
}

/// Runs one seed.
pub fn run(o: &Options) -> RunResult {
    weir::bugs::set(o.bugs);
    crate::align_tokio_task_ids();
    let mut nemesis = Nemesis::new(o.seed, o.brokers, &o.faults);
    let plan = nemesis.plan.to_string();
    let total = SETUP_LIMIT + Duration::from_secs(o.duration_s + o.quiet_s + 10);
    let mut sim = turmoil::Builder::new()
        .rng_seed(o.seed)
        .simulation_duration(total)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(nemesis.plan.max_latency_ms))
        .build();
    let world: Shared = Rc::new(RefCell::new(World {
        phase: Phase::Setup,
        trace: Trace::default(),
        history: History {
            available_within_ms: o.available_within_s * 1000,
            ..History::default()
        },
        acked_max: BTreeMap::new(),
        producers: o.producers,
        // The prober counts as a producer: consumers read past its writes.
        producers_left: o.producers + 1,
        // The consumers, the late consumer, and the replica auditor.
        consumers_left: o.consumers + 2,
        last_leader: None,
        setup_error: None,
        base_partitions: o.partitions,
        new_partitions: 0,
        admin_queue: VecDeque::new(),
        task_ends: Vec::new(),
    }));
    world
        .borrow_mut()
        .trace
        .push(0, format!("seed={} plan: {}", o.seed, self::plan(o)));
    let disks: SharedDisks = Rc::new(RefCell::new(Disks {
        config: nemesis.plan.disk,
        ..Disks::default()
    }));
    for id in 1..=o.brokers {
        let space = disks.borrow_mut().space.entry(id).or_default().clone();
        nemesis.disk_space.insert(id, space);
    }
    add_hosts(&mut sim, o, &world, &disks, &nemesis.fs);
    nemesis.clients = client_hosts(o);
    let error = drive(&mut sim, o, &world, &mut nemesis, &disks);
    let simulated = sim.elapsed();
    drop(sim);
    let w = Rc::try_unwrap(world)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| clone_world(&rc.borrow()));
    let report = checker::check(&w.history);
    RunResult {
        plan,
        trace: w.trace,
        history: w.history,
        report,
        error: error.or(w.setup_error).or_else(|| {
            w.task_ends
                .first()
                .map(|e| format!("a broker-wide task ended: {e}"))
        }),
        simulated,
    }
}

fn clone_world(w: &World) -> World {
    World {
        phase: w.phase,
        trace: w.trace.clone(),
        history: w.history.clone(),
        acked_max: w.acked_max.clone(),
        producers: w.producers,
        producers_left: w.producers_left,
        consumers_left: w.consumers_left,
        last_leader: w.last_leader,
        setup_error: w.setup_error.clone(),
        base_partitions: w.base_partitions,
        new_partitions: w.new_partitions,
        admin_queue: w.admin_queue.clone(),
        task_ends: w.task_ends.clone(),
    }
}

/// The hosts clients run on: one, "clients", whose tasks are every
/// producer, consumer, the auditor, the prober and the admin client (see
/// `run_clients`). Faults that act on a broker's every link (pause, lossy)
/// act on its link to this host too.
fn client_hosts(_o: &Options) -> Vec<String> {
    vec!["clients".to_string()]
}

fn add_hosts(
    sim: &mut turmoil::Sim,
    o: &Options,
    world: &Shared,
    disks: &SharedDisks,
    fs: &FsHandles,
) {
    // `rot` needs the scrub to run within a simulated run; other runs keep
    // the default (an hour: never within a run).
    let scrub_interval_ms = o
        .faults
        .contains(&FaultKind::Rot)
        .then_some(SIM_SCRUB_INTERVAL_MS);
    for id in 1..=o.brokers {
        let (n, seed, disks, w, fs) = (o.brokers, o.seed, disks.clone(), world.clone(), fs.clone());
        sim.host(broker_host(id), move || {
            let c = broker_config(id, n, seed, scrub_interval_ms);
            run_broker(id, c, make_disk(&disks, id, seed), w.clone(), fs.clone())
        });
    }
    let (w, o) = (world.clone(), Rc::new(o.clone()));
    sim.client("clients", async move { run_clients(w, o).await });
}

/// Every client as a task of one client host. One host rather than one per
/// client because turmoil's cost per step grows with the number of hosts
/// (each is ticked, and message delivery scans every link for each): with
/// 3 brokers, 4 hosts instead of 11 make a run about twice as fast. Clients
/// are never cut off by the nemesis, so where they run changes nothing it
/// tests.
async fn run_clients(world: Shared, o: Rc<Options>) -> turmoil::Result {
    use tokio::task::spawn_local;
    let mut tasks = Vec::new();
    let (w, c) = (world.clone(), o.clone());
    tasks.push(spawn_local(async move {
        match setup(&c).await {
            Ok(()) => {
                note(&w, "safety phase".into());
                w.borrow_mut().phase = Phase::Safety;
            }
            Err(e) => {
                note(&w, format!("setup failed: {e}"));
                w.borrow_mut().setup_error = Some(e);
            }
        }
    }));
    for i in 0..o.producers {
        tasks.push(spawn_local(producer(world.clone(), o.clone(), i)));
    }
    tasks.push(spawn_local(auditor(world.clone(), o.clone())));
    if o.hostile_writes > 0 {
        tasks.push(spawn_local(hostile(world.clone(), o.clone())));
    }
    tasks.push(spawn_local(prober(world.clone(), o.clone())));
    tasks.push(spawn_local(crate::admin::admin(world.clone(), o.clone())));
    // The last consumer starts in the quiet phase: a fresh reader of the
    // final logs, which catches records that changed under earlier readers.
    for i in 0..=o.consumers {
        let late = i == o.consumers;
        tasks.push(spawn_local(consumer(world.clone(), o.clone(), i, late)));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Steps the simulation through the phases; faults come from here.
fn drive(
    sim: &mut turmoil::Sim,
    o: &Options,
    world: &Shared,
    nemesis: &mut Nemesis,
    disks: &SharedDisks,
) -> Option<String> {
    let mut safety_end = None;
    let mut quiet_end = None;
    loop {
        let finished = match sim.step() {
            Ok(f) => f,
            Err(e) => return Some(format!("simulation failed: {e}")),
        };
        let now = sim.elapsed();
        let now_ms = now.as_millis() as u64;
        let phase = world.borrow().phase;
        match phase {
            Phase::Setup if world.borrow().setup_error.is_some() => return None,
            Phase::Setup if now > SETUP_LIMIT => return Some("setup timed out".into()),
            Phase::Setup => {}
            Phase::Safety => {
                if safety_end.is_none() {
                    disks_on(disks);
                }
                let end = *safety_end.get_or_insert(now + Duration::from_secs(o.duration_s));
                let mut w = world.borrow_mut();
                if now < end {
                    nemesis.leader = w.last_leader;
                    nemesis.partitions = w.partitions();
                    nemesis.tick(sim, now_ms, &mut w.trace);
                    w.admin_queue.extend(nemesis.requests.drain(..));
                } else {
                    start_quiet(sim, o, &mut w, nemesis, disks, now_ms);
                    quiet_end = Some(now + Duration::from_secs(o.quiet_s));
                }
            }
            Phase::Quiet => {
                if world.borrow().consumers_left == 0 {
                    return None;
                }
                if quiet_end.is_some_and(|e| now > e) {
                    let mut w = world.borrow_mut();
                    w.trace.push(now.as_millis(), "quiet phase timed out");
                    return None;
                }
            }
        }
        if finished {
            return None;
        }
    }
}

/// Ends the safety phase: every fault healed, producers told to stop.
fn start_quiet(
    sim: &mut turmoil::Sim,
    o: &Options,
    w: &mut World,
    nemesis: &mut Nemesis,
    disks: &SharedDisks,
    now_ms: u64,
) {
    nemesis.heal(sim, now_ms, &mut w.trace);
    if let Some(why) = disks_off(disks) {
        // Replicas stopped by a disk error resume on restart.
        w.trace.push(now_ms as u128, why);
        for id in 1..=o.brokers {
            sim.bounce(broker_host(id));
        }
        w.trace.push(now_ms as u128, "restarted every broker");
    }
    w.phase = Phase::Quiet;
    w.trace.push(now_ms as u128, "quiet phase");
}

/// Simulated time each group commit takes, 0-3 ms by seed (printed with
/// the plan): the driver appends, rolls segments and answers other groups
/// meanwhile, as on a real disk.
fn simulated_sync_ms(seed: u64) -> u64 {
    seed % 4
}

/// How long a group commit may be held after the one before it started
/// (`DriverConfig::group_commit_gap_us`), by seed: 4 ms in one seed of
/// three, off (the default) in the others.
/// The simulated load is far below the default busy rate, so when on the
/// broker counts as busy whenever it appended anything: the hold, and the
/// wake that ends it, run whenever it is on. Drawn from `seed / 12`,
/// so that it varies independently of the group commit time (`seed % 4`)
/// and the bursts (`seed / 4 % 3`).
fn group_commit_hold_ms(seed: u64) -> u64 {
    [0, 0, 4][(seed / 12 % 3) as usize]
}

/// The scrub's interval between passes in runs with `rot` (the default
/// rate, 16 MiB/s, reads a simulated log whole in one step).
const SIM_SCRUB_INTERVAL_MS: u64 = 2_000;

fn broker_config(id: u64, n: u64, seed: u64, scrub_interval_ms: Option<u64>) -> BrokerConfig {
    let peers: BTreeMap<u64, String> = (1..=n)
        .map(|i| (i, format!("{}:7401", broker_host(i))))
        .collect();
    let mut c = BrokerConfig::single(
        id,
        PathBuf::from("/data"),
        &format!("{}:7400", broker_host(id)),
        &peers[&id],
    );
    c.peers = peers;
    c.driver.tick_ms = 20;
    // Election jitter differs per broker and per seed.
    c.driver.seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id;
    c.driver.simulated_sync_ms = simulated_sync_ms(seed);
    c.driver.group_commit_gap_us = group_commit_hold_ms(seed) * 1_000;
    c.driver.group_commit_busy_bytes_per_sec = 1;
    if let Some(ms) = scrub_interval_ms {
        c.scrub_interval_ms = ms;
        c.scrub_bytes_per_sec = weir::broker::SCRUB_BYTES_PER_SEC_SUGGESTED;
    }
    c
}

/// Disk faults, shared by the broker hosts (which wrap their disk at each
/// start) and the simulation loop (which switches them off for the quiet
/// phase).
#[derive(Default)]
struct Disks {
    config: Option<FaultConfig>,
    /// Off during setup, on in the safety phase.
    on: bool,
    starts: u64,
    handles: Vec<FaultHandle>,
    /// Each broker's reported disk space, kept across its restarts (the
    /// `full` fault sets it).
    space: BTreeMap<u64, SpaceHandle>,
}

type SharedDisks = Rc<RefCell<Disks>>;

/// The disk for one start of broker `id`: faulty while faults are on.
fn make_disk(disks: &SharedDisks, id: u64, seed: u64) -> DiskRef {
    let mut d = disks.borrow_mut();
    d.starts += 1;
    let space = d.space.entry(id).or_default().clone();
    let Some(config) = d.config else {
        return Arc::new(SimDisk::with_space(space));
    };
    let disk_seed = seed ^ (id << 48) ^ d.starts;
    let faulty = FaultyDisk::new(Arc::new(SimDisk::with_space(space)), config, disk_seed);
    faulty.set_enabled(d.on);
    d.handles.push(faulty.handle());
    Arc::new(faulty)
}

/// Switches disk faults on for the safety phase.
fn disks_on(disks: &SharedDisks) {
    let mut d = disks.borrow_mut();
    if d.config.is_some() {
        d.on = true;
        for h in &d.handles {
            h.set_enabled(true);
        }
    }
}

/// Switches disk faults off for good and says how many were injected.
fn disks_off(disks: &SharedDisks) -> Option<String> {
    let mut d = disks.borrow_mut();
    d.config.take()?;
    d.on = false;
    let mut total = 0;
    for h in &d.handles {
        h.set_enabled(false);
        total += h.stats().total();
    }
    Some(format!("disk faults off after {total} injected"))
}

async fn run_broker(
    id: u64,
    config: BrokerConfig,
    disk: DiskRef,
    world: Shared,
    fs: FsHandles,
) -> turmoil::Result {
    // The host's filesystem, for the `rot` fault (the same one across
    // restarts; taken again at each start all the same).
    fs.borrow_mut().insert(id, turmoil::fs::FsHandle::current());
    let seams = Seams {
        disk,
        net: Arc::new(SimNetwork::new()),
        clock: Arc::new(crate::sim_clock()),
        // Synchronous and silent: slog-async threads would break determinism.
        logger: slog::Logger::root(slog::Discard, slog::o!()),
    };
    loop {
        // A start can fail on an injected disk error; retry as a supervisor
        // would, rather than failing the whole simulation.
        let mut running = loop {
            match broker::start(config.clone(), seams.clone()).await {
                Ok(r) => break r,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        // A broker-wide task that ends (a panic in the driver, say) ends the
        // broker, as `weir broker` exits on it; systemd would start it again,
        // and so does this loop, so that the run goes on and its checkers see
        // what follows. The end fails the run all the same (see `run`):
        // no broker task may end, bug or not.
        let ended = running.ended().await;
        note(&world, format!("broker {id}: {ended}; restarting it"));
        world
            .borrow_mut()
            .task_ends
            .push(format!("broker {id}: {ended}"));
        running.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Cached connections to brokers, dropped when a request fails. A clone
/// shares them: requests of concurrent tasks pipeline on one connection
/// per broker, as a real client's do.
#[derive(Default, Clone)]
pub(crate) struct Conns {
    open: Rc<RefCell<BTreeMap<u64, Rc<Connection>>>>,
    /// Held while connecting: tasks sharing these connections open one
    /// at a time, so a burst whose connection broke does not send a SYN
    /// per write (more than a broker's accept queue holds in turmoil).
    connecting: Rc<tokio::sync::Mutex<()>>,
}

/// Why a request got no answer.
pub(crate) enum Ask {
    /// Could not connect: the request was never sent.
    NotSent,
    /// Sent; no answer (timeout, broken connection).
    NoAnswer,
}

impl Conns {
    /// The connection to broker `id`, opened if there is none.
    pub(crate) async fn connection(&self, id: u64) -> Result<Rc<Connection>, Ask> {
        if let Some(c) = self.open.borrow().get(&id) {
            return Ok(c.clone());
        }
        let _connecting = self.connecting.lock().await;
        // Another task may have connected while this one waited.
        if let Some(c) = self.open.borrow().get(&id) {
            return Ok(c.clone());
        }
        let net: NetworkRef = Arc::new(SimNetwork::new());
        let addr = format!("{}:7400", broker_host(id));
        let c = Connection::connect(&net, &addr)
            .await
            .map_err(|_| Ask::NotSent)?;
        let c = Rc::new(c);
        self.open.borrow_mut().insert(id, c.clone());
        Ok(c)
    }

    pub(crate) async fn ask(&mut self, id: u64, body: Req) -> Result<Resp, Ask> {
        let c = self.connection(id).await?;
        match c.request(body, REQUEST_TIMEOUT).await {
            Ok(r) => r.body.ok_or(Ask::NoAnswer),
            Err(_) => {
                let mut open = self.open.borrow_mut();
                // Only this connection: a task may have replaced it already.
                if open.get(&id).is_some_and(|o| Rc::ptr_eq(o, &c)) {
                    open.remove(&id);
                }
                Err(Ask::NoAnswer)
            }
        }
    }
}

/// Waits for the cluster, creates the topic and waits for its leaders.
async fn setup(o: &Options) -> Result<(), String> {
    let mut conns = Conns::default();
    let deadline = tokio::time::Instant::now() + SETUP_LIMIT;
    let create = Req::CreateTopic(CreateTopicRequest {
        name: TOPIC.into(),
        partitions: o.partitions,
        replication_factor: o.replication_factor,
        configs: Default::default(),
    });
    let mut created = false;
    while tokio::time::Instant::now() < deadline {
        for id in 1..=o.brokers {
            if !created {
                created = matches!(conns.ask(id, create.clone()).await,
                    Ok(Resp::Admin(a)) if a.error.as_ref().is_none_or(|e| e.code == ErrorCode::TopicAlreadyExists as i32));
            }
            if created && all_led(&mut conns, id, o.partitions).await {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the topic never got a leader for every partition".into())
}

async fn all_led(conns: &mut Conns, id: u64, partitions: u32) -> bool {
    let req = Req::Metadata(MetadataRequest {
        topics: vec![TOPIC.into()],
    });
    let Ok(Resp::Metadata(m)) = conns.ask(id, req).await else {
        return false;
    };
    m.topics.first().is_some_and(|t| {
        t.partitions.len() == partitions as usize && t.partitions.iter().all(|p| p.leader_id != 0)
    })
}

pub(crate) fn phase(w: &Shared) -> Phase {
    w.borrow().phase
}

pub(crate) async fn wait_for(w: &Shared, p: Phase) {
    while phase(w) != p {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn batch(key: &str, value: &str) -> RecordBatch {
    let mut b = BatchBuilder::new();
    b.push(&Event {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: crate::SIM_EPOCH_MS,
        headers: vec![],
    });
    b.build()
}

/// A keyed producer (acks=all, or acks=1 for some producers): one record per
/// write, each value unique, retried (same value) on other brokers until
/// acknowledged or 4 attempts. Some turns (by seed, see [`burst_percent`])
/// are a burst: many writes of one key at once, pipelined on the
/// producer's connections, so that a leader appends many entries while a group commit
/// is under way and segments roll under unsynced appends.
async fn producer(w: Shared, o: Rc<Options>, i: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ (0x7072_6f64 + i as u64));
    let mut conns = Conns::default();
    let mut leader: BTreeMap<u32, u64> = BTreeMap::new();
    let burst_percent = burst_percent(o.seed);
    wait_for(&w, Phase::Safety).await;
    let mut n = 0u64;
    while phase(&w) == Phase::Safety {
        let k = rng.gen_range(0..o.keys);
        let partition = pick_partition(&w, &mut rng, k);
        let mut to = *leader
            .entry(partition)
            .or_insert_with(|| rng.gen_range(1..=o.brokers));
        let burst = burst_percent > 0 && rng.gen_ratio(burst_percent, 100);
        if burst {
            let writes = rng.gen_range(BURST_WRITES_MIN..=BURST_WRITES_MAX);
            // Opened first, so the burst's writes pipeline on it rather than
            // each opening its own.
            let _ = conns.connection(to).await;
            let mut members = Vec::new();
            for _ in 0..writes {
                let (w, o, seed) = (w.clone(), o.clone(), rng.gen::<u64>());
                let (key, value) = (format!("k{k}"), format!("p{i}-{n}"));
                n += 1;
                let mut conns = conns.clone();
                members.push(tokio::task::spawn_local(async move {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let mut to = to;
                    let write = (partition, key.as_str(), value.as_str());
                    write_retrying(&w, &o, i, &mut conns, &mut rng, &mut to, write).await;
                    to
                }));
            }
            for m in members {
                // A member cannot panic but through a bug in the simulator,
                // which the run's other checks then show.
                if let Ok(t) = m.await {
                    to = t;
                }
            }
        } else {
            let (key, value) = (format!("k{k}"), format!("p{i}-{n}"));
            n += 1;
            let write = (partition, key.as_str(), value.as_str());
            write_retrying(&w, &o, i, &mut conns, &mut rng, &mut to, write).await;
        }
        leader.insert(partition, to);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
    }
    w.borrow_mut().producers_left -= 1;
}

/// Writes in one burst, at least and at most.
const BURST_WRITES_MIN: u32 = 4;
const BURST_WRITES_MAX: u32 = 32;

/// Percent of a producer's turns that are bursts: 0, 10 or 30 by seed
/// (printed with the plan).
fn burst_percent(seed: u64) -> u32 {
    [0, 10, 30][(seed / 4 % 3) as usize]
}

/// One write (partition, key, value), tried on `to` and, until
/// acknowledged, up to 3 more times on the leader a NOT_LEADER answer
/// named or a random broker (left in `to`).
async fn write_retrying(
    w: &Shared,
    o: &Options,
    i: u32,
    conns: &mut Conns,
    rng: &mut ChaCha8Rng,
    to: &mut u64,
    (partition, key, value): (u32, &str, &str),
) {
    for _ in 0..4 {
        let at = begin_write(w, i, partition, key, value);
        let acks = if acks_all(i, o.producers) {
            Acks::All
        } else {
            Acks::Leader
        };
        let at_p = w.borrow().locate(partition);
        let sent_to = *to;
        let (outcome, hint) = produce_once(conns, sent_to, at_p, key, value, acks).await;
        let acked = matches!(outcome, Outcome::Acked { .. });
        if !acked {
            *to = hint.unwrap_or_else(|| rng.gen_range(1..=o.brokers));
        }
        finish_write(w, at, sent_to, outcome);
        if acked || phase(w) != Phase::Safety {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..100))).await;
    }
}

/// Key `k`'s partition: in the first topic, or once the new topic is
/// usable, in either (half of the writes each).
fn pick_partition(w: &Shared, rng: &mut ChaCha8Rng, k: u32) -> u32 {
    let (base, new) = {
        let wm = w.borrow();
        (wm.base_partitions, wm.new_partitions)
    };
    if new > 0 && rng.gen_bool(0.5) {
        base + k % new
    } else {
        k % base
    }
}

/// At the end of the quiet phase (producers done), reads every replica of
/// every partition up to the lowest high watermark among them and records
/// where their bytes differ (the `replica-divergence` check).
async fn auditor(w: Shared, o: Rc<Options>) {
    let mut conns = Conns::default();
    wait_for(&w, Phase::Quiet).await;
    // Bounded by the quiet phase: the run ends when it does.
    while w.borrow().producers_left > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let partitions = w.borrow().partitions();
    for partition in 0..partitions {
        let at = w.borrow().locate(partition);
        let check = audit_partition(&mut conns, &o, partition, at).await;
        note(
            &w,
            format!(
                "replicas of partition {partition} compared below {}: {} differ, {} unread",
                check.up_to,
                check.differing.len(),
                check.unread.len()
            ),
        );
        w.borrow_mut().history.replica_checks.push(check);
    }
    w.borrow_mut().consumers_left -= 1;
}

async fn audit_partition(
    conns: &mut Conns,
    o: &Options,
    partition: u32,
    at: (&str, u32),
) -> ReplicaCheck {
    let mut copies: Vec<(u64, i64, Vec<Bytes>)> = Vec::new();
    let mut unread = Vec::new();
    for id in 1..=o.brokers {
        // A replica may be restarting: try a few times.
        let mut copy = None;
        for _ in 0..20 {
            copy = read_replica(conns, id, at).await;
            if copy.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match copy {
            Some((hw, batches)) => copies.push((id, hw, batches)),
            None => unread.push(id),
        }
    }
    let up_to = copies.iter().map(|(_, hw, _)| *hw).min().unwrap_or(0);
    let cut = |batches: &[Bytes]| -> Vec<u8> {
        batches
            .iter()
            .take_while(|b| {
                RecordBatch::parse((*b).clone(), usize::MAX).is_ok_and(|b| b.next_offset() <= up_to)
            })
            .flat_map(|b| b.iter().copied())
            .collect()
    };
    let mut differing = Vec::new();
    if let Some((first, _, base)) = copies.first() {
        let base = cut(base);
        for (id, _, batches) in &copies[1..] {
            let other = cut(batches);
            if other != base {
                let at = base
                    .iter()
                    .zip(&other)
                    .position(|(a, b)| a != b)
                    .unwrap_or(base.len().min(other.len()));
                differing.push(format!(
                    "broker {id} differs from broker {first} at byte {at} ({} vs {} bytes)",
                    other.len(),
                    base.len()
                ));
            }
        }
    }
    ReplicaCheck {
        partition,
        up_to,
        differing,
        unread,
    }
}

/// Every batch of one broker's replica up to its high watermark, and that
/// high watermark; `None` if it cannot be read now.
async fn read_replica(
    conns: &mut Conns,
    id: u64,
    (topic, partition): (&str, u32),
) -> Option<(i64, Vec<Bytes>)> {
    let (mut offset, mut batches, mut hw) = (0i64, Vec::new(), 0i64);
    // Bounded: each pass moves `offset` past at least one batch.
    for _ in 0..100_000 {
        let req = Req::Fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 1 << 20,
                replica_read: true,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
        });
        let Ok(Resp::Fetch(f)) = conns.ask(id, req).await else {
            return None;
        };
        let p = f.partitions.into_iter().next()?;
        if p.error.is_some() {
            return None;
        }
        hw = p.high_watermark;
        let mut bytes = p.records;
        if bytes.is_empty() {
            return Some((hw, batches));
        }
        while !bytes.is_empty() {
            let h = weir::types::BatchHeader::parse(&bytes, usize::MAX).ok()?;
            let b = bytes.split_to(h.size_bytes().min(bytes.len()));
            offset = h.next_offset();
            batches.push(b);
        }
    }
    Some((hw, batches))
}

/// In the quiet phase, writes to every partition until one write is
/// acknowledged and records how long after the faults stopped that took
/// (the `unavailable` check). Its writes are checked like any producer's.
async fn prober(w: Shared, o: Rc<Options>) {
    let mut conns = Conns::default();
    wait_for(&w, Phase::Quiet).await;
    let start = now_ms();
    // Give up at half the quiet phase: consumers need the rest.
    let give_up = start + u128::from(o.quiet_s) * 500;
    let partitions = w.borrow().partitions();
    for partition in 0..partitions {
        let at_p = w.borrow().locate(partition);
        let key = format!("probe{partition}");
        let (mut to, mut n, mut acked_after_ms) = (1u64, 0u32, None);
        while now_ms() < give_up {
            let value = format!("probe-{partition}-{n}");
            n += 1;
            let at = begin_write(&w, o.producers, partition, &key, &value);
            let (outcome, hint) = produce_once(&mut conns, to, at_p, &key, &value, Acks::All).await;
            let acked = matches!(outcome, Outcome::Acked { .. });
            finish_write(&w, at, to, outcome);
            if acked {
                acked_after_ms = Some((now_ms() - start) as u64);
                break;
            }
            to = hint.unwrap_or(to % o.brokers + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        note(
            &w,
            format!("probe partition {partition}: acknowledged after {acked_after_ms:?} ms"),
        );
        let probe = Probe {
            partition,
            acked_after_ms,
        };
        w.borrow_mut().history.probes.push(probe);
    }
    w.borrow_mut().producers_left -= 1;
}

/// Whether producer `i` of `producers` writes with acks=all: all do but the
/// last of several, which writes with acks=1 (its losses in a leader change
/// are allowed, and reported apart as `lost-write-acks1`). The prober (index
/// `producers`) uses acks=all.
fn acks_all(i: u32, producers: u32) -> bool {
    producers < 2 || i + 1 != producers
}

/// Records an attempt as it starts, as `Unknown`: if the run ends before
/// it is answered, that is what it stays.
fn begin_write(w: &Shared, i: u32, partition: u32, key: &str, value: &str) -> usize {
    let mut wm = w.borrow_mut();
    let acks_all = acks_all(i, wm.producers);
    wm.history.writes.push(Write {
        producer: i,
        acks_all,
        partition,
        key: key.into(),
        value: value.into(),
        outcome: Outcome::Unknown,
    });
    wm.history.writes.len() - 1
}

fn finish_write(w: &Shared, at: usize, to: u64, outcome: Outcome) {
    let mut wm = w.borrow_mut();
    let Some(write) = wm.history.writes.get_mut(at) else {
        return;
    };
    write.outcome = outcome.clone();
    let (p, line) = (
        write.partition,
        format!(
            "p{} produce {}:{}={} via b{to} -> {outcome:?}",
            write.producer, write.partition, write.key, write.value
        ),
    );
    wm.trace.push(now_ms(), line);
    if let Outcome::Acked { offset } = outcome {
        wm.last_leader = Some(to);
        let m = wm.acked_max.entry(p).or_insert(offset);
        *m = (*m).max(offset);
    }
}

/// One attempt; also returns the leader a NOT_LEADER answer named.
async fn produce_once(
    conns: &mut Conns,
    to: u64,
    (topic, partition): (&str, u32),
    key: &str,
    value: &str,
    acks: Acks,
) -> (Outcome, Option<u64>) {
    let req = Req::Produce(ProduceRequest {
        topic: topic.into(),
        partition,
        acks: acks as i32,
        batch: batch(key, value).as_bytes().clone(),
        timeout_ms: 2000,
    });
    match conns.ask(to, req).await {
        Err(Ask::NotSent) => (Outcome::Failed, None),
        Err(Ask::NoAnswer) => (Outcome::Unknown, None),
        Ok(Resp::Produce(p)) => match p.error {
            None => (
                Outcome::Acked {
                    offset: p.base_offset,
                },
                None,
            ),
            Some(e) => {
                let hint = (e.leader_id != 0).then_some(e.leader_id);
                (error_outcome(e.code), hint)
            }
        },
        Ok(_) => (Outcome::Unknown, None),
    }
}

/// A client that writes what only a broker may: `hostile_writes` control
/// batches carrying Weir's Raft conf change key (with a value that is no
/// conf change), one every 200 ms of the safety phase, each to the next
/// partition of the first topic on the next broker (every broker validates
/// before it checks leadership). Outcomes go to the trace; the checkers
/// see the damage an accepted one does.
async fn hostile(w: Shared, o: Rc<Options>) {
    let mut conns = Conns::default();
    wait_for(&w, Phase::Safety).await;
    let partitions = w.borrow().base_partitions;
    for n in 0..o.hostile_writes {
        let at_p = w.borrow().locate(n % partitions.max(1));
        let to = u64::from(n) % o.brokers + 1;
        let batch = BatchBuilder::control(
            weir::types::ControlType::RaftConfChange,
            Bytes::from_static(b"not a conf change"),
            crate::SIM_EPOCH_MS,
        );
        let req = Req::Produce(ProduceRequest {
            topic: at_p.0.into(),
            partition: at_p.1,
            acks: Acks::All as i32,
            batch: batch.as_bytes().clone(),
            timeout_ms: 2000,
        });
        let outcome = match conns.ask(to, req).await {
            Ok(Resp::Produce(p)) => match p.error {
                Some(e) if e.code == ErrorCode::InvalidRecord as i32 => "refused".to_string(),
                Some(e) => format!("answered {:?}", ErrorCode::try_from(e.code)),
                None => format!("hostile-write-accepted at offset {}", p.base_offset),
            },
            Ok(_) | Err(_) => "no answer".to_string(),
        };
        note(
            &w,
            format!(
                "hostile control batch to {}/{} on broker {to}: {outcome}",
                at_p.0, at_p.1
            ),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Errors a broker returns only before proposing are definite failures.
/// NOT_LEADER and LEADER_NOT_AVAILABLE are not: a leader that steps down
/// fails its waiting writers with them, and their entries may still commit.
fn error_outcome(code: i32) -> Outcome {
    let definite = [
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::InvalidRequest,
        ErrorCode::CorruptMessage,
        ErrorCode::MessageTooLarge,
        // Both answered before anything is proposed.
        ErrorCode::OutOfSpace,
        ErrorCode::BrokerNotReady,
        ErrorCode::InvalidRecord,
    ];
    if definite.iter().any(|c| *c as i32 == code) {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

/// Reads every partition from offset 0, following the high watermark,
/// until (in the quiet phase) it is past every acknowledged offset.
async fn consumer(w: Shared, o: Rc<Options>, c: u32, late: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ (0x636f_6e73 + c as u64));
    let mut conns = Conns::default();
    let mut leader: BTreeMap<u32, u64> = BTreeMap::new();
    let mut pos: BTreeMap<u32, i64> = BTreeMap::new();
    wait_for(&w, if late { Phase::Quiet } else { Phase::Safety }).await;
    loop {
        let mut progressed = false;
        // The new topic's partitions join once it is usable.
        let partitions = w.borrow().partitions();
        for p in 0..partitions {
            let to = *leader
                .entry(p)
                .or_insert_with(|| rng.gen_range(1..=o.brokers));
            let from = *pos.entry(p).or_insert(0);
            let at = w.borrow().locate(p);
            match fetch_once(&mut conns, to, at, from).await {
                Ok((batches, corrupt)) => {
                    if let Some(base) = corrupt {
                        // Served damaged: the checker fails the run. Read
                        // on from another broker rather than spin here.
                        note_corrupt_read(&w, c, to, p, base);
                        leader.insert(p, rng.gen_range(1..=o.brokers));
                    }
                    if let Some(last) = batches.last() {
                        pos.insert(p, last.last + 1);
                        progressed = true;
                        record_poll(&w, c, to, p, from, batches);
                    }
                }
                Err(hint) => {
                    leader.insert(p, hint.unwrap_or_else(|| rng.gen_range(1..=o.brokers)));
                }
            }
        }
        if caught_up(&w, &pos) {
            break;
        }
        if !progressed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    note(&w, format!("c{c} caught up at {pos:?}"));
    w.borrow_mut().consumers_left -= 1;
}

fn caught_up(w: &Shared, pos: &BTreeMap<u32, i64>) -> bool {
    let wm = w.borrow();
    wm.phase == Phase::Quiet
        && wm.producers_left == 0
        && wm
            .acked_max
            .iter()
            .all(|(p, max)| pos.get(p).is_some_and(|at| at > max))
}

/// Records a damaged batch served to consumer `c`, once per broker and
/// batch (a consumer sent back to the same broker meets it again).
fn note_corrupt_read(w: &Shared, c: u32, to: u64, partition: u32, base: i64) {
    let read = CorruptRead {
        consumer: c,
        partition,
        broker: to,
        base,
    };
    let mut wm = w.borrow_mut();
    if wm.history.corrupt_reads.contains(&read) {
        return;
    }
    let line = format!("c{c} poll {partition} via b{to}: batch at {base} fails its CRC");
    wm.trace.push(now_ms(), line);
    wm.history.corrupt_reads.push(read);
}

fn record_poll(w: &Shared, c: u32, to: u64, partition: u32, from: i64, batches: Vec<BatchSeen>) {
    let mut line = format!("c{c} poll {partition}@{from} via b{to}:");
    for b in &batches {
        if b.control {
            line.push_str(&format!(" [{}..={} control]", b.base, b.last));
        }
        for r in &b.records {
            line.push_str(&format!(" {}:{}={}", r.offset, r.key, r.value));
        }
    }
    let mut wm = w.borrow_mut();
    wm.trace.push(now_ms(), line);
    wm.history.polls.push(Poll {
        consumer: c,
        partition,
        from,
        batches,
    });
}

/// One fetch: the batches reaching past `from` (and the base offset of a
/// batch that failed its CRC, where they stop), or the leader to try next.
async fn fetch_once(
    conns: &mut Conns,
    to: u64,
    (topic, partition): (&str, u32),
    from: i64,
) -> Result<(Vec<BatchSeen>, Option<i64>), Option<u64>> {
    let req = Req::Fetch(FetchRequest {
        partitions: vec![FetchPartition {
            topic: topic.into(),
            partition,
            offset: from,
            max_bytes: 64 * 1024,
            replica_read: false,
        }],
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 64 * 1024,
    });
    let Ok(Resp::Fetch(f)) = conns.ask(to, req).await else {
        return Err(None);
    };
    let Some(part) = f.partitions.into_iter().next() else {
        return Err(None);
    };
    if let Some(e) = part.error {
        // Out of range (a reader ahead of this leader) keeps the broker.
        if e.code == ErrorCode::OffsetOutOfRange as i32 {
            return Ok((vec![], None));
        }
        return Err((e.leader_id != 0).then_some(e.leader_id));
    }
    Ok(decode(part.records, from))
}

/// Splits fetched bytes into batches, dropping those wholly before `from`
/// and anything undecodable (a torn tail is not an answer to check). A
/// whole batch whose CRC fails ends the list too, and its base offset is
/// returned: a broker served damaged data.
fn decode(mut bytes: Bytes, from: i64) -> (Vec<BatchSeen>, Option<i64>) {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Ok(h) = BatchHeader::parse(&bytes, usize::MAX) else {
            break;
        };
        if h.size_bytes() > bytes.len() {
            break;
        }
        let b = match RecordBatch::parse(bytes.split_to(h.size_bytes()), usize::MAX) {
            Ok(b) => b,
            Err(RecordError::CrcMismatch { .. }) => return (out, Some(h.base_offset)),
            Err(_) => break,
        };
        let last = b.next_offset() - 1;
        if last < from {
            continue;
        }
        let records = if b.is_control() {
            vec![]
        } else {
            b.records()
                .unwrap_or_default()
                .into_iter()
                .map(|r| Rec {
                    offset: r.offset,
                    key: text(r.event.key.as_deref()),
                    value: text(r.event.value.as_deref()),
                })
                .collect()
        };
        out.push(BatchSeen {
            base: b.base_offset(),
            last,
            control: b.is_control(),
            records,
        });
    }
    (out, None)
}

fn text(b: Option<&[u8]>) -> String {
    String::from_utf8_lossy(b.unwrap_or_default()).into_owned()
}
