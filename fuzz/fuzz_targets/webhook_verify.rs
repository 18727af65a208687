//! See `tally::server::fuzzing::webhook_verify` for the properties checked.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tally::server::fuzzing::webhook_verify(data));
