//! A container's output. Its stdout and stderr are pipes read by a small log shim
//! process (`wharf log-shim`, started with the container and ending with it), which
//! writes each line to `output.log` as `<RFC 3339 time> <stdout|stderr> <text>`. The
//! shim outlives the wharf process that created the container, as the container does.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Lines longer than this are split, so that one endless line cannot exhaust memory.
const MAX_LINE: usize = 64 * 1024;

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

pub struct Logs {
    path: PathBuf,
}

/// Follows the log as it grows.
pub struct LogStream {
    file: File,
    partial: String,
}

impl Logs {
    pub fn new(path: PathBuf) -> Self {
        Logs { path }
    }

    /// Every line, or the last `tail` lines.
    pub fn read(&self, tail: Option<usize>) -> io::Result<Vec<LogLine>> {
        let mut text = String::new();
        File::open(&self.path)?.read_to_string(&mut text)?;
        let lines: Vec<LogLine> = text.lines().filter_map(LogLine::parse).collect();
        let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
        Ok(lines.into_iter().skip(skip).collect())
    }

    /// The output's text, lines joined with newlines (for tests and quick looks).
    pub fn text(&self) -> io::Result<String> {
        Ok(self
            .read(None)?
            .into_iter()
            .map(|l| l.text + "\n")
            .collect())
    }

    /// A stream positioned at the end of the log, for following new output.
    pub fn follow_from_end(&self) -> io::Result<LogStream> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(LogStream {
            file,
            partial: String::new(),
        })
    }
}

impl LogStream {
    /// Complete lines appended since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<LogLine>> {
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
        let lines = self.partial[..complete]
            .lines()
            .filter_map(LogLine::parse)
            .collect();
        self.partial.drain(..complete);
        Ok(lines)
    }
}

/// The log shim's work: copies `stdout` and `stderr` (the container's pipes) line by
/// line into `log`, timestamped, until both end.
pub fn copy_timestamped(
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    log: &Path,
) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(log)?;
    let file = Arc::new(Mutex::new(file));
    let pump = |stream: &'static str, source: Box<dyn Read + Send>, file: Arc<Mutex<File>>| {
        std::thread::spawn(move || -> io::Result<()> {
            let mut reader = BufReader::new(source);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader
                    .by_ref()
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut line)?;
                if n == 0 {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&line);
                let time = humantime::format_rfc3339_nanos(SystemTime::now());
                let entry = format!("{time} {stream} {}\n", text.trim_end_matches('\n'));
                file.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .write_all(entry.as_bytes())?;
            }
        })
    };
    let out = pump("stdout", Box::new(stdout), file.clone());
    let err = pump("stderr", Box::new(stderr), file);
    for handle in [out, err] {
        handle
            .join()
            .map_err(|_| io::Error::other("log pump panicked"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
