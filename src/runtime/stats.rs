//! Resource usage of a container, read from its cgroup: v1 (one hierarchy per
//! controller) or v2 (one unified hierarchy), whichever the host mounts.

use std::fs;
use std::path::{Path, PathBuf};

/// A reading of a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    /// None when unlimited.
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub pids_limit: Option<u64>,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Reads the cgroup at `cgroups_path` (e.g. `/wharf/<id>`); None when it is gone.
pub fn read_usage(cgroups_path: &str) -> Option<Usage> {
    let relative = cgroups_path.trim_start_matches('/');
    let v1 = |controller: &str, file: &str| -> PathBuf {
        Path::new(CGROUP_ROOT)
            .join(controller)
            .join(relative)
            .join(file)
    };
    let v2 = Path::new(CGROUP_ROOT).join(relative);
    if v1("memory", "memory.usage_in_bytes").exists() {
        Some(Usage {
            cpu_ns: number(&v1("cpuacct", "cpuacct.usage")).unwrap_or(0),
            memory_bytes: number(&v1("memory", "memory.usage_in_bytes")).unwrap_or(0),
            // v1 reports "no limit" as a huge page-aligned number.
            memory_limit: number(&v1("memory", "memory.limit_in_bytes"))
                .filter(|limit| *limit < 1 << 62),
            pids: number(&v1("pids", "pids.current")).unwrap_or(0),
            pids_limit: number(&v1("pids", "pids.max")),
        })
    } else if v2.join("cgroup.procs").exists() {
        let cpu_us = fs::read_to_string(v2.join("cpu.stat"))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("usage_usec ")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            })
            .unwrap_or(0);
        Some(Usage {
            cpu_ns: cpu_us * 1000,
            memory_bytes: number(&v2.join("memory.current")).unwrap_or(0),
            memory_limit: number(&v2.join("memory.max")),
            pids: number(&v2.join("pids.current")).unwrap_or(0),
            pids_limit: number(&v2.join("pids.max")),
        })
    } else {
        None
    }
}

/// A number in a cgroup file; "max" and unreadable files are None.
fn number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}
