//! `RequestRecord`: one in-flight HTTP request, from `Beacon.begin` to `finish`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use beacon_core::{HttpMethod, UNMATCHED_ROUTE};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::beacon::Shared;

/// One in-flight request. `finish` records it exactly once, however often it is called.
#[pyclass(frozen, module = "caddy_beacon._native")]
pub struct RequestRecord {
    shared: Arc<Shared>,
    method: HttpMethod,
    started: Instant,
    request_id: Py<PyBytes>,
    finished: AtomicBool,
}

impl RequestRecord {
    pub fn new(shared: Arc<Shared>, method: HttpMethod, request_id: Py<PyBytes>) -> Self {
        RequestRecord { shared, method, started: Instant::now(), request_id, finished: AtomicBool::new(false) }
    }
}

#[pymethods]
impl RequestRecord {
    /// The request id as bytes, ready to be sent as a header value.
    #[getter]
    fn request_id_bytes(&self, py: Python<'_>) -> Py<PyBytes> {
        self.request_id.clone_ref(py)
    }

    /// The request id as text (always visible ASCII).
    #[getter]
    fn request_id(&self, py: Python<'_>) -> String {
        String::from_utf8_lossy(self.request_id.as_bytes(py)).into_owned()
    }

    /// Records the request under `route` (`None`: it matched no route) with `status`, and
    /// lowers the active gauge. Returns False when it had already been recorded.
    #[pyo3(signature = (status, route=None))]
    fn finish(&self, status: u16, route: Option<&str>) -> bool {
        if self.finished.swap(true, Ordering::AcqRel) {
            return false;
        }
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.metrics.request_finished(self.method, route.unwrap_or(UNMATCHED_ROUTE), status, elapsed);
        true
    }

    /// Whether `finish` has been called.
    #[getter]
    fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

impl Drop for RequestRecord {
    // A request abandoned without `finish` (its task was garbage-collected mid-flight) must not
    // leave the active gauge raised forever.
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Acquire) {
            self.shared.metrics.request_abandoned(self.method);
        }
    }
}
