//! A container's output. Its stdout and stderr are pipes read by a small log shim
//! process (`wharf log-shim`, started with the container and ending with it), which
//! writes each line to `output.log` as `<RFC 3339 time> <stdout|stderr> <text>`. The
//! shim outlives the wharf process that created the container, as the container does.
//!
//! The shim never stops for good: when the log cannot be written (a full disk), it
//! keeps reading the container's pipes so that the container never blocks on them,
//! counts what it drops, tries again at the next line, and once writing works again
//! records the loss in the log as a line of its own:
//! `<time> stderr wharf: N bytes of output dropped (<first error>)`.
//!
//! Reading is bounded whatever the log's size: a tail is found by reading backwards
//! from the end, and no line read back is held beyond `MAX_ENTRY` bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// Lines longer than this are split, so that one endless line cannot exhaust memory.
const MAX_LINE: usize = 64 * 1024;

/// The longest line read back from a log. The shim writes at most [`MAX_LINE`] bytes
/// of text and a short prefix per line, so only a damaged log has longer lines: reading
/// forward keeps the first `MAX_ENTRY` bytes of such a line, and a tail read from the
/// end stops before it (the lines after it are shown, not it).
const MAX_ENTRY: usize = 1024 * 1024;

/// A tail is searched for backwards in blocks of this size.
const TAIL_BLOCK: usize = 64 * 1024;

/// Errors reading or writing a container's log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the container's {stream} pipe: {source}")]
    Pipe {
        stream: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{bytes} bytes of the container's output were dropped and the log could not say so \
         ({error}); free space on the log's filesystem"
    )]
    Dropped { bytes: u64, error: String },
}

impl LogError {
    fn read(path: &Path) -> impl FnOnce(io::Error) -> LogError {
        let path = path.to_owned();
        move |source| LogError::Read { path, source }
    }
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    pub stream: String,
    pub text: String,
}

impl LogLine {
    fn parse(line: &str) -> Option<LogLine> {
        let (time, rest) = line.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(LogLine {
            time: time.to_owned(),
            stream: stream.to_owned(),
            text: text.to_owned(),
        })
    }
}

/// A line of the log as the shim writes it, newline included.
fn format_entry(stream: &str, text: &str) -> String {
    let time = humantime::format_rfc3339_nanos(SystemTime::now());
    format!("{time} {stream} {}\n", text.trim_end_matches('\n'))
}

pub struct Logs {
    path: PathBuf,
}

impl Logs {
    pub fn new(path: PathBuf) -> Self {
        Logs { path }
    }

    /// The log from the start of its last `tail` lines (of all of it with `None`).
    /// With `follow`, a last line still being written is held back until it is
    /// complete, and the stream goes on with what is written later; without, the
    /// stream ends where the log ended when opened, that last line included.
    pub fn open(&self, tail: Option<usize>, follow: bool) -> Result<LogStream, LogError> {
        File::open(&self.path)
            .and_then(|file| LogStream::start(file, &self.path, tail, follow))
            .map_err(LogError::read(&self.path))
    }

    /// Every line, or the last `tail` lines.
    pub fn read(&self, tail: Option<usize>) -> Result<Vec<LogLine>, LogError> {
        let mut stream = self.open(tail, false)?;
        let mut lines = Vec::new();
        while let Some(line) = stream.next_line()? {
            lines.push(line);
        }
        Ok(lines)
    }

    /// The output's text, lines joined with newlines (for tests and quick looks).
    pub fn text(&self) -> Result<String, LogError> {
        Ok(self
            .read(None)?
            .into_iter()
            .map(|l| l.text + "\n")
            .collect())
    }
}

/// Reads a log forward, line by line, from a position chosen by [`Logs::open`].
pub struct LogStream<R = File> {
    path: PathBuf,
    source: BufReader<R>,
    /// The line being read: its first [`MAX_ENTRY`] bytes.
    line: Vec<u8>,
    follow: bool,
    /// Where the next byte is read from.
    position: u64,
    /// Without following, where the log ended when opened: reading stops there, so
    /// that a busy container's output does not keep a plain read going.
    end: Option<u64>,
}

impl<R: Read + Seek> LogStream<R> {
    fn start(mut source: R, path: &Path, tail: Option<usize>, follow: bool) -> io::Result<Self> {
        let end = source.seek(SeekFrom::End(0))?;
        let start = match tail {
            Some(lines) => tail_start(&mut source, lines)?,
            None => 0,
        };
        source.seek(SeekFrom::Start(start))?;
        Ok(LogStream {
            path: path.to_owned(),
            source: BufReader::new(source),
            line: Vec::new(),
            follow,
            position: start,
            end: (!follow).then_some(end),
        })
    }

    /// The next line, or `None` at the end: where the log ended when opened or, when
    /// following, its current end (call again later for what is written meanwhile).
    /// Lines that are not entries, such as one cut short by a full disk, are skipped.
    pub fn next_line(&mut self) -> Result<Option<LogLine>, LogError> {
        loop {
            let bytes = self.next_bytes().map_err(LogError::read(&self.path))?;
            let Some(bytes) = bytes else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Some(line) = LogLine::parse(text.strip_suffix('\r').unwrap_or(&text)) {
                return Ok(Some(line));
            }
        }
    }

    /// The next line's bytes without its newline, at most [`MAX_ENTRY`] of them.
    fn next_bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let available = match self.source.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let unread = self
                .end
                .map_or(u64::MAX, |end| end.saturating_sub(self.position));
            let available =
                &available[..available.len().min(unread.try_into().unwrap_or(usize::MAX))];
            if available.is_empty() {
                // A last line without its newline is still being written.
                if self.follow || self.line.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.line)));
            }
            let newline = available.iter().position(|&byte| byte == b'\n');
            let text = &available[..newline.unwrap_or(available.len())];
            let room = MAX_ENTRY.saturating_sub(self.line.len());
            self.line.extend_from_slice(&text[..text.len().min(room)]);
            let used = newline.map_or(available.len(), |at| at + 1);
            self.source.consume(used);
            self.position += used as u64;
            if newline.is_some() {
                return Ok(Some(std::mem::take(&mut self.line)));
            }
        }
    }
}

/// Where the last `lines` lines of `log` begin, found by reading backwards from the
/// end in blocks: what is read is the tail and at most a block more, whatever the
/// log's size. A line longer than [`MAX_ENTRY`] ends the search (the tail starts
/// after it), so that a damaged log without newlines is not read whole either.
fn tail_start(log: &mut (impl Read + Seek), lines: usize) -> io::Result<u64> {
    let end = log.seek(SeekFrom::End(0))?;
    let mut block = vec![0; TAIL_BLOCK];
    // The start of the earliest line found so far; bytes from `scanned` on are read.
    let mut start = end;
    let mut found = 0;
    let mut scanned = end;
    while found < lines && scanned > 0 {
        let len = scanned.min(TAIL_BLOCK as u64) as usize;
        scanned -= len as u64;
        log.seek(SeekFrom::Start(scanned))?;
        log.read_exact(&mut block[..len])?;
        let mut unsearched = &block[..len];
        while let Some(at) = unsearched.iter().rposition(|&byte| byte == b'\n') {
            unsearched = &unsearched[..at];
            let after = scanned + at as u64 + 1;
            // The log's last newline ends its last line rather than starting one.
            if after == end {
                continue;
            }
            start = after;
            found += 1;
            if found == lines {
                return Ok(start);
            }
        }
        if start - scanned > MAX_ENTRY as u64 {
            return Ok(start);
        }
    }
    Ok(if found < lines { 0 } else { start })
}

/// Where the log shim writes: the seam that lets tests make writing fail.
trait LogTarget {
    /// Unbuffered: what it accepts is in the log.
    type Writer: Write;
    /// Opens the log for appending, creating it if needed. Called again after every
    /// failure, since the file may have been removed or replaced meanwhile.
    fn open(&mut self) -> io::Result<Self::Writer>;
    /// Told once, at the first failure to open or write the log.
    fn first_failure(&mut self, error: &io::Error);
}

/// The log file at a path.
struct LogFile {
    path: PathBuf,
}

impl LogTarget for LogFile {
    type Writer = File;

    fn open(&mut self) -> io::Result<File> {
        // Root-only whatever the umask: output often holds secrets.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
    }

    fn first_failure(&mut self, error: &io::Error) {
        // On the shim's stderr; the log ignores a failure to write it, which must not
        // stop the shim either.
        tracing::warn!(
            "wharf log-shim: cannot write {}: {error}; dropping the container's output until \
             it can be written (free space on its filesystem)",
            self.path.display()
        );
    }
}

/// The log as both pumps share it. A failed write drops the line, closes the log and
/// is retried at the next line, so that reading the pipes never waits for the disk.
struct Sink<T: LogTarget> {
    target: T,
    /// `None` after a failure: the next line opens the log again.
    file: Option<T::Writer>,
    /// Bytes of output dropped since the log was last written, and the first error.
    dropped: u64,
    error: String,
    /// A failed write left part of a line in the log: the next line starts afresh.
    cut: bool,
    reported: bool,
}

impl<T: LogTarget> Sink<T> {
    fn new(target: T) -> Self {
        let mut sink = Sink {
            target,
            file: None,
            dropped: 0,
            error: String::new(),
            cut: false,
            reported: false,
        };
        // Created at once, so that `wharf logs` finds a log before the first output.
        match sink.target.open() {
            Ok(file) => sink.file = Some(file),
            Err(err) => sink.report(&err),
        }
        sink
    }

    /// Writes `entry`, the line for `output` bytes of the container's output.
    fn write(&mut self, entry: &[u8], output: u64) {
        if let Err(err) = self.try_write(entry) {
            if self.dropped == 0 {
                self.error = err.to_string();
            }
            self.dropped += output;
            self.report(&err);
        }
    }

    fn try_write(&mut self, entry: &[u8]) -> io::Result<()> {
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.target.open()?,
        };
        if self.dropped > 0 || self.cut {
            let mut marker = if self.cut {
                "\n".to_owned()
            } else {
                String::new()
            };
            if self.dropped > 0 {
                let text = format!(
                    "wharf: {} bytes of output dropped ({})",
                    self.dropped, self.error
                );
                marker.push_str(&format_entry("stderr", &text));
            }
            self.put(&mut file, marker.as_bytes())?;
            self.dropped = 0;
        }
        self.put(&mut file, entry)?;
        self.file = Some(file);
        Ok(())
    }

    /// Writes all of `bytes`, noting when a failure leaves part of them in the log.
    fn put(&mut self, file: &mut T::Writer, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => {
                    self.cut |= rest.len() < bytes.len();
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(written) => rest = &rest[written..],
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.cut |= rest.len() < bytes.len();
                    return Err(err);
                }
            }
        }
        if !bytes.is_empty() {
            // Everything written ends with a newline.
            self.cut = false;
        }
        Ok(())
    }

    fn report(&mut self, error: &io::Error) {
        if !self.reported {
            self.reported = true;
            self.target.first_failure(error);
        }
    }

    /// At the end: one last try to record a loss that the log does not show yet.
    fn finish(mut self) -> Result<(), LogError> {
        if self.dropped > 0 {
            self.write(b"", 0);
        }
        match self.dropped {
            0 => Ok(()),
            bytes => Err(LogError::Dropped {
                bytes,
                error: self.error,
            }),
        }
    }
}

/// The log shim's work: copies `stdout` and `stderr` (the container's pipes) line by
/// line into `log`, timestamped, until both end. Failing to write the log does not
/// stop it (see the module's documentation); the error says what was lost if the log
/// could not say it by the end.
pub fn copy_timestamped(
    stdout: impl Read + Send,
    stderr: impl Read + Send,
    log: &Path,
) -> Result<(), LogError> {
    copy_to(
        stdout,
        stderr,
        LogFile {
            path: log.to_owned(),
        },
    )
}

fn copy_to<T>(stdout: impl Read + Send, stderr: impl Read + Send, target: T) -> Result<(), LogError>
where
    T: LogTarget + Send,
    T::Writer: Send,
{
    let sink = Mutex::new(Sink::new(target));
    let (out, err) = std::thread::scope(|scope| {
        let sink = &sink;
        let out = scope.spawn(move || pump("stdout", stdout, sink));
        let err = pump("stderr", stderr, sink);
        (out.join(), err)
    });
    let out = out.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let finished = sink
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .finish();
    out.and(err).and(finished)
}

/// Copies one pipe into the sink until it ends.
fn pump<T: LogTarget>(
    stream: &'static str,
    source: impl Read,
    sink: &Mutex<Sink<T>>,
) -> Result<(), LogError> {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|source| LogError::Pipe { stream, source })?;
        if read == 0 {
            return Ok(());
        }
        let entry = format_entry(stream, &String::from_utf8_lossy(&line));
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(entry.as_bytes(), read as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    const TIME: &str = "2025-01-01T00:00:00.000000000Z";

    /// A log of entries with these texts, one per line.
    fn log_of(texts: &[String]) -> String {
        texts
            .iter()
            .map(|text| format!("{TIME} stdout {text}\n"))
            .collect()
    }

    fn numbered(lines: std::ops::RangeInclusive<usize>) -> Vec<String> {
        lines.map(|n| format!("line {n}")).collect()
    }

    fn texts(lines: Vec<LogLine>) -> Vec<String> {
        lines.into_iter().map(|line| line.text).collect()
    }

    fn logs_with(dir: &tempfile::TempDir, contents: &str) -> Logs {
        let path = dir.path().join("output.log");
        std::fs::write(&path, contents).expect("write the log");
        Logs::new(path)
    }

    #[test]
    fn lines_are_timestamped_by_stream_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("output.log");
        copy_timestamped(&b"one\ntwo"[..], &b"oops\n"[..], &log).expect("copy");
        let logs = Logs::new(log);
        let mut lines = logs.read(None).expect("read");
        lines.sort_by(|a, b| a.text.cmp(&b.text));
        let texts: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.stream.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [("stdout", "one"), ("stderr", "oops"), ("stdout", "two")]
        );
        assert!(lines[0].time.ends_with('Z') && lines[0].time.contains('T'));
        assert_eq!(logs.read(Some(1)).expect("tail").len(), 1);
    }

    #[test]
    fn the_log_is_readable_by_root_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("output.log");
        copy_timestamped(&b"DB_PASSWORD=secret\n"[..], &b""[..], &log).expect("copy");
        let mode = std::fs::metadata(&log).expect("log").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// What a [`Disk`] does at each write call, in order; then it accepts everything.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Accept,
        /// Accepts this many bytes, then is full.
        Part(usize),
        Fail,
    }

    #[derive(Default)]
    struct DiskState {
        steps: Vec<Step>,
        written: Vec<u8>,
        notices: Vec<String>,
    }

    /// A log on a disk that fills up and is freed again, as scripted.
    #[derive(Clone, Default)]
    struct Disk(Arc<Mutex<DiskState>>);

    impl Disk {
        fn scripted(steps: &[Step]) -> Disk {
            let disk = Disk::default();
            disk.state().steps = steps.iter().rev().copied().collect();
            disk
        }

        fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
            self.0.lock().expect("disk state")
        }
    }

    impl Write for Disk {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut disk = self.state();
            let accepted = match disk.steps.pop().unwrap_or(Step::Accept) {
                Step::Accept => bytes.len(),
                Step::Part(len) => len.min(bytes.len()),
                Step::Fail => return Err(io::Error::other("disk full")),
            };
            disk.written.extend_from_slice(&bytes[..accepted]);
            Ok(accepted)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LogTarget for Disk {
        type Writer = Disk;

        fn open(&mut self) -> io::Result<Disk> {
            Ok(self.clone())
        }

        fn first_failure(&mut self, error: &io::Error) {
            self.state().notices.push(error.to_string());
        }
    }

    #[test]
    fn output_dropped_while_the_disk_is_full_is_counted_in_the_log_and_later_output_follows() {
        let output = numbered(1..=10).join("\n") + "\n";
        // Lines 1 and 2 are written, line 3 only in part; the next three tries fail.
        let disk = Disk::scripted(&[
            Step::Accept,
            Step::Accept,
            Step::Part(5),
            Step::Fail,
            Step::Fail,
            Step::Fail,
        ]);
        copy_to(output.as_bytes(), &b""[..], disk.clone()).expect("copied");

        let state = disk.state();
        let mut stream = LogStream::start(
            Cursor::new(state.written.clone()),
            Path::new("output.log"),
            None,
            false,
        )
        .expect("read back");
        let mut lines = Vec::new();
        while let Some(line) = stream.next_line().expect("line") {
            lines.push(line);
        }
        // Lines 3, 4 and 5 ("line N\n", 7 bytes each) were dropped.
        let mut expected = numbered(1..=2);
        expected.push("wharf: 21 bytes of output dropped (disk full)".to_owned());
        expected.extend(numbered(6..=10));
        assert_eq!(texts(lines.clone()), expected);
        assert_eq!(lines[2].stream, "stderr");
        // The cut line ends where the disk filled up, on a line of its own.
        let raw = String::from_utf8_lossy(&state.written);
        assert_eq!(raw.lines().nth(2).map(str::len), Some(5));
        assert_eq!(state.notices, ["disk full"], "told once");
    }

    /// A log that can never be opened.
    struct Unwritable {
        notices: usize,
    }

    impl LogTarget for Unwritable {
        type Writer = Disk;

        fn open(&mut self) -> io::Result<Disk> {
            Err(io::Error::other("read-only file system"))
        }

        fn first_failure(&mut self, _: &io::Error) {
            self.notices += 1;
        }
    }

    #[test]
    fn all_output_is_read_even_when_the_log_never_recovers_and_the_loss_is_reported() {
        // Far more than a pipe holds: a shim that stopped reading would block the
        // container (or end its output with EPIPE).
        let line = format!("{}\n", "x".repeat(99));
        let stdout = line.repeat(6000);
        let stderr = line.repeat(4000);
        let target = Unwritable { notices: 0 };
        match copy_to(stdout.as_bytes(), stderr.as_bytes(), target) {
            Err(LogError::Dropped { bytes, error }) => {
                assert_eq!(bytes, 10000 * 100);
                assert_eq!(error, "read-only file system");
            }
            other => panic!("expected the loss to be reported, got {other:?}"),
        }
    }

    #[test]
    fn the_first_failure_is_told_once() {
        let mut sink = Sink::new(Unwritable { notices: 0 });
        for _ in 0..3 {
            sink.write(b"line\n", 5);
        }
        assert_eq!(sink.target.notices, 1);
        assert_eq!(sink.dropped, 15);
    }

    #[test]
    fn a_tail_is_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = logs_with(&dir, &log_of(&numbered(1..=1000)));
        let tail = |lines| texts(logs.read(lines).expect("read"));
        assert_eq!(tail(Some(1)), ["line 1000"]);
        assert_eq!(tail(Some(3)), numbered(998..=1000));
        assert_eq!(tail(Some(0)), Vec::<String>::new());
        assert_eq!(tail(Some(5000)), numbered(1..=1000));
        assert_eq!(tail(None), numbered(1..=1000));
    }

    #[test]
    fn a_last_line_without_its_newline_is_a_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let contents = log_of(&numbered(1..=3));
        let logs = logs_with(&dir, contents.trim_end_matches('\n'));
        assert_eq!(texts(logs.read(Some(1)).expect("read")), ["line 3"]);
        assert_eq!(texts(logs.read(Some(2)).expect("read")), numbered(2..=3));
        assert_eq!(texts(logs.read(None).expect("read")), numbered(1..=3));
    }

    #[test]
    fn following_goes_on_where_the_tail_ends_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = logs_with(&dir, &log_of(&numbered(1..=3)));
        let mut stream = logs.open(Some(1), true).expect("open");
        let line = |stream: &mut LogStream| stream.next_line().expect("line").map(|l| l.text);
        assert_eq!(line(&mut stream).as_deref(), Some("line 3"));
        assert_eq!(line(&mut stream), None);

        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("output.log"))
            .expect("log");
        write!(file, "{TIME} stdout li").expect("append");
        assert_eq!(line(&mut stream), None, "a line still being written waits");
        writeln!(file, "ne 4").expect("append");
        assert_eq!(line(&mut stream).as_deref(), Some("line 4"));
    }

    #[test]
    fn a_read_ends_where_the_log_ended_when_it_was_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = logs_with(&dir, &log_of(&numbered(1..=2)));
        let mut stream = logs.open(None, false).expect("open");
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("output.log"))
            .expect("log");
        writeln!(file, "{TIME} stdout line 3").expect("append");
        let mut lines = Vec::new();
        while let Some(line) = stream.next_line().expect("line") {
            lines.push(line);
        }
        assert_eq!(texts(lines), numbered(1..=2));
    }

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let read = self.inner.read(buf)?;
            self.read += read as u64;
            Ok(read)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    /// A 200 MB log: a hole (one long line of zero bytes), then lines 1 to 10.
    fn big_log() -> File {
        let mut file = tempfile::tempfile().expect("temp file");
        file.set_len(200 << 20).expect("sparse file");
        file.seek(SeekFrom::End(0)).expect("seek");
        let lines = log_of(&numbered(1..=10));
        write!(file, "\n{lines}").expect("write");
        file
    }

    fn tail_of(file: File, lines: usize) -> (Vec<String>, u64) {
        let source = Counting {
            inner: file,
            read: 0,
        };
        let mut stream =
            LogStream::start(source, Path::new("big.log"), Some(lines), false).expect("open");
        let mut found = Vec::new();
        while let Some(line) = stream.next_line().expect("line") {
            found.push(line.text);
        }
        (found, stream.source.get_ref().read)
    }

    #[test]
    fn a_tail_reads_the_tail_not_the_whole_log() {
        let (lines, read) = tail_of(big_log(), 3);
        assert_eq!(lines, numbered(8..=10));
        assert!(read <= 2 * TAIL_BLOCK as u64, "read {read} bytes of 200 MB");
    }

    #[test]
    fn a_tail_stops_before_a_line_longer_than_a_mebibyte() {
        // Only 10 lines follow the 200 MB line of zeros: they are the tail.
        let (lines, read) = tail_of(big_log(), 20);
        assert_eq!(lines, numbered(1..=10));
        assert!(
            read <= (MAX_ENTRY + 2 * TAIL_BLOCK) as u64,
            "read {read} bytes of 200 MB"
        );
    }

    #[test]
    fn a_line_longer_than_a_mebibyte_is_read_back_cut() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = logs_with(
            &dir,
            &log_of(&["x".repeat(3 * MAX_ENTRY), "after".to_owned()]),
        );
        let lines = logs.read(None).expect("read");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].text.len(),
            MAX_ENTRY - format!("{TIME} stdout ").len()
        );
        assert_eq!(lines[1].text, "after");
    }
}
