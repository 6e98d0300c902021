//! Containers' output: the log shim run for real on a disk that fills up, and
//! `wharf logs` on a big log.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::common::{ok, service_file, wharf_at};

/// A time in the log's format, for lines the tests write themselves.
const TIME: &str = "2025-01-01T00:00:00.000000000Z";

/// A small tmpfs on a temp dir. Unmounted lazily when dropped, so that a failed test
/// does not leave it behind even while a process still has a file open on it.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
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

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the file `name` until the disk is full.
    fn fill(&self, name: &str) {
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

/// Line `n` of a container's output: 100 bytes, newline included.
fn numbered(n: usize) -> String {
    format!("line {n:06} {}\n", "x".repeat(87))
}

#[test]
fn the_log_shim_reads_on_through_a_full_disk_and_logs_how_much_it_dropped() {
    let disk = SmallDisk::mount("1m");
    disk.fill("filler");
    let log = disk.path().join("output.log");
    // As a container's runtime starts it: the container's stdout on the shim's fd 0,
    // its stderr on fd 1.
    let (stderr_read, stderr_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let mut shim = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("log-shim")
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(stderr_read))
        .stderr(Stdio::piped())
        .spawn()
        .expect("wharf log-shim starts");
    let mut stdout = shim.stdin.take().expect("the container's stdout");
    let stderr = File::from(stderr_write);

    // 512 KiB while the disk is full: eight times what a pipe holds, so a shim that
    // stopped reading would block the container (here: fail the write with EPIPE).
    const LINES: usize = 5243;
    for n in 0..LINES {
        stdout
            .write_all(numbered(n).as_bytes())
            .expect("the shim keeps reading while the disk is full");
    }
    fs::remove_file(disk.path().join("filler")).expect("free the disk");
    stdout.write_all(b"after\n").expect("write");
    drop((stdout, stderr));
    let ended = shim
        .wait_with_output()
        .expect("the shim ends with its pipes");
    let notice = String::from_utf8_lossy(&ended.stderr);
    assert!(ended.status.success(), "{notice}");
    // Said once on the shim's stderr, however many lines were dropped.
    assert_eq!(notice.lines().count(), 1, "{notice}");
    assert!(
        notice.contains("No space left on device") && notice.contains(&*log.to_string_lossy()),
        "{notice}"
    );

    // The log says how much was dropped, then has every line read after the disk
    // was freed, in order: nothing is lost without a word.
    let written = fs::read_to_string(&log).expect("the log");
    let lines: Vec<(&str, &str)> = written
        .lines()
        .map(|line| {
            let (_time, rest) = line.split_once(' ').expect("time, stream, text");
            rest.split_once(' ').expect("stream, text")
        })
        .collect();
    let (stream, marker) = *lines.first().expect("a line saying what was dropped");
    assert_eq!(stream, "stderr");
    let dropped: usize = marker
        .strip_prefix("wharf: ")
        .and_then(|rest| {
            rest.strip_suffix(" bytes of output dropped (No space left on device (os error 28))")
        })
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("not a line saying what was dropped: {marker}"));
    let line_len = numbered(0).len();
    assert!(dropped > 0 && dropped % line_len == 0, "{marker}");
    let expected: Vec<String> = (dropped / line_len..LINES)
        .map(|n| numbered(n).trim_end().to_owned())
        .chain(["after".to_owned()])
        .collect();
    let logged: Vec<&str> = lines[1..].iter().map(|&(_, text)| text).collect();
    assert_eq!(logged, expected);
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
    // The shim writes the line a moment after the container prints it.
    let ready = (0..200).any(|_| {
        let printed = ok(&wharf_at(root.path(), &["logs", "talker"])) == "ready\n";
        if !printed {
            std::thread::sleep(Duration::from_millis(50));
        }
        printed
    });
    assert!(ready, "the container's output reaches its log");

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
