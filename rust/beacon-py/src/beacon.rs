//! `Beacon`: one middleware instance's native state (metrics, readiness, request ids).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use beacon_core::exposition::TargetInfo;
use beacon_core::load_report::LoadReporter;
use beacon_core::loop_watch::{self, LoopWatch};
use beacon_core::request_id::{generate_request_id, is_valid_request_id};
use beacon_core::side_port::{self, ProbeAnswers, SidePortStart};
use beacon_core::tracer::Tracer;
use beacon_core::{process_metrics, shared_region};
use beacon_core::{CheckOutcome, HttpMethod, Readiness, RequestMetrics};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::errors::{to_py_err, ConfigError};
use crate::loop_probe::{LoopProbeAnswer, PythonProbe};
use crate::request_record::{RequestContext, RequestRecord};
use crate::route_label::RouteLabels;
use crate::settings::Settings;
use crate::shared::Shared;

/// Native state of one `BeaconMiddleware`.
#[pyclass(frozen, module = "caddy_beacon._native")]
pub struct Beacon {
    shared: Arc<Shared>,
    request_id_header: Vec<u8>,
    // The same name as a Python bytes object, reused for every response header.
    request_id_header_bytes: Py<PyBytes>,
    route_labels: Arc<RouteLabels>,
    // The paths the middleware answers itself (/health, /ready, /metrics when enabled).
    own_paths: Vec<String>,
    // Why the metrics could not be shared between workers, if they could not.
    shared_error: Option<String>,
    // The process whose thread serves (or waits for) the side port: threads do not survive a
    // fork, so a forked worker starts its own.
    side_port_pid: Mutex<Option<u32>>,
    // This process's event-loop watchdog, while it runs.
    loop_watch: Mutex<Option<Arc<LoopWatch>>>,
}

#[pymethods]
impl Beacon {
    /// Built from the one settings object the Python side resolved (`NativeSettings`).
    #[new]
    #[pyo3(signature = (settings, *, route_template))]
    fn new(py: Python<'_>, settings: Settings, route_template: Py<PyAny>) -> PyResult<Self> {
        let buckets = settings.buckets()?;
        let request_id_header = settings.request_id_header()?;
        let stall = settings.stall()?;
        let max_series = settings.max_series;
        let (metrics, shared_error) = match &settings.shared_key {
            None => (
                RequestMetrics::new(buckets, max_series).map_err(to_py_err)?,
                None,
            ),
            Some(key) => {
                // Regions of instances that are gone must not pile up in /dev/shm.
                shared_region::remove_stale(|pid, start| {
                    process_metrics::start_ticks(pid) == Some(start)
                });
                match RequestMetrics::shared(buckets.clone(), max_series, key) {
                    Ok(metrics) => (metrics, None),
                    // Per-worker metrics are worse than shared ones, but better than no app.
                    Err(error) => (
                        RequestMetrics::new(buckets, max_series).map_err(to_py_err)?,
                        Some(error.to_string()),
                    ),
                }
            }
        };
        let tracer = match &settings.tracing {
            None => None,
            Some(tracing) => {
                let (sampler, config) = tracing.exporter()?;
                let tracer = Tracer::new(sampler, config);
                tracer.set_service_name(&settings.service_name);
                Some(tracer)
            }
        };
        let (service_name, own_paths) = (settings.service_name, settings.own_paths);
        Ok(Beacon {
            shared: Arc::new(Shared {
                metrics,
                readiness: Readiness::new(),
                tracer,
                load: LoadReporter::default(),
                target: RwLock::new(TargetInfo { service_name }),
                stall,
            }),
            shared_error,
            side_port_pid: Mutex::new(None),
            loop_watch: Mutex::new(None),
            request_id_header_bytes: PyBytes::new(py, request_id_header.as_bytes()).unbind(),
            request_id_header: request_id_header.into_bytes(),
            route_labels: Arc::new(RouteLabels::new(route_template)),
            own_paths,
        })
    }

    /// Starts the bookkeeping of one HTTP request from its ASGI scope: reads the method and the
    /// request-id header (kept when valid, generated otherwise) and raises the active gauge.
    /// The returned record is also the `send` to hand to the app: it adds the request-id header
    /// and records the request when the last body message goes out.
    /// Returns None, and starts nothing, for a request to one of the middleware's own paths.
    pub(crate) fn begin(
        &self,
        scope: &Bound<'_, PyDict>,
        send: Py<PyAny>,
    ) -> PyResult<Option<RequestRecord>> {
        let py = scope.py();
        let root_path = scope.get_item(intern!(py, "root_path"))?;
        if self.own_path_of(scope, root_path.as_ref())?.is_some() {
            return Ok(None);
        }
        let method = match scope.get_item(intern!(py, "method"))? {
            Some(value) => match value.cast::<PyString>() {
                Ok(text) => HttpMethod::parse(text.to_str()?.as_bytes()),
                Err(_) => HttpMethod::Other,
            },
            None => HttpMethod::Other,
        };
        let headers = scope.get_item(intern!(py, "headers"))?;
        let mut scan = HeaderScan::default();
        if let Some(headers) = &headers {
            self.scan_headers(headers, &mut scan);
        }
        let trace = self.shared.tracer.as_ref().map(|tracer| {
            let traceparents: Vec<&[u8]> =
                scan.traceparents.iter().map(|v| v.as_bytes(py)).collect();
            let tracestate = (!scan.tracestate.is_empty()).then(|| scan.tracestate.join(","));
            tracer.start(&traceparents, tracestate.as_deref())
        });
        let request_id = scan
            .request_id
            .unwrap_or_else(|| PyBytes::new(py, &generate_request_id()).unbind());
        let outer_root_path = match root_path {
            Some(root_path) => root_path.unbind(),
            None => PyString::intern(py, "").into_any().unbind(),
        };
        self.shared.metrics.request_started(method);
        Ok(Some(RequestRecord::new(
            Arc::clone(&self.shared),
            method,
            scan.load_report,
            request_id,
            trace,
            RequestContext {
                host: scan.host,
                user_agent: scan.user_agent,
                scope: scope.clone().unbind(),
                send,
                outer_root_path,
                header_name: self.request_id_header_bytes.clone_ref(py),
                route_labels: Arc::clone(&self.route_labels),
            },
        )))
    }

    /// Which of the middleware's own paths the request is for, if any. Servers started with
    /// `--root-path` put the prefix in front of the path as well, so it is tried without it too.
    fn own_path(&self, scope: &Bound<'_, PyDict>) -> PyResult<Option<String>> {
        let root_path = scope.get_item(intern!(scope.py(), "root_path"))?;
        Ok(self
            .own_path_of(scope, root_path.as_ref())?
            .map(str::to_owned))
    }

    /// Renders `/metrics` for the given `Accept` header; returns `(body, content_type)`.
    /// Formatting runs detached from the interpreter so other threads keep running.
    #[pyo3(signature = (accept=None))]
    fn render_metrics(&self, py: Python<'_>, accept: Option<&str>) -> (Py<PyBytes>, &'static str) {
        let shared = &self.shared;
        let (text, format) = py.detach(|| shared.render(accept));
        (
            PyBytes::new(py, text.as_bytes()).unbind(),
            format.content_type(),
        )
    }

    /// The file in /dev/shm the workers of this instance share, or None (one process).
    #[getter]
    fn shared_path(&self) -> Option<String> {
        self.shared
            .metrics
            .shared_path()
            .map(|p| p.display().to_string())
    }

    /// Why sharing the metrics failed (then each worker keeps its own), or None.
    #[getter]
    fn shared_error(&self) -> Option<String> {
        self.shared_error.clone()
    }

    /// Starts this process's event-loop watchdog (beacon_core::loop_watch): a thread that looks
    /// at the loop's thread `thread_id` every 100 ms, and when it is busy schedules a probe on
    /// it with `post(probe, posted)` — asyncio's `loop.call_soon_threadsafe`, trio's
    /// `TrioToken.run_sync_soon`. An idle loop is never woken. Replaces a watchdog already
    /// running.
    fn watch_event_loop(&self, py: Python<'_>, post: Py<PyAny>, thread_id: i32) -> PyResult<()> {
        let shared = Arc::clone(&self.shared);
        let sampled = Arc::clone(&self.shared);
        let watch = LoopWatch::sampled(
            move |lag| shared.metrics.heartbeat(lag, loop_watch::INTERVAL),
            move |busy| sampled.metrics.loop_sampled(busy),
        );
        let answer = Py::new(
            py,
            LoopProbeAnswer {
                watch: Arc::clone(&watch),
            },
        )?;
        watch
            .spawn(thread_id, PythonProbe { post, answer })
            .map_err(|e| {
                ConfigError::new_err(format!("cannot start the event-loop watchdog: {e}"))
            })?;
        if let Some(previous) = self
            .loop_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(watch)
        {
            previous.stop();
        }
        Ok(())
    }

    /// Stops the event-loop watchdog (within 100 ms; it never waits for the thread).
    fn stop_watching_event_loop(&self) {
        if let Some(watch) = self
            .loop_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            watch.stop();
        }
    }

    /// Serves /health, /ready and /metrics on `host:port` from a thread that never needs the
    /// interpreter. Returns "serving", or "standby" when another process (another worker of the
    /// instance) holds the port: this one takes over if it goes away. Once per process.
    fn start_side_port(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
    ) -> PyResult<Option<&'static str>> {
        let pid = std::process::id();
        let mut started = self
            .side_port_pid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *started == Some(pid) {
            return Ok(None);
        }
        let address: SocketAddr = format!("{host}:{port}")
            .parse()
            .or_else(|_| format!("[{host}]:{port}").parse())
            .map_err(|_| {
                ConfigError::new_err(format!(
                    "side port address {host}:{port} is not an IP address and port"
                ))
            })?;
        let shared: Arc<dyn ProbeAnswers> = Arc::clone(&self.shared) as Arc<dyn ProbeAnswers>;
        let outcome = py
            .detach(|| side_port::start(address, shared))
            .map_err(|e| {
                ConfigError::new_err(format!("cannot serve the side port on {address}: {e}"))
            })?;
        *started = Some(pid);
        Ok(Some(match outcome {
            SidePortStart::Serving => "serving",
            SidePortStart::Standby => "standby",
        }))
    }

    /// Sends the spans queued so far; waits at most `timeout` seconds, detached from the
    /// interpreter. True when everything went out (or tracing is off).
    fn flush_traces(&self, py: Python<'_>, timeout: f64) -> bool {
        let Some(tracer) = self.shared.tracer.as_ref() else {
            return true;
        };
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or_default();
        py.detach(|| tracer.flush(timeout))
    }

    /// Whether spans are exported.
    #[getter]
    fn tracing(&self) -> bool {
        self.shared.tracer.is_some()
    }

    /// The `/ready` answer: `(status_code, health+json body)`.
    fn ready_response(&self, py: Python<'_>) -> (u16, Py<PyBytes>) {
        let report = self.shared.readiness.report_json();
        (
            report.status_code,
            PyBytes::new(py, report.body.as_bytes()).unbind(),
        )
    }

    /// Declares a dependency check.
    fn register_check(&self, name: &str, critical: bool) -> PyResult<()> {
        self.shared
            .readiness
            .register_check(name, critical)
            .map_err(to_py_err)
    }

    /// Stores the result of one run of a check.
    #[pyo3(signature = (name, passed, duration_seconds, output=None))]
    fn report_check(
        &self,
        name: &str,
        passed: bool,
        duration_seconds: f64,
        output: Option<String>,
    ) -> PyResult<()> {
        let outcome = CheckOutcome {
            passed,
            duration: Duration::try_from_secs_f64(duration_seconds.max(0.0)).unwrap_or_default(),
            observed_at: SystemTime::now(),
            output: output.unwrap_or_default(),
        };
        self.shared
            .readiness
            .report(name, outcome)
            .map_err(to_py_err)
    }

    /// Sets `service_name` on `target_info` (the app's title, learnt at startup).
    fn set_service_name(&self, service_name: String) {
        if let Some(tracer) = &self.shared.tracer {
            tracer.set_service_name(&service_name);
        }
        self.shared
            .target
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .service_name = service_name;
    }

    /// Startup has completed: `/ready` may pass from now on.
    fn mark_started(&self) {
        self.shared.readiness.mark_started();
    }

    /// Switches draining on or off.
    fn set_draining(&self, draining: bool) {
        self.shared.readiness.set_draining(draining);
    }

    /// Whether the instance is draining.
    #[getter]
    fn draining(&self) -> bool {
        self.shared.readiness.is_draining()
    }

    /// Whether `/ready` currently passes.
    #[getter]
    fn ready(&self) -> bool {
        self.shared.readiness.is_ready()
    }

    /// Number of histogram series created so far.
    #[getter]
    fn series_count(&self) -> usize {
        self.shared.metrics.series_count()
    }

    /// The configured series cap.
    #[getter]
    fn max_series(&self) -> usize {
        self.shared.metrics.max_series()
    }

    /// The histogram bucket bounds in seconds.
    #[getter]
    fn buckets(&self) -> Vec<f64> {
        self.shared.metrics.buckets().seconds().to_vec()
    }
}

impl Beacon {
    fn own_path_of(
        &self,
        scope: &Bound<'_, PyDict>,
        root_path: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<&str>> {
        if self.own_paths.is_empty() {
            return Ok(None);
        }
        let Some(path) = scope.get_item(intern!(scope.py(), "path"))? else {
            return Ok(None);
        };
        let Ok(path) = path.cast::<PyString>() else {
            return Ok(None);
        };
        let path = path.to_str()?;
        let root = match root_path.map(|r| r.cast::<PyString>()) {
            Some(Ok(root)) => root.to_str()?,
            _ => "",
        };
        let unprefixed = if root.is_empty() {
            None
        } else {
            path.strip_prefix(root)
        };
        Ok(self
            .own_paths
            .iter()
            .map(String::as_str)
            .find(|own| *own == path || Some(*own) == unprefixed))
    }

    /// Reads the headers the request needs: the request id (the first valid one of its name;
    /// an invalid value is dropped, never echoed) and, when tracing, `traceparent`,
    /// `tracestate`, `host` and `user-agent`. Malformed entries are skipped.
    fn scan_headers(&self, headers: &Bound<'_, PyAny>, scan: &mut HeaderScan) {
        // Servers hand a list: walked by index (no iterator object); anything else iterated.
        if let Ok(list) = headers.cast::<PyList>() {
            for item in list.iter() {
                self.scan_header(&item, scan);
            }
            return;
        }
        let Ok(items) = headers.try_iter() else {
            return;
        };
        for item in items.flatten() {
            self.scan_header(&item, scan);
        }
    }

    fn scan_header(&self, item: &Bound<'_, PyAny>, scan: &mut HeaderScan) {
        let (name, value) = match item.cast::<PyTuple>() {
            Ok(pair) if pair.len() == 2 => match (pair.get_item(0), pair.get_item(1)) {
                (Ok(name), Ok(value)) => (name, value),
                _ => return,
            },
            _ => match (item.get_item(0), item.get_item(1)) {
                (Ok(name), Ok(value)) => (name, value),
                _ => return,
            },
        };
        let Ok(name) = name.cast::<PyBytes>() else {
            return;
        };
        let Ok(value) = value.cast_into::<PyBytes>() else {
            return;
        };
        let name = name.as_bytes();
        if name.eq_ignore_ascii_case(&self.request_id_header) {
            if scan.request_id.is_none() && !scan.request_id_seen {
                scan.request_id_seen = true;
                if is_valid_request_id(value.as_bytes()) {
                    scan.request_id = Some(value.unbind());
                }
            }
            return;
        }
        if name.eq_ignore_ascii_case(b"endpoint-load-metrics-format") {
            scan.load_report = value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"TEXT");
            return;
        }
        if self.shared.tracer.is_none() {
            return;
        }
        if name.eq_ignore_ascii_case(b"traceparent") {
            scan.traceparents.push(value.unbind());
        } else if name.eq_ignore_ascii_case(b"tracestate") {
            if let Ok(text) = std::str::from_utf8(value.as_bytes()) {
                scan.tracestate.push(text.to_owned());
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            scan.host.get_or_insert(value.unbind());
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            scan.user_agent.get_or_insert(value.unbind());
        }
    }
}

/// What `scan_headers` found.
#[derive(Default)]
struct HeaderScan {
    // The proxy asked for a load report (`endpoint-load-metrics-format: TEXT`).
    load_report: bool,
    request_id: Option<Py<PyBytes>>,
    request_id_seen: bool,
    traceparents: Vec<Py<PyBytes>>,
    tracestate: Vec<String>,
    host: Option<Py<PyBytes>>,
    user_agent: Option<Py<PyBytes>>,
}
