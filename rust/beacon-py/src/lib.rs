//! beacon-py: the thin pyo3 layer that exposes beacon-core as `caddy_beacon._native`.
//!
//! Only conversions, the module definition and error mapping live here; behaviour belongs in
//! beacon-core. The Python package re-exports what users need; this module is private.

mod armed;
mod beacon;
mod context_var;
mod errors;
mod loop_probe;
mod middleware_core;
mod request_call;
mod request_record;
mod route_label;
mod settings;
mod shared;

use pyo3::prelude::*;

/// The native half of caddy_beacon.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<beacon::Beacon>()?;
    m.add_class::<loop_probe::LoopProbeAnswer>()?;
    m.add_class::<request_record::RequestRecord>()?;
    m.add_class::<middleware_core::MiddlewareCore>()?;
    m.add_class::<request_call::RequestCall>()?;
    m.add("BeaconError", py.get_type::<errors::BeaconError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add("UNMATCHED_ROUTE", beacon_core::UNMATCHED_ROUTE)?;
    m.add("DEFAULT_BUCKETS", beacon_core::DEFAULT_BUCKETS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(process_start_ticks, m)?)?;
    m.add_function(wrap_pyfunction!(process_command_line, m)?)?;
    Ok(())
}

/// The command line of process `pid` (empty when it cannot be read).
#[pyfunction]
fn process_command_line(pid: u32) -> Vec<String> {
    beacon_core::process_metrics::command_line(pid)
}

/// When process `pid` started, in clock ticks since boot; None when there is no such process.
/// With the pid it names a process for good (pids are reused, start times are not): the shared
/// metrics region of an instance is named with both.
#[pyfunction]
fn process_start_ticks(pid: u32) -> Option<u64> {
    beacon_core::process_metrics::start_ticks(pid)
}

/// Called in a forked child (registered with `os.register_at_fork`) so that request-id
/// generation never repeats the parent's random sequence.
#[pyfunction]
fn after_fork_in_child() {
    beacon_base::random::note_fork();
}
