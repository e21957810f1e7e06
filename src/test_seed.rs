//! Replayable property tests: quickcheck from a known seed.
//!
//! quickcheck's own generator is seeded from entropy, so a failure it finds
//! may never come back. [`quickcheck`] seeds the generator instead: from
//! [`DEFAULT_SEED`], or from `WEIR_TEST_SEED` to explore (or replay) another
//! sequence of cases. A failure names the seed; rerun the test with it set
//! to get the same cases, and the same shrunk counterexample, again.
//! (`sim/src/seeded.rs` includes this file for the simulator's tests.)

use quickcheck::{Gen, QuickCheck, Testable};

/// The seed every run uses unless `WEIR_TEST_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 0x5745_4952;

/// `WEIR_TEST_SEED` (decimal or 0x-prefixed hex), else [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    let Ok(s) = std::env::var("WEIR_TEST_SEED") else {
        return DEFAULT_SEED;
    };
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    // A typo must not silently test the default sequence instead.
    parsed.unwrap_or_else(|_| panic!("WEIR_TEST_SEED={s:?} is not a number"))
}

/// Runs `prop` like `qc.quickcheck(prop)` (shrinking included), but with
/// cases drawn from [`seed`], and names the seed if it fails.
pub fn quickcheck<A: Testable>(qc: QuickCheck, prop: A) {
    let seed = seed();
    // The generator size quickcheck would use (QUICKCHECK_GENERATOR_SIZE).
    let size = std::env::var("QUICKCHECK_GENERATOR_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    if let Err(failure) = qc.rng(Gen::from_size_and_seed(size, seed)).quicktest(prop) {
        panic!("property failed; replay with WEIR_TEST_SEED={seed}: {failure:?}");
    }
}
