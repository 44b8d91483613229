//! The open connections of one server: a cap, and who to close when it is reached.
//!
//! A connection is busy while a handler works for it and idle otherwise (waiting for its first
//! head, or between keep-alive requests). When a new connection would pass the cap, the one
//! idle for longest is closed: a flood of idle or trickling sockets only ever pushes out its own
//! oldest members, and a probe that arrives now gets in. With every connection busy the new one
//! is turned away (handlers answer in milliseconds, so that state does not last).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Debug)]
struct Entry {
    busy: bool,
    // When it last became idle (or was accepted).
    idle_since: Instant,
    close: Arc<Notify>,
}

/// The connections of one server.
#[derive(Debug)]
pub(super) struct Connections {
    cap: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

impl Connections {
    pub(super) fn new(cap: usize) -> Self {
        Connections {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for a new connection and registers it; None when every open one is busy.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Connection> {
        let mut open = self.open();
        if open.len() >= self.cap {
            let oldest_idle = open
                .iter()
                .filter(|(_, e)| !e.busy)
                .min_by_key(|(_, e)| e.idle_since)
                .map(|(id, _)| *id)?;
            if let Some(evicted) = open.remove(&oldest_idle) {
                // notify_one keeps a permit, so the connection's task sees it even if it is not
                // waiting at this instant.
                evicted.close.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        open.insert(
            id,
            Entry {
                busy: false,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        Some(Connection {
            id,
            close,
            connections: self.clone(),
        })
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(entry) = self.open().get_mut(&id) {
            entry.busy = busy;
            entry.idle_since = Instant::now();
        }
    }

    /// Closes, once a second, connections idle for longer than `timeout`.
    pub(super) async fn close_idle_every_second(self: Arc<Self>, timeout: Duration) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            self.open().retain(|_, entry| {
                let stale = !entry.busy && now.duration_since(entry.idle_since) > timeout;
                if stale {
                    entry.close.notify_one();
                }
                !stale
            });
        }
    }

    /// Connections open now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open().len()
    }
}

/// One admitted connection; dropping it forgets it.
#[derive(Debug)]
pub(super) struct Connection {
    id: u64,
    close: Arc<Notify>,
    connections: Arc<Connections>,
}

impl Connection {
    /// Resolves when the server wants this connection closed.
    pub(super) fn closed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let close = self.close.clone();
        async move { close.notified().await }
    }

    /// A handle the request handler uses to mark the connection busy.
    pub(super) fn busy_marker(&self) -> BusyMarker {
        BusyMarker {
            id: self.id,
            connections: self.connections.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
    }
}

/// Marks its connection busy while a request is being answered.
#[derive(Clone, Debug)]
pub(super) struct BusyMarker {
    id: u64,
    connections: Arc<Connections>,
}

impl BusyMarker {
    pub(super) fn enter(&self) -> BusyGuard {
        self.connections.set_busy(self.id, true);
        BusyGuard(self.clone())
    }
}

/// Idle again when dropped.
#[derive(Debug)]
pub(super) struct BusyGuard(BusyMarker);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.connections.set_busy(self.0.id, false);
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_cap_closes_the_connection_idle_for_longest_and_spares_busy_ones() {
        let connections = Arc::new(Connections::new(2));
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let _working = first.busy_marker().enter();
        let third = connections.admit().unwrap();
        // The first is busy: the second, idle, made room.
        assert_eq!(connections.len(), 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let closed = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), second.closed())
                .await
                .is_ok()
        });
        assert!(closed, "the idle connection was told to close");
        let _also_working = third.busy_marker().enter();
        assert!(
            connections.admit().is_none(),
            "with every connection busy a new one is turned away"
        );
        drop(first);
        assert_eq!(connections.len(), 1);
    }
}
