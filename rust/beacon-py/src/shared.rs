//! `Shared`: the state a `Beacon` and the requests it has started share (metrics, readiness,
//! the tracer), and the side port's answers, which never touch Python.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use beacon_base::http_server::{Response, StatusCode};
use beacon_core::exposition::{self, Format, Scrape, TargetInfo};
use beacon_core::load_report::LoadReporter;
use beacon_core::side_port::ProbeAnswers;
use beacon_core::tracer::Tracer;
use beacon_core::{Readiness, RequestMetrics};

/// State shared by a `Beacon` and the requests it has started.
pub struct Shared {
    pub metrics: RequestMetrics,
    pub readiness: Readiness,
    pub tracer: Option<Tracer>,
    /// Load reports for a proxy that asks (`endpoint-load-metrics-format: TEXT`).
    pub load: LoadReporter,
    pub(crate) target: RwLock<TargetInfo>,
    // A worker whose event loop has not run for this long makes the side port's /health fail.
    pub(crate) stall: Duration,
}

impl Shared {
    pub(crate) fn render(&self, accept: Option<&str>) -> (String, Format) {
        let format = Format::negotiate(accept);
        let target = self
            .target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let workers = self.metrics.workers();
        let text = exposition::render(
            &Scrape {
                processes: exposition::current_processes(&self.metrics, &workers),
                workers,
                metrics: &self.metrics,
                readiness: &self.readiness,
                target: &target,
                spans: self.tracer.as_ref().map(|t| t.stats()),
            },
            format,
        );
        (text, format)
    }
}

/// The side port's answers; never touch Python.
impl ProbeAnswers for Shared {
    fn health(&self) -> Response {
        let stalled: Vec<String> = self
            .metrics
            .workers()
            .iter()
            .filter_map(|w| {
                w.heartbeat_age.filter(|age| *age >= self.stall).map(|age| {
                    format!(
                        "worker {} event loop stalled for {:.1}s",
                        w.pid,
                        age.as_secs_f64()
                    )
                })
            })
            .collect();
        if stalled.is_empty() {
            Response::new(
                StatusCode::OK,
                "application/health+json",
                "{\"status\":\"pass\"}",
            )
        } else {
            let body =
                serde_json::json!({"status": "fail", "output": stalled.join("; ")}).to_string();
            Response::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/health+json",
                body,
            )
        }
    }

    fn ready(&self) -> Response {
        let report = self.readiness.report_json();
        let status = if report.status_code == 200 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Response::new(status, "application/health+json", report.body)
    }

    fn metrics(&self, accept: Option<&str>) -> Response {
        let (text, format) = self.render(accept);
        Response::new(StatusCode::OK, format.content_type(), text)
    }
}
