//! `RequestRecord`: one in-flight HTTP request, from `Beacon.begin` to `finish`.
//!
//! The record is also the `send` callable the middleware hands to the app. Doing that wrapping
//! here instead of in a Python coroutine saves a Python frame per response message, which is most
//! of what a pass-through middleware costs.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use beacon_core::{HttpMethod, UNMATCHED_ROUTE};
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::beacon::Shared;
use crate::route_label::{route_label, RouteLabel};

/// The Python objects a request needs when its response goes out.
pub struct RequestContext {
    /// The ASGI scope: the router writes the matched route into it.
    pub scope: Py<PyDict>,
    /// The server's `send`.
    pub send: Py<PyAny>,
    /// `scope["root_path"]` as it was before the app ran (mounts extend it).
    pub outer_root_path: Py<PyAny>,
    /// The response header name for the request id.
    pub header_name: Py<PyBytes>,
    /// `route_template(scope, outer_root_path)`.
    pub route_template: Py<PyAny>,
}

/// One in-flight request. `finish` records it exactly once, however often it is called.
#[pyclass(frozen, module = "caddy_beacon._native")]
pub struct RequestRecord {
    shared: Arc<Shared>,
    method: HttpMethod,
    started: Instant,
    request_id: Py<PyBytes>,
    // Released by `close`: asyncio can carry a finished request's context (and so this record)
    // into the next request on the same connection (cpython#140947), and the scope and `send`
    // must not live on with it.
    context: Mutex<Option<Arc<RequestContext>>>,
    status: AtomicU16,
    finished: AtomicBool,
}

impl RequestRecord {
    pub fn new(shared: Arc<Shared>, method: HttpMethod, request_id: Py<PyBytes>, context: RequestContext) -> Self {
        RequestRecord {
            shared,
            method,
            started: Instant::now(),
            request_id,
            context: Mutex::new(Some(Arc::new(context))),
            status: AtomicU16::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn record(&self, status: u16, route: Option<&str>) -> bool {
        if self.finished.swap(true, Ordering::AcqRel) {
            return false;
        }
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.metrics.request_finished(self.method, route.unwrap_or(UNMATCHED_ROUTE), status, elapsed);
        true
    }

    fn context(&self) -> Option<Arc<RequestContext>> {
        self.context.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records with the route the framework matched, read from the scope now.
    fn record_from_scope(&self, py: Python<'_>, status: u16) -> PyResult<bool> {
        let Some(context) = self.context() else {
            return Ok(self.record(status, None));
        };
        let scope = context.scope.bind(py);
        let outer_root_path = context.outer_root_path.bind(py);
        match route_label(scope, outer_root_path)? {
            RouteLabel::Resolved(route) => Ok(self.record(status, route.as_deref())),
            RouteLabel::NeedsFallback => {
                let route = context.route_template.call1(py, (scope, outer_root_path))?;
                let route = route.bind(py);
                if route.is_none() {
                    return Ok(self.record(status, None));
                }
                Ok(self.record(status, Some(route.cast::<PyString>()?.to_str()?)))
            }
        }
    }

    fn response_start_with_id<'py>(
        &self,
        message: &Bound<'py, PyDict>,
        context: &RequestContext,
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = message.py();
        if let Some(status) = message.get_item(intern!(py, "status"))? {
            self.status.store(status.extract::<u16>().unwrap_or(0), Ordering::Relaxed);
        }
        // A copy, never an in-place edit: an app may reuse its message dicts and header lists.
        let copy = message.copy()?;
        let headers = PyList::empty(py);
        if let Some(existing) = message.get_item(intern!(py, "headers"))? {
            for header in existing.try_iter()? {
                headers.append(header?)?;
            }
        }
        let pair = PyTuple::new(py, [context.header_name.bind(py).as_any(), self.request_id.bind(py).as_any()])?;
        headers.append(pair)?;
        copy.set_item(intern!(py, "headers"), headers)?;
        Ok(copy)
    }
}

#[pymethods]
impl RequestRecord {
    /// The wrapped ASGI `send`: adds the request-id header to the response start, and records
    /// the request when its last body message (or a pathsend) is handed to the server. Returns
    /// the server's own awaitable.
    fn __call__(&self, py: Python<'_>, message: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let Some(context) = self.context() else {
            return Err(PyRuntimeError::new_err("send() called after the request was closed"));
        };
        // ASGI messages are dicts; anything else is handed on untouched for the server to judge.
        let message = match message.cast_into::<PyDict>() {
            Ok(dict) => dict,
            Err(error) => return context.send.call1(py, (error.into_inner(),)),
        };
        let kind = message.get_item(intern!(py, "type"))?;
        let kind = match &kind {
            Some(kind) => kind.cast::<PyString>().ok().map(|k| k.to_str()).transpose()?,
            None => None,
        };
        match kind {
            Some("http.response.start") => {
                let with_id = self.response_start_with_id(&message, &context)?;
                return context.send.call1(py, (with_id,));
            }
            Some("http.response.body") => {
                let more_body = match message.get_item(intern!(py, "more_body"))? {
                    Some(flag) => flag.is_truthy()?,
                    None => false,
                };
                if !more_body {
                    self.finish_response(py)?;
                }
            }
            Some("http.response.pathsend") => self.finish_response(py)?,
            _ => {}
        }
        context.send.call1(py, (message,))
    }

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

    /// The status of the response start sent so far (0 before it).
    #[getter]
    fn status(&self) -> u16 {
        self.status.load(Ordering::Relaxed)
    }

    /// Records the request with `status` (default: the status sent, or 500 when none was) under
    /// the route the framework matched. Returns False when it had already been recorded.
    #[pyo3(signature = (status=None))]
    fn finish(&self, py: Python<'_>, status: Option<u16>) -> PyResult<bool> {
        let status = status.unwrap_or_else(|| match self.status.load(Ordering::Relaxed) {
            0 => 500,
            sent => sent,
        });
        if self.finished.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.record_from_scope(py, status)
    }

    /// Whether the request has been recorded.
    #[getter]
    fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether the request is still being handled (`close` has not run).
    #[getter]
    fn open(&self) -> bool {
        self.context.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Ends the request: records it like `finish` if that has not happened yet, then lets go of
    /// the scope and `send`. The request id stays readable.
    #[pyo3(signature = (status=None))]
    fn close(&self, py: Python<'_>, status: Option<u16>) -> PyResult<bool> {
        let recorded = self.finish(py, status);
        let released = self.context.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(released);
        recorded
    }
}

impl RequestRecord {
    fn finish_response(&self, py: Python<'_>) -> PyResult<()> {
        if !self.finished.load(Ordering::Acquire) {
            let status = match self.status.load(Ordering::Relaxed) {
                0 => 500,
                sent => sent,
            };
            self.record_from_scope(py, status)?;
        }
        Ok(())
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
