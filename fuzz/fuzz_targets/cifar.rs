//! cargo-fuzz target: [`skipgrad_fuzz::cifar`] on the fuzzer's bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skipgrad_fuzz::cifar(data));
