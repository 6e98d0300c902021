//! Removing a container's cgroup, under every controller (cgroup v1) or in the
//! unified hierarchy (v2). Whatever still runs in it is killed first, in the
//! sub-cgroups the container may have made too (cgroup v1 lets a container write its
//! own hierarchy): a cgroup left behind would keep its processes out of sight.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a cgroup may stay busy after its last process was killed.
const GRACE: Duration = Duration::from_secs(1);
/// Sub-cgroups looked at under one container's cgroup, at most.
const MAX_CGROUPS: usize = 4096;
const ROOT: &str = "/sys/fs/cgroup";

/// Kills what is left in the cgroup `cgroups_path` and removes it, sub-cgroups first.
/// An error when it could not be emptied or removed: the container is not gone.
pub(super) fn remove_cgroup(cgroups_path: &str) -> io::Result<()> {
    let relative = cgroups_path.trim_start_matches('/');
    let mut candidates = vec![Path::new(ROOT).join(relative)];
    for controller in fs::read_dir(ROOT)? {
        candidates.push(controller?.path().join(relative));
    }
    for leaf in candidates.iter().filter(|dir| dir.is_dir()) {
        let tree = subtree(leaf)?;
        for dir in &tree {
            kill_members(dir, cgroups_path)?;
        }
        // Deepest first: a cgroup with children cannot be removed.
        for dir in tree.iter().rev() {
            remove_when_empty(dir)?;
        }
    }
    Ok(())
}

/// The names of the host's cgroup v1 hierarchies (`/sys/fs/cgroup/<name>`); none
/// on a cgroup v2 host (`/sys/fs/cgroup` is the unified hierarchy itself).
pub(super) fn v1_hierarchies() -> Vec<String> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(ROOT) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// `dir` and the cgroups below it, each before its children.
fn subtree(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = vec![dir.to_owned()];
    let mut next = 0;
    while let Some(current) = found.get(next).cloned() {
        next += 1;
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if found.len() >= MAX_CGROUPS {
                    return Err(io::Error::other(format!(
                        "more than {MAX_CGROUPS} cgroups under {}",
                        dir.display()
                    )));
                }
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// SIGKILLs the processes in the cgroup `dir`: through `cgroup.kill` where the kernel
/// has it (v2), otherwise each member through a pidfd, once its /proc entry shows it
/// in the container's cgroup (a pid reused since `cgroup.procs` was read by a process
/// elsewhere is left alone).
fn kill_members(dir: &Path, cgroups_path: &str) -> io::Result<()> {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return Ok(());
    }
    let members = match fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(members) => members,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for pid in members.lines().filter_map(|line| line.trim().parse().ok()) {
        let Some(pid) = rustix::process::Pid::from_raw(pid) else {
            continue;
        };
        let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(pidfd) => pidfd,
            Err(rustix::io::Errno::SRCH) => continue,
            Err(errno) => return Err(errno.into()),
        };
        if in_cgroup(pid.as_raw_pid(), cgroups_path)? {
            match rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }
    Ok(())
}

/// Whether `pid` is in the cgroup `cgroups_path` or below it, under any hierarchy.
fn in_cgroup(pid: i32, cgroups_path: &str) -> io::Result<bool> {
    let lines = match fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(lines) => lines,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    Ok(lines.lines().any(|line| {
        // hierarchy-id:controllers:path
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path == cgroups_path
            || path
                .strip_prefix(cgroups_path)
                .is_some_and(|rest| rest.starts_with('/'))
    }))
}

/// Removes the empty cgroup `dir`, waiting a moment while killed processes leave it.
fn remove_when_empty(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + GRACE;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err)
                if err.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot remove the cgroup {}: {err}", dir.display()),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_belongs_to_the_cgroup_it_is_in_or_below_only() {
        let me = std::process::id() as i32;
        let mine = fs::read_to_string("/proc/self/cgroup").expect("own cgroups");
        let path = mine
            .lines()
            .next()
            .and_then(|line| line.splitn(3, ':').nth(2))
            .expect("a cgroup line")
            .to_owned();
        assert!(in_cgroup(me, &path).expect("looked"));
        assert!(!in_cgroup(me, "/wharf/not-this-one").expect("looked"));
        // A prefix of a name is not a parent cgroup.
        if path.len() > 2 {
            assert!(!in_cgroup(me, &path[..path.len() - 1]).expect("looked"));
        }
    }
}
