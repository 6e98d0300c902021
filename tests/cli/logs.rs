//! Containers' output: `wharf logs` on a big log and on rotated files, and
//! [`SmallDisk`], a disk that fills up, for the monitor's tests.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::common::{ok, service_file, wharf_at};

/// A time in the log's format, for lines the tests write themselves.
const TIME: &str = "2025-01-01T00:00:00.000000000Z";

/// A small tmpfs on a temp dir. Unmounted lazily when dropped, so that a failed test
/// does not leave it behind even while a process still has a file open on it.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = format!("size={size},mode=0700");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .expect("a tmpfs can be mounted (the tests run as root)");
        SmallDisk { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the file `name` until the disk is full.
    pub(crate) fn fill(&self, name: &str) {
        let mut filler = File::create(self.path().join(name)).expect("filler");
        loop {
            if let Err(err) = filler.write_all(&[0; 4096]) {
                let full = err.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32);
                assert!(full, "filling the disk: {err}");
                return;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// Waits until `wharf logs SERVICE` prints `expected`: the monitor writes a line a
/// moment after the container prints it.
fn wait_for_output(root: &Path, service: &str, expected: &str) {
    let printed = (0..200).any(|_| {
        let printed = ok(&wharf_at(root, &["logs", service])) == expected;
        if !printed {
            std::thread::sleep(Duration::from_millis(50));
        }
        printed
    });
    assert!(printed, "the container's output reaches its log");
}

/// What `wharf logs talker EXTRA...` prints.
fn talker_logs(root: &Path, extra: &[&str]) -> String {
    let mut args = vec!["logs", "talker"];
    args.extend_from_slice(extra);
    ok(&wharf_at(root, &args)).to_owned()
}

/// A `wharf` process, killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_are_root_only_and_a_tail_of_a_big_log_reads_only_its_end() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let manifest = service_file(
        work.path(),
        "talker",
        "command: [/bin/sh, -c, 'echo ready; exec sleep 1000']\nstop: {signal: KILL}\n",
    );
    let run = wharf_at(root.path(), &["run", &manifest]);
    let id = ok(&run).trim().to_owned();
    wait_for_output(root.path(), "talker", "ready\n");

    let log = root.path().join("containers").join(&id).join("output.log");
    let mode = fs::metadata(&log).expect("the log").permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only root reads the container's output"
    );

    // 200 MB of older output (a hole: one long line of zero bytes), then three lines.
    let mut file = OpenOptions::new().append(true).open(&log).expect("the log");
    file.set_len(200 << 20).expect("grow the log");
    write!(
        file,
        "\n{TIME} stdout one\n{TIME} stdout two\n{TIME} stdout three\n"
    )
    .expect("append");

    let mut follow = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--root")
        .arg(root.path())
        .args(["logs", "talker", "--tail", "2", "--follow"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("wharf logs starts");
    let mut printed = BufReader::new(follow.stdout.take().expect("its stdout"));
    let follow = Running(follow);
    let mut next = || {
        let mut line = String::new();
        printed.read_line(&mut line).expect("read its output");
        line
    };
    assert_eq!(next(), "two\n");
    assert_eq!(next(), "three\n");
    // All it has read so far, its state and configuration included: not the 200 MB.
    let counters = fs::read_to_string(format!("/proc/{}/io", follow.0.id())).expect("its I/O");
    let read: u64 = counters
        .lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .and_then(|bytes| bytes.parse().ok())
        .expect("bytes read");
    assert!(read < 16 << 20, "wharf logs --tail 2 read {read} bytes");

    // Following goes on from the tail.
    writeln!(file, "{TIME} stdout four").expect("append");
    assert_eq!(next(), "four\n");
    drop(follow);
    ok(&wharf_at(root.path(), &["rm", "talker"]));
}

#[test]
fn since_shows_only_recent_output_and_rotated_files_come_first() {
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let manifest = service_file(
        work.path(),
        "talker",
        "command: [/bin/sh, -c, 'echo recent; exec sleep 1000']\nstop: {signal: KILL}\n",
    );
    let run = wharf_at(root.path(), &["run", &manifest]);
    let id = ok(&run).trim().to_owned();
    wait_for_output(root.path(), "talker", "recent\n");

    // Older output, in the file a rotation would have moved it to.
    let rotated = root
        .path()
        .join("containers")
        .join(&id)
        .join("output.log.1");
    fs::write(&rotated, format!("{TIME} stdout old\n")).expect("write output.log.1");

    assert_eq!(
        talker_logs(root.path(), &[]),
        "old\nrecent\n",
        "oldest first"
    );
    assert_eq!(talker_logs(root.path(), &["--since", "1h"]), "recent\n");
    assert_eq!(
        talker_logs(root.path(), &["--since", "1h", "--tail", "5"]),
        "recent\n"
    );
    assert_eq!(talker_logs(root.path(), &["--tail", "2"]), "old\nrecent\n");

    let run = wharf_at(root.path(), &["logs", "talker", "--since", "yesterday"]);
    assert_eq!(run.code, 2, "a usage error: {}", run.stderr);
    assert!(
        run.stderr.contains("give one such as 30s, 10m or 1h30m"),
        "{}",
        run.stderr
    );
    ok(&wharf_at(root.path(), &["rm", "talker"]));
}
