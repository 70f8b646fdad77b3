//! cargo-fuzz target: [`skipgrad_fuzz::idx`] on the fuzzer's bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skipgrad_fuzz::idx(data));
