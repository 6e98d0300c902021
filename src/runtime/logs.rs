//! A container's output: stdout and stderr interleaved in one file, as written.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

pub struct Logs {
    path: PathBuf,
}

/// A reader that can follow the file as it grows.
pub struct LogStream {
    file: File,
}

impl Logs {
    pub fn new(path: PathBuf) -> Self {
        Logs { path }
    }

    /// The whole output, or its last `lines` lines.
    pub fn read(&self, lines: Option<usize>) -> io::Result<String> {
        let mut text = String::new();
        File::open(&self.path)?.read_to_string(&mut text)?;
        Ok(match lines {
            None => text,
            Some(n) => {
                let kept: Vec<&str> = text.lines().rev().take(n).collect();
                kept.into_iter().rev().map(|l| format!("{l}\n")).collect()
            }
        })
    }

    /// A stream positioned at the end of the file, for following new output.
    pub fn follow_from_end(&self) -> io::Result<LogStream> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(LogStream { file })
    }
}

impl LogStream {
    /// What was appended since the last call (possibly nothing).
    pub fn poll(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}
