//! Figures: latency percentiles, and what `/proc` says about a process
//! (CPU ticks, resident memory) and what the manager's data directory
//! holds on disk.

use std::path::Path;
use std::time::Duration;

/// Nearest-rank percentile of `samples` (sorted here); None when empty.
pub fn percentile(samples: &mut [Duration], pct: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((pct / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

pub fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_time_of_stat(&stat, rustix::param::clock_ticks_per_second())
}

/// Parses utime and stime (fields 14 and 15) of a `/proc/PID/stat` line;
/// the command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its last ')'.
pub fn cpu_time_of_stat(stat: &str, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow::anyhow!("no ')' in /proc stat"))?;
    // After the name come field 3 (state) onwards: utime is field 14.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("/proc stat has no field {n}"))?
            .parse()?)
    };
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second.max(1) as f64,
    ))
}

/// CPU time the whole machine has been busy (all cores: user, nice,
/// system, irq, softirq, steal), from the first line of `/proc/stat`.
pub fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    machine_busy_of_stat(&stat, rustix::param::clock_ticks_per_second())
}

pub fn machine_busy_of_stat(stat: &str, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow::anyhow!("no cpu line in /proc/stat"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    Ok(Duration::from_secs_f64(
        busy as f64 / ticks_per_second.max(1) as f64,
    ))
}

/// VmRSS and VmHWM of a process, in bytes.
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(memory_of_status(&status))
}

pub fn memory_of_status(status: &str) -> (u64, u64) {
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// SQLite files in the manager's data directory: (name, bytes), the main
/// file, its write-ahead log and shared memory.
pub fn database_files(data_dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let sqlite = name.ends_with(".db")
                || name.ends_with(".db-wal")
                || name.ends_with(".db-shm")
                || name.ends_with(".sqlite")
                || name.ends_with(".sqlite-wal");
            let len = e.metadata().ok()?.len();
            sqlite.then_some((name, len))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            percentile(&mut samples, 50.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            percentile(&mut samples, 99.0),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            percentile(&mut samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (outpost (x) y) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0";
        assert_eq!(cpu_time_of_stat(stat, 100).unwrap(), Duration::from_secs(4));
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 10 50 9000 500 5 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            machine_busy_of_stat(stat, 100).unwrap(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn memory_is_read_in_kib() {
        let status = "Name:\toutpost\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(memory_of_status(status), (1024 * 1024, 2048 * 1024));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
