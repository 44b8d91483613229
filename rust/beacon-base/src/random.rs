//! Fast random numbers for request, trace and span ids, reseeded in forked children.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

// Bumped in a forked child (the bindings call `note_fork` from Python's `os.register_at_fork`),
// so a child never continues its parent's random sequence and never reuses its threads.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Tells this crate that the process is a fresh fork: random sequences are reseeded and
/// background threads are started anew.
pub fn note_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// How many forks this process descends from (since the extension was loaded).
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

thread_local! {
    // (state, fork generation it was seeded in); generation u64::MAX means "never seeded".
    static RNG: Cell<(u64, u64)> = const { Cell::new((0, u64::MAX)) };
}

fn fresh_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (extremely rare): fall back to time and address entropy; ids need to
        // be unique, not secret.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        return nanos ^ (std::process::id() as u64).rotate_left(32) ^ (&bytes as *const _ as u64);
    }
    u64::from_le_bytes(bytes)
}

/// A random u64 (wyrand: fast, passes BigCrush; a 2^64 period per thread is plenty for ids).
pub fn next_u64() -> u64 {
    RNG.with(|cell| {
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        let (mut state, seeded_in) = cell.get();
        if seeded_in != generation {
            state = fresh_seed();
        }
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        cell.set((state, generation));
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// N random bytes, never all zero (trace and span ids must not be).
pub fn nonzero_bytes<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&next_u64().to_le_bytes()[..chunk.len()]);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_reseeds() {
        next_u64();
        let before = RNG.with(Cell::get);
        note_fork();
        next_u64();
        let after = RNG.with(Cell::get);
        assert_ne!(before.1, after.1);
    }

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let a: [u8; 16] = nonzero_bytes();
        let b: [u8; 16] = nonzero_bytes();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
        let _: [u8; 8] = nonzero_bytes();
    }
}
