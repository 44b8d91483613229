//! Python exception classes and the mapping from the core's errors.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    caddy_beacon,
    BeaconError,
    PyException,
    "Base class of every caddy_beacon error."
);
create_exception!(
    caddy_beacon,
    ConfigError,
    BeaconError,
    "An option or check definition that caddy_beacon cannot use; the message says which and why."
);

/// Every error of the core crates (`BeaconError`, beacon-base's `TlsError`) is a usage or
/// configuration problem the caller can fix.
pub fn to_py_err(error: impl std::fmt::Display) -> PyErr {
    ConfigError::new_err(error.to_string())
}
