//! A block of `AtomicU64` words that every worker process of one app instance maps at the same
//! time (a file in `/dev/shm`), or private memory for a single process.
//!
//! Everything in it is read and written through atomics only, so processes can share it without
//! locks on the hot path. This is the one place in the crate that needs `unsafe`: mapping the
//! file and viewing the mapping as atomics.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions};

/// Words at the start of every region: magic, layout, init state.
const MAGIC: u64 = u64::from_le_bytes(*b"cbeacon1");
const WORD_MAGIC: usize = 0;
const WORD_LAYOUT: usize = 1;
const WORD_STATE: usize = 2;
/// Index of the first word callers may use.
pub const FIRST_FREE_WORD: usize = 8;

const STATE_EMPTY: u64 = 0;
const STATE_INITIALIZING: u64 = 1;
const STATE_READY: u64 = 2;

/// Name prefix of the shared files, in `/dev/shm` (or the temp dir).
const FILE_PREFIX: &str = "caddy-beacon-";

/// Mapped memory viewed as atomic words.
pub struct Region {
    map: MmapMut,
    len: usize,
    /// The backing file, for shared regions.
    pub path: Option<PathBuf>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("words", &self.len)
            .field("path", &self.path)
            .finish()
    }
}

impl Region {
    /// Private, zeroed memory of `words` words (one process; children forked later get copies).
    pub fn private(words: usize) -> io::Result<Region> {
        let map = MmapOptions::new().len(words * 8).map_anon()?;
        let region = Region {
            map,
            len: words,
            path: None,
        };
        region.initialize(0);
        Ok(region)
    }

    /// Maps the shared region for `key` with `words` words, creating it if needed. `layout`
    /// identifies what the words mean: a process expecting another layout gets an error instead
    /// of misreading the region.
    pub fn shared(key: &str, words: usize, layout: u64) -> io::Result<Region> {
        let path = shared_dir().join(format!("{FILE_PREFIX}{key}"));
        // Only this user's processes may read or change the numbers.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let bytes = (words * 8) as u64;
        if file.metadata()?.len() < bytes {
            // Every process asks for the same size; extending twice is harmless (zeros).
            file.set_len(bytes)?;
        }
        let map = map_shared(&file, words * 8)?;
        let region = Region {
            map,
            len: words,
            path: Some(path),
        };
        region.initialize(layout);
        if region.words()[WORD_LAYOUT].load(Ordering::Acquire) != layout {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the shared metrics region has another layout (another caddy-beacon version or bucket configuration)"));
        }
        Ok(region)
    }

    /// The words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned (so 8-byte aligned), `len * 8` bytes long, lives as
        // long as `self`, and is only ever accessed through these atomics, by this process and by
        // others mapping the same file; AtomicU64 has the same size and layout as u64.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.len)
        }
    }

    /// First process in: writes the header; the others wait until it is done (bounded).
    fn initialize(&self, layout: u64) {
        let words = self.words();
        match words[WORD_STATE].compare_exchange(
            STATE_EMPTY,
            STATE_INITIALIZING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                words[WORD_MAGIC].store(MAGIC, Ordering::Relaxed);
                words[WORD_LAYOUT].store(layout, Ordering::Relaxed);
                words[WORD_STATE].store(STATE_READY, Ordering::Release);
            }
            Err(_) => {
                let deadline = Instant::now() + Duration::from_secs(2);
                while words[WORD_STATE].load(Ordering::Acquire) != STATE_READY
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

fn map_shared(file: &File, bytes: usize) -> io::Result<MmapMut> {
    // SAFETY: the file belongs to this user's caddy-beacon processes (mode 0600, named after the
    // instance); nothing truncates it while mapped (it only ever grows to the one size every
    // process asks for), and the mapping is only accessed through atomics (`Region::words`).
    #[allow(unsafe_code)]
    unsafe {
        MmapOptions::new().len(bytes).map_mut(file)
    }
}

/// Where shared regions live: `/dev/shm` (memory, never written to disk) when there is one.
pub fn shared_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes the regions of instances that are gone: names end in `-<pid>-<start ticks>` of the
/// instance's main process, which must still be alive with that start time. Returns how many.
pub fn remove_stale(is_alive: impl Fn(u32, u64) -> bool) -> usize {
    let Ok(entries) = fs::read_dir(shared_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(FILE_PREFIX) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(start), Some(pid)) = (
            parts.next().and_then(|s| s.parse().ok()),
            parts.next().and_then(|p| p.parse().ok()),
        ) else {
            continue;
        };
        if !is_alive(pid, start) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_regions_start_zeroed_and_initialized() {
        let region = Region::private(16).unwrap();
        assert_eq!(region.words()[WORD_MAGIC].load(Ordering::Relaxed), MAGIC);
        assert_eq!(region.words()[FIRST_FREE_WORD].load(Ordering::Relaxed), 0);
        region.words()[9].fetch_add(5, Ordering::Relaxed);
        assert_eq!(region.words()[9].load(Ordering::Relaxed), 5);
    }

    #[test]
    fn two_mappings_of_one_key_see_each_other() {
        let key = format!(
            "test-{}-{}",
            std::process::id(),
            beacon_base::random::next_u64()
        );
        let a = Region::shared(&key, 32, 7).unwrap();
        let b = Region::shared(&key, 32, 7).unwrap();
        a.words()[10].fetch_add(3, Ordering::Relaxed);
        b.words()[10].fetch_add(4, Ordering::Relaxed);
        assert_eq!(a.words()[10].load(Ordering::Relaxed), 7);
        assert!(
            Region::shared(&key, 32, 8).is_err(),
            "another layout must be refused"
        );
        fs::remove_file(a.path.as_ref().unwrap()).unwrap();
    }
}
