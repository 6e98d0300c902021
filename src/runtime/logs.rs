//! Reading a container's output back. The container's monitor (see `output`) writes
//! each line of its stdout and stderr to `output.log` in the container's directory as
//! `<RFC 3339 time> <stdout|stderr> <text>`, and rotates the file when it is full:
//! `output.log` becomes `output.log.1`, each older file moves up a number, the oldest
//! goes, and a new `output.log` is begun. Read in order, `output.log.N` (the oldest)
//! ... `output.log.1`, `output.log` are the output from its oldest line kept. A log
//! never rotated (such as one written before rotation existed) is `output.log` alone.
//!
//! - A tail (the last N lines) is found by reading backwards from the end of
//!   `output.log`, going on into `output.log.1` and older ones only while fewer than N
//!   lines were found.
//! - A start time (entries written since then) passes over each older file whose last
//!   line is older, and reads forward only in the first file with a later one. Entries
//!   are taken to be in time order, as the monitor writes them.
//! - Following goes on with what is written later, across rotations: at the end of
//!   the file it reads, when `output.log` has become another file, it reads the rest of
//!   its file, then the new `output.log` from its start. Two rotations between two
//!   looks at the end would skip the file between them (its lines are not shown): with
//!   files of megabytes, only a container writing that much in one look's interval.
//!
//! Reading is bounded whatever the log's size: a tail reads the tail and at most a
//! block more, and no line read back is held beyond `MAX_ENTRY` bytes.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::output::{log_file, LOG_NAME};
use crate::manifest::MAX_LOG_FILES;

/// The longest line read back from a log. The monitor splits output lines at 64 KiB
/// and adds a short prefix, so only a damaged log has longer lines: reading forward
/// keeps the first `MAX_ENTRY` bytes of such a line, and a tail read from the end stops
/// before it (the lines after it are shown, not it).
const MAX_ENTRY: usize = 1024 * 1024;

/// A tail is searched for backwards in blocks of this size.
const TAIL_BLOCK: usize = 64 * 1024;

/// Errors reading a container's log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
    /// The entry on a line of the log (without its newline), if it is one.
    fn parse(bytes: &[u8]) -> Option<LogLine> {
        let line = String::from_utf8_lossy(bytes);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let (time, rest) = line.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(LogLine {
            time: time.to_owned(),
            stream: stream.to_owned(),
            text: text.to_owned(),
        })
    }
}

/// Whether a line of the log is an entry written before `since`. A line whose time
/// cannot be read is not: nothing is hidden for want of a date.
fn written_before(line: &[u8], since: SystemTime) -> bool {
    line.split(|&byte| byte == b' ')
        .next()
        .and_then(|time| std::str::from_utf8(time).ok())
        .and_then(|time| humantime::parse_rfc3339(time).ok())
        .is_some_and(|time| time < since)
}

/// A container's log: the files in its directory.
pub struct Logs {
    dir: PathBuf,
}

impl Logs {
    /// The log of the container whose directory is `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Logs { dir }
    }

    /// The log from the start of its last `tail` lines (of all of it with `None`) and
    /// of its entries written at `since` or later; with both, the last `tail` lines of
    /// those. With `follow`, a last line still being written is held back until it is
    /// complete, and the stream goes on with what is written later, across rotations
    /// (see the module's documentation); a log not written yet is waited for. Without,
    /// the stream ends where the log ended when opened, that last line included, and
    /// a log not written yet is an error.
    pub fn open(
        &self,
        tail: Option<usize>,
        since: Option<SystemTime>,
        follow: bool,
    ) -> Result<LogStream, LogError> {
        let watched = self.dir.join(LOG_NAME);
        let parts = self.parts()?;
        if parts.is_empty() && !follow {
            return Err(LogError::Read {
                path: watched,
                source: nix::errno::Errno::ENOENT.into(),
            });
        }
        LogStream::start(watched, parts, tail, since, follow)
    }

    /// Every line, or the last `tail` lines.
    pub fn read(&self, tail: Option<usize>) -> Result<Vec<LogLine>, LogError> {
        let mut stream = self.open(tail, None, false)?;
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

    /// The log's files, open, oldest first. They are opened newest first and a file
    /// met twice (renamed by a rotation meanwhile) is kept once, so that a rotation
    /// while they are opened repeats nothing and loses only the oldest file, which it
    /// removes anyway.
    fn parts(&self) -> Result<Vec<Part<File>>, LogError> {
        let mut parts = Vec::new();
        let mut seen = HashSet::new();
        let mut missing_in_a_row = 0;
        // No container keeps more files than a manifest may ask for.
        for number in 0..MAX_LOG_FILES {
            let path = log_file(&self.dir, number);
            let file = match File::open(&path) {
                Ok(file) => {
                    missing_in_a_row = 0;
                    file
                }
                // Not written yet, or rotated and not begun again yet.
                Err(err) if err.kind() == io::ErrorKind::NotFound && number == 0 => continue,
                // Rotated files are numbered without gaps, but a rotation under way
                // (renaming from the oldest down) leaves one: two missing end them.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    missing_in_a_row += 1;
                    if missing_in_a_row == 2 {
                        break;
                    }
                    continue;
                }
                Err(source) => return Err(LogError::Read { path, source }),
            };
            let metadata = file.metadata().map_err(LogError::read(&path))?;
            if seen.insert((metadata.dev(), metadata.ino())) {
                parts.push(Part::new(path, file)?);
            }
        }
        parts.reverse();
        Ok(parts)
    }
}

/// One file of the log, open, and its length when opened.
struct Part<R> {
    path: PathBuf,
    file: R,
    len: u64,
}

impl<R: Seek> Part<R> {
    fn new(path: PathBuf, mut file: R) -> Result<Self, LogError> {
        match file.seek(SeekFrom::End(0)) {
            Ok(len) => Ok(Part { path, file, len }),
            Err(source) => Err(LogError::Read { path, source }),
        }
    }

    /// The same file, borrowed: to look into it before it is read.
    fn borrowed(&mut self) -> Part<&mut R> {
        Part {
            path: self.path.clone(),
            file: &mut self.file,
            len: self.len,
        }
    }
}

/// A place in a log: a byte in one of its files, by their index oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    part: usize,
    offset: u64,
}

/// Reads a log forward, entry by entry and file after file, from a position chosen
/// by [`Logs::open`].
pub struct LogStream<R = File> {
    /// `output.log`, watched for a new file while following.
    watched: PathBuf,
    /// The file being read; `None` while following a log not written yet.
    reader: Option<Reader<R>>,
    /// The files to read after it, oldest first.
    queue: VecDeque<Part<R>>,
    follow: bool,
}

impl<R: Read + Seek> LogStream<R> {
    /// A stream over `parts` (oldest first), from the position `tail` and `since`
    /// choose: the later of the two, so that together they are the last lines of
    /// those since.
    fn start(
        watched: PathBuf,
        mut parts: Vec<Part<R>>,
        tail: Option<usize>,
        since: Option<SystemTime>,
        follow: bool,
    ) -> Result<Self, LogError> {
        let mut from = Position::default();
        if let Some(since) = since {
            from = from.max(since_position(&mut parts, since)?);
        }
        if let Some(lines) = tail {
            from = from.max(tail_position(&mut parts, lines)?);
        }
        let mut queue: VecDeque<Part<R>> = parts.into_iter().skip(from.part).collect();
        let reader = match queue.pop_front() {
            Some(part) => Some(Self::open_part(
                part,
                from.offset,
                follow,
                queue.is_empty(),
            )?),
            None => None,
        };
        Ok(LogStream {
            watched,
            reader,
            queue,
            follow,
        })
    }

    /// A reader of `part` from `start`. Without following it stops where the file
    /// ended when opened, so that a busy container's output does not keep a plain read
    /// going; following, the newest file is still being written.
    fn open_part(
        part: Part<R>,
        start: u64,
        follow: bool,
        newest: bool,
    ) -> Result<Reader<R>, LogError> {
        let end = (!follow).then_some(part.len);
        Reader::new(part, start, end, follow && newest)
    }

    /// The next entry in the files open, or `None` at the end of the newest.
    fn next_open(&mut self) -> Result<Option<LogLine>, LogError> {
        loop {
            if let Some(reader) = &mut self.reader {
                if let Some(bytes) = reader.next_bytes()? {
                    // Lines that are not entries, such as one cut short by a full
                    // disk, are skipped.
                    if let Some(line) = LogLine::parse(&bytes) {
                        return Ok(Some(line));
                    }
                    continue;
                }
            }
            let Some(part) = self.queue.pop_front() else {
                return Ok(None);
            };
            let newest = self.queue.is_empty();
            self.reader = Some(Self::open_part(part, 0, self.follow, newest)?);
        }
    }
}

impl LogStream<File> {
    /// The next entry, or `None` at the end: where the log ended when opened or, when
    /// following, its current end (call again later for what is written meanwhile, in
    /// the file being read or, once it has been rotated, in the new `output.log`).
    /// Lines that are not entries, such as one cut short by a full disk, are skipped.
    pub fn next_line(&mut self) -> Result<Option<LogLine>, LogError> {
        loop {
            if let Some(line) = self.next_open()? {
                return Ok(Some(line));
            }
            if !self.follow {
                return Ok(None);
            }
            let Some(newer) = self.newer_file()? else {
                return Ok(None);
            };
            // The file being read was rotated away and is complete: what remains of
            // it is read, then the new file.
            if let Some(reader) = &mut self.reader {
                reader.growing = false;
            }
            self.queue.push_back(newer);
        }
    }

    /// `output.log` when it is not the file being read: written since the stream was
    /// opened, or begun again after a rotation. `None` while it is the same file or
    /// missing (not written yet, or rotated and not begun again yet).
    fn newer_file(&self) -> Result<Option<Part<File>>, LogError> {
        let path = &self.watched;
        let found = match fs::metadata(path) {
            Ok(found) => found,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(LogError::read(path)(err)),
        };
        if let Some(reader) = &self.reader {
            let open = reader
                .source
                .get_ref()
                .metadata()
                .map_err(LogError::read(&reader.path))?;
            if (open.dev(), open.ino()) == (found.dev(), found.ino()) {
                return Ok(None);
            }
        }
        match File::open(path) {
            Ok(file) => Part::new(path.clone(), file).map(Some),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(LogError::read(path)(err)),
        }
    }
}

/// One file of a log, read forward line by line.
struct Reader<R> {
    path: PathBuf,
    source: BufReader<R>,
    /// The line being read: its first [`MAX_ENTRY`] bytes.
    line: Vec<u8>,
    /// Where the next byte is read from.
    position: u64,
    /// Where reading stops, if not at the file's current end.
    end: Option<u64>,
    /// The file may still grow: a last line without its newline is still being
    /// written, and is held back until it is complete.
    growing: bool,
}

impl<R: Read + Seek> Reader<R> {
    fn new(part: Part<R>, start: u64, end: Option<u64>, growing: bool) -> Result<Self, LogError> {
        let Part { path, mut file, .. } = part;
        if let Err(source) = file.seek(SeekFrom::Start(start)) {
            return Err(LogError::Read { path, source });
        }
        Ok(Reader {
            path,
            source: BufReader::new(file),
            line: Vec::new(),
            position: start,
            end,
            growing,
        })
    }

    /// The next line's bytes without its newline, at most [`MAX_ENTRY`] of them, or
    /// `None` at the end.
    fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, LogError> {
        self.read_line().map_err(LogError::read(&self.path))
    }

    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
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
                if self.growing || self.line.is_empty() {
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

/// Where the last `lines` lines of the log begin: searched for backwards from the
/// end of the newest file, going on into older files only while fewer were found.
fn tail_position<R: Read + Seek>(
    parts: &mut [Part<R>],
    lines: usize,
) -> Result<Position, LogError> {
    let mut wanted = lines;
    for (index, part) in parts.iter_mut().enumerate().rev() {
        let found =
            tail_start(&mut part.file, part.len, wanted).map_err(LogError::read(&part.path))?;
        match found {
            TailStart::At(offset) => {
                return Ok(Position {
                    part: index,
                    offset,
                })
            }
            TailStart::Short(found) => wanted -= found,
        }
    }
    Ok(Position::default())
}

/// Where the first entry written at `since` or later is. Older files are passed over
/// by their last line; the first file whose last line is not older is read forward
/// to that entry. When every entry is older, the end of the newest file (where what
/// is written next will be).
fn since_position<R: Read + Seek>(
    parts: &mut [Part<R>],
    since: SystemTime,
) -> Result<Position, LogError> {
    for (index, part) in parts.iter_mut().enumerate() {
        if !ends_before(part, since)? {
            return Ok(Position {
                part: index,
                offset: first_since(part, since)?,
            });
        }
    }
    Ok(match parts.last() {
        Some(newest) => Position {
            part: parts.len() - 1,
            offset: newest.len,
        },
        None => Position::default(),
    })
}

/// Whether all of `part` was written before `since`, as its last line says (an empty
/// file has nothing later either).
fn ends_before<R: Read + Seek>(part: &mut Part<R>, since: SystemTime) -> Result<bool, LogError> {
    let len = part.len;
    let last = match tail_start(&mut part.file, len, 1).map_err(LogError::read(&part.path))? {
        TailStart::At(offset) => offset,
        TailStart::Short(_) => return Ok(true),
    };
    // Growing, so that a last line still being written, which may be later, is not
    // taken for older.
    let mut reader = Reader::new(part.borrowed(), last, Some(len), true)?;
    Ok(reader
        .next_bytes()?
        .is_some_and(|line| written_before(&line, since)))
}

/// Where in `part` the first line that is not an entry written before `since` starts,
/// or a last line still being written: a stream never starts in the middle of a line.
fn first_since<R: Read + Seek>(part: &mut Part<R>, since: SystemTime) -> Result<u64, LogError> {
    let len = part.len;
    let mut reader = Reader::new(part.borrowed(), 0, Some(len), true)?;
    loop {
        let start = reader.position;
        match reader.next_bytes()? {
            Some(line) if written_before(&line, since) => {}
            _ => return Ok(start),
        }
    }
}

/// What a search for the last lines of one file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailStart {
    /// They begin at this offset; or, when a line longer than [`MAX_ENTRY`] came
    /// first, the lines after it do, and older files are not searched either.
    At(u64),
    /// The file holds only this many lines, fewer than wanted: the others are in
    /// older files.
    Short(usize),
}

/// Where the last `lines` lines of `log` (`end` bytes long) begin, found by reading
/// backwards from the end in blocks: what is read is the tail and at most a block
/// more, whatever the file's size. A line longer than [`MAX_ENTRY`] ends the search
/// (the tail starts after it), so that a damaged log without newlines is not read
/// whole either.
fn tail_start(log: &mut (impl Read + Seek), end: u64, lines: usize) -> io::Result<TailStart> {
    if lines == 0 {
        return Ok(TailStart::At(end));
    }
    let mut block = vec![0; TAIL_BLOCK];
    // The start of the earliest line found so far; bytes from `scanned` on are read.
    let mut start = end;
    let mut found = 0;
    let mut scanned = end;
    while scanned > 0 {
        let len = scanned.min(TAIL_BLOCK as u64) as usize;
        scanned -= len as u64;
        log.seek(SeekFrom::Start(scanned))?;
        log.read_exact(&mut block[..len])?;
        let mut unsearched = &block[..len];
        while let Some(at) = unsearched.iter().rposition(|&byte| byte == b'\n') {
            unsearched = &unsearched[..at];
            let after = scanned + at as u64 + 1;
            // The file's last newline ends its last line rather than starting one.
            if after == end {
                continue;
            }
            start = after;
            found += 1;
            if found == lines {
                return Ok(TailStart::At(start));
            }
        }
        if start - scanned > MAX_ENTRY as u64 {
            return Ok(TailStart::At(start));
        }
    }
    // Back at the file's start, where its first line begins.
    Ok(match end {
        0 => TailStart::Short(0),
        _ if found + 1 == lines => TailStart::At(0),
        _ => TailStart::Short(found + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::ops::RangeInclusive;
    use std::rc::Rc;
    use std::time::Duration;

    const TIME: &str = "2025-01-01T00:00:00.000000000Z";

    /// A log of entries with these texts, one per line, all written at [`TIME`].
    fn log_of(texts: &[String]) -> String {
        texts
            .iter()
            .map(|text| format!("{TIME} stdout {text}\n"))
            .collect()
    }

    fn numbered(lines: RangeInclusive<usize>) -> Vec<String> {
        lines.map(|n| format!("line {n}")).collect()
    }

    fn texts(lines: Vec<LogLine>) -> Vec<String> {
        lines.into_iter().map(|line| line.text).collect()
    }

    /// A container directory whose log is these files, oldest first: the last is
    /// `output.log`, the one before it `output.log.1`, and so on.
    fn rotated(files: &[String]) -> (tempfile::TempDir, Logs) {
        let dir = tempfile::tempdir().expect("temp dir");
        for (age, contents) in (0..).zip(files.iter().rev()) {
            fs::write(log_file(dir.path(), age), contents).expect("write the log");
        }
        let logs = Logs::new(dir.path().to_owned());
        (dir, logs)
    }

    /// Appends `text` to the file `name` of the container directory.
    fn append(dir: &tempfile::TempDir, name: &str, text: &str) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(name))
            .expect("the log");
        file.write_all(text.as_bytes()).expect("append");
    }

    /// The texts `stream` has now: up to its end or, following, the log's current end.
    fn drain(stream: &mut LogStream) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = stream.next_line().expect("line") {
            lines.push(line.text);
        }
        lines
    }

    /// `minutes` after [`TIME`].
    fn minute(minutes: u64) -> SystemTime {
        humantime::parse_rfc3339(TIME).expect("TIME") + Duration::from_secs(60 * minutes)
    }

    /// A log in three files with one entry a minute, its text the minute: 1 to 3 in
    /// `output.log.2`, 4 to 6 in `output.log.1`, 7 to 9 in `output.log`.
    fn by_the_minute() -> (tempfile::TempDir, Logs) {
        let file = |range: RangeInclusive<u64>| -> String {
            range
                .map(|at| {
                    let time = humantime::format_rfc3339_nanos(minute(at));
                    format!("{time} stdout {at}\n")
                })
                .collect()
        };
        rotated(&[file(1..=3), file(4..=6), file(7..=9)])
    }

    fn minutes(range: RangeInclusive<u64>) -> Vec<String> {
        range.map(|at| at.to_string()).collect()
    }

    #[test]
    fn a_log_of_one_file_reads_as_it_always_did() {
        // Only `output.log`: never rotated, or written before rotation existed.
        let (_dir, logs) = rotated(&[log_of(&numbered(1..=1000))]);
        let tail = |lines| texts(logs.read(lines).expect("read"));
        assert_eq!(tail(Some(1)), ["line 1000"]);
        assert_eq!(tail(Some(3)), numbered(998..=1000));
        assert_eq!(tail(Some(0)), Vec::<String>::new());
        assert_eq!(tail(Some(5000)), numbered(1..=1000));
        assert_eq!(tail(None), numbered(1..=1000));
    }

    #[test]
    fn rotated_files_are_read_oldest_first_and_a_tail_reaches_back_into_them() {
        let (_dir, logs) = rotated(&[
            log_of(&numbered(1..=3)),
            log_of(&numbered(4..=6)),
            log_of(&numbered(7..=9)),
        ]);
        let tail = |lines| texts(logs.read(lines).expect("read"));
        assert_eq!(tail(None), numbered(1..=9));
        assert_eq!(tail(Some(2)), numbered(8..=9), "in output.log");
        assert_eq!(tail(Some(3)), numbered(7..=9), "all of output.log");
        assert_eq!(tail(Some(5)), numbered(5..=9), "into output.log.1");
        assert_eq!(tail(Some(8)), numbered(2..=9), "into output.log.2");
        assert_eq!(tail(Some(0)), Vec::<String>::new());
        assert_eq!(tail(Some(100)), numbered(1..=9), "more than there are: all");
    }

    #[test]
    fn rotated_files_are_read_while_output_log_is_not_begun_again() {
        // The monitor begins a new output.log at the next line after a rotation.
        let (dir, logs) = rotated(&[log_of(&numbered(1..=2)), log_of(&numbered(3..=4))]);
        let path = |name: &str| dir.path().join(name);
        fs::rename(path("output.log.1"), path("output.log.2")).expect("rotate");
        fs::rename(path(LOG_NAME), path("output.log.1")).expect("rotate");
        assert_eq!(texts(logs.read(Some(3)).expect("read")), numbered(2..=4));
    }

    #[test]
    fn since_keeps_the_entries_written_from_then_on_across_files() {
        let (_dir, logs) = by_the_minute();
        let since = |at: SystemTime| {
            let mut stream = logs.open(None, Some(at), false).expect("open");
            drain(&mut stream)
        };
        assert_eq!(since(minute(5)), minutes(5..=9), "from within output.log.1");
        assert_eq!(since(minute(4)), minutes(4..=9), "from its first entry");
        let between = minute(3) + Duration::from_secs(30);
        assert_eq!(since(between), minutes(4..=9), "from between files");
        assert_eq!(since(minute(0)), minutes(1..=9), "from before it all");
        assert_eq!(since(minute(9)), ["9"]);
        assert_eq!(since(minute(10)), Vec::<String>::new(), "from after it all");
    }

    #[test]
    fn since_and_tail_together_are_the_last_lines_of_those_since() {
        let (_dir, logs) = by_the_minute();
        let both = |at: u64, lines: usize| {
            let mut stream = logs
                .open(Some(lines), Some(minute(at)), false)
                .expect("open");
            drain(&mut stream)
        };
        assert_eq!(both(2, 3), minutes(7..=9), "the tail is the later start");
        assert_eq!(both(2, 5), minutes(5..=9));
        assert_eq!(both(8, 5), minutes(8..=9), "since is the later start");
        assert_eq!(both(2, 0), Vec::<String>::new());
    }

    #[test]
    fn a_last_line_without_its_newline_is_a_line() {
        let contents = log_of(&numbered(1..=3));
        let (_dir, logs) = rotated(&[contents.trim_end_matches('\n').to_owned()]);
        assert_eq!(texts(logs.read(Some(1)).expect("read")), ["line 3"]);
        assert_eq!(texts(logs.read(Some(2)).expect("read")), numbered(2..=3));
        assert_eq!(texts(logs.read(None).expect("read")), numbered(1..=3));
    }

    #[test]
    fn following_goes_on_where_the_tail_ends_and_waits_for_whole_lines() {
        let (dir, logs) = rotated(&[log_of(&numbered(1..=3))]);
        let mut stream = logs.open(Some(1), None, true).expect("open");
        assert_eq!(drain(&mut stream), ["line 3"]);

        append(&dir, LOG_NAME, &format!("{TIME} stdout li"));
        assert_eq!(
            drain(&mut stream),
            Vec::<String>::new(),
            "a line still being written waits"
        );
        append(&dir, LOG_NAME, "ne 4\n");
        assert_eq!(drain(&mut stream), ["line 4"]);
    }

    #[test]
    fn following_goes_on_across_rotations_without_losing_or_repeating_a_line() {
        let (dir, logs) = rotated(&[log_of(&numbered(1..=2))]);
        let path = |name: &str| dir.path().join(name);
        let mut stream = logs.open(None, None, true).expect("open");
        assert_eq!(drain(&mut stream), numbered(1..=2));

        // A line written just before the rotation, not read yet; then the rotation,
        // as the monitor does it, and a line in the new output.log.
        append(&dir, LOG_NAME, &log_of(&numbered(3..=3)));
        fs::rename(path(LOG_NAME), path("output.log.1")).expect("rotate");
        fs::write(path(LOG_NAME), log_of(&numbered(4..=4))).expect("a new output.log");
        assert_eq!(drain(&mut stream), numbered(3..=4));

        append(&dir, LOG_NAME, &log_of(&numbered(5..=5)));
        assert_eq!(drain(&mut stream), numbered(5..=5));

        // Once more: output.log.1 moves up first.
        fs::rename(path("output.log.1"), path("output.log.2")).expect("rotate");
        fs::rename(path(LOG_NAME), path("output.log.1")).expect("rotate");
        assert_eq!(
            drain(&mut stream),
            Vec::<String>::new(),
            "no output.log until the next line"
        );
        fs::write(path(LOG_NAME), log_of(&numbered(6..=6))).expect("a new output.log");
        assert_eq!(drain(&mut stream), numbered(6..=6));
    }

    #[test]
    fn following_a_log_not_written_yet_waits_for_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = Logs::new(dir.path().to_owned());
        assert!(
            matches!(
                logs.open(None, None, false),
                Err(LogError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound
            ),
            "without following, no log is an error"
        );
        let mut stream = logs.open(Some(10), None, true).expect("open");
        assert_eq!(drain(&mut stream), Vec::<String>::new());
        fs::write(dir.path().join(LOG_NAME), log_of(&numbered(1..=2))).expect("write");
        assert_eq!(drain(&mut stream), numbered(1..=2));
    }

    #[test]
    fn a_read_ends_where_the_log_ended_when_it_was_opened() {
        let (dir, logs) = rotated(&[log_of(&numbered(1..=2))]);
        let mut stream = logs.open(None, None, false).expect("open");
        append(&dir, LOG_NAME, &log_of(&numbered(3..=3)));
        assert_eq!(drain(&mut stream), numbered(1..=2));
    }

    /// Counts the bytes read through it, with others sharing the count.
    struct Counting<R> {
        inner: R,
        read: Rc<Cell<u64>>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let read = self.inner.read(buf)?;
            self.read.set(self.read.get() + read as u64);
            Ok(read)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    /// Reads `files` (oldest first) as a log from where `tail` and `since` say; the
    /// texts read and how many bytes were read from the files to find them.
    fn counted_read(
        files: Vec<File>,
        tail: Option<usize>,
        since: Option<SystemTime>,
    ) -> (Vec<String>, u64) {
        let read = Rc::new(Cell::new(0));
        let parts: Vec<Part<Counting<File>>> = files
            .into_iter()
            .map(|file| {
                let counting = Counting {
                    inner: file,
                    read: Rc::clone(&read),
                };
                Part::new(PathBuf::from(LOG_NAME), counting).expect("open")
            })
            .collect();
        let mut stream =
            LogStream::start(PathBuf::from(LOG_NAME), parts, tail, since, false).expect("open");
        let mut found = Vec::new();
        while let Some(line) = stream.next_open().expect("line") {
            found.push(line.text);
        }
        (found, read.get())
    }

    /// A 200 MB log file: a hole (one long line of zero bytes), then lines 1 to 10,
    /// written at [`TIME`].
    fn big_log() -> File {
        let mut file = tempfile::tempfile().expect("temp file");
        file.set_len(200 << 20).expect("sparse file");
        file.seek(SeekFrom::End(0)).expect("seek");
        let lines = log_of(&numbered(1..=10));
        write!(file, "\n{lines}").expect("write");
        file
    }

    /// A small log file of one entry, `text`, written `minutes` after [`TIME`].
    fn small_log(minutes: u64, text: &str) -> File {
        let mut file = tempfile::tempfile().expect("temp file");
        let time = humantime::format_rfc3339_nanos(minute(minutes));
        writeln!(file, "{time} stdout {text}").expect("write");
        file
    }

    #[test]
    fn a_tail_reads_the_tail_not_the_whole_log() {
        let (lines, read) = counted_read(vec![big_log()], Some(3), None);
        assert_eq!(lines, numbered(8..=10));
        assert!(read <= 2 * TAIL_BLOCK as u64, "read {read} bytes of 200 MB");
    }

    #[test]
    fn a_tail_stops_before_a_line_longer_than_a_mebibyte() {
        // Only 10 lines follow the 200 MB line of zeros: they are the tail.
        let (lines, read) = counted_read(vec![big_log()], Some(20), None);
        assert_eq!(lines, numbered(1..=10));
        assert!(
            read <= (MAX_ENTRY + 2 * TAIL_BLOCK) as u64,
            "read {read} bytes of 200 MB"
        );
    }

    #[test]
    fn a_tail_found_in_output_log_reads_nothing_of_the_rotated_files() {
        let (lines, read) = counted_read(vec![big_log(), small_log(60, "last")], Some(1), None);
        assert_eq!(lines, ["last"]);
        assert!(read < 1024, "read {read} bytes");
    }

    #[test]
    fn since_passes_over_an_older_file_by_its_last_line() {
        // The big file's entries are all older than `since`, the small one's newer.
        let files = vec![big_log(), small_log(60, "later")];
        let (lines, read) = counted_read(files, None, Some(minute(30)));
        assert_eq!(lines, ["later"]);
        assert!(read <= 2 * TAIL_BLOCK as u64, "read {read} bytes of 200 MB");
    }

    #[test]
    fn a_line_longer_than_a_mebibyte_is_read_back_cut() {
        let (_dir, logs) = rotated(&[log_of(&["x".repeat(3 * MAX_ENTRY), "after".to_owned()])]);
        let lines = logs.read(None).expect("read");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].text.len(),
            MAX_ENTRY - format!("{TIME} stdout ").len()
        );
        assert_eq!(lines[1].text, "after");
    }
}
