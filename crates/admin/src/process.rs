//! The process's own numbers, in the names Prometheus users expect from every exporter
//! (`process_open_fds`, `process_max_fds`, `process_resident_memory_bytes`,
//! `process_cpu_seconds_total`), plus `poolguard_build_info`. Read from `/proc/self` at scrape
//! time (Linux); elsewhere only the build info is shown.

use std::fmt::Write as _;

/// `/proc/[pid]/stat` counts CPU time in clock ticks of USER_HZ, which the kernel's ABI fixes
/// at 100 per second whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// The families, as exposition text.
pub fn render() -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, labels: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{labels} {value}");
    };
    family(
        "poolguard_build_info",
        "gauge",
        "The running poolguard's version (the value is always 1).",
        &format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
        1.0,
    );
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        family(
            "process_open_fds",
            "gauge",
            "Open file descriptors (each client holds two: see docs/operations.md).",
            "",
            entries.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        family(
            "process_max_fds",
            "gauge",
            "The open file descriptor limit.",
            "",
            max,
        );
    }
    if let Some(rss) = resident_bytes() {
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            "",
            rss,
        );
    }
    if let Some(cpu) = cpu_seconds() {
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            "",
            cpu,
        );
    }
    out
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after = stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_numbers_are_there_and_plausible() {
        let text = super::render();
        assert!(text.contains("poolguard_build_info{version=\""), "{text}");
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing: {text}"))
        };
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
