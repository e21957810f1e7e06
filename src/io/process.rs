//! This process's resource use as the kernel counts it (Linux `/proc/self`):
//! CPU time, resident memory and bytes written to and read from storage.
//!
//! A broker answers `DescribeBrokerStats` with these so that `weir bench`
//! can report a running cluster's idle CPU, memory per partition and write
//! amplification without knowing the brokers' process ids. They are read
//! only when asked, never on the broker's own paths, so the simulator (which
//! never asks) stays deterministic.

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat`'s times: `USER_HZ`, which
/// the kernel fixes at 100 in its user-space ABI on every architecture Weir
/// runs on (it is not the kernel's internal HZ).
const USER_HZ: u64 = 100;

/// What the kernel counts for one process. `None` fields: not available
/// here (another OS, or `/proc/self/io` not readable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// User plus system CPU time since the process started.
    pub cpu_time_ms: Option<u64>,
    /// Resident set size (VmRSS).
    pub resident_bytes: Option<u64>,
    /// Bytes this process caused to be sent to storage (`write_bytes` of
    /// /proc/self/io: what reached the block layer, page-cache writes
    /// counted when they were dirtied).
    pub storage_write_bytes: Option<u64>,
    /// Bytes this process caused to be fetched from storage.
    pub storage_read_bytes: Option<u64>,
}

impl ProcessStats {
    /// Reads this process's counters; fields the OS does not offer are None.
    pub fn read_self() -> ProcessStats {
        Self::read_from(Path::new("/proc/self"))
    }

    /// Reads the counters of the process whose proc directory is `dir`.
    pub fn read_from(dir: &Path) -> ProcessStats {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let io = read("io");
        ProcessStats {
            cpu_time_ms: read("stat").as_deref().and_then(parse_cpu_time_ms),
            resident_bytes: read("status").as_deref().and_then(parse_resident_bytes),
            storage_write_bytes: io.as_deref().and_then(|s| parse_io_field(s, "write_bytes")),
            storage_read_bytes: io.as_deref().and_then(|s| parse_io_field(s, "read_bytes")),
        }
    }
}

/// utime + stime of a `/proc/<pid>/stat` line, in milliseconds. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses, so
/// fields are counted from the last ')'.
fn parse_cpu_time_ms(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1000 / USER_HZ)
}

/// VmRSS of `/proc/<pid>/status`, in bytes.
fn parse_resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// One `name: value` field of `/proc/<pid>/io`.
fn parse_io_field(io: &str, name: &str) -> Option<u64> {
    io.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_fields_after_a_name_with_spaces_and_parens() {
        let stat = "4242 (weir (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 50 0 0 20 0 9 0 100 1000 200 18446744073709551615";
        // utime 150 + stime 50 ticks of 10 ms.
        assert_eq!(parse_cpu_time_ms(stat), Some(2000));
        assert_eq!(parse_cpu_time_ms("4242 (weir) S 1 2"), None);
        assert_eq!(parse_cpu_time_ms("garbage"), None);
    }

    #[test]
    fn resident_bytes_from_status() {
        let status = "Name:\tweir\nVmPeak:\t 9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_resident_bytes(status), Some(12345 * 1024));
        assert_eq!(parse_resident_bytes("VmRSS: 12 MB\n"), None);
        assert_eq!(parse_resident_bytes("Name: weir\n"), None);
    }

    #[test]
    fn io_fields_by_name() {
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\n\
                  cancelled_write_bytes: 0\n";
        assert_eq!(parse_io_field(io, "write_bytes"), Some(8192));
        assert_eq!(parse_io_field(io, "read_bytes"), Some(4096));
        assert_eq!(parse_io_field(io, "missing"), None);
    }

    #[test]
    fn this_process_is_measurable_on_linux() {
        let s = ProcessStats::read_self();
        if cfg!(target_os = "linux") {
            assert!(s.cpu_time_ms.is_some());
            assert!(s.resident_bytes.is_some_and(|b| b > 0));
        }
    }
}
