//! Is a container's process still the one we started? Decided from /proc, not from
//! libcontainer's status: libcontainer reports Stopped as soon as it sent a signal,
//! calls a zombie Stopped, and keeps a pid that the kernel may have given to another
//! process since. The process start time (field 22 of /proc/<pid>/stat) guards
//! against that reuse.

use std::fs;

/// A process as /proc shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// Exited, waiting for its parent to collect the status.
    pub zombie: bool,
}

pub fn info(pid: i32) -> Option<ProcessInfo> {
    read_info(pid).ok().flatten()
}

/// The process `pid` as /proc shows it; None when there is none. Any other failure
/// to read (out of file descriptors) is an error, not a process that has ended.
pub fn read_info(pid: i32) -> std::io::Result<Option<ProcessInfo>> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(None),
        Err(err) => return Err(err),
    };
    // The command name (field 2) may contain spaces and parentheses: split after it.
    let parsed = || {
        let after_name = &stat[stat.rfind(')')? + 1..];
        let mut fields = after_name.split_whitespace();
        let state = fields.next()?;
        // After the name come state (3), ppid (4) ... starttime is field 22.
        let start_time = fields.nth(18)?.parse().ok()?;
        Some(ProcessInfo {
            start_time,
            zombie: matches!(state, "Z" | "X"),
        })
    };
    Ok(parsed())
}

/// The start time of `pid` if it exists and has not exited.
pub fn start_time(pid: i32) -> Option<u64> {
    info(pid).filter(|p| !p.zombie).map(|p| p.start_time)
}

/// Whether `pid` is alive and still the process that started at `started`.
pub fn is_same_process(pid: i32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// [`is_same_process`], with a failure to look an error rather than "no".
pub fn is_same_process_checked(pid: i32, started: u64) -> std::io::Result<bool> {
    let info = read_info(pid)?;
    Ok(info.is_some_and(|p| !p.zombie && p.start_time == started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_a_start_time_and_a_dead_pid_has_none() {
        let me = std::process::id() as i32;
        let started = start_time(me).expect("we are alive");
        assert!(is_same_process(me, started));
        assert!(
            !is_same_process(me, started + 1),
            "another start time is another process"
        );
        assert_eq!(start_time(i32::MAX), None);
    }
}
