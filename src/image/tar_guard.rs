//! The tar crate reads GNU long names and links and PAX extension headers whole into
//! memory before it hands out the entry they describe, so a few megabytes of gzip
//! could make it allocate gigabytes (a 512 MiB "file name" compresses to 500 KB)
//! before any of wharf's limits sees an entry. This reader watches the archive go by,
//! header by header, and refuses such an extension entry larger than
//! [`MAX_EXTENSION`] before the tar crate reads it.
//!
//! It follows the archive's layout as the tar crate does: a 512-byte header, then the
//! entry's data padded to 512 bytes; old GNU sparse headers may be followed by
//! extension header blocks; a PAX `size` record gives the next entry's data size.

use std::io::{self, Read};

/// More than any real path, link target or set of PAX records needs.
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

/// Passes an uncompressed tar stream through, failing once an extension entry (GNU
/// `L`/`K`, PAX `x`/`g`) declares more than [`MAX_EXTENSION`] bytes.
pub struct ExtensionGuard<R> {
    inner: R,
    /// The header block being read.
    header: Vec<u8>,
    /// Data (and padding) bytes still to pass before the next header.
    data_left: u64,
    /// Old GNU sparse extension blocks follow this header, then `sparse_data` bytes.
    sparse_extension: bool,
    sparse_data: u64,
    /// A PAX header's records, kept while they pass (at most MAX_EXTENSION bytes).
    pax: Option<Vec<u8>>,
    pax_left: u64,
    /// The next entry's data size, as a PAX `size` record set it.
    next_size: Option<u64>,
}

impl<R: Read> ExtensionGuard<R> {
    pub fn new(inner: R) -> Self {
        ExtensionGuard {
            inner,
            header: Vec::with_capacity(BLOCK),
            data_left: 0,
            sparse_extension: false,
            sparse_data: 0,
            pax: None,
            pax_left: 0,
            next_size: None,
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.data_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
                self.collect_pax(&bytes[..n]);
                self.data_left -= n as u64;
                bytes = &bytes[n..];
                if self.data_left == 0 {
                    self.finish_pax();
                }
                continue;
            }
            let n = bytes.len().min(BLOCK - self.header.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == BLOCK {
                let header = std::mem::take(&mut self.header);
                self.header_read(&header)?;
                self.header = header;
                self.header.clear();
            }
        }
        Ok(())
    }

    fn header_read(&mut self, header: &[u8]) -> io::Result<()> {
        if self.sparse_extension {
            // isextended of a GNU sparse extension block.
            self.sparse_extension = header[504] != 0;
            if !self.sparse_extension {
                self.data_left = padded(self.sparse_data);
            }
            return Ok(());
        }
        let kind = header[156];
        let declared = size_field(&header[124..136])?;
        let size = match kind {
            // Extension entries are sized by their own header, not by a PAX record.
            b'L' | b'K' | b'x' | b'g' => declared,
            _ => self.next_size.take().unwrap_or(declared),
        };
        if matches!(kind, b'L' | b'K' | b'x' | b'g') && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a {} entry of {size} bytes: more than the {} MiB a path, link or set of PAX records may take",
                    match kind {
                        b'L' => "GNU long name",
                        b'K' => "GNU long link",
                        _ => "PAX header",
                    },
                    MAX_EXTENSION >> 20
                ),
            ));
        }
        if kind == b'x' {
            self.pax = Some(Vec::with_capacity(size as usize));
            self.pax_left = size;
        }
        // Old GNU sparse: the isextended flag after four sparse slots.
        if kind == b'S' && header[482] != 0 {
            self.sparse_extension = true;
            self.sparse_data = size;
        } else {
            self.data_left = padded(size);
            if self.data_left == 0 {
                self.finish_pax();
            }
        }
        Ok(())
    }

    fn collect_pax(&mut self, bytes: &[u8]) {
        if let Some(records) = &mut self.pax {
            let n = bytes.len().min(self.pax_left as usize);
            records.extend_from_slice(&bytes[..n]);
            self.pax_left -= n as u64;
        }
    }

    fn finish_pax(&mut self) {
        let Some(records) = self.pax.take() else {
            return;
        };
        self.next_size = tar::PaxExtensions::new(&records)
            .flatten()
            .filter(|record| record.key_bytes() == b"size")
            .filter_map(|record| record.value().ok()?.parse().ok())
            .last();
    }
}

impl<R: Read> Read for ExtensionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// A header's size field: octal text, or base-256 when the high bit of the first byte
/// is set (GNU, for sizes over 8 GiB).
fn size_field(field: &[u8]) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |size, byte| {
                size.checked_mul(256).map(|size| size | u64::from(*byte))
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar size field overflows"));
    }
    let text = field
        .iter()
        .skip_while(|byte| **byte == b' ')
        .take_while(|byte| (b'0'..=b'7').contains(*byte))
        .try_fold(0u64, |size, byte| {
            size.checked_mul(8)?.checked_add(u64::from(byte - b'0'))
        });
    text.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar size field overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (kind, data, path) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_path(path).expect("path");
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.into_inner().expect("finish")
    }

    fn read_through(bytes: &[u8]) -> io::Result<Vec<String>> {
        let mut archive = tar::Archive::new(ExtensionGuard::new(bytes));
        let mut paths = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            paths.push(entry.path()?.display().to_string());
            io::copy(&mut entry, &mut io::sink())?;
        }
        Ok(paths)
    }

    #[test]
    fn ordinary_archives_pass_untouched() {
        let long = "d/".repeat(200) + "file";
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long, &b"hello"[..])
            .expect("a GNU long name entry");
        let mut pax = tar::Builder::new(Vec::new());
        pax.append_pax_extensions([("size", &b"3"[..]), ("path", b"p/x")])
            .expect("pax");
        let mut header = tar::Header::new_ustar();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_path("short").expect("path");
        header.set_cksum();
        pax.append(&header, &b"abc"[..]).expect("append");
        let mut bytes = builder.into_inner().expect("finish");
        bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
        bytes.extend(pax.into_inner().expect("finish"));
        assert_eq!(
            read_through(&bytes).expect("passes"),
            [long, "p/x".to_owned()]
        );
    }

    #[test]
    fn a_huge_long_name_or_pax_header_is_refused_before_it_is_read() {
        let huge = vec![b'a'; (MAX_EXTENSION + 1) as usize];
        for kind in [
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XHeader,
            tar::EntryType::XGlobalHeader,
        ] {
            let bytes = archive(&[
                (kind, &huge, "././@LongLink"),
                (tar::EntryType::Regular, b"x", "f"),
            ]);
            let err = read_through(&bytes).expect_err("refused");
            assert!(
                err.to_string().contains("more than the 1 MiB"),
                "{kind:?}: {err}"
            );
        }
        // Exactly the limit is a (strange but) allowed name.
        let limit = vec![b'a'; MAX_EXTENSION as usize];
        let bytes = archive(&[
            (tar::EntryType::GNULongName, &limit, "././@LongLink"),
            (tar::EntryType::Regular, b"x", "f"),
        ]);
        assert!(read_through(&bytes).is_ok());
    }

    #[test]
    fn size_fields_in_octal_and_base_256() {
        assert_eq!(size_field(b"00000001750\0").expect("octal"), 1000);
        assert_eq!(size_field(b"     1750 \0\0").expect("padded"), 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 0x02;
        big[10] = 0x01;
        assert_eq!(size_field(&big).expect("base 256"), 0x0102);
    }
}
