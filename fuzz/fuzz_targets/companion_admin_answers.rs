//! What Caddy's Admin API answers the companion: the beacon module's pool listing and
//! registration, Caddy's upstream list, and an error body, read without a panic whatever the
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    beacon_companion::fuzzing::admin_answers(data);
});
