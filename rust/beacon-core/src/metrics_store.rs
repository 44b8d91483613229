//! The request metrics: a duration histogram per (method, route, status) and an active-request
//! gauge per method, kept in a region of atomic words (see `shared_region`).
//!
//! With several worker processes (gunicorn, `uvicorn --workers`) the region is one file in
//! `/dev/shm` that every worker maps, so whichever worker answers a scrape reports the totals of
//! all of them, and counts recorded by a worker that died stay in. Recording is two relaxed
//! atomic adds, exactly as for a single process; the label index is process-local and consults
//! the shared series table (under a cross-process spin lock) only the first time a process sees
//! a series. Active-request gauges and event-loop heartbeats live in per-worker slots, so a
//! worker that dies mid-request does not leave the gauge raised. Exemplars stay per process.

use fnv::FnvHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::process_metrics::start_ticks;
use crate::shared_region::{Region, FIRST_FREE_WORD};
use crate::{BeaconError, Buckets, HttpMethod};
use beacon_base::random::fork_generation;

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

/// A worker process sharing the metrics, as its slot describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerState {
    /// Its process id.
    pub pid: u32,
    /// When its event loop last reported in (None: no watchdog running in it).
    pub heartbeat_age: Option<Duration>,
    /// The lag its event loop last measured.
    pub loop_lag: Duration,
    /// The heartbeat interval it announced.
    pub heartbeat_interval: Duration,
    /// Its requests in flight, per method it has seen (in `HttpMethod::ALL` order).
    pub active: Vec<(HttpMethod, i64)>,
}

/// In-flight requests per method summed over `workers`, for every method any of them has seen.
///
/// A method the request histograms have recorded stays listed (at 0) after every worker that
/// counted it is gone: recycled workers (gunicorn's --max-requests) must not make the series
/// vanish, which Prometheus would read as stale rather than as nothing in flight.
pub fn total_active(workers: &[WorkerState], recorded: &[HttpMethod]) -> Vec<(HttpMethod, i64)> {
    HttpMethod::ALL
        .iter()
        .filter_map(|method| {
            let counts: Vec<i64> = workers
                .iter()
                .flat_map(|w| {
                    w.active
                        .iter()
                        .filter(|(m, _)| m == method)
                        .map(|(_, n)| *n)
                })
                .collect();
            (!counts.is_empty() || recorded.contains(method))
                .then(|| (*method, counts.iter().sum()))
        })
        .collect()
}

// Region layout, in words after the region's own header.
const LOCK: usize = FIRST_FREE_WORD;
const SERIES_COUNT: usize = FIRST_FREE_WORD + 1;
const SERIES_DROPPED: usize = FIRST_FREE_WORD + 2;
const WORKERS: usize = FIRST_FREE_WORD + 8;
/// Worker processes tracked at once (dead ones' slots are reused).
pub const WORKER_SLOTS: usize = 128;
const WORKER_WORDS: usize = 16;
const W_PID: usize = 0;
const W_START: usize = 1;
const W_HEARTBEAT: usize = 2;
const W_LAG: usize = 3;
const W_INTERVAL: usize = 4;
const W_SEEN: usize = 5;
const W_ACTIVE: usize = 6;
const SERIES: usize = WORKERS + WORKER_SLOTS * WORKER_WORDS;
/// Longest route text kept; longer templates are told apart by a hash of the whole text.
const ROUTE_WORDS: usize = 32;
const SERIES_WORDS: usize = 2 + ROUTE_WORDS;
const READY_BIT: u64 = 1 << 63;
const LAYOUT_VERSION: u64 = 4;
/// Bucket bounds of `beacon_event_loop_lag_seconds`, how late heartbeats ran: from a busy loop's
/// few milliseconds to stalls that fail liveness.
pub const LOOP_LAG_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
// The lag histogram's cells (one per bound, `+Inf`, then the sum in ns) sit after the request
// histograms. Heartbeats are ten a second per worker: one copy of the cells is plenty.
const LOOP_LAG_CELLS: usize = LOOP_LAG_BUCKETS.len() + 2;
// After them, the watchdog's samples of every worker's loop: how many, and how many found it
// busy (not waiting in its poller), for the load reports' utilization (load_report.rs).
const LOOP_SAMPLE_CELLS: usize = 2;
/// Copies of the histogram cells: each worker adds into the copy of its slot (modulo this), and
/// a scrape sums them. Workers writing the same cache lines from different cores would make
/// every increment a cache miss (measured: ~5 % of throughput with two workers).
const CELL_SHARDS: usize = 16;

/// Request duration histograms and active-request gauges of one app instance.
pub struct RequestMetrics {
    buckets: Buckets,
    max_series: usize,
    // Bucket cells (`buckets.len() + 1`, the last being `+Inf`) then one cell for the sum in ns.
    stride: usize,
    region: Region,
    cells_base: usize,
    index: Mutex<LocalIndex>,
    // (fork generation << 32) | (slot + 1) of this process' worker slot; 0 = none yet.
    slot: AtomicU64,
    // One slot per bucket cell, allocated by the first sampled request (tracing off: never).
    exemplars: Mutex<Vec<Option<Exemplar>>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("max_series", &self.max_series)
            .field("region", &self.region)
            .finish()
    }
}

#[derive(Default)]
struct LocalIndex {
    // Looked up by the borrowed route first, so a hit allocates nothing; the few
    // (method, status) pairs of a route are scanned linearly.
    // Not DoS-resistant hashing: the keys are route templates, which the series cap bounds.
    by_route: FnvHashMap<Arc<str>, Vec<(HttpMethod, u16, usize)>>,
    // Labels of the shared series table, decoded once per process.
    labels: Vec<SeriesLabels>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
    })
}

fn pid_alive(pid: u64, start: u64) -> bool {
    pid != 0 && start_ticks(pid as u32) == Some(start)
}

impl RequestMetrics {
    /// Creates an empty store for this process that will hold at most `max_series` series.
    pub fn new(buckets: Buckets, max_series: usize) -> Result<Self, BeaconError> {
        Self::build(buckets, max_series, None)
    }

    /// Creates or joins the store every worker of one app instance shares; `key` names the
    /// instance (its main process' pid and start time).
    pub fn shared(buckets: Buckets, max_series: usize, key: &str) -> Result<Self, BeaconError> {
        Self::build(buckets, max_series, Some(key))
    }

    fn build(buckets: Buckets, max_series: usize, key: Option<&str>) -> Result<Self, BeaconError> {
        if max_series == 0 {
            return Err(BeaconError::InvalidSeriesCap(max_series));
        }
        let stride = buckets.len() + 2;
        let cells_base = SERIES + max_series * SERIES_WORDS;
        let words =
            cells_base + CELL_SHARDS * max_series * stride + LOOP_LAG_CELLS + LOOP_SAMPLE_CELLS;
        let region = match key {
            None => Region::private(words),
            Some(key) => {
                let layout = fnv1a(
                    format!(
                        "{LAYOUT_VERSION} {CELL_SHARDS} {max_series} {:?} {}",
                        buckets.seconds(),
                        HttpMethod::ALL.len()
                    )
                    .as_bytes(),
                );
                Region::shared(key, words, layout)
            }
        }
        .map_err(|e| BeaconError::SharedMemory(e.to_string()))?;
        Ok(RequestMetrics {
            buckets,
            max_series,
            stride,
            region,
            cells_base,
            index: Mutex::default(),
            slot: AtomicU64::new(0),
            exemplars: Mutex::default(),
        })
    }

    /// The file every worker maps, when shared.
    pub fn shared_path(&self) -> Option<&std::path::Path> {
        self.region.path.as_deref()
    }

    /// The bucket bounds.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// The series cap.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    fn words(&self) -> &[AtomicU64] {
        self.region.words()
    }

    fn worker(&self, slot: usize) -> &[AtomicU64] {
        &self.words()[WORKERS + slot * WORKER_WORDS..WORKERS + (slot + 1) * WORKER_WORDS]
    }

    /// This process' worker slot, claimed on first use (and again in a forked child).
    fn my_slot(&self) -> usize {
        let claimed = self.slot.load(Ordering::Relaxed);
        let generation = fork_generation();
        if claimed != 0 && claimed >> 32 == generation {
            return (claimed & 0xffff_ffff) as usize - 1;
        }
        let slot = self.claim_slot();
        self.slot
            .store((generation << 32) | (slot as u64 + 1), Ordering::Relaxed);
        slot
    }

    fn claim_slot(&self) -> usize {
        let pid = u64::from(std::process::id());
        let start = start_ticks(pid as u32).unwrap_or(0);
        // Another handle in this process (two apps with the middleware) already has a slot.
        if let Some(slot) = (0..WORKER_SLOTS).find(|slot| {
            let worker = self.worker(*slot);
            worker[W_PID].load(Ordering::Acquire) == pid
                && worker[W_START].load(Ordering::Acquire) == start
        }) {
            return slot;
        }
        for slot in 0..WORKER_SLOTS {
            let worker = self.worker(slot);
            let holder = worker[W_PID].load(Ordering::Acquire);
            let free = holder == 0 || !pid_alive(holder, worker[W_START].load(Ordering::Acquire));
            if free
                && worker[W_PID]
                    .compare_exchange(holder, pid, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // A dead worker's requests in flight died with it: its gauge must not linger.
                for word in &worker[W_HEARTBEAT..] {
                    word.store(0, Ordering::Relaxed);
                }
                worker[W_START].store(start, Ordering::Release);
                return slot;
            }
        }
        // More live workers than slots: share the last one (gauges stay right in sum).
        WORKER_SLOTS - 1
    }

    /// Slots of live workers.
    fn live_slots(&self) -> Vec<usize> {
        (0..WORKER_SLOTS)
            .filter(|slot| {
                let worker = self.worker(*slot);
                pid_alive(
                    worker[W_PID].load(Ordering::Acquire),
                    worker[W_START].load(Ordering::Acquire),
                )
            })
            .collect()
    }

    /// A request has started: raises the active gauge of its method.
    pub fn request_started(&self, method: HttpMethod) {
        let worker = self.worker(self.my_slot());
        worker[W_SEEN].fetch_or(1 << method.index(), Ordering::Relaxed);
        worker[W_ACTIVE + method.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn lower_active(&self, method: HttpMethod) {
        // Two's complement: a wrapping subtract is a signed decrement.
        self.worker(self.my_slot())[W_ACTIVE + method.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// A request has finished: lowers the active gauge and records its duration. When the series
    /// cap refuses a new series the observation is counted in `beacon_series_dropped_total`.
    pub fn request_finished(
        &self,
        method: HttpMethod,
        route: &str,
        status: u16,
        elapsed_nanos: u64,
    ) {
        self.lower_active(method);
        self.observe(method, route, status, elapsed_nanos);
    }

    /// A request ended without a result to record: only lowers the active gauge.
    pub fn request_abandoned(&self, method: HttpMethod) {
        self.lower_active(method);
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
        self.lower_active(method);
        if let Some(cell) = self.observe_cell(method, route, status, elapsed_nanos) {
            let exemplar = Exemplar {
                trace_id: trace.0,
                span_id: trace.1,
                value_nanos: elapsed_nanos,
                timestamp_millis: now_nanos() / 1_000_000,
            };
            let mut exemplars = self
                .exemplars
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if exemplars.is_empty() {
                exemplars.resize(self.max_series * self.stride, None);
            }
            exemplars[cell] = Some(exemplar);
        }
    }

    /// Records one duration without touching the active gauge.
    pub fn observe(&self, method: HttpMethod, route: &str, status: u16, elapsed_nanos: u64) {
        self.observe_cell(method, route, status, elapsed_nanos);
    }

    /// Records one duration; returns the bucket cell it went to (index within one shard).
    fn observe_cell(
        &self,
        method: HttpMethod,
        route: &str,
        status: u16,
        elapsed_nanos: u64,
    ) -> Option<usize> {
        let words = self.words();
        let Some(slot) = self.slot_for(method, route, status) else {
            words[SERIES_DROPPED].fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let shard =
            self.cells_base + (self.my_slot() % CELL_SHARDS) * self.max_series * self.stride;
        let base = slot * self.stride;
        let cell = base + self.buckets.index_of(elapsed_nanos);
        words[shard + cell].fetch_add(1, Ordering::Relaxed);
        words[shard + base + self.stride - 1].fetch_add(elapsed_nanos, Ordering::Relaxed);
        Some(cell)
    }

    fn slot_for(&self, method: HttpMethod, route: &str, status: u16) -> Option<usize> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entries) = index.by_route.get(route) {
            if let Some(&(_, _, slot)) = entries
                .iter()
                .find(|(m, s, _)| *m == method && *s == status)
            {
                return Some(slot);
            }
        }
        let slot = self.shared_slot(method, route, status)?;
        let route: Arc<str> = match index.by_route.get_key_value(route) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(route),
        };
        index
            .by_route
            .entry(route)
            .or_default()
            .push((method, status, slot));
        Some(slot)
    }

    fn series_entry(&self, slot: usize) -> &[AtomicU64] {
        &self.words()[SERIES + slot * SERIES_WORDS..SERIES + (slot + 1) * SERIES_WORDS]
    }

    /// Finds or adds the series in the table all processes share.
    fn shared_slot(&self, method: HttpMethod, route: &str, status: u16) -> Option<usize> {
        let bytes = route.as_bytes();
        let kept = &bytes[..bytes.len().min(ROUTE_WORDS * 8)];
        let hash = fnv1a(bytes);
        let header =
            READY_BIT | (method.index() as u64) << 32 | u64::from(status) << 16 | kept.len() as u64;
        let _lock = SpinLock::acquire(&self.words()[LOCK]);
        let count = self.words()[SERIES_COUNT].load(Ordering::Acquire) as usize;
        for slot in 0..count.min(self.max_series) {
            let entry = self.series_entry(slot);
            if entry[0].load(Ordering::Acquire) == header
                && entry[1].load(Ordering::Relaxed) == hash
            {
                return Some(slot);
            }
        }
        if count >= self.max_series {
            return None;
        }
        let entry = self.series_entry(count);
        for (word, chunk) in entry[2..].iter().zip(kept.chunks(8)) {
            let mut padded = [0u8; 8];
            padded[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(padded), Ordering::Relaxed);
        }
        entry[1].store(hash, Ordering::Relaxed);
        entry[0].store(header, Ordering::Release);
        self.words()[SERIES_COUNT].store(count as u64 + 1, Ordering::Release);
        Some(count)
    }

    fn decode_labels(&self, slot: usize) -> SeriesLabels {
        let entry = self.series_entry(slot);
        let header = entry[0].load(Ordering::Acquire);
        let length = (header & 0xffff) as usize;
        let mut bytes: Vec<u8> = entry[2..]
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        bytes.truncate(length);
        SeriesLabels {
            method: HttpMethod::ALL
                .get(((header >> 32) & 0xff) as usize)
                .copied()
                .unwrap_or(HttpMethod::Other),
            route: Arc::from(String::from_utf8_lossy(&bytes).as_ref()),
            status: ((header >> 16) & 0xffff) as u16,
        }
    }

    /// Number of histogram series created so far (by every worker).
    pub fn series_count(&self) -> usize {
        (self.words()[SERIES_COUNT].load(Ordering::Acquire) as usize).min(self.max_series)
    }

    /// Observations refused by the series cap.
    pub fn series_dropped(&self) -> u64 {
        self.words()[SERIES_DROPPED].load(Ordering::Relaxed)
    }

    /// Called by this process' event-loop watchdog: the loop is running, and woke `lag` late.
    /// The lag is also counted in the instance's lag histogram, so a stall that ended between
    /// two scrapes still shows in the next one.
    pub fn heartbeat(&self, lag: Duration, interval: Duration) {
        let worker = self.worker(self.my_slot());
        let lag_nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        let cells = self.loop_lag_cells();
        let bucket = LOOP_LAG_BUCKETS
            .iter()
            .position(|bound| lag.as_secs_f64() <= *bound)
            .unwrap_or(LOOP_LAG_BUCKETS.len());
        cells[bucket].fetch_add(1, Ordering::Relaxed);
        cells[LOOP_LAG_CELLS - 1].fetch_add(lag_nanos, Ordering::Relaxed);
        worker[W_LAG].store(lag_nanos, Ordering::Relaxed);
        worker[W_INTERVAL].store(interval.as_nanos() as u64, Ordering::Relaxed);
        worker[W_HEARTBEAT].store(now_nanos(), Ordering::Release);
    }

    fn loop_lag_cells(&self) -> &[AtomicU64] {
        let words = self.words();
        &words[words.len() - LOOP_LAG_CELLS - LOOP_SAMPLE_CELLS..words.len() - LOOP_SAMPLE_CELLS]
    }

    fn loop_sample_cells(&self) -> &[AtomicU64] {
        let words = self.words();
        &words[words.len() - LOOP_SAMPLE_CELLS..]
    }

    /// Called by this process' event-loop watchdog at each look at the loop: whether it found
    /// it busy (running, or blocked in anything but its poller).
    pub fn loop_sampled(&self, busy: bool) {
        let cells = self.loop_sample_cells();
        cells[0].fetch_add(1, Ordering::Relaxed);
        if busy {
            cells[1].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The watchdog's samples of every worker's loop so far: (samples, found busy).
    pub fn loop_samples(&self) -> (u64, u64) {
        let cells = self.loop_sample_cells();
        (
            cells[0].load(Ordering::Relaxed),
            cells[1].load(Ordering::Relaxed),
        )
    }

    /// The event-loop lag histogram of every worker, dead ones included: per-bucket counts (not
    /// cumulative, the last one `+Inf`, bounds in [`LOOP_LAG_BUCKETS`]) and the sum in seconds.
    pub fn loop_lag(&self) -> (Vec<u64>, f64) {
        let cells: Vec<u64> = self
            .loop_lag_cells()
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let (counts, sum) = cells.split_at(LOOP_LAG_CELLS - 1);
        (counts.to_vec(), sum[0] as f64 / 1e9)
    }

    /// Every live worker's state. Telling live workers from dead ones reads /proc once per
    /// slot in use, so a scrape calls this once and derives everything else from it.
    pub fn workers(&self) -> Vec<WorkerState> {
        let now = now_nanos();
        self.live_slots()
            .into_iter()
            .map(|slot| {
                let worker = self.worker(slot);
                let beat = worker[W_HEARTBEAT].load(Ordering::Acquire);
                let seen = worker[W_SEEN].load(Ordering::Relaxed);
                WorkerState {
                    pid: worker[W_PID].load(Ordering::Relaxed) as u32,
                    heartbeat_age: (beat != 0)
                        .then(|| Duration::from_nanos(now.saturating_sub(beat))),
                    loop_lag: Duration::from_nanos(worker[W_LAG].load(Ordering::Relaxed)),
                    heartbeat_interval: Duration::from_nanos(
                        worker[W_INTERVAL].load(Ordering::Relaxed),
                    ),
                    active: HttpMethod::ALL
                        .iter()
                        .filter(|m| seen & (1 << m.index()) != 0)
                        .map(|m| {
                            (
                                *m,
                                worker[W_ACTIVE + m.index()].load(Ordering::Relaxed) as i64,
                            )
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Reads every series, from every worker. Counts are read without any lock.
    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let count = self.series_count();
        let labels = {
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            while index.labels.len() < count {
                let slot = index.labels.len();
                let decoded = self.decode_labels(slot);
                index.labels.push(decoded);
            }
            index.labels[..count].to_vec()
        };
        let exemplars = self
            .exemplars
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let words = self.words();
        labels
            .into_iter()
            .enumerate()
            .map(|(slot, labels)| {
                let base = slot * self.stride;
                let mut cells = vec![0u64; self.stride];
                for shard in 0..CELL_SHARDS {
                    let start = self.cells_base + shard * self.max_series * self.stride + base;
                    for (total, cell) in cells.iter_mut().zip(&words[start..start + self.stride]) {
                        *total = total.wrapping_add(cell.load(Ordering::Relaxed));
                    }
                }
                let sum_nanos = cells.pop().unwrap_or(0);
                SeriesSnapshot {
                    labels,
                    sum_seconds: sum_nanos as f64 / 1e9,
                    exemplars: (0..cells.len())
                        .map(|bucket| exemplars.get(base + bucket).copied().flatten())
                        .collect(),
                    bucket_counts: cells,
                }
            })
            .collect()
    }
}

/// A lock word shared between processes: holds the holder's pid. A holder that died while
/// holding it (killed mid-insert, which takes microseconds) is detected and the lock taken over.
struct SpinLock<'a> {
    word: &'a AtomicU64,
}

impl<'a> SpinLock<'a> {
    fn acquire(word: &'a AtomicU64) -> SpinLock<'a> {
        let me = u64::from(std::process::id());
        let started = Instant::now();
        loop {
            match word.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return SpinLock { word },
                Err(holder) if holder != 0 && started.elapsed() > Duration::from_millis(100) => {
                    let alive = std::path::Path::new(&format!("/proc/{holder}")).exists();
                    if !alive
                        && word
                            .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                    {
                        return SpinLock { word };
                    }
                    std::thread::yield_now();
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
    }
}

impl Drop for SpinLock<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
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
        assert_eq!(
            total_active(&metrics.workers(), &[]),
            vec![(HttpMethod::Get, 2)]
        );
        metrics.request_finished(HttpMethod::Get, "/items/{id}", 200, 5_000_000);
        metrics.request_finished(HttpMethod::Get, "/items/{id}", 200, 50_000_000);
        metrics.observe(HttpMethod::Get, "/items/{id}", 404, 1);
        assert_eq!(
            total_active(&metrics.workers(), &[]),
            vec![(HttpMethod::Get, 0)]
        );

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
        assert_eq!(
            (exemplar.trace_id, exemplar.span_id, exemplar.value_nanos),
            ([7; 16], [8; 8], 50_000_000)
        );
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
    fn workers_sharing_a_region_see_each_others_series_and_counts() {
        let key = format!(
            "test-{}-{}",
            std::process::id(),
            beacon_base::random::next_u64()
        );
        let buckets = || Buckets::new(&[0.01, 0.1]).unwrap();
        let first = RequestMetrics::shared(buckets(), 10, &key).unwrap();
        let second = RequestMetrics::shared(buckets(), 10, &key).unwrap();
        first.observe(HttpMethod::Get, "/a", 200, 5_000_000);
        second.observe(HttpMethod::Get, "/a", 200, 50_000_000);
        second.observe(HttpMethod::Post, "/b", 201, 1);
        first.observe(HttpMethod::Post, "/b", 201, 1);
        for store in [&first, &second] {
            let snapshot = store.snapshot();
            assert_eq!(snapshot.len(), 2);
            assert_eq!(snapshot[0].bucket_counts, vec![1, 1, 0]);
            assert_eq!(&*snapshot[1].labels.route, "/b");
            assert_eq!(snapshot[1].count(), 2);
        }
        // Both handles are in this process: one slot, gauge summed once.
        first.request_started(HttpMethod::Get);
        assert_eq!(
            total_active(&second.workers(), &[]),
            vec![(HttpMethod::Get, 1)]
        );
        // Counted only by workers that are gone: still listed, at 0, once recorded.
        assert_eq!(
            total_active(&[], &[HttpMethod::Get]),
            vec![(HttpMethod::Get, 0)]
        );
        assert_eq!(total_active(&[], &[]), vec![]);
        assert_eq!(
            first.workers().iter().map(|w| w.pid).collect::<Vec<_>>(),
            vec![std::process::id()]
        );
        std::fs::remove_file(first.shared_path().unwrap()).unwrap();
    }

    #[test]
    fn long_routes_are_told_apart() {
        let metrics = store(10);
        let long_a = format!("/{}a", "x".repeat(400));
        let long_b = format!("/{}b", "x".repeat(400));
        metrics.observe(HttpMethod::Get, &long_a, 200, 1);
        metrics.observe(HttpMethod::Get, &long_b, 200, 1);
        metrics.observe(HttpMethod::Get, &long_a, 200, 1);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].count(), 2);
        assert_eq!(snapshot[0].labels.route.len(), ROUTE_WORDS * 8);
    }

    #[test]
    fn heartbeats_describe_the_worker() {
        let metrics = store(1);
        assert_eq!(metrics.workers(), vec![]);
        metrics.heartbeat(Duration::from_millis(30), Duration::from_millis(100));
        let workers = metrics.workers();
        assert_eq!(workers.len(), 1);
        assert_eq!(workers[0].pid, std::process::id());
        assert_eq!(workers[0].loop_lag, Duration::from_millis(30));
        assert!(workers[0].heartbeat_age.unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn every_heartbeat_lands_in_the_lag_histogram() {
        let metrics = store(1);
        metrics.heartbeat(Duration::from_millis(1), Duration::from_millis(100));
        metrics.heartbeat(Duration::from_secs(4), Duration::from_millis(100));
        metrics.heartbeat(Duration::ZERO, Duration::from_millis(100));
        let (counts, sum) = metrics.loop_lag();
        assert_eq!(counts.len(), LOOP_LAG_BUCKETS.len() + 1);
        assert_eq!(counts[0], 2, "1 ms and 0 fall in the first bucket");
        assert_eq!(
            counts[LOOP_LAG_BUCKETS.iter().position(|b| *b == 5.0).unwrap()],
            1,
            "the 4 s stall is kept after the loop recovered"
        );
        assert!((sum - 4.001).abs() < 1e-9, "{sum}");
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
