//! Hand-made layer tars, including ones no honest tool would write.

use std::path::Path;

use wharf::image::{unpack_layer, Compression, Digest, UnpackError};

/// One tar entry. Paths are written into the header as raw bytes, so `..` and
/// absolute paths get through (the tar crate's own setters refuse them).
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        let (path, kind, link, data, mode): (&str, _, Option<&str>, &[u8], u32) = match entry {
            Entry::Dir(path) => (path, tar::EntryType::Directory, None, b"", 0o755),
            Entry::File(path, data) => (path, tar::EntryType::Regular, None, data, 0o644),
            Entry::Symlink(path, target) => {
                (path, tar::EntryType::Symlink, Some(target), b"", 0o777)
            }
            Entry::Hardlink(path, target) => (path, tar::EntryType::Link, Some(target), b"", 0o644),
        };
        let old = header.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).expect("in-memory tar");
    }
    builder.into_inner().expect("in-memory tar")
}

/// Unpacks `tar_bytes` (uncompressed) into `dest` the way a pull does.
pub fn unpack(tar_bytes: &[u8], dest: &Path) -> Result<(), UnpackError> {
    let blob = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(blob.path(), tar_bytes).expect("write blob");
    unpack_layer(blob.path(), Compression::None, &Digest::of(tar_bytes), dest)
}
