//! The probe server's check of a connection's first request head (beacon-base's
//! http_server/first_head.rs): any bytes get a verdict (wait for more, accept, or a status and
//! a reason) without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    beacon_base::http_server::fuzzing::judge_first_head(data);
});
