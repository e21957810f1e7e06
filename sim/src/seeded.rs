//! Replayable property tests: quickcheck from a known seed
//! (`WEIR_TEST_SEED`). The code is the broker crate's `src/test_seed.rs`,
//! included here by path: there it exists only for the crate's own unit
//! tests (quickcheck is a dev-dependency of `weir`), so the simulator's
//! tests cannot reach it through the crate.

#[path = "../../src/test_seed.rs"]
mod shared;

pub use shared::{quickcheck, seed, DEFAULT_SEED};

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::QuickCheck;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());

    fn record(v: Vec<u32>) -> bool {
        SEEN.lock().unwrap().push(v);
        true
    }

    #[test]
    fn a_seed_gives_the_same_cases_every_time() {
        let run = || {
            SEEN.lock().unwrap().clear();
            quickcheck(QuickCheck::new().tests(20), record as fn(Vec<u32>) -> bool);
            SEEN.lock().unwrap().clone()
        };
        let first = run();
        assert_eq!(first.len(), 20);
        assert_eq!(first, run());
    }

    #[test]
    fn a_failure_names_the_seed() {
        let failing = || quickcheck(QuickCheck::new(), (|_: u8| false) as fn(u8) -> bool);
        let message = std::panic::catch_unwind(failing)
            .expect_err("the property fails")
            .downcast::<String>()
            .expect("a formatted panic message");
        assert!(
            message.contains(&format!("WEIR_TEST_SEED={}", seed())),
            "{message}"
        );
    }
}
