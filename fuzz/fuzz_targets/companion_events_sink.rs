//! A line of Caddy's event log as the companion's events sink reads it from the network:
//! parsed (or ignored) without a panic, and Caddy's /metrics text read for health gauges.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    beacon_companion::fuzzing::events_line(text);
    beacon_companion::fuzzing::health_gauges(text);
});
