//! See `tally::server::fuzzing::tax_id` for the properties checked.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tally::server::fuzzing::tax_id(data));
