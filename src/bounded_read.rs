//! Reading files whose type and size someone else decides (manifests, imported
//! image layouts): only regular files, never blocking on a FIFO, never more than a
//! limit.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("{size} bytes, more than the {limit} bytes allowed")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Opens `path` (following symlinks) for reading if it is a regular file. The type
/// is checked before opening as well as after: opening a device or a socket can
/// have effects of its own; the check on the open file is the one that counts.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    require_regular(&fs::metadata(path)?)?;
    // O_NONBLOCK: a FIFO swapped in after the check opens at once instead of waiting
    // for a writer (it is then refused). Regular files ignore the flag.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    require_regular(&meta)?;
    Ok((file, meta))
}

/// The content of the regular file `path`, at most `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    // One byte more than the limit tells a file that grew since fstat.
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(ReadError::TooLarge {
            size: read.max(meta.len()),
            limit,
        });
    }
    Ok(bytes)
}

/// `read_regular` as text (invalid UTF-8 replaced): small files of the host and of
/// wharf's own records (cgroup counters, /proc tables, JSON records).
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    let bytes = read_regular(path, limit)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()))
}

/// Err names what `meta` describes when it is not a regular file.
pub fn require_regular(meta: &Metadata) -> Result<(), ReadError> {
    let file_type = meta.file_type();
    if file_type.is_file() {
        return Ok(());
    }
    Err(ReadError::NotRegular(if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "of an unknown type"
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_up_to_the_limit_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("f");
        fs::write(&file, "12345").expect("write");
        assert_eq!(read_regular(&file, 5).expect("at the limit"), b"12345");
        assert!(matches!(
            read_regular(&file, 4),
            Err(ReadError::TooLarge { size: 5, limit: 4 })
        ));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // Returns at once: nobody writes to the FIFO.
        assert!(matches!(
            read_regular(&fifo, 4),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_regular(dir.path(), 4),
            Err(ReadError::NotRegular("a directory"))
        ));
    }
}
