//! The writing side of a container's output. Each container has a small monitor
//! process, single-threaded, that polls the read ends of the container's stdout and
//! stderr pipes and pushes what it reads into an [`Output`]. `Output` cuts it into lines
//! and hands the complete lines of each read, together, to one of two drivers, chosen
//! by the manifest's `logs:` field:
//!
//! - **Files** (the default): `output.log` in the container's directory, one entry per
//!   line as `<RFC 3339 time> <stdout|stderr> <text>`, which `wharf logs` reads back.
//!   The lines of one read are a batch: one time for all of them, taken and formatted
//!   once, and their entries written with one write() (more only around a rotation, or
//!   every [`BATCH_BYTES`] of entries, which a read of very short lines passes). The
//!   monitor is outside the container's cgroup, so its work per line is not bounded by
//!   the container's `cpus`: with an entry and a write() each, a container printing
//!   short lines cost its monitor most of a core. Invalid UTF-8 becomes U+FFFD, and an
//!   entry's text is cut at [`MAX_LINE`] bytes (each invalid byte becomes three).
//!   The log is bounded by rotation: before an entry would take `output.log` past
//!   `max_size`, it becomes `output.log.1`, `output.log.1` becomes `output.log.2` and
//!   so on, the oldest (`output.log.{max_files - 1}`) being removed; with one file the
//!   log starts over. The default, 10 MiB x 3 files, keeps at most about 30 MiB per
//!   container (an entry bigger than `max_size` alone still gets written, in a file of
//!   its own). The files are readable by root only: output often holds secrets.
//! - **journald**: one datagram per line on journald's native socket
//!   (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>), with the fields Docker's journald
//!   driver sets: `MESSAGE`, `PRIORITY` (6, info, for stdout; 3, err, for stderr),
//!   `SYSLOG_IDENTIFIER` and `CONTAINER_TAG` (the service) and `CONTAINER_NAME` (the
//!   container id), so that `journalctl CONTAINER_TAG=web` shows a service's output.
//!
//! Writing never blocks or stops the container. Output that cannot be written (a full
//! disk, a rotation that fails, journald not listening or too busy) is dropped and
//! counted in lines: with files, the lines of the batch not written whole (a part of
//! one left in the log is ended by a newline before the next entry), and the next
//! batch opens the log anew; with journald, the line whose datagram failed, and the
//! next line tries again. Once writing works again a line on stderr records the loss
//! before the next one: `wharf: 1234 lines dropped: no space left on device`, with the
//! first error since the last successful write. A marker lost in turn keeps its count:
//! the next one tells it with the lines lost since.
//!
//! An `Output` holds at most one partial line per stream, of at most [`MAX_LINE`]
//! bytes: longer lines are split, so that one endless line cannot exhaust memory.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Lines longer than this are split, so that one endless line cannot exhaust memory
/// (and every line fits in one journald datagram).
const MAX_LINE: usize = 64 * 1024;

/// The file driver writes a batch's entries once they reach this many bytes: a read
/// of very short lines (`yes`) formats to about twenty times its size, not worth
/// holding in the monitor's memory for the sake of fewer write() calls.
const BATCH_BYTES: usize = 64 * 1024;

/// The current log in a container's directory; rotated ones get `.1`, `.2`...
pub(super) const LOG_NAME: &str = "output.log";

/// Log file `generation` of the container directory `dir`: `output.log` for 0,
/// `output.log.N` for the Nth newest rotated one (what `logs` reads back).
pub(super) fn log_file(dir: &Path, generation: u32) -> PathBuf {
    match generation {
        0 => dir.join(LOG_NAME),
        generation => dir.join(format!("{LOG_NAME}.{generation}")),
    }
}

/// journald's socket for its native protocol.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Output that was lost without the log saying so.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{lines} lines of the container's output were dropped and the log could not say so \
         ({error})"
    )]
    Dropped { lines: u64, error: String },
}

/// One of a container's two output pipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A container's output on its way to its log: see the module's documentation.
pub struct Output {
    /// Per stream (indexed by `Stream as usize`), the start of a line whose newline
    /// has not been read yet.
    partial: [Vec<u8>; 2],
    delivery: Delivery,
}

impl Output {
    /// Log files in the container directory `dir`: `output.log`, rotated to
    /// `output.log.1` (newest) ... `output.log.{max_files - 1}` (oldest); at most
    /// `max_files` files, each at most `max_size` bytes (one entry may exceed when it
    /// alone is bigger). `output.log` is created at once (so that `wharf logs` finds a
    /// log before the first output); an existing one is appended to.
    pub fn to_files(dir: &Path, max_size: u64, max_files: u32) -> Output {
        let dir = LogDir {
            dir: dir.to_owned(),
            max_files,
        };
        Output::with_destination(Box::new(LogFiles::new(dir, max_size)))
    }

    /// Entries sent to journald's native socket, tagged with the container's id and
    /// its service.
    pub fn to_journal(container: &str, service: &str) -> Output {
        Output::to_journal_at(Path::new(JOURNAL_SOCKET), container, service)
    }

    /// [`Output::to_journal`] with the socket at `socket`.
    pub fn to_journal_at(socket: &Path, container: &str, service: &str) -> Output {
        Output::with_destination(Box::new(Journal::new(socket, container, service)))
    }

    fn with_destination(destination: Box<dyn Destination>) -> Output {
        Output {
            partial: [Vec::new(), Vec::new()],
            delivery: Delivery {
                destination,
                dropped: 0,
                error: String::new(),
            },
        }
    }

    /// Bytes just read from the container's `stream` pipe: its complete lines are
    /// written as one batch, a partial last line is kept until its newline comes (or
    /// [`MAX_LINE`] bytes of it have, then it is written in pieces).
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let partial = &mut self.partial[stream as usize];
        let room = MAX_LINE - partial.len();
        // A newline right after a full line still ends it.
        let (first, rest) = match data.iter().take(room + 1).position(|&byte| byte == b'\n') {
            Some(newline) => (&data[..newline], &data[newline + 1..]),
            None if data.len() > room => data.split_at(room),
            None => {
                partial.extend_from_slice(data);
                return;
            }
        };
        let (rest, unended) = rest.split_at(complete_len(rest));
        let first = if partial.is_empty() {
            // The usual case, a line begun in this read: no copy.
            first
        } else {
            partial.extend_from_slice(first);
            partial.as_slice()
        };
        let mut lines = Lines {
            first: Some(first),
            rest,
        };
        self.delivery.deliver(stream, &mut lines);
        partial.clear();
        partial.extend_from_slice(unended);
    }

    /// The pipe of `stream` closed: its partial last line, if any, is written.
    pub fn end(&mut self, stream: Stream) {
        // Taken, not cleared: the pipe is done with, so is its buffer.
        let partial = std::mem::take(&mut self.partial[stream as usize]);
        if !partial.is_empty() {
            self.delivery.deliver(stream, &mut Lines::one(&partial));
        }
    }

    /// At the end (both pipes closed; a partial line still held is written first): a
    /// last try to record lines dropped that the log does not show yet; an error saying
    /// how many were lost if even that failed.
    pub fn finish(mut self) -> Result<(), OutputError> {
        self.end(Stream::Stdout);
        self.end(Stream::Stderr);
        self.delivery.finish()
    }
}

/// How much of `data`, which starts a line, is complete lines: up to its last newline,
/// then the [`MAX_LINE`]-byte pieces of an endless line but its last, which waits for
/// more (a newline right after it still ends it there).
fn complete_len(data: &[u8]) -> usize {
    let ended = data
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let unended = data.len() - ended;
    ended + unended.saturating_sub(1) / MAX_LINE * MAX_LINE
}

/// The complete lines of one read, texts without their newline: `first` (which may
/// have begun in an earlier read), then those of `rest`, which holds complete lines
/// only (see [`complete_len`]).
#[derive(Default)]
struct Lines<'a> {
    first: Option<&'a [u8]>,
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn one(line: &'a [u8]) -> Self {
        Lines {
            first: Some(line),
            rest: &[],
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// Drops the lines left; how many they were.
    fn drop_rest(&mut self) -> u64 {
        self.by_ref().count() as u64
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let line = match self.first.take() {
            Some(line) => line,
            None if self.rest.is_empty() => return None,
            None => {
                let rest = self.rest;
                let window = &rest[..rest.len().min(MAX_LINE + 1)];
                let (line, next) = match window.iter().position(|&byte| byte == b'\n') {
                    Some(newline) => (&rest[..newline], newline + 1),
                    // A piece of an endless line.
                    None => {
                        let end = rest.len().min(MAX_LINE);
                        (&rest[..end], end)
                    }
                };
                self.rest = &rest[next..];
                line
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Where lines go: the seam between cutting output into lines and the drivers.
trait Destination {
    /// Writes `lines`, all of `stream`, after `marker` (a line of stderr telling of
    /// lines dropped earlier) if any. On a failure it takes from `lines` at least one
    /// line if any are left, which are dropped; those it leaves are tried again.
    fn send(
        &mut self,
        marker: Option<&[u8]>,
        stream: Stream,
        lines: &mut Lines<'_>,
    ) -> Result<(), Failure>;
}

/// How a [`Destination::send`] failed.
struct Failure {
    /// The marker was written all the same: the loss it told is told.
    told: bool,
    /// Lines dropped: taken from the batch and not written whole.
    lost: u64,
    error: io::Error,
}

/// Hands lines to the destination and counts those it fails to take.
struct Delivery {
    destination: Box<dyn Destination>,
    /// Lines dropped since the last marker written, and the first error among them.
    dropped: u64,
    error: String,
}

impl Delivery {
    fn deliver(&mut self, stream: Stream, lines: &mut Lines<'_>) {
        // Each failure takes at least one line: this ends.
        while !lines.is_empty() {
            self.attempt(stream, lines);
        }
    }

    /// One try at writing `lines`, after the marker of those dropped if any: the loss
    /// is told before anything that follows it.
    fn attempt(&mut self, stream: Stream, lines: &mut Lines<'_>) {
        let marker = (self.dropped > 0).then(|| {
            let unit = if self.dropped == 1 { "line" } else { "lines" };
            format!("wharf: {} {unit} dropped: {}", self.dropped, self.error)
        });
        let sent = self
            .destination
            .send(marker.as_deref().map(str::as_bytes), stream, lines);
        match sent {
            Ok(()) => self.dropped = 0,
            Err(failure) => {
                if failure.told {
                    self.dropped = 0;
                }
                if self.dropped == 0 {
                    self.error = reason(&failure.error);
                }
                // A marker not written keeps its count, told by the next one.
                self.dropped += failure.lost;
            }
        }
    }

    fn finish(mut self) -> Result<(), OutputError> {
        if self.dropped > 0 {
            self.attempt(Stream::Stderr, &mut Lines::default());
        }
        match self.dropped {
            0 => Ok(()),
            lines => Err(OutputError::Dropped {
                lines,
                error: self.error,
            }),
        }
    }
}

/// An error as the marker of dropped lines gives it: `no space left on device`, the
/// OS's text without its ` (os error 28)` and with a lowercase first letter.
fn reason(error: &io::Error) -> String {
    let text = error.to_string();
    let os_suffix = error
        .raw_os_error()
        .map(|code| format!(" (os error {code})"))
        .unwrap_or_default();
    let text = text.strip_suffix(os_suffix.as_str()).unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Appends a log entry, newline included. Its text is made valid UTF-8 and cut at
/// [`MAX_LINE`] bytes on a character's boundary: a line is at most that long, but each
/// invalid byte in it becomes a 3-byte U+FFFD, which would let an entry (and a log
/// with a small `max_size`) grow threefold.
fn push_entry(buffer: &mut Vec<u8>, time: &str, stream: Stream, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    let mut len = text.len().min(MAX_LINE);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    buffer.extend_from_slice(time.as_bytes());
    buffer.push(b' ');
    buffer.extend_from_slice(stream.as_str().as_bytes());
    buffer.push(b' ');
    buffer.extend_from_slice(&text.as_bytes()[..len]);
    buffer.push(b'\n');
}

/// Where the file driver's log lives: the seam that lets tests make writing fail.
trait Storage {
    /// Unbuffered: what it accepts is in the log.
    type File: Write;
    /// Opens `output.log` for appending, creating it if needed; with its size. Called
    /// again after every failure, since the file may have been removed or replaced.
    fn open(&mut self) -> io::Result<(Self::File, u64)>;
    /// Moves `output.log` out of the way (the open file is closed): the next `open`
    /// starts a new one.
    fn rotate(&mut self) -> io::Result<()>;
}

/// The log files in a container's directory.
struct LogDir {
    dir: PathBuf,
    max_files: u32,
}

impl LogDir {
    /// `output.log` for 0, `output.log.N` for the Nth newest rotated log.
    fn path(&self, generation: u32) -> PathBuf {
        log_file(&self.dir, generation)
    }
}

impl Storage for LogDir {
    type File = File;

    fn open(&mut self) -> io::Result<(File, u64)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.path(0))?;
        let metadata = file.metadata()?;
        // Root-only whatever the umask, and also a log an older wharf left readable.
        if metadata.permissions().mode() & 0o777 != 0o600 {
            file.set_permissions(Permissions::from_mode(0o600))?;
        }
        Ok((file, metadata.len()))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let oldest = self.max_files.saturating_sub(1);
        if oldest == 0 {
            return ignore_missing(fs::remove_file(self.path(0)));
        }
        ignore_missing(fs::remove_file(self.path(oldest)))?;
        for generation in (1..oldest).rev() {
            // Missing until the log has been rotated that many times.
            ignore_missing(fs::rename(self.path(generation), self.path(generation + 1)))?;
        }
        ignore_missing(fs::rename(self.path(0), self.path(1)))
    }
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The file driver: the entries of a batch formatted into one buffer and appended to
/// `output.log`, rotated by size. A failed write closes the log, which the next batch
/// opens again, so that the monitor never waits for the disk.
struct LogFiles<S: Storage> {
    storage: S,
    max_size: u64,
    /// `None` after a failure: the next batch opens the log again.
    file: Option<S::File>,
    /// Bytes in `output.log`: its size when opened and what was written since.
    size: u64,
    /// A failed write left part of an entry in the log: the next one starts on a new
    /// line.
    cut: bool,
    /// Entries formatted, not written yet; kept from batch to batch, so as not to
    /// allocate at each read.
    buffer: Vec<u8>,
}

/// How far a batch of the file driver got.
#[derive(Default)]
struct Progress {
    /// Lines taken from the batch, and those of them in the log.
    taken: u64,
    written: u64,
    /// Lines in the buffer, not written yet (the marker aside).
    buffered: u64,
    /// The marker is in the buffer, not written yet.
    marker_buffered: bool,
    /// The marker is in the log.
    told: bool,
    /// 1 when the buffer starts with the newline that ends a cut entry, else 0.
    newline: usize,
}

impl<S: Storage> LogFiles<S> {
    fn new(storage: S, max_size: u64) -> Self {
        let mut files = LogFiles {
            storage,
            max_size,
            file: None,
            size: 0,
            cut: false,
            buffer: Vec::new(),
        };
        // Created at once, so that `wharf logs` finds a log before the first output; a
        // failure is retried at the first batch.
        files.file = files.open().ok();
        files
    }

    fn open(&mut self) -> io::Result<S::File> {
        let (file, size) = self.storage.open()?;
        self.size = size;
        Ok(file)
    }

    /// Formats the entries of a batch and writes them, rotating the log before an
    /// entry that would take it past `max_size`; notes in `progress` how far it got.
    /// An error leaves the log closed.
    fn write_batch(
        &mut self,
        progress: &mut Progress,
        mut marker: Option<&[u8]>,
        stream: Stream,
        lines: &mut Lines<'_>,
    ) -> io::Result<()> {
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.open()?,
        };
        // Once for the whole batch: formatting a time per line was most of the
        // monitor's work when lines are short.
        let time = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        self.buffer.clear();
        if self.cut {
            self.buffer.push(b'\n');
            progress.newline = 1;
        }
        loop {
            let (entry_stream, text, is_line) = match marker.take() {
                Some(marker) => (Stream::Stderr, marker, false),
                None => match lines.next() {
                    Some(line) => (stream, line, true),
                    None => break,
                },
            };
            progress.taken += u64::from(is_line);
            let start = self.buffer.len();
            push_entry(&mut self.buffer, &time, entry_stream, text);
            // In the log before this entry, if it went there now: not counting the
            // newline ending a cut entry, which rotation leaves out.
            let before = self.size + (start - progress.newline) as u64;
            if before > 0 && self.size + self.buffer.len() as u64 > self.max_size {
                if start > progress.newline {
                    // The entries before this one fill the old log.
                    self.flush(&mut file, progress, start)?;
                }
                drop(file);
                self.storage.rotate()?;
                file = self.open()?;
                // A cut entry went with the old log.
                self.cut = false;
                self.buffer.drain(..start);
                progress.newline = 0;
            }
            if is_line {
                progress.buffered += 1;
            } else {
                progress.marker_buffered = true;
            }
            if self.buffer.len() >= BATCH_BYTES {
                self.flush(&mut file, progress, self.buffer.len())?;
                self.buffer.clear();
                progress.newline = 0;
            }
        }
        if self.buffer.len() > progress.newline {
            self.flush(&mut file, progress, self.buffer.len())?;
        }
        self.file = Some(file);
        Ok(())
    }

    /// Writes the buffer's first `end` bytes, whole entries, and notes in `progress`
    /// what of the batch is in the log.
    fn flush(&mut self, file: &mut S::File, progress: &mut Progress, end: usize) -> io::Result<()> {
        let (written, result) = put(file, &self.buffer[..end]);
        self.size += written as u64;
        match result {
            Ok(()) => {
                progress.written += progress.buffered;
                progress.buffered = 0;
                progress.told |= progress.marker_buffered;
                progress.marker_buffered = false;
                // Entries end with a newline.
                self.cut = false;
                Ok(())
            }
            Err(error) => {
                let in_log = &self.buffer[..written];
                // Each entry is one line (texts have no newline, the marker's error is
                // the OS's), the marker first: the newlines written end whole ones.
                let mut whole = in_log.get(progress.newline..).map_or(0, |entries| {
                    entries.iter().filter(|&&byte| byte == b'\n').count() as u64
                });
                if progress.marker_buffered && whole > 0 {
                    progress.told = true;
                    whole -= 1;
                }
                progress.written += whole;
                if let Some(&last) = in_log.last() {
                    self.cut = last != b'\n';
                }
                Err(error)
            }
        }
    }
}

/// Writes all of `bytes` that it can: how many it wrote, and what stopped it.
fn put(file: &mut impl Write, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (written, Err(error)),
        }
    }
    (written, Ok(()))
}

impl<S: Storage> Destination for LogFiles<S> {
    fn send(
        &mut self,
        marker: Option<&[u8]>,
        stream: Stream,
        lines: &mut Lines<'_>,
    ) -> Result<(), Failure> {
        let mut progress = Progress::default();
        match self.write_batch(&mut progress, marker, stream, lines) {
            Ok(()) => Ok(()),
            Err(error) => Err(Failure {
                told: progress.told,
                // The rest of the batch too: the log is opened again at the next batch,
                // not at each line (a full disk would only fail again).
                lost: progress.taken - progress.written + lines.drop_rest(),
                error,
            }),
        }
    }
}

/// The journald driver: one datagram per line, sent without waiting (a busy journald
/// drops lines rather than stalling the monitor).
struct Journal {
    address: PathBuf,
    /// Made at the first line, and again at the next one if making it failed.
    socket: Option<UnixDatagram>,
    /// The fields naming the container, the same in every entry.
    identity: Vec<u8>,
}

impl Journal {
    fn new(address: &Path, container: &str, service: &str) -> Self {
        let mut identity = Vec::new();
        push_field(&mut identity, "SYSLOG_IDENTIFIER", service);
        push_field(&mut identity, "CONTAINER_NAME", container);
        push_field(&mut identity, "CONTAINER_TAG", service);
        Journal {
            address: address.to_owned(),
            socket: None,
            identity,
        }
    }

    fn entry(&self, stream: Stream, text: &[u8]) -> Vec<u8> {
        let priority: &[u8] = match stream {
            Stream::Stdout => b"PRIORITY=6\n",
            Stream::Stderr => b"PRIORITY=3\n",
        };
        let mut datagram =
            Vec::with_capacity(priority.len() + self.identity.len() + text.len() + 32);
        datagram.extend_from_slice(priority);
        datagram.extend_from_slice(&self.identity);
        // Binary-safe whatever the text holds.
        push_binary_field(&mut datagram, "MESSAGE", text);
        datagram
    }

    fn send_line(&mut self, stream: Stream, text: &[u8]) -> io::Result<()> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => {
                let socket = UnixDatagram::unbound()?;
                socket.set_nonblocking(true)?;
                socket
            }
        };
        let sent = socket.send_to(&self.entry(stream, text), &self.address);
        self.socket = Some(socket);
        sent.map(drop)
    }
}

impl Destination for Journal {
    /// Each line on its own: a failure drops only its line, the next one tries again.
    fn send(
        &mut self,
        marker: Option<&[u8]>,
        stream: Stream,
        lines: &mut Lines<'_>,
    ) -> Result<(), Failure> {
        if let Some(text) = marker {
            if let Err(error) = self.send_line(Stream::Stderr, text) {
                // Nothing goes before the loss is told: the next line is dropped too.
                let lost = u64::from(lines.next().is_some());
                return Err(Failure {
                    told: false,
                    lost,
                    error,
                });
            }
        }
        for line in lines {
            if let Err(error) = self.send_line(stream, line) {
                return Err(Failure {
                    told: marker.is_some(),
                    lost: 1,
                    error,
                });
            }
        }
        Ok(())
    }
}

/// `NAME=value\n`, or the binary-safe form if the value holds a newline (which would
/// otherwise end the field early).
fn push_field(datagram: &mut Vec<u8>, name: &str, value: &str) {
    if value.contains('\n') {
        push_binary_field(datagram, name, value.as_bytes());
        return;
    }
    datagram.extend_from_slice(name.as_bytes());
    datagram.push(b'=');
    datagram.extend_from_slice(value.as_bytes());
    datagram.push(b'\n');
}

/// `NAME\n`, the value's length as a 64-bit little-endian integer, the value, `\n`.
fn push_binary_field(datagram: &mut Vec<u8>, name: &str, value: &[u8]) {
    datagram.extend_from_slice(name.as_bytes());
    datagram.push(b'\n');
    datagram.extend_from_slice(&(value.len() as u64).to_le_bytes());
    datagram.extend_from_slice(value);
    datagram.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    const TIME: &str = "2025-01-01T00:00:00.000000000Z";

    fn numbered(lines: std::ops::RangeInclusive<usize>) -> Vec<String> {
        lines.map(|n| format!("line {n}")).collect()
    }

    fn write_numbered(output: &mut Output, lines: std::ops::RangeInclusive<usize>) {
        for line in numbered(lines) {
            output.write(Stream::Stdout, format!("{line}\n").as_bytes());
        }
    }

    /// A log's entries as (stream, text), each with a valid time; lines that are not
    /// entries (one cut short by a full disk) are skipped.
    fn entries(log: &[u8]) -> Vec<(String, String)> {
        String::from_utf8_lossy(log)
            .lines()
            .filter_map(|line| {
                let (time, rest) = line.split_once(' ')?;
                let (stream, text) = rest.split_once(' ')?;
                humantime::parse_rfc3339(time).ok()?;
                Some((stream.to_owned(), text.to_owned()))
            })
            .collect()
    }

    fn texts(log: &[u8]) -> Vec<String> {
        entries(log).into_iter().map(|(_, text)| text).collect()
    }

    fn stdout(texts: &[String]) -> Vec<(String, String)> {
        texts
            .iter()
            .map(|text| ("stdout".to_owned(), text.clone()))
            .collect()
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        fs::read(dir.join(name)).unwrap_or_else(|error| panic!("cannot read {name}: {error}"))
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list the directory")
            .map(|entry| {
                let entry = entry.expect("directory entry");
                entry.file_name().to_string_lossy().into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    /// The N of the first "line N".
    fn first_number(texts: &[String]) -> usize {
        texts
            .first()
            .and_then(|text| text.strip_prefix("line "))
            .and_then(|n| n.parse().ok())
            .expect("a numbered line first")
    }

    #[test]
    fn each_line_is_written_with_its_time_and_stream() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 1 << 20, 3);
        output.write(Stream::Stdout, b"one\ntwo\r\n");
        output.write(Stream::Stderr, b"oops\n");
        output.finish().expect("nothing lost");

        let log = read(dir.path(), "output.log");
        let expected = [("stdout", "one"), ("stdout", "two"), ("stderr", "oops")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|&(stream, text)| (stream.to_owned(), text.to_owned()))
            .collect();
        assert_eq!(entries(&log), expected);
        assert_eq!(log.iter().filter(|&&byte| byte == b'\n').count(), 3);
    }

    #[test]
    fn the_log_exists_before_any_output_and_is_readable_by_root_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _output = Output::to_files(dir.path(), 1 << 20, 3);
        assert_eq!(read(dir.path(), "output.log"), b"");
        assert_eq!(mode(&dir.path().join("output.log")), 0o600);
    }

    #[test]
    fn lines_split_across_reads_are_joined_and_a_last_line_is_written_when_its_pipe_closes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 1 << 20, 3);
        output.write(Stream::Stdout, b"hel");
        output.write(Stream::Stderr, b"warn");
        output.write(Stream::Stdout, b"lo\nwor");
        output.write(Stream::Stderr, b"ing\r\n");
        output.write(Stream::Stdout, b"ld");
        assert_eq!(
            texts(&read(dir.path(), "output.log")),
            ["hello", "warning"],
            "a line waits for its newline"
        );

        output.end(Stream::Stdout);
        assert_eq!(
            texts(&read(dir.path(), "output.log")),
            ["hello", "warning", "world"]
        );
        output.end(Stream::Stderr);
        output.finish().expect("nothing lost");
        assert_eq!(
            texts(&read(dir.path(), "output.log")),
            ["hello", "warning", "world"]
        );
    }

    #[test]
    fn an_endless_line_is_written_in_pieces_of_64_kib() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 1 << 20, 3);
        let lengths = || -> Vec<usize> {
            texts(&read(dir.path(), "output.log"))
                .iter()
                .map(String::len)
                .collect()
        };
        // 160 KiB without a newline, read 4 KiB at a time.
        for _ in 0..40 {
            output.write(Stream::Stdout, &[b'x'; 4096]);
        }
        assert_eq!(lengths(), [MAX_LINE, MAX_LINE]);
        assert!(output.partial[Stream::Stdout as usize].len() <= MAX_LINE);

        output.write(Stream::Stdout, b"\n");
        assert_eq!(lengths(), [MAX_LINE, MAX_LINE, 32 * 1024]);

        // A line of exactly 64 KiB is one line.
        let mut line = vec![b'y'; MAX_LINE];
        line.push(b'\n');
        output.write(Stream::Stdout, &line);
        output.finish().expect("nothing lost");
        assert_eq!(lengths(), [MAX_LINE, MAX_LINE, 32 * 1024, MAX_LINE]);
    }

    /// Lines 1 to 200 written to logs of at most 1000 bytes x 3 files: what rotation
    /// must have kept.
    fn assert_rotated(dir: &Path) {
        assert_eq!(
            file_names(dir),
            ["output.log", "output.log.1", "output.log.2"]
        );
        let mut kept = Vec::new();
        for name in ["output.log.2", "output.log.1", "output.log"] {
            let log = read(dir, name);
            assert!(log.len() <= 1000, "{name} holds {} bytes", log.len());
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
            if name != "output.log" {
                // Rotated only when the next entry would not fit.
                assert!(log.len() > 1000 - 47, "{name} holds {} bytes", log.len());
            }
            kept.extend(texts(&log));
        }
        // The oldest lines are gone; the rest follow on without a gap to the last one.
        let first = first_number(&kept);
        assert!(first > 1);
        assert_eq!(kept, numbered(first..=200));
    }

    #[test]
    fn rotation_keeps_at_most_max_files_of_at_most_max_size_and_the_newest_lines_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 1000, 3);
        // Entries of 47 bytes: about 21 per file, 63 in all.
        write_numbered(&mut output, 1..=200);
        output.finish().expect("nothing lost");
        assert_rotated(dir.path());
    }

    #[test]
    fn rotations_inside_one_read_keep_the_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 1000, 3);
        let read: String = numbered(1..=200)
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        output.write(Stream::Stdout, read.as_bytes());
        output.finish().expect("nothing lost");
        assert_rotated(dir.path());
    }

    #[test]
    fn with_one_file_the_log_starts_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 500, 1);
        write_numbered(&mut output, 1..=100);
        output.finish().expect("nothing lost");

        assert_eq!(file_names(dir.path()), ["output.log"]);
        let log = read(dir.path(), "output.log");
        assert!(log.len() <= 500, "output.log holds {} bytes", log.len());
        let kept = texts(&log);
        let first = first_number(&kept);
        assert!(first > 1);
        assert_eq!(kept, numbered(first..=100));
    }

    #[test]
    fn an_entry_bigger_than_max_size_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 100, 3);
        let big = "x".repeat(300);
        output.write(Stream::Stdout, format!("small\n{big}\nafter\n").as_bytes());
        output.finish().expect("nothing lost");

        assert_eq!(texts(&read(dir.path(), "output.log.2")), ["small"]);
        assert_eq!(texts(&read(dir.path(), "output.log.1")), [big]);
        assert_eq!(texts(&read(dir.path(), "output.log")), ["after"]);
    }

    #[test]
    fn an_existing_log_is_appended_to_and_its_size_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        // 15 entries of 57 bytes: 855 bytes, written by a monitor before a restart.
        let before = format!("{TIME} stdout before the restart\n").repeat(15);
        fs::write(dir.path().join("output.log"), &before).expect("write the log");

        let mut output = Output::to_files(dir.path(), 1000, 2);
        assert_eq!(mode(&dir.path().join("output.log")), 0o600);
        // 56 bytes: still fits.
        output.write(Stream::Stdout, b"after the restart\n");
        // 139 bytes: 855 + 56 + 139 would pass 1000.
        let big = "x".repeat(100);
        output.write(Stream::Stdout, format!("{big}\n").as_bytes());
        output.finish().expect("nothing lost");

        let rotated = read(dir.path(), "output.log.1");
        assert!(rotated.starts_with(before.as_bytes()));
        let mut expected = vec!["before the restart".to_owned(); 15];
        expected.push("after the restart".to_owned());
        assert_eq!(texts(&rotated), expected);
        assert_eq!(texts(&read(dir.path(), "output.log")), [big]);
    }

    #[test]
    fn a_rotation_that_fails_drops_lines_and_says_so_once_it_works() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 100, 3);
        output.write(Stream::Stdout, b"first\n");
        // A directory where the oldest log goes: it cannot be removed as a file.
        let blocker = dir.path().join("output.log.2");
        fs::create_dir(&blocker).expect("make the blocker");
        output.write(Stream::Stdout, format!("{}\n", "x".repeat(80)).as_bytes());
        output.write(Stream::Stdout, b"second\n");
        fs::remove_dir(&blocker).expect("remove the blocker");
        output.write(Stream::Stdout, b"third\n");
        output.finish().expect("the loss is in the log");

        let mut kept = texts(&read(dir.path(), "output.log.2"));
        kept.extend(texts(&read(dir.path(), "output.log.1")));
        kept.extend(texts(&read(dir.path(), "output.log")));
        assert_eq!(
            kept,
            ["first", "wharf: 2 lines dropped: is a directory", "third"]
        );
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
        /// The steps to come, the next one last.
        steps: Vec<Step>,
        written: Vec<u8>,
        /// The length of the bytes given to each write call.
        offered: Vec<usize>,
    }

    /// A log on a disk that fills up and is freed again, as scripted.
    #[derive(Clone, Default)]
    struct Disk(Rc<RefCell<DiskState>>);

    impl Disk {
        fn scripted(steps: &[Step]) -> Disk {
            let disk = Disk::default();
            disk.0.borrow_mut().steps = steps.iter().rev().copied().collect();
            disk
        }

        fn written(&self) -> Vec<u8> {
            self.0.borrow().written.clone()
        }

        fn offered(&self) -> Vec<usize> {
            self.0.borrow().offered.clone()
        }
    }

    impl Write for Disk {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut disk = self.0.borrow_mut();
            disk.offered.push(bytes.len());
            let accepted = match disk.steps.pop().unwrap_or(Step::Accept) {
                Step::Accept => bytes.len(),
                Step::Part(len) => len.min(bytes.len()),
                Step::Fail => return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC)),
            };
            disk.written.extend_from_slice(&bytes[..accepted]);
            Ok(accepted)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Storage for Disk {
        type File = Disk;

        fn open(&mut self) -> io::Result<(Disk, u64)> {
            let size = self.0.borrow().written.len() as u64;
            Ok((self.clone(), size))
        }

        fn rotate(&mut self) -> io::Result<()> {
            self.0.borrow_mut().written.clear();
            Ok(())
        }
    }

    #[test]
    fn lines_dropped_while_the_disk_is_full_are_counted_in_a_marker_before_the_next_line() {
        // A read per line. Lines 1 and 2 are written, line 3 only in part (writing its
        // rest fails), lines 4 and 5 not at all; the marker goes with line 6.
        let disk = Disk::scripted(&[
            Step::Accept,
            Step::Accept,
            Step::Part(5),
            Step::Fail,
            Step::Fail,
            Step::Fail,
        ]);
        let files = LogFiles::new(disk.clone(), u64::MAX);
        let mut output = Output::with_destination(Box::new(files));
        write_numbered(&mut output, 1..=10);
        output.finish().expect("the loss is in the log");

        let written = disk.written();
        let mut expected = stdout(&numbered(1..=2));
        expected.push((
            "stderr".to_owned(),
            "wharf: 3 lines dropped: no space left on device".to_owned(),
        ));
        expected.extend(stdout(&numbered(6..=10)));
        assert_eq!(entries(&written), expected);
        // The cut line ends where the disk filled up, on a line of its own.
        let raw = String::from_utf8_lossy(&written);
        assert_eq!(raw.lines().nth(2).map(str::len), Some(5));
    }

    /// Output to a log on `disk`.
    fn output_on(disk: &Disk) -> Output {
        Output::with_destination(Box::new(LogFiles::new(disk.clone(), u64::MAX)))
    }

    /// Numbered lines as one read brings them.
    fn one_read(lines: std::ops::RangeInclusive<usize>) -> Vec<u8> {
        numbered(lines)
            .iter()
            .flat_map(|line| format!("{line}\n").into_bytes())
            .collect()
    }

    #[test]
    fn the_lines_of_one_read_share_one_time_and_one_write() {
        let disk = Disk::default();
        let mut output = output_on(&disk);
        output.write(Stream::Stdout, &one_read(1..=100));
        assert_eq!(disk.offered().len(), 1, "one write for the read");
        output.write(Stream::Stdout, &one_read(101..=150));
        assert_eq!(disk.offered().len(), 2, "one write for the next read");
        output.finish().expect("nothing lost");

        let written = disk.written();
        assert_eq!(entries(&written), stdout(&numbered(1..=150)));
        let log = String::from_utf8(written).expect("UTF-8");
        let times: Vec<&str> = log
            .lines()
            .map(|line| line.split_once(' ').map_or(line, |(time, _)| time))
            .collect();
        assert!(times[..100].iter().all(|&time| time == times[0]));
        assert!(times[100..].iter().all(|&time| time == times[100]));
    }

    #[test]
    fn a_read_of_very_short_lines_is_written_in_a_few_writes_of_bounded_size() {
        let disk = Disk::default();
        let mut output = output_on(&disk);
        // What `yes` fills a 32 KiB read with, whose entries are twenty times as big.
        output.write(Stream::Stdout, &b"y\n".repeat(16 * 1024));
        output.finish().expect("nothing lost");

        let entry = format!("{TIME} stdout y\n").len();
        let total = 16 * 1024 * entry;
        let offered = disk.offered();
        assert_eq!(offered.iter().sum::<usize>(), total);
        assert!(offered.len() <= total.div_ceil(BATCH_BYTES), "{offered:?}");
        assert!(
            offered.iter().all(|&len| len < BATCH_BYTES + entry),
            "{offered:?}"
        );
        assert_eq!(texts(&disk.written()), vec!["y"; 16 * 1024]);
    }

    #[test]
    fn a_marker_lost_with_its_batch_keeps_its_count_and_a_cut_entry_ends_its_line() {
        let full = "no space left on device";
        let marker = |lines: u64| format!("wharf: {lines} lines dropped: {full}");
        // The whole marker telling of 7 lines, line 8, then 3 bytes of line 9.
        let told = format!("{TIME} stderr {}\n", marker(7)).len();
        let line_8 = format!("{TIME} stdout line 8\n").len();
        let disk = Disk::scripted(&[
            // Line 1.
            Step::Fail,
            // The marker of 1 line and lines 2 to 4.
            Step::Fail,
            // 10 bytes of the marker of 4 lines, then lines 5 to 7.
            Step::Part(10),
            Step::Fail,
            // After the newline ending the cut marker: the marker of 7 lines (1 + 3 + 3:
            // the markers lost kept their counts), line 8, a part of line 9; lines 9 and
            // 10 are lost.
            Step::Part(1 + told + line_8 + 3),
            Step::Fail,
        ]);
        let mut output = output_on(&disk);
        output.write(Stream::Stdout, &one_read(1..=1));
        output.write(Stream::Stdout, &one_read(2..=4));
        output.write(Stream::Stdout, &one_read(5..=7));
        output.write(Stream::Stdout, &one_read(8..=10));
        output.write(Stream::Stdout, &one_read(11..=11));
        output.finish().expect("the loss is in the log");

        let written = disk.written();
        let expected = [
            ("stderr", marker(7)),
            ("stdout", "line 8".to_owned()),
            ("stderr", marker(2)),
            ("stdout", "line 11".to_owned()),
        ];
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(stream, text)| (stream.to_owned(), text))
            .collect();
        assert_eq!(entries(&written), expected);
        // What was cut ends where the disk filled up, on a line of its own.
        let raw = String::from_utf8_lossy(&written);
        let lengths: Vec<usize> = raw.lines().map(str::len).collect();
        assert_eq!(lengths.len(), 6, "{raw}");
        assert_eq!(lengths[..4], [10, told - 1, line_8 - 1, 3], "{raw}");
    }

    #[test]
    fn invalid_utf_8_becomes_replacement_characters_and_an_entry_text_is_capped() {
        let mut entry = Vec::new();
        push_entry(&mut entry, TIME, Stream::Stdout, b"caf\xC3\xA9 \xFF!");
        assert_eq!(
            entry,
            format!("{TIME} stdout caf\u{e9} \u{FFFD}!\n").into_bytes()
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_files(dir.path(), 1000, 3);
        // A line of the longest, all of it invalid: three times as long as U+FFFDs.
        let mut line = vec![0xFF; MAX_LINE];
        line.push(b'\n');
        output.write(Stream::Stdout, &line);
        output.finish().expect("nothing lost");

        let log = read(dir.path(), "output.log");
        assert!(log.len() <= format!("{TIME} stdout \n").len() + MAX_LINE);
        // Cut on a character's boundary.
        assert_eq!(texts(&log), ["\u{FFFD}".repeat(MAX_LINE / 3)]);
    }

    /// A log that can never be opened.
    struct ReadOnly;

    impl Storage for ReadOnly {
        type File = io::Sink;

        fn open(&mut self) -> io::Result<(io::Sink, u64)> {
            Err(io::Error::from_raw_os_error(nix::libc::EROFS))
        }

        fn rotate(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(nix::libc::EROFS))
        }
    }

    #[test]
    fn when_the_log_never_recovers_finish_says_how_many_lines_were_lost() {
        let mut output = Output::with_destination(Box::new(LogFiles::new(ReadOnly, u64::MAX)));
        let line = format!("{}\n", "x".repeat(99));
        output.write(Stream::Stdout, line.repeat(600).as_bytes());
        output.write(Stream::Stderr, line.repeat(400).as_bytes());
        match output.finish() {
            Err(OutputError::Dropped { lines, error }) => {
                assert_eq!(lines, 1000);
                assert_eq!(error, "read-only file system");
            }
            other => panic!("expected the loss to be reported, got {other:?}"),
        }
    }

    #[test]
    fn the_marker_gives_the_error_without_its_number_and_in_lowercase() {
        let full = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        assert_eq!(full.to_string(), "No space left on device (os error 28)");
        assert_eq!(reason(&full), "no space left on device");
        assert_eq!(
            reason(&io::Error::other("Quota exceeded")),
            "quota exceeded"
        );
        assert_eq!(reason(&io::ErrorKind::WriteZero.into()), "write zero");
    }

    /// journald's end of its socket, at `path`.
    fn journald(path: &Path) -> UnixDatagram {
        let socket = UnixDatagram::bind(path).expect("bind journald's socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        socket
    }

    fn receive(journald: &UnixDatagram) -> Vec<u8> {
        let mut datagram = vec![0; 2 * MAX_LINE];
        let len = journald.recv(&mut datagram).expect("a datagram");
        datagram.truncate(len);
        datagram
    }

    /// What journald receives for a line of container `web-0-1a2b` of service `web`.
    fn datagram(priority: u8, message: &[u8]) -> Vec<u8> {
        let mut datagram = format!(
            "PRIORITY={priority}\nSYSLOG_IDENTIFIER=web\nCONTAINER_NAME=web-0-1a2b\n\
             CONTAINER_TAG=web\nMESSAGE\n"
        )
        .into_bytes();
        datagram.extend_from_slice(&(message.len() as u64).to_le_bytes());
        datagram.extend_from_slice(message);
        datagram.push(b'\n');
        datagram
    }

    #[test]
    fn journald_gets_a_datagram_per_line_in_its_native_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("socket");
        let journald = journald(&path);
        let mut output = Output::to_journal_at(&path, "web-0-1a2b", "web");
        output.write(Stream::Stdout, b"hello\n");
        output.write(Stream::Stderr, b"bad\r\n");
        assert_eq!(receive(&journald), datagram(6, b"hello"));
        assert_eq!(receive(&journald), datagram(3, b"bad"));

        // The longest line fits in one datagram; the rest of the line follows.
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        output.write(Stream::Stdout, &long);
        assert_eq!(receive(&journald), datagram(6, &long[..MAX_LINE]));
        assert_eq!(receive(&journald), datagram(6, &[b'x'; 10]));
        output.finish().expect("nothing lost");
    }

    #[test]
    fn without_journald_lines_are_counted_and_the_marker_arrives_once_it_listens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("socket");
        let mut output = Output::to_journal_at(&path, "web-0-1a2b", "web");
        output.write(Stream::Stdout, b"lost 1\nlost 2\n");

        let journald = journald(&path);
        output.write(Stream::Stdout, b"kept\n");
        assert_eq!(
            receive(&journald),
            datagram(3, b"wharf: 2 lines dropped: no such file or directory")
        );
        assert_eq!(receive(&journald), datagram(6, b"kept"));
        output.finish().expect("the loss was told");
    }

    #[test]
    fn when_journald_never_listens_finish_says_how_many_lines_were_lost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut output = Output::to_journal_at(&dir.path().join("socket"), "web-0-1a2b", "web");
        output.write(Stream::Stdout, b"one\ntwo\nthree");
        match output.finish() {
            Err(OutputError::Dropped { lines, error }) => {
                assert_eq!(lines, 3);
                assert_eq!(error, "no such file or directory");
            }
            other => panic!("expected the loss to be reported, got {other:?}"),
        }
    }
}
