//! The background span exporter: a bounded queue drained by one thread per process, which
//! batches spans and hands them to the OTLP exporter of that thread ([`Transport`]).
//!
//! The request path only appends under a short lock: when the queue is full (collector slow or
//! down) the span is dropped and counted. The thread starts on the first span, in the process that exports
//! (a forked worker starts its own), and failures are logged at most once a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::otlp::settings::{ExporterConfig, Protocol};
use crate::otlp::transport::Transport;
use crate::request_id::generate_request_id;
use crate::trace::span::{Attribute, AttributeValue, SpanRecord};
use beacon_base::random::fork_generation;

/// Counters, exported as metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans accepted by the collector.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans in batches the collector did not accept.
    pub failed: AtomicU64,
}

// The queue shared with the export thread. Requests append under the lock and wake the thread
// only when a batch is full; otherwise it wakes on its own every `interval`. A wake-up per span
// would cost a context switch per request.
#[derive(Default)]
struct Queue {
    spans: Vec<SpanRecord>,
    flush_requested: u64,
    // The exporter was dropped: send what is left and end the thread.
    closed: bool,
}

#[derive(Default)]
struct Pipeline {
    queue: Mutex<Queue>,
    wake: Condvar,
    flushed: Mutex<u64>,
    flushed_changed: Condvar,
}

/// Exports spans in the background.
pub struct SpanExporter {
    config: Arc<ExporterConfig>,
    // The pipeline of this process, with the fork generation it was started in. A forked child
    // never touches its parent's pipeline (its lock may have been held by a thread that does
    // not exist in the child): it starts its own.
    current: Mutex<Option<(u64, Arc<Pipeline>)>>,
    stats: Arc<ExportStats>,
    // `service.name`, settable until the export thread starts (the app's title is only known
    // once it has started).
    service_name: Mutex<String>,
}

impl SpanExporter {
    /// An exporter that starts its thread on the first span.
    pub fn new(config: ExporterConfig) -> Self {
        SpanExporter {
            config: Arc::new(config),
            current: Mutex::new(None),
            stats: Arc::default(),
            service_name: Mutex::new("unknown_service".to_owned()),
        }
    }

    /// Sets the resource's `service.name` for threads started from now on.
    pub fn set_service_name(&self, name: &str) {
        *self
            .service_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = name.to_owned();
    }

    /// The counters.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    fn pipeline(&self, start: bool) -> Option<Arc<Pipeline>> {
        let generation = fork_generation();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((started_in, pipeline)) = current.as_ref() {
            if *started_in == generation {
                return Some(Arc::clone(pipeline));
            }
        }
        if !start {
            return None;
        }
        let pipeline = Arc::new(Pipeline::default());
        let config = Arc::clone(&self.config);
        let stats = Arc::clone(&self.stats);
        let service_name = self
            .service_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let for_thread = Arc::clone(&pipeline);
        thread::Builder::new()
            .name("caddy-beacon-otlp".into())
            .spawn(move || export_loop(&config, &service_name, &stats, &for_thread))
            .expect("the span exporter thread could not be started");
        if let Some(inherited) = current.replace((generation, Arc::clone(&pipeline))) {
            // The parent's pipeline: forget it rather than run its destructor on state that
            // another process's thread was using.
            std::mem::forget(inherited);
        }
        Some(pipeline)
    }

    /// Queues a finished span; never blocks on the network. Drops it (and counts it) when the
    /// queue is full.
    pub fn submit(&self, span: SpanRecord) {
        let Some(pipeline) = self.pipeline(true) else {
            return;
        };
        let mut queue = pipeline
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.spans.len() >= self.config.queue_size {
            drop(queue);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.spans.push(span);
        let batch_full = queue.spans.len() == self.config.batch_size;
        drop(queue);
        if batch_full {
            pipeline.wake.notify_one();
        }
    }

    /// Sends everything queued so far; waits at most `timeout`. True when it all went out (or
    /// nothing was queued).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(pipeline) = self.pipeline(false) else {
            return true;
        };
        let wanted = {
            let mut queue = pipeline
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.flush_requested += 1;
            queue.flush_requested
        };
        pipeline.wake.notify_one();
        let deadline = Instant::now() + timeout;
        let mut flushed = pipeline
            .flushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *flushed < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            flushed = pipeline
                .flushed_changed
                .wait_timeout(flushed, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for SpanExporter {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline(false) {
            pipeline
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed = true;
            pipeline.wake.notify_one();
        }
    }
}

struct FailureLog {
    last: Option<Instant>,
}

impl FailureLog {
    fn report(&mut self, config: &ExporterConfig, spans: usize, reason: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(60))
        {
            return;
        }
        self.last = Some(now);
        eprintln!(
            "caddy-beacon: could not export {spans} span(s) to {}: {reason} (spans are dropped; further failures in the next minute are not logged)",
            config.endpoint
        );
    }
}

fn send_batch(
    config: &ExporterConfig,
    transport: &Result<Transport, String>,
    stats: &ExportStats,
    batch: Vec<SpanRecord>,
    failures: &mut FailureLog,
) {
    if batch.is_empty() {
        return;
    }
    let count = batch.len();
    let result = match transport {
        Ok(transport) => transport.send(batch),
        Err(error) => Err(error.clone()),
    };
    match result {
        Ok(()) => {
            stats.exported.fetch_add(count as u64, Ordering::Relaxed);
        }
        Err(reason) => {
            stats.failed.fetch_add(count as u64, Ordering::Relaxed);
            failures.report(config, count, &reason);
        }
    }
}

fn export_loop(
    config: &ExporterConfig,
    service_name: &str,
    stats: &ExportStats,
    pipeline: &Pipeline,
) {
    // The thread runs once per process, so this is where a process gets its instance id
    // (unless the configuration names one).
    let mut resource: Vec<Attribute> = vec![(
        "service.name".into(),
        AttributeValue::Str(service_name.to_owned()),
    )];
    resource.extend(
        config
            .resource
            .iter()
            .filter(|(key, _)| key != "service.name")
            .cloned(),
    );
    if !resource.iter().any(|(key, _)| key == "service.instance.id") {
        let id = String::from_utf8_lossy(&generate_request_id()).into_owned();
        resource.push(("service.instance.id".into(), AttributeValue::Str(id)));
    }
    let mut failures = FailureLog { last: None };
    // Built here, in the thread (and so the process) that exports; a failure to build it is
    // reported like a failed export, once a minute, and every span counted as failed.
    let transport = Transport::start(config, &resource);
    let mut flushes_done = 0u64;
    let mut next_send = Instant::now() + config.interval;
    loop {
        let (mut spans, flush_requested, closed) = {
            let mut queue = pipeline
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            loop {
                let due = Instant::now() >= next_send;
                if due
                    || queue.closed
                    || queue.spans.len() >= config.batch_size
                    || queue.flush_requested > flushes_done
                {
                    break;
                }
                let wait = next_send.saturating_duration_since(Instant::now());
                queue = pipeline
                    .wake
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            // The queue is left with room for a batch, so the request path's push does not grow
            // it (growing moved the queued spans, ~200 instructions per span under callgrind);
            // the allocation happens here, on the export thread.
            let spans = match queue.spans.is_empty() {
                true => Vec::new(),
                false => std::mem::replace(
                    &mut queue.spans,
                    Vec::with_capacity(config.batch_size.min(config.queue_size)),
                ),
            };
            (spans, queue.flush_requested, queue.closed)
        };
        next_send = Instant::now() + config.interval;
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(config.batch_size));
            send_batch(config, &transport, stats, spans, &mut failures);
            spans = rest;
        }
        if flush_requested > flushes_done {
            flushes_done = flush_requested;
            *pipeline
                .flushed
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = flushes_done;
            pipeline.flushed_changed.notify_all();
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::context::RequestTrace;
    use crate::trace::span::{HttpServerFacts, SpanRecord, SpanText};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn span(n: u8) -> SpanRecord {
        SpanRecord {
            trace: RequestTrace {
                trace_id: [n; 16],
                span_id: [n; 8],
                parent_span_id: None,
                trace_state: String::new(),
                sampled: true,
                start_unix_nanos: 1,
            },
            end_unix_nanos: 2,
            http: {
                let mut http = HttpServerFacts::new(crate::HttpMethod::Get, 200, 0);
                http.set(SpanText::Route, &format!("/{n}"));
                http
            },
            error: false,
        }
    }

    fn config(port: u16, queue_size: usize, interval: Duration) -> ExporterConfig {
        ExporterConfig {
            queue_size,
            interval,
            ..crate::otlp::settings::tests::config(&format!("http://127.0.0.1:{port}/v1/traces"))
        }
    }

    #[test]
    fn flush_sends_queued_spans_in_batches_and_counts_them() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = vec![0u8; 65536];
                let n = stream.read(&mut buf).unwrap();
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .unwrap();
            }
            requests
        });
        let exporter = SpanExporter::new(config(port, 10, Duration::from_secs(600)));
        for n in 1..=3 {
            exporter.submit(span(n));
        }
        assert!(exporter.flush(Duration::from_secs(5)));
        let requests = server.join().unwrap();
        assert!(
            requests[0].starts_with("POST /v1/traces HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("authorization: Bearer t\r\n"));
        assert_eq!(exporter.stats().exported.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_full_queue_drops_and_an_unreachable_collector_fails() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exporter = SpanExporter::new(config(port, 3, Duration::from_secs(600)));
        for n in 0..5 {
            exporter.submit(span(n));
        }
        // Two wake the thread as a full batch; what it has not taken yet counts against the queue.
        assert!(exporter.stats().dropped.load(Ordering::Relaxed) <= 2);
        assert!(exporter.flush(Duration::from_secs(5)));
        let stats = exporter.stats();
        let accounted =
            stats.dropped.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed);
        assert_eq!(accounted, 5);
        assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
    }
}
