//! `weir::fuzzing::peer` (docs/fuzzing.md).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::peer(data));
