//! The one settings object `Beacon` is built from: the `NativeSettings` dataclass (with its
//! `TracingConfig`) that the Python side resolves from keywords, `BEACON_*` and the OpenTelemetry
//! variables, read here attribute by attribute. Every default lives on the Python side, once
//! (caddy_beacon/_config.py, _tracing_config.py); this side turns the values into the core's
//! types and refuses what the core cannot use.

use std::path::PathBuf;
use std::time::Duration;

use beacon_base::tls_files::TlsFiles;
use beacon_core::otlp::exporter::{ExporterConfig, Protocol};
use beacon_core::trace::sampler::Sampler;
use beacon_core::trace::span::AttributeValue;
use beacon_core::Buckets;
use pyo3::prelude::*;

use crate::errors::{to_py_err, ConfigError};

/// `caddy_beacon._config.NativeSettings`.
#[derive(Debug, FromPyObject)]
pub struct Settings {
    pub service_name: String,
    /// The paths the middleware answers itself (/health, /ready, /metrics when enabled).
    pub own_paths: Vec<String>,
    pub buckets: Option<Vec<f64>>,
    pub max_series: usize,
    pub request_id_header: String,
    pub stall_seconds: f64,
    /// The instance's key for metrics shared by its workers; None keeps them per process.
    pub shared_key: Option<String>,
    pub tracing: Option<TracingSettings>,
}

/// `caddy_beacon._tracing_config.TracingConfig`.
#[derive(Debug, FromPyObject)]
pub struct TracingSettings {
    pub endpoint: String,
    pub protocol: String,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub sampler: Option<String>,
    pub sampler_arg: Option<String>,
    pub resource: Vec<(String, String)>,
    pub timeout: f64,
    pub queue_size: usize,
    pub batch_size: usize,
    pub interval: f64,
}

/// A duration given in seconds that must be positive and finite.
pub fn positive_seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ConfigError::new_err(format!(
                "{name} must be a positive number of seconds, got {value}"
            ))
        })
}

impl Settings {
    /// The histogram's bucket bounds (the core's default when none were given).
    pub fn buckets(&self) -> PyResult<Buckets> {
        match &self.buckets {
            Some(bounds) => Buckets::new(bounds).map_err(to_py_err),
            None => Ok(Buckets::default()),
        }
    }

    /// The request-id header as a lower-case name, refused when it cannot be one.
    pub fn request_id_header(&self) -> PyResult<String> {
        let name = &self.request_id_header;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(ConfigError::new_err(format!(
                "request_id_header {name:?} is not a valid HTTP header name"
            )));
        }
        Ok(name.to_ascii_lowercase())
    }

    /// How long a worker's event loop may not run before the side port's /health fails.
    pub fn stall(&self) -> PyResult<Duration> {
        positive_seconds("the stall threshold", self.stall_seconds)
    }
}

impl TracingSettings {
    /// The sampler and the exporter's settings, checked.
    pub fn exporter(&self) -> PyResult<(Sampler, ExporterConfig)> {
        let sampler = Sampler::from_name(self.sampler.as_deref(), self.sampler_arg.as_deref())
            .map_err(to_py_err)?;
        let tls = TlsFiles::load(
            "OTEL_EXPORTER_OTLP_CERTIFICATE / _CLIENT_CERTIFICATE / _CLIENT_KEY",
            self.certificate.as_ref(),
            self.client_certificate.as_ref(),
            self.client_key.as_ref(),
        )
        .map_err(to_py_err)?;
        let config = ExporterConfig {
            endpoint: self.endpoint.clone(),
            protocol: Protocol::parse(&self.protocol).map_err(to_py_err)?,
            headers: self.headers.clone(),
            gzip: self.gzip,
            tls,
            timeout: positive_seconds("trace_timeout", self.timeout)?,
            queue_size: self.queue_size,
            batch_size: self.batch_size.min(self.queue_size),
            interval: positive_seconds("trace_interval", self.interval)?,
            resource: self
                .resource
                .iter()
                .map(|(k, v)| (k.clone().into(), AttributeValue::Str(v.clone())))
                .collect(),
        };
        config.validate().map_err(to_py_err)?;
        Ok((sampler, config))
    }
}
