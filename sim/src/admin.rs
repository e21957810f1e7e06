//! The admin client of a simulated run: mid-run it creates a second topic,
//! which producers, consumers and checkers then use too, and shrinks the
//! first topic's `segment.bytes` (segments roll under traffic); all along
//! it carries out the nemesis's leadership transfers.

use crate::cluster::{note, now_ms, phase, wait_for, Conns, Options, Phase, Shared};
use crate::cluster::{NEW_TOPIC, TOPIC};
use crate::nemesis::Request;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::rc::Rc;
use std::time::Duration;
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;

/// How long a transfer waits for the target to take over.
const TRANSFER_TIMEOUT_MS: u32 = 2000;

/// Where the topic creation stands: one request per step, so that
/// transfers are not held up behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Creating,
    Leaders,
    Altering,
    Done,
}

/// What the seed chose for the admin actions.
struct AdminPlan {
    /// Simulated ms after the safety phase starts.
    create_at_ms: u128,
    partitions: u32,
    segment_bytes: u64,
}

/// Runs the admin actions of the safety phase.
pub(crate) async fn admin(w: Shared, o: Rc<Options>) {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x6164_6d69_6e00);
    let plan = AdminPlan {
        create_at_ms: u128::from(rng.gen_range(o.duration_s * 200..=o.duration_s * 600)),
        partitions: rng.gen_range(1..=3),
        segment_bytes: rng.gen_range(4096..65536),
    };
    let mut conns = Conns::default();
    wait_for(&w, Phase::Safety).await;
    let start = now_ms();
    let (mut stage, mut to) = (Stage::Waiting, 1u64);
    while phase(&w) == Phase::Safety {
        let next = w.borrow_mut().admin_queue.pop_front();
        if let Some(Request::Transfer { partition, pick }) = next {
            let outcome = transfer(&w, &o, &mut conns, partition, pick).await;
            note(
                &w,
                format!("admin transfer partition {partition}: {outcome}"),
            );
            continue;
        }
        if let Some(Request::Forge {
            broker,
            claim,
            kind,
            group,
        }) = next
        {
            let outcome = crate::forge::send(broker, claim, kind, group).await;
            note(&w, format!("admin forge to b{broker}: {outcome}"));
            continue;
        }
        if stage == Stage::Waiting && now_ms() >= start + plan.create_at_ms {
            stage = Stage::Creating;
        }
        if stage != Stage::Waiting && stage != Stage::Done {
            let done = step(&w, &o, &plan, &mut conns, stage, to).await;
            match done {
                Ok(()) => stage = next_stage(stage),
                // The controller or another broker to ask next.
                Err(hint) => to = hint.unwrap_or(to % o.brokers + 1),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn next_stage(s: Stage) -> Stage {
    match s {
        Stage::Waiting => Stage::Creating,
        Stage::Creating => Stage::Leaders,
        Stage::Leaders => Stage::Altering,
        Stage::Altering | Stage::Done => Stage::Done,
    }
}

/// One request of the topic creation's current stage on broker `to`.
/// `Err` carries the broker a NOT_CONTROLLER answer named.
async fn step(
    w: &Shared,
    o: &Options,
    plan: &AdminPlan,
    conns: &mut Conns,
    stage: Stage,
    to: u64,
) -> Result<(), Option<u64>> {
    match stage {
        Stage::Creating => {
            let req = Req::CreateTopic(CreateTopicRequest {
                name: NEW_TOPIC.into(),
                partitions: plan.partitions,
                replication_factor: o.replication_factor,
                configs: Default::default(),
            });
            admin_request(conns, to, req, ErrorCode::TopicAlreadyExists).await?;
            let line = format!(
                "admin created topic {NEW_TOPIC} ({} partitions) via b{to}",
                plan.partitions
            );
            note(w, line);
        }
        Stage::Leaders => {
            if !all_led(conns, to, plan.partitions).await {
                return Err(None);
            }
            let mut wm = w.borrow_mut();
            let first = wm.partitions();
            wm.new_partitions = plan.partitions;
            let last = first + plan.partitions - 1;
            drop(wm);
            let line = format!("admin topic {NEW_TOPIC} in use: partitions {first}..={last} here");
            note(w, line);
        }
        Stage::Altering => {
            let req = Req::AlterConfigs(AlterConfigsRequest {
                topic: TOPIC.into(),
                set: [("segment.bytes".to_string(), plan.segment_bytes.to_string())].into(),
                delete: vec![],
            });
            admin_request(conns, to, req, ErrorCode::None).await?;
            let line = format!("admin set {TOPIC} segment.bytes={}", plan.segment_bytes);
            note(w, line);
        }
        Stage::Waiting | Stage::Done => {}
    }
    Ok(())
}

/// An admin request that succeeds, or fails only with `fine`.
async fn admin_request(
    conns: &mut Conns,
    to: u64,
    req: Req,
    fine: ErrorCode,
) -> Result<(), Option<u64>> {
    match conns.ask(to, req).await {
        Ok(Resp::Admin(a)) => match a.error {
            None => Ok(()),
            Some(e) if e.code == fine as i32 => Ok(()),
            Some(e) => Err((e.leader_id != 0).then_some(e.leader_id)),
        },
        _ => Err(None),
    }
}

/// Whether broker `to` knows a leader for every partition of the new topic.
async fn all_led(conns: &mut Conns, to: u64, partitions: u32) -> bool {
    let req = Req::Metadata(MetadataRequest {
        topics: vec![NEW_TOPIC.into()],
    });
    let Ok(Resp::Metadata(m)) = conns.ask(to, req).await else {
        return false;
    };
    m.topics.first().is_some_and(|t| {
        t.error.is_none()
            && t.partitions.len() == partitions as usize
            && t.partitions.iter().all(|p| p.leader_id != 0)
    })
}

/// Moves history partition `partition`'s leadership from its leader to
/// another replica (the `pick`-th of the others); says what happened.
async fn transfer(w: &Shared, o: &Options, conns: &mut Conns, partition: u32, pick: u64) -> String {
    let (topic, local) = w.borrow().locate(partition);
    let Some((leader, replicas)) = leader_and_replicas(conns, o, topic, local).await else {
        return "no leader known; skipped".into();
    };
    let others: Vec<u64> = replicas.into_iter().filter(|r| *r != leader).collect();
    let Some(target) = others.get(pick as usize % others.len().max(1)).copied() else {
        return format!("b{leader} is the only replica; skipped");
    };
    let req = Req::TransferLeader(TransferLeaderRequest {
        topic: topic.into(),
        partition: local,
        to: target,
        timeout_ms: TRANSFER_TIMEOUT_MS,
    });
    let outcome = match conns.ask(leader, req).await {
        Ok(Resp::TransferLeader(t)) => match t.error {
            None => "done".to_string(),
            Some(e) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unknown);
                format!("{}: {}", code.as_str_name(), e.message)
            }
        },
        Ok(_) => "unexpected answer".into(),
        Err(_) => "no answer".into(),
    };
    format!("b{leader} -> b{target}: {outcome}")
}

/// The leader and replicas of a partition, from the first broker that
/// knows a leader.
async fn leader_and_replicas(
    conns: &mut Conns,
    o: &Options,
    topic: &str,
    partition: u32,
) -> Option<(u64, Vec<u64>)> {
    for id in 1..=o.brokers {
        let req = Req::Metadata(MetadataRequest {
            topics: vec![topic.into()],
        });
        let Ok(Resp::Metadata(m)) = conns.ask(id, req).await else {
            continue;
        };
        let found = m
            .topics
            .first()
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .filter(|p| p.leader_id != 0);
        if let Some(p) = found {
            return Some((p.leader_id, p.replicas.clone()));
        }
    }
    None
}
