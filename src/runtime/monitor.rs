//! The monitor: one small process beside each container (podman's conmon is the
//! model). It is the parent of the container's init process, so it alone can collect
//! how the container ended; it owns the container's stdout and stderr pipes and writes
//! them to the container's log ([`Output`]).
//!
//! How it becomes the parent: the forked copy of wharf that builds the container
//! (see `forked`) is the init's parent, because libcontainer clones the init as a
//! sibling of its intermediate process; the copy then execs `wharf-monitor`, and
//! children stay children across an exec. It runs in a session of its own and in the
//! cgroup `/wharf/monitors` (out of the systemd unit of the wharf process that started
//! it), holds no lock and no descriptor but the pipes, and outlives the wharf process
//! that created the container, as the container does.
//!
//! When the init ends, the monitor reads what is left in the pipes (the kernel ends
//! the container's other processes with its init, closing them), tells from the
//! container's memory cgroup whether the kernel's OOM killer ended it, writes the
//! `exit` record (code, time, OOM kill) atomically in the container's directory, and
//! exits. Its exit wakes an agent that created the container; any wharf process reads
//! the record.
//!
//! If the monitor itself is killed, the container runs on (its init is re-parented to
//! the host's init) but its exit will not be known, and output it writes afterwards
//! fails with EPIPE: `wharf ps` says so ("exit will not be known").
//!
//! The binary is small on purpose (`src/bin/wharf-monitor.rs`): one thread, `poll`, no
//! async runtime and no logging, so that its memory per container stays below conmon's.

use std::ffi::{CString, NulError};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2, execve, Pid};

use super::forked::answer_line;
use super::output::{Output, Stream};
use super::records::{AddressRecord, ExitRecord, StopRequest};
use crate::bounded_read::read_regular_text;
use crate::manifest::{LogDriver, ServiceSpec, MAX_LOG_FILES};

/// The descriptors the monitor is started with.
const STDOUT_PIPE: RawFd = 0;
const STDERR_PIPE: RawFd = 1;
/// Where it answers the init's pid once it runs (the answer of the forked copy).
const ANSWER: RawFd = 3;

/// How long output still in the pipes is read after the init ended.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The monitor's command line, made before the fork (the copy only execs it):
/// `wharf-monitor DIR CGROUP INIT_PID file MAX_SIZE MAX_FILES` or
/// `wharf-monitor DIR CGROUP INIT_PID journald CONTAINER SERVICE`.
pub(super) struct MonitorCommand {
    program: CString,
    /// The arguments before the init's pid, and those after it.
    before: Vec<CString>,
    after: Vec<CString>,
}

impl MonitorCommand {
    pub(super) fn new(
        program: &Path,
        dir: &Path,
        cgroup: &str,
        id: &str,
        service: &ServiceSpec,
    ) -> Result<Self, NulError> {
        let logs = &service.logs;
        let after = match logs.driver {
            LogDriver::File => vec![
                "file".to_owned(),
                logs.max_size.bytes().to_string(),
                logs.max_files.to_string(),
            ],
            LogDriver::Journald => vec!["journald".to_owned(), id.to_owned(), service.name.clone()],
        };
        Ok(MonitorCommand {
            program: CString::new(program.as_os_str().as_bytes())?,
            before: vec![
                CString::new("wharf-monitor")?,
                CString::new(dir.as_os_str().as_bytes())?,
                CString::new(cgroup)?,
            ],
            after: after
                .into_iter()
                .map(CString::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// In the forked copy, after the build: puts the container's pipes on fds 0 and 1,
    /// /dev/null on 2 and the answer pipe on 3, and execs the monitor for `init`.
    /// Returns only on failure, with the error.
    pub(super) fn exec(
        &self,
        init: i32,
        stdout: OwnedFd,
        stderr: OwnedFd,
        answer: &OwnedFd,
    ) -> String {
        let null = match open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(err) => return format!("cannot open /dev/null: {err}"),
        };
        let placed = place_descriptors(&[
            (stdout.as_fd(), STDOUT_PIPE),
            (stderr.as_fd(), STDERR_PIPE),
            // SAFETY: `null` is open until the end of this function.
            (unsafe { BorrowedFd::borrow_raw(null) }, 2),
            (answer.as_fd(), ANSWER),
        ]);
        if let Err(err) = placed {
            return format!("cannot pass the container's pipes to the monitor: {err}");
        }
        let init = match CString::new(init.to_string()) {
            Ok(init) => init,
            Err(err) => return err.to_string(),
        };
        let mut argv: Vec<&CString> = self.before.iter().collect();
        argv.push(&init);
        argv.extend(&self.after);
        // An empty environment: wharf's (a sync job's tokens...) is not the monitor's.
        let err = execve::<&CString, &CString>(&self.program, &argv, &[]).err();
        format!(
            "cannot run the monitor {}: {}",
            self.program.to_string_lossy(),
            err.map_or_else(|| "exec returned".to_owned(), |err| err.to_string())
        )
    }
}

/// Moves each descriptor to its number, and marks every other one from 4 on
/// close-on-exec: the monitor holds nothing of the process it was forked from (its lock
/// files above all), while an exec that fails can still answer on the original pipe.
fn place_descriptors(wanted: &[(BorrowedFd<'_>, RawFd)]) -> Result<(), Errno> {
    // Copied above the targets first, so that no dup2 overwrites a source still needed.
    let mut high = Vec::new();
    for (fd, target) in wanted {
        let copy = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(64))?;
        high.push((copy, *target));
    }
    for (copy, target) in high {
        // dup2 clears close-on-exec on the target.
        dup2(copy, target)?;
    }
    // Listed from /proc rather than with close_range, which kernels before 5.9 lack.
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|err| Errno::from_raw(err.raw_os_error().unwrap_or(0)))?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > ANSWER)
        .collect();
    for fd in open {
        // The directory listing's own descriptor is closed already: EBADF is fine.
        match fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            Ok(_) | Err(Errno::EBADF) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// How the monitor was asked to run.
struct Arguments {
    dir: PathBuf,
    cgroup: String,
    init: Pid,
    output: OutputKind,
}

enum OutputKind {
    Files { max_size: u64, max_files: u32 },
    Journal { container: String, service: String },
}

impl Arguments {
    fn parse(args: &[String]) -> Option<Arguments> {
        let (dir, cgroup, init, output) = match args {
            [_, dir, cgroup, init, rest @ ..] => (dir, cgroup, init, rest),
            _ => return None,
        };
        let output = match output {
            [kind, size, files] if kind == "file" => OutputKind::Files {
                max_size: size.parse().ok()?,
                max_files: files
                    .parse()
                    .ok()
                    .filter(|files| (1..=MAX_LOG_FILES).contains(files))?,
            },
            [kind, container, service] if kind == "journald" => OutputKind::Journal {
                container: container.clone(),
                service: service.clone(),
            },
            _ => return None,
        };
        Some(Arguments {
            dir: PathBuf::from(dir),
            cgroup: cgroup.clone(),
            init: Pid::from_raw(init.parse().ok()?),
            output,
        })
    }
}

/// The `wharf-monitor` program; returns its exit code.
pub fn monitor_main() -> i32 {
    if ![STDOUT_PIPE, STDERR_PIPE, ANSWER].into_iter().all(is_pipe) {
        eprintln!(
            "wharf-monitor: wharf starts it beside a container, with the container's pipes; \
             it is not meant to be run by hand"
        );
        return 2;
    }
    let args: Vec<String> = std::env::args().collect();
    // SAFETY: fd 3 is the answer pipe the forked copy passed (see `MonitorCommand`);
    // nothing else in this process owns it.
    let answer = File::from(unsafe { OwnedFd::from_raw_fd(ANSWER) });
    let Some(args) = Arguments::parse(&args) else {
        answer_with(
            answer,
            &Err(format!("wharf-monitor: bad arguments {args:?}")),
        );
        return 2;
    };
    // No mount is kept busy by the monitor's working directory.
    let _ = std::env::set_current_dir("/");
    leave_the_starters_cgroup();
    // Under memory pressure the OOM killer picks containers, not their monitors (conmon's
    // is exempt the same way).
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let children = match child_exits() {
        Ok(children) => children,
        Err(err) => {
            answer_with(answer, &Err(format!("wharf-monitor: {err}")));
            return 1;
        }
    };
    let output = match &args.output {
        OutputKind::Files {
            max_size,
            max_files,
        } => Output::to_files(&args.dir, *max_size, *max_files),
        OutputKind::Journal { container, service } => Output::to_journal(container, service),
    };
    answer_with(answer, &Ok(args.init.as_raw()));
    let ended = follow(args.init, children, output);
    if let Some(code) = ended {
        let record = ExitRecord {
            code,
            at: SystemTime::now(),
            // The counter counts any process of the container killed so far: a SIGKILL
            // that wharf sent to stop it is not the OOM killer's.
            oom_killed: code == 128 + Signal::SIGKILL as i32
                && !StopRequest::exists(&args.dir)
                && oom_kills(&args.cgroup) > 0,
        };
        if record.write(&args.dir).is_err() {
            return 1;
        }
    }
    leave_rotation(&args.dir);
    0
}

/// A container that ended gets no more connections: its monitor takes it out of its
/// service's rotation, with or without an agent running.
fn leave_rotation(dir: &Path) {
    let id = dir.file_name().and_then(|id| id.to_str());
    let record = AddressRecord::read(dir).ok().flatten();
    if let (Some(id), Some(key)) = (id, record.and_then(|record| record.service_key)) {
        // The monitor's environment is empty; nft is found in the usual places.
        std::env::set_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        crate::network::leave_on_exit(&key, id);
    }
}

/// Moves the monitor to the cgroup `/wharf/monitors` of each hierarchy that tracks
/// processes for systemd (cgroup v2, or the named `systemd` one of v1): the wharf
/// process that started it may run in a unit (`wharf.service`, a `wharf sync` job)
/// whose processes systemd kills when it stops, and the monitor must outlive it as the
/// container does (the container's init is in its own cgroup already). Best effort: a
/// host without those hierarchies has no unit to leave.
fn leave_the_starters_cgroup() {
    for hierarchy in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
    ] {
        let root = Path::new(hierarchy);
        // On a cgroup v1 host /sys/fs/cgroup itself is a tmpfs of mount points.
        if !root.join("cgroup.procs").exists() {
            continue;
        }
        let monitors = root.join("wharf").join("monitors");
        if std::fs::create_dir_all(&monitors).is_ok() {
            let _ = std::fs::write(monitors.join("cgroup.procs"), "0");
        }
    }
}

fn is_pipe(fd: RawFd) -> bool {
    nix::sys::stat::fstat(fd)
        .is_ok_and(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
}

fn answer_with(mut answer: File, result: &Result<i32, String>) {
    use std::io::Write;
    let _ = answer.write_all(&answer_line(result));
}

/// A descriptor that becomes readable when a child changes state.
fn child_exits() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

/// Copies the container's output until its init has ended and the pipes are drained;
/// returns the init's exit code (128 + signal when killed), None when it cannot be
/// known.
fn follow(init: Pid, children: SignalFd, mut output: Output) -> Option<i32> {
    // SAFETY: fds 0 and 1 are the pipes the forked copy passed; only this owns them.
    let mut pipes = unsafe {
        [
            Some(OwnedFd::from_raw_fd(STDOUT_PIPE)),
            Some(OwnedFd::from_raw_fd(STDERR_PIPE)),
        ]
    };
    let streams = [Stream::Stdout, Stream::Stderr];
    let mut buffer = vec![0u8; 32 * 1024];
    // Exits before the signal descriptor existed (libcontainer's intermediate process,
    // an init that failed at once) raised no event: collected now.
    let mut ended = reap(init);
    let mut drain_until = ended.map(|_| Instant::now() + DRAIN_GRACE);
    loop {
        if pipes.iter().all(Option::is_none) && ended.is_some() {
            break;
        }
        let timeout = match drain_until {
            Some(until) => {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds: Vec<PollFd> = vec![PollFd::new(children.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            pipes
                .iter()
                .flatten()
                .map(|pipe| PollFd::new(pipe.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let child_event = fds[0].any().unwrap_or(false);
        let ready: Vec<bool> = fds[1..].iter().map(|fd| fd.any().unwrap_or(true)).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        for (pipe, stream) in pipes.iter_mut().zip(streams) {
            let Some(fd) = pipe else { continue };
            if !ready.next().unwrap_or(false) {
                continue;
            }
            match nix::unistd::read(fd.as_raw_fd(), &mut buffer) {
                Ok(0) | Err(Errno::EBADF) => {
                    output.end(stream);
                    *pipe = None;
                }
                Ok(read) => output.write(stream, &buffer[..read]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => {
                    output.end(stream);
                    *pipe = None;
                }
            }
        }
        if child_event {
            while children.read_signal().ok().flatten().is_some() {}
            if ended.is_none() {
                ended = reap(init);
                drain_until = ended.map(|_| Instant::now() + DRAIN_GRACE);
            } else {
                reap(init);
            }
        }
    }
    for (pipe, stream) in pipes.iter().zip(streams) {
        if pipe.is_some() {
            output.end(stream);
        }
    }
    // Nothing is left to tell a loss to: the log says it if it could be written.
    let _ = output.finish();
    ended.flatten()
}

/// Collects every child that has ended; `Some` once `init` has (its code, or None
/// when it is not this process's child: its exit cannot be known).
fn reap(init: Pid) -> Option<Option<i32>> {
    let mut ended = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => ended = Some(Some(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == init => {
                ended = Some(Some(128 + signal as i32));
            }
            Ok(WaitStatus::StillAlive) => return ended,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return ended.or(Some(None)),
        }
    }
}

/// How many times the kernel's OOM killer has killed in the container's memory
/// cgroup: `oom_kill` in `memory.events` (cgroup v2) or `memory.oom_control` (v1).
pub(super) fn oom_kills(cgroup: &str) -> u64 {
    let relative = cgroup.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.events"),
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.oom_control"),
    ];
    candidates
        .iter()
        .find_map(|path| read_regular_text(path, 4096).ok())
        .map_or(0, |text| oom_kill_count(&text))
}

fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_cgroup_v1_and_v2_files() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), 1);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kill_count(v1), 3);
        // A kernel before 4.13 has no counter: no kill can be told.
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    #[test]
    fn the_command_line_reads_back() {
        let args = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
        let files = Arguments::parse(&args(&[
            "wharf-monitor",
            "/var/lib/wharf/containers/web-0-abc",
            "/wharf/web-0-abc",
            "4242",
            "file",
            "10485760",
            "3",
        ]))
        .expect("valid");
        assert_eq!(files.init, Pid::from_raw(4242));
        assert!(matches!(
            files.output,
            OutputKind::Files {
                max_size: 10485760,
                max_files: 3
            }
        ));
        let journal = Arguments::parse(&args(&[
            "wharf-monitor",
            "/d",
            "/wharf/web-0-abc",
            "1",
            "journald",
            "web-0-abc",
            "web",
        ]))
        .expect("valid");
        assert!(matches!(journal.output, OutputKind::Journal { .. }));
        for bad in [
            &["wharf-monitor"][..],
            &["wharf-monitor", "/d", "/c", "x", "file", "1", "1"],
            &["wharf-monitor", "/d", "/c", "1", "file", "1"],
            &["wharf-monitor", "/d", "/c", "1", "syslog", "a", "b"],
            &["wharf-monitor", "/d", "/c", "1", "file", "1", "0"],
            &["wharf-monitor", "/d", "/c", "1", "file", "1", "4000000000"],
        ] {
            assert!(Arguments::parse(&args(bad)).is_none(), "{bad:?}");
        }
    }
}
