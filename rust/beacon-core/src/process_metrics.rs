//! Process metrics read from `/proc` (Linux); elsewhere they are simply absent.

use std::fs;

/// A reading of the process' resource use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors, when it has one.
    pub max_fds: Option<u64>,
    /// Process start, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

// The kernel reports times in USER_HZ, which is 100 on every mainstream architecture; reading
// it with sysconf would need unsafe FFI for no practical gain.
const USER_HZ: f64 = 100.0;

/// When process `pid` started, in clock ticks since boot (with the pid, it names a process
/// uniquely: pids are reused, start times are not); None when there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// The command line of process `pid` (its arguments); empty when it cannot be read. Read here,
/// not in Python, where a file read on the event loop counts as a blocking call for the tools
/// that look for those (the file is in memory: it never waits on a device).
pub fn command_line(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the current process' stats; `None` where `/proc` is not available.
pub fn read_self() -> Option<ProcessStats> {
    read("self")
}

/// Reads the stats of process `pid`.
pub fn read_pid(pid: u32) -> Option<ProcessStats> {
    read(&pid.to_string())
}

fn read(process: &str) -> Option<ProcessStats> {
    let stat = fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields are numbered from 3 after the name: utime=14, stime=15, starttime=22.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;

    let boot_time = fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    })?;

    let status = fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    };

    let open_fds = fs::read_dir(format!("/proc/{process}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let max_fds = fs::read_to_string(format!("/proc/{process}/limits"))
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok())
        });

    Some(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / USER_HZ,
        resident_memory_bytes: kib("VmRSS:").unwrap_or(0) * 1024,
        virtual_memory_bytes: kib("VmSize:").unwrap_or(0) * 1024,
        open_fds,
        max_fds,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_values() {
        let stats = read_self().expect("/proc is readable on Linux");
        assert!(stats.resident_memory_bytes > 1024 * 1024);
        assert!(stats.virtual_memory_bytes >= stats.resident_memory_bytes);
        assert!(stats.open_fds >= 3);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            stats.start_time_seconds <= now + 1.0
                && stats.start_time_seconds > now - 86_400.0 * 365.0
        );
    }
}
