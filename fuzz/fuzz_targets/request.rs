//! The client port's request path (`weir::fuzzing::request`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::request(data));
