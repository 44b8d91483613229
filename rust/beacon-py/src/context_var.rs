//! The request's `contextvars.ContextVar`, set and reset through the C API.
//!
//! `var.set(record)` through the bound method costs a method call and an argument tuple on
//! every request (~1,000 instructions with its reset, measured under callgrind); the C calls do
//! the same work (a new context mapping and a token) without them.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;

/// A `ContextVar` (checked once, when it is taken).
pub struct ContextVar(Py<PyAny>);

impl ContextVar {
    #[allow(unsafe_code)]
    pub fn new(var: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: a type check on a live object.
        if unsafe { ffi::PyContextVar_CheckExact(var.as_ptr()) } == 0 {
            return Err(PyTypeError::new_err(
                "current_request must be a contextvars.ContextVar",
            ));
        }
        Ok(ContextVar(var.clone().unbind()))
    }

    /// `var.set(value)`: the token that undoes it.
    #[allow(unsafe_code)]
    pub fn set<'py>(&self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = value.py();
        // SAFETY: both objects are alive and the GIL is held; returns a new reference or NULL
        // with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyContextVar_Set(self.0.as_ptr(), value.as_ptr()))
        }
    }

    /// `var.reset(token)`; fails (RuntimeError/ValueError) for a token of another context.
    #[allow(unsafe_code)]
    pub fn reset(&self, token: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: both objects are alive and the GIL is held; -1 means an exception is set.
        match unsafe { ffi::PyContextVar_Reset(self.0.as_ptr(), token.as_ptr()) } {
            0 => Ok(()),
            _ => Err(PyErr::fetch(token.py())),
        }
    }
}
