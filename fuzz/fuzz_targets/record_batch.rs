//! The RecordBatch v2 decoder (`weir::fuzzing::record_batch`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::record_batch(data));
