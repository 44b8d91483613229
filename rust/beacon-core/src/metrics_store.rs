//! The request metrics: a duration histogram per (method, route, status) and an active-request
//! gauge per method.
//!
//! Storage is a flat arena of `AtomicU64` cells with a fixed stride per series, allocated once at
//! the series cap. Recording touches two cells with relaxed atomic adds; the label index is only
//! locked to find a series' slot. The same layout can later live in memory shared by several
//! worker processes without changing this API.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{BeaconError, Buckets, HttpMethod};

/// The `http_route` value for requests that matched no route. Templates start with `/`, so it
/// cannot collide with one.
pub const UNMATCHED_ROUTE: &str = "__unmatched__";

/// The labels of one histogram series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesLabels {
    /// `http_request_method`
    pub method: HttpMethod,
    /// `http_route`
    pub route: Arc<str>,
    /// `http_response_status_code`
    pub status: u16,
}

/// The trace of one recent sampled request that landed in a bucket (OpenMetrics exemplar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exemplar {
    /// The request's trace.
    pub trace_id: [u8; 16],
    /// The request's server span.
    pub span_id: [u8; 8],
    /// Its duration in nanoseconds.
    pub value_nanos: u64,
    /// When it finished, in milliseconds since the Unix epoch.
    pub timestamp_millis: u64,
}

/// One series read at a point in time.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSnapshot {
    /// Which series.
    pub labels: SeriesLabels,
    /// Per-bucket counts, not cumulative; the last one is `+Inf`.
    pub bucket_counts: Vec<u64>,
    /// Sum of observed durations in seconds.
    pub sum_seconds: f64,
    /// The latest exemplar of each bucket (same length as `bucket_counts`).
    pub exemplars: Vec<Option<Exemplar>>,
}

impl SeriesSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.bucket_counts.iter().sum()
    }
}

#[derive(Default)]
struct SeriesIndex {
    // Looked up by the borrowed route first, so a hit allocates nothing; the few
    // (method, status) pairs of a route are scanned linearly.
    by_route: HashMap<Arc<str>, Vec<(HttpMethod, u16, usize)>>,
    labels: Vec<SeriesLabels>,
}

/// Request duration histograms and active-request gauges of one app instance.
pub struct RequestMetrics {
    buckets: Buckets,
    max_series: usize,
    // Bucket cells (`buckets.len() + 1`, the last being `+Inf`) then one cell for the sum in ns.
    stride: usize,
    index: Mutex<SeriesIndex>,
    cells: Box<[AtomicU64]>,
    active: [AtomicI64; HttpMethod::ALL.len()],
    method_seen: [AtomicBool; HttpMethod::ALL.len()],
    series_dropped: AtomicU64,
    // One slot per bucket cell, allocated by the first sampled request (tracing off: never).
    exemplars: Mutex<Vec<Option<Exemplar>>>,
}

impl RequestMetrics {
    /// Creates an empty store that will hold at most `max_series` histogram series.
    pub fn new(buckets: Buckets, max_series: usize) -> Result<Self, BeaconError> {
        if max_series == 0 {
            return Err(BeaconError::InvalidSeriesCap(max_series));
        }
        let stride = buckets.len() + 2;
        let cells = (0..stride * max_series).map(|_| AtomicU64::new(0)).collect();
        Ok(RequestMetrics {
            buckets,
            max_series,
            stride,
            index: Mutex::default(),
            cells,
            active: Default::default(),
            method_seen: Default::default(),
            series_dropped: AtomicU64::new(0),
            exemplars: Mutex::default(),
        })
    }

    /// The bucket bounds.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// The series cap.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// A request has started: raises the active gauge of its method.
    pub fn request_started(&self, method: HttpMethod) {
        self.method_seen[method.index()].store(true, Ordering::Relaxed);
        self.active[method.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A request has finished: lowers the active gauge and records its duration. When the series
    /// cap refuses a new series the observation is counted in `beacon_series_dropped_total`.
    pub fn request_finished(&self, method: HttpMethod, route: &str, status: u16, elapsed_nanos: u64) {
        self.active[method.index()].fetch_sub(1, Ordering::Relaxed);
        self.observe(method, route, status, elapsed_nanos);
    }

    /// A request ended without a result to record: only lowers the active gauge.
    pub fn request_abandoned(&self, method: HttpMethod) {
        self.active[method.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// Like `request_finished`, and keeps the request's trace as its bucket's exemplar.
    pub fn request_finished_traced(
        &self,
        method: HttpMethod,
        route: &str,
        status: u16,
        elapsed_nanos: u64,
        trace: ([u8; 16], [u8; 8]),
    ) {
        self.active[method.index()].fetch_sub(1, Ordering::Relaxed);
        if let Some(cell) = self.observe_cell(method, route, status, elapsed_nanos) {
            let timestamp_millis =
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            let exemplar = Exemplar { trace_id: trace.0, span_id: trace.1, value_nanos: elapsed_nanos, timestamp_millis };
            let mut exemplars = self.exemplars.lock().unwrap_or_else(PoisonError::into_inner);
            if exemplars.is_empty() {
                exemplars.resize(self.cells.len(), None);
            }
            exemplars[cell] = Some(exemplar);
        }
    }

    /// Records one duration without touching the active gauge.
    pub fn observe(&self, method: HttpMethod, route: &str, status: u16, elapsed_nanos: u64) {
        self.observe_cell(method, route, status, elapsed_nanos);
    }

    /// Records one duration; returns the bucket cell it went to.
    fn observe_cell(&self, method: HttpMethod, route: &str, status: u16, elapsed_nanos: u64) -> Option<usize> {
        let Some(slot) = self.slot_for(method, route, status) else {
            self.series_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let base = slot * self.stride;
        let cell = base + self.buckets.index_of(elapsed_nanos);
        self.cells[cell].fetch_add(1, Ordering::Relaxed);
        self.cells[base + self.stride - 1].fetch_add(elapsed_nanos, Ordering::Relaxed);
        Some(cell)
    }

    fn slot_for(&self, method: HttpMethod, route: &str, status: u16) -> Option<usize> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entries) = index.by_route.get(route) {
            if let Some(&(_, _, slot)) = entries.iter().find(|(m, s, _)| *m == method && *s == status) {
                return Some(slot);
            }
        }
        let slot = index.labels.len();
        if slot >= self.max_series {
            return None;
        }
        let route: Arc<str> = match index.by_route.get_key_value(route) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(route),
        };
        index.labels.push(SeriesLabels { method, route: Arc::clone(&route), status });
        index.by_route.entry(route).or_default().push((method, status, slot));
        Some(slot)
    }

    /// Number of histogram series created so far.
    pub fn series_count(&self) -> usize {
        self.index.lock().unwrap_or_else(PoisonError::into_inner).labels.len()
    }

    /// Observations refused by the series cap.
    pub fn series_dropped(&self) -> u64 {
        self.series_dropped.load(Ordering::Relaxed)
    }

    /// In-flight requests per method, for every method seen at least once.
    pub fn active_requests(&self) -> Vec<(HttpMethod, i64)> {
        HttpMethod::ALL
            .iter()
            .filter(|m| self.method_seen[m.index()].load(Ordering::Relaxed))
            .map(|m| (*m, self.active[m.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Reads every series. Labels are copied under the lock; the counts are read afterwards so
    /// that recording is never held up by a scrape.
    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let labels = self.index.lock().unwrap_or_else(PoisonError::into_inner).labels.clone();
        let exemplars = self.exemplars.lock().unwrap_or_else(PoisonError::into_inner).clone();
        labels
            .into_iter()
            .enumerate()
            .map(|(slot, labels)| {
                let cells = &self.cells[slot * self.stride..(slot + 1) * self.stride];
                let (counts, sum) = cells.split_at(self.stride - 1);
                let base = slot * self.stride;
                SeriesSnapshot {
                    labels,
                    bucket_counts: counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
                    sum_seconds: sum[0].load(Ordering::Relaxed) as f64 / 1e9,
                    exemplars: (0..counts.len()).map(|bucket| exemplars.get(base + bucket).copied().flatten()).collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_series: usize) -> RequestMetrics {
        RequestMetrics::new(Buckets::new(&[0.01, 0.1]).unwrap(), max_series).unwrap()
    }

    #[test]
    fn records_counts_buckets_and_sum() {
        let metrics = store(10);
        metrics.request_started(HttpMethod::Get);
        metrics.request_started(HttpMethod::Get);
        assert_eq!(metrics.active_requests(), vec![(HttpMethod::Get, 2)]);
        metrics.request_finished(HttpMethod::Get, "/items/{id}", 200, 5_000_000);
        metrics.request_finished(HttpMethod::Get, "/items/{id}", 200, 50_000_000);
        metrics.observe(HttpMethod::Get, "/items/{id}", 404, 1);
        assert_eq!(metrics.active_requests(), vec![(HttpMethod::Get, 0)]);

        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].labels.status, 200);
        assert_eq!(snapshot[0].bucket_counts, vec![1, 1, 0]);
        assert_eq!(snapshot[0].count(), 2);
        assert!((snapshot[0].sum_seconds - 0.055).abs() < 1e-12);
        assert_eq!(snapshot[1].labels.status, 404);
        assert_eq!(&*snapshot[1].labels.route, "/items/{id}");
    }

    #[test]
    fn cap_refuses_new_series_and_counts_them() {
        let metrics = store(2);
        metrics.observe(HttpMethod::Get, "/a", 200, 1);
        metrics.observe(HttpMethod::Get, "/b", 200, 1);
        metrics.observe(HttpMethod::Get, "/c", 200, 1);
        metrics.observe(HttpMethod::Post, "/a", 200, 1);
        // Existing series keep recording after the cap is reached.
        metrics.observe(HttpMethod::Get, "/a", 200, 1);
        assert_eq!(metrics.series_count(), 2);
        assert_eq!(metrics.series_dropped(), 2);
        assert_eq!(metrics.snapshot()[0].count(), 2);
    }

    #[test]
    fn sampled_requests_leave_exemplars_in_their_bucket() {
        let metrics = store(10);
        metrics.request_started(HttpMethod::Get);
        metrics.request_finished_traced(HttpMethod::Get, "/a", 200, 50_000_000, ([7; 16], [8; 8]));
        metrics.request_started(HttpMethod::Get);
        metrics.request_finished(HttpMethod::Get, "/a", 200, 5_000_000);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot[0].exemplars[0], None);
        let exemplar = snapshot[0].exemplars[1].expect("the 0.1 s bucket has an exemplar");
        assert_eq!((exemplar.trace_id, exemplar.span_id, exemplar.value_nanos), ([7; 16], [8; 8], 50_000_000));
        assert_eq!(snapshot[0].exemplars[2], None);
    }

    #[test]
    fn zero_cap_is_an_error() {
        assert_eq!(
            RequestMetrics::new(Buckets::default(), 0).err(),
            Some(BeaconError::InvalidSeriesCap(0))
        );
    }

    #[test]
    fn concurrent_recording_is_exact() {
        let metrics = Arc::new(store(100));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let route = if i % 2 == 0 { "/even" } else { "/odd" };
                        metrics.observe(HttpMethod::Get, route, 200 + t, i);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: u64 = metrics.snapshot().iter().map(SeriesSnapshot::count).sum();
        assert_eq!(total, 40_000);
        assert_eq!(metrics.series_count(), 8);
    }
}
