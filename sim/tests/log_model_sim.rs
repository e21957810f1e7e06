//! The partition log model check on turmoil's simulated disk: the same
//! runner as on real files, inside a turmoil host.

use quickcheck::{QuickCheck, TestResult};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use weir::io::DiskRef;
use weir_sim::log_model::{run, Op};
use weir_sim::SimDisk;

fn prop(ops: Vec<Op>) -> TestResult {
    let result = Rc::new(RefCell::new(None));
    let reported = result.clone();
    let mut sim = turmoil::Builder::new().rng_seed(ops.len() as u64).build();
    sim.client("node", async move {
        let disk: DiskRef = Arc::new(SimDisk::new());
        *reported.borrow_mut() = Some(run(disk, Path::new("/data/p0"), &ops));
        Ok(())
    });
    if let Err(e) = sim.run() {
        return TestResult::error(format!("simulation failed: {e}"));
    }
    let outcome = result.borrow_mut().take();
    match outcome {
        Some(Ok(_)) => TestResult::passed(),
        Some(Err(e)) => TestResult::error(e),
        None => TestResult::error("the run never finished"),
    }
}

#[test]
fn log_agrees_with_model_on_simulated_disk() {
    weir_sim::seeded::quickcheck(
        QuickCheck::new().tests(100),
        prop as fn(Vec<Op>) -> TestResult,
    );
}
