//! `RequestCall`: the awaitable `BeaconMiddleware(scope, receive, send)` returns for an HTTP
//! request — what `async def __call__` was, with no Python frame of ours.
//!
//! A Python coroutine layer costs a frame resume at every suspension of the request (each one
//! travels down the whole `await` chain) plus its own lines of bookkeeping; this object does the
//! same work natively: it sets the request context, runs the app's coroutine step by step through
//! `PyIter_Send` (no `StopIteration` object at the end), and on completion or error resets the
//! context and closes the record, re-raising whatever the app raised. It implements `__await__`,
//! `send`, `throw` and `close`, so it is a `collections.abc.Coroutine` and `asyncio.create_task`
//! takes it as a server's own driver would.

use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};
use pyo3::{ffi, intern};

use crate::armed::Armed;
use crate::request_record::RequestRecord;

/// One HTTP request passing through the middleware: a coroutine over the app's coroutine.
#[pyclass(module = "caddy_beacon._native")]
pub struct RequestCall {
    armed: Arc<Armed>,
    record: Py<RequestRecord>,
    stage: Stage,
}

enum Stage {
    /// Not stepped yet: the app has not been called.
    Created {
        scope: Py<PyAny>,
        receive: Py<PyAny>,
    },
    /// The app's coroutine (or its `__await__` iterator) runs; the tokens undo the context.
    Running {
        inner: Py<PyAny>,
        context_token: Py<PyAny>,
        otel_token: Option<Py<PyAny>>,
    },
    Done,
}

/// What one step of the app's coroutine gave.
enum Step<'py> {
    Yielded(Bound<'py, PyAny>),
    Returned,
}

impl RequestCall {
    pub fn new(
        armed: Arc<Armed>,
        record: Py<RequestRecord>,
        scope: Py<PyAny>,
        receive: Py<PyAny>,
    ) -> Self {
        RequestCall {
            armed,
            record,
            stage: Stage::Created { scope, receive },
        }
    }

    /// Runs the start of `__call__`: the record becomes the current request (and the current
    /// OpenTelemetry span's parent), and the app is called with the record as its `send`.
    fn start(&mut self, py: Python<'_>) -> PyResult<()> {
        let Stage::Created { scope, receive } = std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Ok(());
        };
        let record = self.record.bind(py);
        let context_token = self.armed.current_request.set(record)?.unbind();
        // From here on the context is set: every way out goes through `finish` or `fail`.
        self.stage = Stage::Running {
            inner: py.None(),
            context_token,
            otel_token: None,
        };
        if let Some(otel) = &self.armed.otel {
            match otel.attach.call1(py, (record,)) {
                Ok(token) => {
                    if let Stage::Running { otel_token, .. } = &mut self.stage {
                        *otel_token = Some(token);
                    }
                }
                Err(error) => return Err(self.fail(py, error)),
            }
        }
        let awaitable = match self.armed.app.call1(py, (scope, receive, record)) {
            Ok(awaitable) => awaitable,
            Err(error) => return Err(self.fail(py, error)),
        };
        match awaitable_iterator(awaitable.into_bound(py)) {
            Ok(iterator) => {
                if let Stage::Running { inner, .. } = &mut self.stage {
                    *inner = iterator.unbind();
                }
                Ok(())
            }
            Err(error) => Err(self.fail(py, error)),
        }
    }

    /// One step: `value` sent into the app's coroutine.
    fn step<'py>(&mut self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Step<'py>> {
        if matches!(self.stage, Stage::Created { .. }) {
            self.start(py)?;
        }
        let Stage::Running { inner, .. } = &self.stage else {
            return Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            ));
        };
        let inner = inner.bind(py).clone();
        match send(&inner, value) {
            Ok(Some(yielded)) => Ok(Step::Yielded(yielded)),
            Ok(None) => self.finish(py).map(|()| Step::Returned),
            Err(error) => Err(self.fail(py, error)),
        }
    }

    /// What one step gave, as a step of this coroutine answers it.
    fn answer(step: Step<'_>) -> PyResult<Py<PyAny>> {
        match step {
            Step::Yielded(value) => Ok(value.unbind()),
            Step::Returned => Err(PyStopIteration::new_err(())),
        }
    }

    /// Undoes the context (in reverse order of `start`); errors are the caller's to weigh.
    fn leave_context(&mut self, py: Python<'_>) -> PyResult<()> {
        let Stage::Running {
            context_token,
            otel_token,
            ..
        } = std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Ok(());
        };
        let detached = match (&self.armed.otel, otel_token) {
            (Some(otel), Some(token)) => otel.detach.call1(py, (token,)).map(drop),
            _ => Ok(()),
        };
        // A coroutine closed from another context (its task collected) cannot reset there.
        let reset = self.armed.current_request.reset(context_token.bind(py));
        detached.and(reset)
    }

    /// The app returned: records the request if its last body message did not (the app
    /// returned without completing a response), and releases the scope and `send`.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        self.leave_context(py)?;
        self.record.get().close(py, None).map(drop)
    }

    /// The app raised: recorded as 500 (unless the response had already completed) and the
    /// error handed back to be re-raised as is.
    fn fail(&mut self, py: Python<'_>, error: PyErr) -> PyErr {
        let closed = self.record.get().close(py, Some(500));
        let _ = self.leave_context(py);
        match closed {
            Ok(_) => error,
            Err(close_error) => {
                close_error.set_cause(py, Some(error));
                close_error
            }
        }
    }
}

#[pymethods]
impl RequestCall {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.step(py, &py.None().into_bound(py))? {
            Step::Yielded(value) => Ok(Some(value.unbind())),
            Step::Returned => Ok(None),
        }
    }

    fn send(&mut self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let step = self.step(py, &value)?;
        Self::answer(step)
    }

    /// Raises the exception inside the app where it waits (as `coroutine.throw`); cancelling
    /// the request's task arrives here.
    #[pyo3(signature = (*args))]
    fn throw(&mut self, py: Python<'_>, args: Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        if matches!(self.stage, Stage::Created { .. }) {
            self.start(py)?;
        }
        let Stage::Running { inner, .. } = &self.stage else {
            return Err(exception_from(&args));
        };
        let inner = inner.bind(py).clone();
        let thrown = match inner.getattr(intern!(py, "throw")) {
            Ok(throw) => throw.call1(args),
            Err(_) => Err(exception_from(&args)),
        };
        match thrown {
            Ok(yielded) => Ok(yielded.unbind()),
            Err(error) if error.is_instance_of::<PyStopIteration>(py) => {
                self.finish(py)?;
                Err(error)
            }
            Err(error) => Err(self.fail(py, error)),
        }
    }

    /// Closes the app's coroutine (`GeneratorExit` where it waits); a request cut short this
    /// way is recorded as 500 unless its response had completed.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        let closed = match &self.stage {
            Stage::Created { .. } => {
                self.stage = Stage::Done;
                // Never started: the record is dropped unrecorded, like a coroutine never awaited.
                return Ok(());
            }
            Stage::Done => return Ok(()),
            Stage::Running { inner, .. } => {
                let inner = inner.bind(py).clone();
                match inner.getattr(intern!(py, "close")) {
                    Ok(close) => close.call0().map(drop),
                    Err(_) => Ok(()),
                }
            }
        };
        let recorded = self.record.get().close(py, Some(500)).map(drop);
        let _ = self.leave_context(py);
        closed.and(recorded)
    }
}

impl Drop for RequestCall {
    // A request whose coroutine is collected mid-flight (its task dropped without being closed)
    // is closed as a Python coroutine would be on collection: GeneratorExit in the app, 500.
    fn drop(&mut self) {
        if matches!(self.stage, Stage::Running { .. }) {
            Python::attach(|py| {
                if let Err(error) = self.close(py) {
                    error.write_unraisable(py, None);
                }
            });
        }
    }
}

/// The iterator `await awaitable` drives: a coroutine itself, else what its `__await__` gives.
fn awaitable_iterator(awaitable: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    static COROUTINE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let py = awaitable.py();
    let coroutine = COROUTINE_TYPE.import(py, "types", "CoroutineType")?;
    if awaitable.get_type().is(coroutine) {
        return Ok(awaitable);
    }
    match awaitable.getattr(intern!(py, "__await__")) {
        Ok(method) => method.call0(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "the app returned {}, which can't be used in 'await' expression",
            awaitable
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "an object".into())
        ))),
    }
}

/// `PyIter_Send`: Some(value) when the iterator yielded, None when it returned.
#[allow(unsafe_code)]
fn send<'py>(
    iterator: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = iterator.py();
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: both objects are alive (borrowed for the call) and the GIL is held; PyIter_Send
    // stores a new reference in `result` for NEXT and RETURN and sets an exception for ERROR.
    let status = unsafe { ffi::PyIter_Send(iterator.as_ptr(), value.as_ptr(), &mut result) };
    match status {
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new, non-null reference we now own (see above).
            Ok(Some(unsafe { Bound::from_owned_ptr(py, result) }))
        }
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: as above; an ASGI app's return value is dropped, as `await` would.
            drop(unsafe { Bound::from_owned_ptr(py, result) });
            Ok(None)
        }
        ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
    }
}

/// The exception `throw(*args)` names, for an app iterator that has no `throw` of its own.
fn exception_from(args: &Bound<'_, PyTuple>) -> PyErr {
    let Ok(first) = args.get_item(0) else {
        return PyTypeError::new_err("throw expected at least 1 argument, got 0");
    };
    if first.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        return PyErr::from_value(first);
    }
    let value = args.get_item(1).ok().filter(|v| !v.is_none());
    match value.map_or_else(|| first.call0(), |v| first.call1((v,))) {
        Ok(exception) => PyErr::from_value(exception),
        Err(error) => error,
    }
}
