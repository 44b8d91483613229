//! Rendering of every metric the middleware exports, in the Prometheus text format (0.0.4) or
//! in OpenMetrics 1.0, chosen from the scraper's `Accept` header.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::otlp::exporter::ExportStats;

use crate::metrics_store::{total_active, LOOP_LAG_BUCKETS};
use crate::process_metrics::ProcessStats;
use crate::trace::context::to_hex;
use crate::HttpMethod;
use crate::{Exemplar, Readiness, RequestMetrics, WorkerState};

/// The two exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header lists `application/openmetrics-text` with a non-zero
    /// quality, as Prometheus does by default; the classic text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Identity of the instance, rendered as `target_info`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetInfo {
    /// `service_name`
    pub service_name: String,
}

/// Everything one scrape renders.
pub struct Scrape<'a> {
    /// Request histograms and gauges.
    pub metrics: &'a RequestMetrics,
    /// Readiness and check results.
    pub readiness: &'a Readiness,
    /// `target_info` labels.
    pub target: &'a TargetInfo,
    /// The live workers sharing `metrics` (`RequestMetrics::workers`, read once per scrape).
    pub workers: Vec<WorkerState>,
    /// Process metrics, when the platform has them: one unlabelled entry for a single
    /// process, one per worker (labelled with its pid) when workers share the metrics.
    pub processes: Vec<(Option<u32>, ProcessStats)>,
    /// Span export counters, when tracing is on.
    pub spans: Option<&'a ExportStats>,
}

struct Writer {
    out: String,
    format: Format,
}

fn escape_label_value(value: &str, out: &mut String) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
}

impl Writer {
    /// `# HELP` and `# TYPE` lines. In OpenMetrics a counter family is named without `_total`
    /// and `target_info` is of type `info`.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let (name, kind) = match (self.format, kind) {
            (Format::OpenMetrics, "counter") => (name.strip_suffix("_total").unwrap_or(name), kind),
            (Format::OpenMetrics, "info") => (name.strip_suffix("_info").unwrap_or(name), kind),
            (Format::Prometheus, "info") => (name, "gauge"),
            _ => (name, kind),
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.sample_with_exemplar(name, labels, value, None);
    }

    /// A sample line; in OpenMetrics, followed by its exemplar when there is one.
    fn sample_with_exemplar(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
        exemplar: Option<&Exemplar>,
    ) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                escape_label_value(val, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = write!(self.out, " {value}");
        if let (Format::OpenMetrics, Some(exemplar)) = (self.format, exemplar) {
            let _ = write!(
                self.out,
                " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
                to_hex(&exemplar.trace_id),
                to_hex(&exemplar.span_id),
                exemplar.value_nanos as f64 / 1e9,
                exemplar.timestamp_millis / 1000,
                exemplar.timestamp_millis % 1000
            );
        }
        self.out.push('\n');
    }
}

/// Process metrics for a scrape: this process alone, or each of the live `workers` sharing
/// `metrics`.
pub fn current_processes(
    metrics: &RequestMetrics,
    workers: &[WorkerState],
) -> Vec<(Option<u32>, ProcessStats)> {
    if metrics.shared_path().is_none() {
        return crate::process_metrics::read_self()
            .map(|stats| vec![(None, stats)])
            .unwrap_or_default();
    }
    workers
        .iter()
        .filter_map(|w| crate::process_metrics::read_pid(w.pid).map(|stats| (Some(w.pid), stats)))
        .collect()
}

/// Renders a scrape.
pub fn render(scrape: &Scrape<'_>, format: Format) -> String {
    let series = scrape.metrics.snapshot();
    let mut w = Writer {
        out: String::with_capacity(256 + series.len() * 1024),
        format,
    };

    let name = "http_server_request_duration_seconds";
    w.family(
        name,
        "histogram",
        "Duration of HTTP server requests, from the request's start to its last response byte.",
    );
    let bounds: Vec<String> = scrape
        .metrics
        .buckets()
        .seconds()
        .iter()
        .map(|b| format!("{b}"))
        .collect();
    for s in &series {
        let status = s.labels.status.to_string();
        let base = [
            ("http_request_method", s.labels.method.as_label()),
            ("http_route", &*s.labels.route),
            ("http_response_status_code", status.as_str()),
        ];
        let mut cumulative = 0u64;
        for (i, count) in s.bucket_counts.iter().enumerate() {
            cumulative += count;
            let le = bounds.get(i).map(String::as_str).unwrap_or("+Inf");
            let labels = [base[0], base[1], base[2], ("le", le)];
            w.sample_with_exemplar(
                &format!("{name}_bucket"),
                &labels,
                cumulative,
                s.exemplars[i].as_ref(),
            );
        }
        w.sample(&format!("{name}_sum"), &base, s.sum_seconds);
        w.sample(&format!("{name}_count"), &base, cumulative);
    }

    w.family(
        "http_server_active_requests",
        "gauge",
        "Number of HTTP server requests in flight.",
    );
    let recorded: Vec<HttpMethod> = series.iter().map(|s| s.labels.method).collect();
    for (method, active) in total_active(&scrape.workers, &recorded) {
        w.sample(
            "http_server_active_requests",
            &[("http_request_method", method.as_label())],
            active,
        );
    }

    w.family(
        "beacon_series_dropped_total",
        "counter",
        "Observations not recorded because the series cap (max_series) was reached.",
    );
    w.sample(
        "beacon_series_dropped_total",
        &[],
        scrape.metrics.series_dropped(),
    );

    w.family(
        "beacon_ready",
        "gauge",
        "1 when the instance is ready to receive traffic, else 0.",
    );
    w.sample("beacon_ready", &[], u8::from(scrape.readiness.is_ready()));

    let checks = scrape.readiness.check_gauges();
    w.family(
        "beacon_check_up",
        "gauge",
        "1 when the dependency check's latest run passed, else 0.",
    );
    for check in &checks {
        w.sample(
            "beacon_check_up",
            &[("check", &check.name)],
            u8::from(check.up == Some(true)),
        );
    }
    w.family(
        "beacon_check_duration_seconds",
        "gauge",
        "Duration of the dependency check's latest run.",
    );
    for check in &checks {
        if let Some(duration) = check.duration_seconds {
            w.sample(
                "beacon_check_duration_seconds",
                &[("check", &check.name)],
                duration,
            );
        }
    }

    if let Some(spans) = scrape.spans {
        for (name, help, value) in [
            (
                "beacon_spans_exported_total",
                "Spans the collector accepted.",
                &spans.exported,
            ),
            (
                "beacon_spans_dropped_total",
                "Spans dropped because the export queue was full.",
                &spans.dropped,
            ),
            (
                "beacon_spans_failed_total",
                "Spans in batches the collector did not accept or could not be sent.",
                &spans.failed,
            ),
        ] {
            w.family(name, "counter", help);
            w.sample(name, &[], value.load(Ordering::Relaxed));
        }
    }

    let watched: Vec<_> = scrape
        .workers
        .iter()
        .filter(|w| w.heartbeat_age.is_some())
        .collect();
    let (lag_counts, lag_sum) = scrape.metrics.loop_lag();
    if !watched.is_empty() || lag_counts.iter().any(|c| *c > 0) {
        let name = "beacon_event_loop_lag_seconds";
        w.family(name, "histogram", "How late the event loops ran their 100 ms heartbeat, every worker's every beat: a stall shows here after it ended.");
        let mut cumulative = 0u64;
        for (i, count) in lag_counts.iter().enumerate() {
            cumulative += count;
            let le = LOOP_LAG_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
            w.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
        }
        w.sample(&format!("{name}_sum"), &[], lag_sum);
        w.sample(&format!("{name}_count"), &[], cumulative);
    }
    if !watched.is_empty() {
        w.family(
            "beacon_event_loop_stall_seconds",
            "gauge",
            "How late the worker's event loop is now: its last heartbeat's lag, or the time since that heartbeat while it is stalled.",
        );
        for worker in watched {
            let stalled = worker
                .heartbeat_age
                .unwrap_or_default()
                .saturating_sub(worker.heartbeat_interval);
            let pid = worker.pid.to_string();
            w.sample(
                "beacon_event_loop_stall_seconds",
                &[("pid", &pid)],
                worker.loop_lag.max(stalled).as_secs_f64(),
            );
        }
    }

    type Field = fn(&ProcessStats) -> Option<f64>;
    let families: [(&str, &str, &str, Field); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            |p| Some(p.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            |p| Some(p.resident_memory_bytes as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            |p| Some(p.virtual_memory_bytes as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            |p| Some(p.open_fds as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            |p| p.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            |p| Some(p.start_time_seconds),
        ),
    ];
    for (name, kind, help, field) in families {
        let samples: Vec<(Option<String>, f64)> = scrape
            .processes
            .iter()
            .filter_map(|(pid, stats)| field(stats).map(|v| (pid.map(|p| p.to_string()), v)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        w.family(name, kind, help);
        for (pid, value) in samples {
            match pid {
                Some(pid) => w.sample(name, &[("pid", &pid)], value),
                None => w.sample(name, &[], value),
            }
        }
    }

    w.family("target_info", "info", "Target metadata.");
    w.sample(
        "target_info",
        &[("service_name", &scrape.target.service_name)],
        1,
    );

    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Buckets, HttpMethod};

    fn scrape_text(format: Format) -> String {
        let metrics = RequestMetrics::new(Buckets::new(&[0.1, 1.0]).unwrap(), 10).unwrap();
        metrics.request_started(HttpMethod::Get);
        metrics.request_finished(HttpMethod::Get, "/a/{id}", 200, 50_000_000);
        metrics.request_finished(HttpMethod::Get, "/a/{id}", 200, 500_000_000);
        metrics.observe(HttpMethod::Post, "/q\"uote\\\n", 500, 2_000_000_000);
        metrics.request_started(HttpMethod::Get);
        metrics.request_finished_traced(
            HttpMethod::Get,
            "/traced",
            200,
            20_000_000,
            ([0xab; 16], [0xcd; 8]),
        );
        let readiness = Readiness::new();
        readiness.register_check("db", true).unwrap();
        let target = TargetInfo {
            service_name: "orders".into(),
        };
        render(
            &Scrape {
                workers: metrics.workers(),
                metrics: &metrics,
                readiness: &readiness,
                target: &target,
                processes: Vec::new(),
                spans: None,
            },
            format,
        )
    }

    #[test]
    fn prometheus_text_has_cumulative_buckets_and_escaped_labels() {
        let text = scrape_text(Format::Prometheus);
        let labels =
            r#"http_request_method="GET",http_route="/a/{id}",http_response_status_code="200""#;
        for line in [
            format!("http_server_request_duration_seconds_bucket{{{labels},le=\"0.1\"}} 1"),
            format!("http_server_request_duration_seconds_bucket{{{labels},le=\"1\"}} 2"),
            format!("http_server_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2"),
            format!("http_server_request_duration_seconds_sum{{{labels}}} 0.55"),
            format!("http_server_request_duration_seconds_count{{{labels}}} 2"),
            r#"http_route="/q\"uote\\\n""#.to_string(),
            "http_server_active_requests{http_request_method=\"GET\"} -1".to_string(),
            "# TYPE beacon_series_dropped_total counter".to_string(),
            "beacon_check_up{check=\"db\"} 0".to_string(),
            "beacon_ready 0".to_string(),
            "# TYPE target_info gauge".to_string(),
            "target_info{service_name=\"orders\"} 1".to_string(),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("trace_id"), "exemplars are OpenMetrics only");
    }

    #[test]
    fn openmetrics_names_families_and_ends_with_eof() {
        let text = scrape_text(Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE beacon_series_dropped counter\n"));
        assert!(text.contains("beacon_series_dropped_total 0\n"));
        assert!(text.contains("# TYPE target info\n"));
        let exemplar = format!(
            "# {{trace_id=\"{}\",span_id=\"{}\"}} 0.02 ",
            "ab".repeat(16),
            "cd".repeat(8)
        );
        let bucket = text
            .lines()
            .find(|l| l.contains("http_route=\"/traced\"") && l.contains("le=\"0.1\""))
            .unwrap();
        assert!(bucket.contains(&exemplar), "{bucket}");
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        let prometheus_default = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(
            Format::negotiate(Some(prometheus_default)),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
    }
}
