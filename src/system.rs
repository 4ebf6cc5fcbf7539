//! Machine and process figures (CPU, memory, threads) for the original
//! service's `/api/v1/performance` endpoint, sampled by a background task so
//! that no request ever waits for them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use sysinfo::{ProcessesToUpdate, System};

use crate::stats::round2;

/// How often the figures are refreshed.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The latest sample.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemSample {
    /// Machine-wide CPU use, percent.
    pub cpu_percent: f64,
    /// Total memory, GiB.
    pub total_gb: f64,
    /// Available memory, GiB.
    pub available_gb: f64,
    /// Memory in use, percent.
    pub used_percent: f64,
    /// This process's resident memory, MiB.
    pub process_memory_mb: f64,
    /// This process's CPU use, percent of one core.
    pub process_cpu_percent: f64,
    /// This process's threads.
    pub process_threads: u64,
}

/// Shared handle on the latest sample.
#[derive(Clone, Default)]
pub struct SystemMonitor {
    latest: Arc<RwLock<SystemSample>>,
}

impl SystemMonitor {
    /// Starts a detached sampling thread, which stops once every handle on
    /// the monitor is gone.
    pub fn start() -> SystemMonitor {
        let monitor = SystemMonitor::default();
        let latest = Arc::clone(&monitor.latest);
        let spawned = std::thread::Builder::new()
            .name("opusgate-sysinfo".into())
            .spawn(move || {
                let mut system = System::new();
                let Ok(pid) = sysinfo::get_current_pid() else {
                    return;
                };
                loop {
                    system.refresh_memory();
                    system.refresh_cpu_usage();
                    system.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
                    let sample = sample(&system, pid);
                    *latest.write().unwrap_or_else(|e| e.into_inner()) = sample;
                    // Stop with the monitor: only this task holds the last reference then.
                    if Arc::strong_count(&latest) == 1 {
                        return;
                    }
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "system figures unavailable: sampling thread did not start");
        }
        monitor
    }

    /// The latest sample (zeros until the first one is taken).
    pub fn latest(&self) -> SystemSample {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn sample(system: &System, pid: sysinfo::Pid) -> SystemSample {
    let total = system.total_memory() as f64;
    let available = system.available_memory() as f64;
    let process = system.process(pid);
    SystemSample {
        cpu_percent: round1(f64::from(system.global_cpu_usage())),
        total_gb: round2(total / GIB),
        available_gb: round2(available / GIB),
        used_percent: if total > 0.0 {
            round1((total - available) * 100.0 / total)
        } else {
            0.0
        },
        process_memory_mb: process.map_or(0.0, |p| round2(p.memory() as f64 / 1024.0 / 1024.0)),
        process_cpu_percent: process.map_or(0.0, |p| round1(f64::from(p.cpu_usage()))),
        process_threads: thread_count(),
    }
}

/// Threads of this process, from /proc (0 where there is none).
fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
