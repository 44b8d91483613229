//! `RequestRecord`: one in-flight HTTP request, from `Beacon.begin` to `finish`.
//!
//! The record is also the `send` callable the middleware hands to the app. Doing that wrapping
//! here instead of in a Python coroutine saves a Python frame per response message, which is most
//! of what a pass-through middleware costs.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use beacon_core::trace::context::to_hex;
use beacon_core::trace::context::RequestTrace;
use beacon_core::trace::span::{HttpServerFacts, SpanText};
use beacon_core::{HttpMethod, UNMATCHED_ROUTE};
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::route_label::RouteLabels;
use crate::shared::Shared;

/// The Python objects a request needs when its response goes out.
pub struct RequestContext {
    /// The `host` header (tracing only).
    pub host: Option<Py<PyBytes>>,
    /// The `user-agent` header (tracing only).
    pub user_agent: Option<Py<PyBytes>>,
    /// The ASGI scope: the router writes the matched route into it.
    pub scope: Py<PyDict>,
    /// The server's `send`.
    pub send: Py<PyAny>,
    /// `scope["root_path"]` as it was before the app ran (mounts extend it).
    pub outer_root_path: Py<PyAny>,
    /// The response header name for the request id.
    pub header_name: Py<PyBytes>,
    /// Finds the route label in the scope.
    pub route_labels: Arc<RouteLabels>,
}

/// One in-flight request. `finish` records it exactly once, however often it is called.
#[pyclass(frozen, module = "caddy_beacon._native")]
pub struct RequestRecord {
    shared: Arc<Shared>,
    method: HttpMethod,
    // The proxy asked for a load report on the response.
    load_report: bool,
    started: Instant,
    request_id: Py<PyBytes>,
    trace: Option<RequestTrace>,
    // Released by `close`: asyncio can carry a finished request's context (and so this record)
    // into the next request on the same connection (cpython#140947), and the scope and `send`
    // must not live on with it.
    context: Mutex<Option<Arc<RequestContext>>>,
    status: AtomicU16,
    finished: AtomicBool,
    // The request id the app put on its response itself, if it did.
    app_request_id: OnceLock<Vec<u8>>,
}

impl RequestRecord {
    pub fn new(
        shared: Arc<Shared>,
        method: HttpMethod,
        load_report: bool,
        request_id: Py<PyBytes>,
        trace: Option<RequestTrace>,
        context: RequestContext,
    ) -> Self {
        RequestRecord {
            shared,
            method,
            load_report,
            started: Instant::now(),
            request_id,
            trace,
            context: Mutex::new(Some(Arc::new(context))),
            status: AtomicU16::new(0),
            finished: AtomicBool::new(false),
            app_request_id: OnceLock::new(),
        }
    }

    fn record(
        &self,
        py: Python<'_>,
        status: u16,
        route: Option<&str>,
        context: Option<&RequestContext>,
    ) -> bool {
        if self.finished.swap(true, Ordering::AcqRel) {
            return false;
        }
        let elapsed = self.started.elapsed();
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let label = route.unwrap_or(UNMATCHED_ROUTE);
        match (&self.trace, &self.shared.tracer) {
            (Some(trace), Some(tracer)) if trace.sampled => {
                self.shared.metrics.request_finished_traced(
                    self.method,
                    label,
                    status,
                    nanos,
                    (trace.trace_id, trace.span_id),
                );
                let facts = self.span_facts(py, status, route, context);
                tracer.finish(trace, facts, elapsed, status >= 500);
            }
            _ => self
                .shared
                .metrics
                .request_finished(self.method, label, status, nanos),
        }
        true
    }

    /// What the server span is made from (on the export thread): the texts are copied out of
    /// the Python objects into one buffer.
    fn span_facts(
        &self,
        py: Python<'_>,
        status: u16,
        route: Option<&str>,
        context: Option<&RequestContext>,
    ) -> HttpServerFacts {
        // Enough for the texts of a usual request; a longer one grows the buffer once or twice.
        let mut facts = HttpServerFacts::new(self.method, status, 256);
        facts.set(
            SpanText::RequestId,
            &header_text(self.request_id.as_bytes(py)),
        );
        if let Some(id) = self.app_request_id.get() {
            facts.set(SpanText::ResponseRequestId, &header_text(id));
        }
        if let Some(route) = route {
            facts.set(SpanText::Route, route);
        }
        let Some(context) = context else { return facts };
        let scope = context.scope.bind(py);
        let scope_texts = [
            (SpanText::Path, intern!(py, "path")),
            (SpanText::Scheme, intern!(py, "scheme")),
            (SpanText::ProtocolVersion, intern!(py, "http_version")),
        ];
        for (which, key) in scope_texts {
            if let Ok(Some(value)) = scope.get_item(key) {
                if let Ok(Ok(text)) = value.cast::<PyString>().map(|v| v.to_str()) {
                    facts.set(which, text);
                }
            }
        }
        if let Ok(Some(client)) = scope.get_item(intern!(py, "client")) {
            if let Ok(address) = client.get_item(0) {
                if let Ok(Ok(text)) = address.cast::<PyString>().map(|a| a.to_str()) {
                    facts.set(SpanText::ClientAddress, text);
                }
            }
        }
        if let Some(host) = &context.host {
            facts.set(SpanText::Host, &header_text(host.as_bytes(py)));
        }
        if let Some(agent) = &context.user_agent {
            facts.set(SpanText::UserAgent, &header_text(agent.as_bytes(py)));
        }
        facts
    }

    fn context(&self) -> Option<Arc<RequestContext>> {
        self.context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records with the route the framework matched, read from the scope now.
    fn record_from_scope(&self, py: Python<'_>, status: u16) -> PyResult<bool> {
        let Some(context) = self.context() else {
            return Ok(self.record(py, status, None, None));
        };
        let route = context
            .route_labels
            .label_of(context.scope.bind(py), context.outer_root_path.bind(py))?;
        Ok(self.record(py, status, route.as_deref(), Some(&context)))
    }

    fn response_start_with_id<'py>(
        &self,
        message: &Bound<'py, PyDict>,
        context: &RequestContext,
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = message.py();
        if let Some(status) = message.get_item(intern!(py, "status"))? {
            self.status
                .store(status.extract::<u16>().unwrap_or(0), Ordering::Relaxed);
        }
        // A copy, never an in-place edit: an app may reuse its message dicts and header lists.
        let copy = message.copy()?;
        let headers = match message.get_item(intern!(py, "headers"))? {
            // A list (what servers and frameworks send) is copied in one C call.
            Some(existing) => match existing.cast::<PyList>() {
                Ok(list) => list.get_slice(0, list.len()),
                Err(_) => PyList::new(py, existing.try_iter()?.collect::<PyResult<Vec<_>>>()?)?,
            },
            None => PyList::empty(py),
        };
        // One request id per response: the app's own, when it set one (the span records it
        // beside the request's), else the request's.
        let name = context.header_name.bind(py);
        match own_header(&headers, name.as_bytes())? {
            Some(value) => {
                let _ = self.app_request_id.set(value);
            }
            None => headers.append(PyTuple::new(
                py,
                [name.as_any(), self.request_id.bind(py).as_any()],
            )?)?,
        }
        if self.load_report {
            // Built at most once per REFRESH per process (load_report.rs), without the GIL: it
            // reads the shared store and the workers' /proc entries.
            let shared = &self.shared;
            let report = py.detach(|| shared.load.header(&shared.metrics));
            headers.append(PyTuple::new(
                py,
                [
                    PyBytes::new(py, b"endpoint-load-metrics"),
                    PyBytes::new(py, report.as_bytes()),
                ],
            )?)?;
        }
        if self.shared.readiness.is_draining() && is_http1(context.scope.bind(py))? {
            // While draining, each HTTP/1.1 connection carries one more request and closes, so a
            // proxy still sending here (e.g. Caddy on a connection a reload left on its old
            // server) dials again for the next one: refused once the app is gone, which it
            // retries elsewhere, instead of racing the server's close of an idle keep-alive
            // connection (a reset it cannot retry for a POST).
            headers.append(PyTuple::new(
                py,
                [PyBytes::new(py, b"connection"), PyBytes::new(py, b"close")],
            )?)?;
        }
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
            return Err(PyRuntimeError::new_err(
                "send() called after the request was closed",
            ));
        };
        // ASGI messages are dicts; anything else is handed on untouched for the server to judge.
        let message = match message.cast_into::<PyDict>() {
            Ok(dict) => dict,
            Err(error) => return context.send.call1(py, (error.into_inner(),)),
        };
        let kind = message.get_item(intern!(py, "type"))?;
        match kind.as_ref().map(message_kind).transpose()?.flatten() {
            Some(MessageKind::Start) => {
                let with_id = self.response_start_with_id(&message, &context)?;
                return context.send.call1(py, (with_id,));
            }
            Some(MessageKind::Body) => {
                let more_body = match message.get_item(intern!(py, "more_body"))? {
                    Some(flag) => flag.is_truthy()?,
                    None => false,
                };
                if !more_body {
                    self.finish_response(py)?;
                }
            }
            Some(MessageKind::PathSend) => self.finish_response(py)?,
            None => {}
        }
        context.send.call1(py, (message,))
    }

    /// The request id as text (always visible ASCII).
    #[getter]
    fn request_id(&self, py: Python<'_>) -> String {
        String::from_utf8_lossy(self.request_id.as_bytes(py)).into_owned()
    }

    /// The trace id (32 hex digits) when tracing is on, else None.
    #[getter]
    fn trace_id(&self) -> Option<String> {
        self.trace.as_ref().map(|t| to_hex(&t.trace_id))
    }

    /// This request's server span id (16 hex digits) when tracing is on, else None.
    #[getter]
    fn span_id(&self) -> Option<String> {
        self.trace.as_ref().map(|t| to_hex(&t.span_id))
    }

    /// Whether this request's span is sampled (exported).
    #[getter]
    fn sampled(&self) -> bool {
        self.trace.as_ref().is_some_and(|t| t.sampled)
    }

    /// The carried `tracestate` ("" when none).
    #[getter]
    fn trace_state(&self) -> String {
        self.trace
            .as_ref()
            .map(|t| t.trace_state.clone())
            .unwrap_or_default()
    }

    /// Whether the request has been recorded.
    #[getter]
    fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether the request is still being handled (`close` has not run).
    #[getter]
    fn open(&self) -> bool {
        self.context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Ends the request: records it like `finish` if that has not happened yet, then lets go of
    /// the scope and `send`. The request id stays readable.
    #[pyo3(signature = (status=None))]
    pub(crate) fn close(&self, py: Python<'_>, status: Option<u16>) -> PyResult<bool> {
        let recorded = self.finish(py, status);
        let released = self
            .context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(released);
        recorded
    }
}

impl RequestRecord {
    /// Records the request with `status` (default: the status sent, or 500 when none was) under
    /// the route the framework matched. Returns False when it had already been recorded.
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

/// The value of the header named `name` (ASCII case-insensitive) among `headers`, ASGI's
/// `[name, value]` pairs of bytes (tuples, or any two-item sequence), if the app set it.
fn own_header(headers: &Bound<'_, PyList>, name: &[u8]) -> PyResult<Option<Vec<u8>>> {
    for pair in headers.iter() {
        let (key, value) = match pair.cast::<PyTuple>() {
            Ok(tuple) if tuple.len() == 2 => (
                tuple.get_borrowed_item(0)?.to_owned(),
                tuple.get_borrowed_item(1)?.to_owned(),
            ),
            _ => match (pair.get_item(0), pair.get_item(1)) {
                (Ok(key), Ok(value)) => (key, value),
                _ => continue, // not a pair: the server will say so
            },
        };
        let Ok(key) = key.cast::<PyBytes>() else {
            continue;
        };
        if key.as_bytes().eq_ignore_ascii_case(name) {
            return Ok(Some(
                value
                    .cast::<PyBytes>()
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default(),
            ));
        }
    }
    Ok(None)
}

/// A header value as text: almost always ASCII, so checked and borrowed; the lossy pass (a
/// replacement character for each invalid sequence) only when not.
fn header_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The response messages the wrapped `send` acts on.
enum MessageKind {
    Start,
    Body,
    PathSend,
}

fn message_kind(kind: &Bound<'_, PyAny>) -> PyResult<Option<MessageKind>> {
    let py = kind.py();
    // Frameworks write these as literals, which are interned: most often a pointer compare.
    if kind.is(intern!(py, "http.response.body")) {
        return Ok(Some(MessageKind::Body));
    }
    if kind.is(intern!(py, "http.response.start")) {
        return Ok(Some(MessageKind::Start));
    }
    let Ok(kind) = kind.cast::<PyString>() else {
        return Ok(None);
    };
    Ok(match kind.to_str()? {
        "http.response.start" => Some(MessageKind::Start),
        "http.response.body" => Some(MessageKind::Body),
        "http.response.pathsend" => Some(MessageKind::PathSend),
        _ => None,
    })
}

/// HTTP/1.x, where `Connection` is a valid response header (HTTP/2 and 3 forbid it).
fn is_http1(scope: &Bound<'_, PyDict>) -> PyResult<bool> {
    let version = scope.get_item(intern!(scope.py(), "http_version"))?;
    Ok(match version {
        Some(version) => version
            .extract::<&str>()
            .map(|v| v.starts_with('1'))
            .unwrap_or(false),
        None => true, // ASGI's default is 1.1
    })
}
