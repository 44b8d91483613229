//! `Armed`: what the native request path needs, fixed once the worker has started —
//! `MiddlewareCore` holds it, each `RequestCall` shares it.

use pyo3::prelude::*;

use crate::beacon::Beacon;
use crate::context_var::ContextVar;

/// The OpenTelemetry bridge: `attach(record) -> token`, `detach(token)`.
pub struct OtelBridge {
    pub attach: Py<PyAny>,
    pub detach: Py<PyAny>,
}

/// What the native path needs, fixed once the worker has started.
pub struct Armed {
    pub beacon: Py<Beacon>,
    pub app: Py<PyAny>,
    /// `current_request`, the context variable behind `request_id()`.
    pub current_request: ContextVar,
    pub otel: Option<OtelBridge>,
}
