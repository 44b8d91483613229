//! The background span exporter: a bounded queue drained by one thread per process, which
//! batches spans and posts them over OTLP/HTTP protobuf.
//!
//! The request path only ever `try_send`s: when the queue is full (collector slow or down) the
//! span is dropped and counted. The thread starts on the first span, in the process that exports
//! (a forked worker starts its own), and failures are logged at most once a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::otlp::encode::export_request;
use crate::otlp::http_post::{post, Endpoint};
use crate::random::fork_generation;
use crate::request_id::generate_request_id;
use crate::trace::span::{Attribute, AttributeValue, SpanRecord};

/// How the exporter sends.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// The traces URL (`…/v1/traces`).
    pub endpoint: Endpoint,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Spans waiting to be sent before new ones are dropped.
    pub queue_size: usize,
    /// Spans per request at most.
    pub batch_size: usize,
    /// Longest time a span waits in a partial batch.
    pub interval: Duration,
    /// Resource attributes (`service.name`, `service.instance.id`, …).
    pub resource: Vec<Attribute>,
}

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

enum Message {
    Span(Box<SpanRecord>),
    Flush(SyncSender<()>),
}

struct Running {
    generation: u64,
    sender: SyncSender<Message>,
}

/// Exports spans in the background.
pub struct SpanExporter {
    config: Arc<ExporterConfig>,
    running: Mutex<Option<Running>>,
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
            running: Mutex::new(None),
            stats: Arc::default(),
            service_name: Mutex::new("unknown_service".to_owned()),
        }
    }

    /// Sets the resource's `service.name` for threads started from now on.
    pub fn set_service_name(&self, name: &str) {
        *self.service_name.lock().unwrap_or_else(PoisonError::into_inner) = name.to_owned();
    }

    /// The counters.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    fn sender(&self) -> SyncSender<Message> {
        let generation = fork_generation();
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = running.as_ref() {
            if current.generation == generation {
                return current.sender.clone();
            }
        }
        // First span, or first in a forked child (whose copy of the parent's thread is gone).
        let (sender, receiver) = mpsc::sync_channel(self.config.queue_size);
        let config = Arc::clone(&self.config);
        let stats = Arc::clone(&self.stats);
        let service_name = self.service_name.lock().unwrap_or_else(PoisonError::into_inner).clone();
        thread::Builder::new()
            .name("caddy-beacon-otlp".into())
            .spawn(move || export_loop(&config, &service_name, &stats, &receiver))
            .expect("the span exporter thread could not be started");
        if let Some(previous) = running.replace(Running { generation, sender: sender.clone() }) {
            // The parent's sender: its thread does not exist here. Forget it rather than
            // touching channel state another process owned.
            std::mem::forget(previous);
        }
        sender
    }

    /// Queues a finished span; never blocks.
    pub fn submit(&self, span: SpanRecord) {
        match self.sender().try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends everything queued so far; waits at most `timeout`. True when it all went out (or
    /// nothing was queued).
    pub fn flush(&self, timeout: Duration) -> bool {
        let sender = {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.as_ref() {
                Some(current) if current.generation == fork_generation() => current.sender.clone(),
                _ => return true,
            }
        };
        let (done, wait) = mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        loop {
            match sender.try_send(Message::Flush(done.clone())) {
                Ok(()) => break,
                Err(TrySendError::Full(_)) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(_) => return false,
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

struct FailureLog {
    last: Option<Instant>,
}

impl FailureLog {
    fn report(&mut self, config: &ExporterConfig, spans: usize, reason: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(60)) {
            return;
        }
        self.last = Some(now);
        eprintln!(
            "caddy-beacon: could not export {spans} span(s) to {}: {reason} (spans are dropped; further failures in the next minute are not logged)",
            config.endpoint.url
        );
    }
}

fn send_batch(
    config: &ExporterConfig,
    resource: &[Attribute],
    stats: &ExportStats,
    batch: &mut Vec<SpanRecord>,
    failures: &mut FailureLog,
) {
    if batch.is_empty() {
        return;
    }
    let body = export_request(resource, "caddy-beacon", env!("CARGO_PKG_VERSION"), batch);
    let count = batch.len() as u64;
    match post(&config.endpoint, &config.headers, &body, config.timeout) {
        Ok(status) if (200..300).contains(&status) => {
            stats.exported.fetch_add(count, Ordering::Relaxed);
        }
        Ok(status) => {
            stats.failed.fetch_add(count, Ordering::Relaxed);
            failures.report(config, batch.len(), &format!("the collector answered {status}"));
        }
        Err(error) => {
            stats.failed.fetch_add(count, Ordering::Relaxed);
            failures.report(config, batch.len(), &error.to_string());
        }
    }
    batch.clear();
}

fn export_loop(config: &ExporterConfig, service_name: &str, stats: &ExportStats, receiver: &mpsc::Receiver<Message>) {
    // The thread runs once per process, so this is where a process gets its instance id
    // (unless the configuration names one).
    let mut resource: Vec<Attribute> = vec![("service.name".into(), AttributeValue::Str(service_name.to_owned()))];
    resource.extend(config.resource.iter().filter(|(key, _)| key != "service.name").cloned());
    if !resource.iter().any(|(key, _)| key == "service.instance.id") {
        let id = String::from_utf8_lossy(&generate_request_id()).into_owned();
        resource.push(("service.instance.id".into(), AttributeValue::Str(id)));
    }
    let resource = resource;
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(config.batch_size);
    let mut failures = FailureLog { last: None };
    let mut deadline = Instant::now() + config.interval;
    loop {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Message::Span(span)) => {
                batch.push(*span);
                if batch.len() >= config.batch_size {
                    send_batch(config, &resource, stats, &mut batch, &mut failures);
                    deadline = Instant::now() + config.interval;
                }
            }
            Ok(Message::Flush(done)) => {
                send_batch(config, &resource, stats, &mut batch, &mut failures);
                let _ = done.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                send_batch(config, &resource, stats, &mut batch, &mut failures);
                deadline = Instant::now() + config.interval;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send_batch(config, &resource, stats, &mut batch, &mut failures);
                return;
            }
        }
    }
}
