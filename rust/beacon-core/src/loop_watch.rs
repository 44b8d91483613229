//! The event-loop watchdog, from a thread of its own, so that an idle loop is never woken.
//!
//! A worker's event loop is either waiting for something to happen (in `epoll_wait` or one of
//! its siblings) or running callbacks. Every [`INTERVAL`] this thread looks at which, from
//! `/proc/self/task/<tid>/syscall` (Linux): a waiting loop would run anything posted to it at
//! once, so it counts as a heartbeat with no lateness and is left asleep; a busy one is sent a
//! probe (the caller's [`LoopProbe`], e.g. `loop.call_soon_threadsafe`) and the heartbeat is
//! how late the loop ran it. A loop stuck in a long callback answers no probe, records no
//! heartbeat, and so shows as stalled (`beacon_event_loop_stall_seconds`, the side port's
//! `/health`). Where the loop thread cannot be read (not Linux, a locked-down `/proc`), every
//! interval is probed: a wake-up of the loop every 100 ms, as a heartbeat task was.
//!
//! A periodic task on the loop did the same before, but it woke the loop ten times a second
//! and kept test helpers that wait for every task to block (anyio's `wait_all_tasks_blocked`)
//! from ever returning.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How often the loop is looked at (and so the heartbeat's period).
pub const INTERVAL: Duration = Duration::from_millis(100);

/// How the watchdog reaches the loop: `post(posted)` schedules a callback on it that calls
/// [`LoopWatch::answered`] with `posted`. False when the loop is gone (closed, interpreter
/// finalizing): the watchdog stops.
pub trait LoopProbe: Send + 'static {
    /// Schedules the probe on the loop.
    fn post(&self, posted: u64) -> bool;
}

/// What the loop thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopState {
    /// Blocked in the poller: idle, would run a posted callback at once.
    Waiting,
    /// Running, or blocked in anything else (a lock, a sleep, a read).
    Busy,
    /// Cannot be read here.
    Unknown,
}

/// The syscalls an event loop waits in: epoll (asyncio's selector, uvloop's libuv, trio),
/// poll and select.
#[cfg(target_os = "linux")]
fn is_poll(syscall: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    let waits = [
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_select,
        libc::SYS_pselect6,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let waits = [
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
    ];
    waits.contains(&syscall)
}

/// What thread `tid` of this process is doing: `/proc/self/task/<tid>/syscall` holds the
/// number of the syscall it is blocked in, or `running`.
pub fn loop_state(tid: i32) -> LoopState {
    #[cfg(target_os = "linux")]
    {
        let Ok(text) = fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
            return LoopState::Unknown;
        };
        match text.split_whitespace().next() {
            Some("running") => LoopState::Busy,
            Some(number) => match number.parse::<i64>() {
                Ok(syscall) if is_poll(syscall) => LoopState::Waiting,
                Ok(_) => LoopState::Busy,
                Err(_) => LoopState::Unknown,
            },
            None => LoopState::Unknown,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, fs::metadata);
        LoopState::Unknown
    }
}

/// Where heartbeats go: `RequestMetrics::heartbeat` with [`INTERVAL`], in the bindings.
type Heartbeat = Box<dyn Fn(Duration) + Send + Sync>;
type Sample = Box<dyn Fn(bool) + Send + Sync>;

/// The state shared by the watchdog thread and the probes it posts.
pub struct LoopWatch {
    heartbeat: Heartbeat,
    // Told at each look whether the loop was busy (not where its state cannot be read).
    sample: Option<Sample>,
    stopped: AtomicBool,
    /// When the probe in flight was posted (nanoseconds since `epoch`), 0 when none is.
    probe_posted: AtomicU64,
    epoch: Instant,
}

impl LoopWatch {
    /// A watchdog that gives each heartbeat's lateness to `heartbeat`; [`LoopWatch::spawn`]
    /// starts it (the probe it posts may need the watch first, to answer it).
    pub fn new(heartbeat: impl Fn(Duration) + Send + Sync + 'static) -> Arc<LoopWatch> {
        Arc::new(LoopWatch {
            heartbeat: Box::new(heartbeat),
            sample: None,
            stopped: AtomicBool::new(false),
            probe_posted: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// As [`LoopWatch::new`], also telling `sample` at each look whether the loop was busy
    /// (running, or blocked in anything but its poller): the share of looks that found it busy
    /// is how busy it was, a loop blocked in a synchronous call included (its lateness alone
    /// tells only how much of a block was left when a probe came).
    pub fn sampled(
        heartbeat: impl Fn(Duration) + Send + Sync + 'static,
        sample: impl Fn(bool) + Send + Sync + 'static,
    ) -> Arc<LoopWatch> {
        Arc::new(LoopWatch {
            heartbeat: Box::new(heartbeat),
            sample: Some(Box::new(sample)),
            stopped: AtomicBool::new(false),
            probe_posted: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Starts watching the loop run by thread `tid` (this process's). Stop it with
    /// [`LoopWatch::stop`].
    pub fn spawn(self: &Arc<Self>, tid: i32, probe: impl LoopProbe) -> std::io::Result<()> {
        let running = Arc::clone(self);
        thread::Builder::new()
            .name("caddy-beacon-loop-watch".into())
            .spawn(move || running.run(tid, probe))?;
        (self.heartbeat)(Duration::ZERO);
        Ok(())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn run(&self, tid: i32, probe: impl LoopProbe) {
        while !self.stopped.load(Ordering::Acquire) {
            thread::sleep(INTERVAL);
            if self.stopped.load(Ordering::Acquire) {
                break;
            }
            let state = loop_state(tid);
            if let (Some(sample), false) = (&self.sample, state == LoopState::Unknown) {
                sample(state == LoopState::Busy);
            }
            match state {
                // Asleep in its poller: it would run a probe now, so it is not late.
                LoopState::Waiting if self.probe_posted.load(Ordering::Acquire) == 0 => {
                    (self.heartbeat)(Duration::ZERO)
                }
                // A probe not yet run is still the measure; a busy loop gets one.
                _ if self.probe_posted.load(Ordering::Acquire) != 0 => {}
                _ => {
                    let posted = self.now();
                    self.probe_posted.store(posted, Ordering::Release);
                    if !probe.post(posted) {
                        break;
                    }
                }
            }
        }
    }

    /// Called on the loop by the probe posted at `posted`: a heartbeat as late as the probe.
    pub fn answered(&self, posted: u64) {
        if self
            .probe_posted
            .compare_exchange(posted, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            (self.heartbeat)(Duration::from_nanos(self.now().saturating_sub(posted)));
        }
    }

    /// Ends the watchdog within one interval (it never waits for the thread, which may be
    /// waiting for the interpreter the caller holds).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn metrics() -> Arc<crate::RequestMetrics> {
        Arc::new(crate::RequestMetrics::new(crate::Buckets::default(), 10).expect("metrics"))
    }

    struct Channel(mpsc::Sender<u64>);

    impl LoopProbe for Channel {
        fn post(&self, posted: u64) -> bool {
            self.0.send(posted).is_ok()
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_in_epoll_wait_is_waiting_and_one_in_a_lock_is_busy() {
        let (tid_sender, tid) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        // A tokio current-thread runtime parks in epoll_wait, as an event loop does.
        let waiting = thread::spawn(move || {
            let _ = tid_sender.send(
                std::fs::read_link("/proc/thread-self")
                    .ok()
                    .and_then(|p| p.file_name()?.to_str()?.parse::<i32>().ok()),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let _ = tokio::task::spawn_blocking(move || released.recv()).await;
            });
        });
        let tid = tid.recv().expect("a tid").expect("/proc/thread-self");
        let deadline = Instant::now() + Duration::from_secs(5);
        while loop_state(tid) != LoopState::Waiting && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(loop_state(tid), LoopState::Waiting);
        // The test harness's main thread waits on a lock: busy, as a loop stuck on one would be.
        let main = i32::try_from(std::process::id()).expect("a pid");
        assert_eq!(loop_state(main), LoopState::Busy);
        assert_eq!(loop_state(-1), LoopState::Unknown);
        release.send(()).expect("the thread waits");
        waiting.join().expect("the thread ends");
    }

    #[test]
    fn a_busy_loop_is_probed_once_at_a_time_and_answers_count_as_heartbeats() {
        let (sender, posted) = mpsc::channel();
        let metrics = metrics();
        // The test harness's main thread waits on a lock, never in a poller: always busy.
        let me = i32::try_from(std::process::id()).expect("a pid");
        let recorded = Arc::clone(&metrics);
        let watch = LoopWatch::new(move |lag| recorded.heartbeat(lag, INTERVAL));
        watch.spawn(me, Channel(sender)).expect("a thread");
        let first = posted
            .recv_timeout(Duration::from_secs(2))
            .expect("a probe");
        assert!(
            posted.recv_timeout(INTERVAL * 3).is_err(),
            "no second probe while the first is unanswered"
        );
        let (before, _) = metrics.loop_lag();
        watch.answered(first);
        watch.answered(first); // answered twice: counted once
        let (after, sum) = metrics.loop_lag();
        assert_eq!(after.iter().sum::<u64>(), before.iter().sum::<u64>() + 1);
        assert!(sum >= 0.2, "the probe waited three intervals: {sum}");
        let second = posted
            .recv_timeout(Duration::from_secs(2))
            .expect("the next probe");
        assert!(second > first);
        watch.stop();
        watch.answered(second);
        assert!(posted.recv_timeout(INTERVAL * 3).is_err(), "stopped");
    }
}
