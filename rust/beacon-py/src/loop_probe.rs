//! How the event-loop watchdog (beacon_core::loop_watch) reaches a worker's loop from its own
//! thread: it posts a probe with the loop's own thread-safe call (asyncio's
//! `call_soon_threadsafe`, trio's `run_sync_soon`); run there, the probe records a heartbeat.

use std::sync::Arc;

use beacon_core::loop_watch::{LoopProbe, LoopWatch};
use pyo3::prelude::*;

/// How the watchdog reaches the loop: `post(answer, posted)`, from its own thread, attached to
/// the interpreter only for that call (never while the interpreter is finalizing).
pub struct PythonProbe {
    pub post: Py<PyAny>,
    pub answer: Py<LoopProbeAnswer>,
}

impl LoopProbe for PythonProbe {
    fn post(&self, posted: u64) -> bool {
        Python::try_attach(|py| {
            self.post
                .call1(py, (self.answer.clone_ref(py), posted))
                .is_ok()
        })
        .unwrap_or(false)
    }
}

/// The probe the watchdog posts to a busy loop: run there, it records a heartbeat as late as
/// it ran.
#[pyclass(frozen, module = "caddy_beacon._native")]
pub struct LoopProbeAnswer {
    pub watch: Arc<LoopWatch>,
}

#[pymethods]
impl LoopProbeAnswer {
    fn __call__(&self, posted: u64) {
        self.watch.answered(posted);
    }
}
