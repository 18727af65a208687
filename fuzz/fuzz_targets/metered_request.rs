//! See `tally::server::fuzzing::metered_request` for the properties checked.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tally::server::fuzzing::metered_request(data));
