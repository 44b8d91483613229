//! `MiddlewareCore`: the native `__call__` of `BeaconMiddleware` (its Python subclass).
//!
//! Once the worker has started (`_arm`), an HTTP request to an app path is begun here and handed
//! to a `RequestCall`, so no Python frame of ours runs per request. Everything else — lifespan,
//! WebSockets, the middleware's own endpoints, a request before startup — goes to the subclass's
//! `_call_in_python`, where the rare paths stay readable.

use std::sync::{Arc, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::armed::{Armed, OtelBridge};
use crate::beacon::Beacon;
use crate::context_var::ContextVar;
use crate::request_call::RequestCall;

/// Base class of `BeaconMiddleware`: its `__call__`.
#[pyclass(frozen, subclass, module = "caddy_beacon._native")]
pub struct MiddlewareCore {
    armed: OnceLock<Arc<Armed>>,
}

#[pymethods]
impl MiddlewareCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        MiddlewareCore {
            armed: OnceLock::new(),
        }
    }

    /// Turns the native request path on (once; later calls change nothing and return False).
    #[pyo3(signature = (*, beacon, app, current_request, otel=None))]
    fn _arm(
        &self,
        beacon: Py<Beacon>,
        app: Py<PyAny>,
        current_request: &Bound<'_, PyAny>,
        otel: Option<(Py<PyAny>, Py<PyAny>)>,
    ) -> PyResult<bool> {
        if self.armed.get().is_some() {
            return Ok(false);
        }
        let armed = Armed {
            beacon,
            app,
            current_request: ContextVar::new(current_request)?,
            otel: otel.map(|(attach, detach)| OtelBridge { attach, detach }),
        };
        Ok(self.armed.set(Arc::new(armed)).is_ok())
    }

    /// Whether HTTP requests take the native path.
    #[getter]
    fn _armed(&self) -> bool {
        self.armed.get().is_some()
    }

    /// The ASGI entry point: an awaitable for the request.
    fn __call__(
        slf: &Bound<'_, Self>,
        scope: Bound<'_, PyAny>,
        receive: Bound<'_, PyAny>,
        send: Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Some(armed) = slf.get().armed.get() {
            if let Ok(dict) = scope.cast::<PyDict>() {
                if is_http(dict)? {
                    if let Some(record) = armed.beacon.get().begin(dict, send.clone().unbind())? {
                        let record = Py::new(py, record)?;
                        let call = RequestCall::new(
                            Arc::clone(armed),
                            record,
                            scope.unbind(),
                            receive.unbind(),
                        );
                        return Ok(Py::new(py, call)?.into_any());
                    }
                }
            }
        }
        let fallback = slf.getattr(intern!(py, "_call_in_python")).map_err(|_| {
            PyRuntimeError::new_err(
                "MiddlewareCore is the base of BeaconMiddleware and is not used alone",
            )
        })?;
        Ok(fallback.call1((scope, receive, send))?.unbind())
    }
}

fn is_http(scope: &Bound<'_, PyDict>) -> PyResult<bool> {
    let py = scope.py();
    Ok(match scope.get_item(intern!(py, "type"))? {
        // Servers write the literal "http", which is interned: most often one pointer compare.
        Some(kind) => {
            kind.is(intern!(py, "http"))
                || kind
                    .cast::<PyString>()
                    .is_ok_and(|k| k.to_str().is_ok_and(|k| k == "http"))
        }
        None => false,
    })
}
