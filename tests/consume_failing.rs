//! A consumer whose fetches keep failing says so: `weir consume
//! --timeout-ms` exits non-zero with the last error instead of exiting 0 as
//! if the topic were empty. Here two of three brokers are gone, so the
//! topic's partition has no leader.

mod common;

use common::*;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_exits_non_zero_when_fetches_keep_failing() {
    let mut cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "t", 1, 3).await;
    let survivor = 3;
    let bootstrap = cluster.client_addr(survivor);
    cluster.kill(1);
    cluster.kill(2);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["consume", "t", "--from-beginning", "--timeout-ms", "3000"])
            .env("WEIR_BOOTSTRAP", &bootstrap)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "consume exited 0 though no fetch could succeed; stderr: {stderr}"
    );
    assert!(
        stderr.contains("keeps failing"),
        "stderr says fetching keeps failing: {stderr}"
    );
    drop(cluster);
}
