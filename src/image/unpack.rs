//! Unpacking a layer tar into its own directory, safely.
//!
//! Whatever the archive says, nothing is written outside the directory: paths are
//! cleaned lexically (`..` cannot climb above the root, absolute paths become
//! relative), parent directories are resolved by pathrs inside the root (a symlink
//! `etc -> /etc` planted by an earlier entry resolves to `<root>/etc`), the last
//! component is never followed (existing entries are replaced, files are created
//! with O_EXCL|O_NOFOLLOW) and hardlink targets are resolved inside the root too.
//! OCI whiteouts become overlayfs whiteouts so that layers stack with overlayfs.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pathrs::flags::OpenFlags;
use pathrs::Root;
use rustix::fs::{self as fs, AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};

use super::digest::{Digest, HashingReader};
use super::error::UnpackError;
use super::oci::Compression;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Unpacks the layer blob at `blob` into the empty directory `dest` and checks that
/// the uncompressed stream has the digest `diff_id`.
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
) -> Result<(), UnpackError> {
    let file = File::open(blob).map_err(UnpackError::io("open the layer blob"))?;
    unpack_layer_from(file, compression, diff_id, dest)
}

/// Like [`unpack_layer`], reading the blob from `blob` (e.g. while it downloads).
pub fn unpack_layer_from(
    blob: impl Read,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
) -> Result<(), UnpackError> {
    let buffered = BufReader::with_capacity(256 * 1024, blob);
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(buffered)
                .map_err(|err| UnpackError::Corrupt(format!("zstd: {err}")))?,
        ),
    };
    let mut hashing = HashingReader::new(decompressed);
    let mut extractor = Extractor::new(dest)?;
    let mut archive = tar::Archive::new(&mut hashing);
    for entry in archive.entries().map_err(UnpackError::corrupt)? {
        let mut entry = entry.map_err(UnpackError::corrupt)?;
        extractor.extract(&mut entry)?;
    }
    extractor.finish()?;
    let actual = hashing.finish().map_err(UnpackError::corrupt)?;
    if actual != *diff_id {
        return Err(UnpackError::DiffIdMismatch {
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

/// Path components of an archive entry, with `.`, empty parts and `..` resolved
/// lexically: the result never leaves the root.
fn clean(raw: &[u8]) -> Vec<OsString> {
    let mut parts: Vec<OsString> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(OsStr::from_bytes(part).to_owned()),
        }
    }
    parts
}

/// The path of cleaned components relative to the root; pathrs resolves "" as
/// nothing at all, so the root itself is ".".
fn join(parts: &[OsString]) -> PathBuf {
    if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.iter().collect()
    }
}

struct Metadata {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Extractor {
    dest: PathBuf,
    root: Root,
    /// Directory mtimes are set last: creating entries inside changes them.
    dir_times: Vec<(Vec<OsString>, u64)>,
    /// The last parent directory resolved: archives list a directory's entries
    /// together, and resolving through pathrs costs dozens of syscalls.
    last_parent: Option<(Vec<OsString>, pathrs::Handle)>,
}

impl Extractor {
    fn new(dest: &Path) -> Result<Self, UnpackError> {
        let root = Root::open(dest).map_err(UnpackError::resolve(dest))?;
        Ok(Extractor {
            dest: dest.to_owned(),
            root,
            dir_times: Vec::new(),
            last_parent: None,
        })
    }

    fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let parts = clean(&entry.path_bytes());
        let xattrs = pax_xattrs(entry)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let meta = Metadata {
            mode: header.mode().map_err(UnpackError::corrupt)? & 0o7777,
            uid: header.uid().map_err(UnpackError::corrupt)? as u32,
            gid: header.gid().map_err(UnpackError::corrupt)? as u32,
            mtime: header.mtime().map_err(UnpackError::corrupt)?,
            xattrs,
        };
        let Some((name, parent)) = parts.split_last() else {
            // The layer root itself ("./"): only its metadata applies.
            if kind.is_dir() {
                self.set_root_metadata(&meta)?;
            }
            return Ok(());
        };
        let parent_dir = self.parent_dir(parent)?;
        let name_bytes = name.as_bytes();

        if name_bytes == OPAQUE_MARKER {
            let dir = parent_dir
                .reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY)
                .map_err(UnpackError::resolve(&join(parent)))?;
            return fs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(UnpackError::sys("mark directory opaque", &join(parent)));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(UnpackError::Corrupt(format!(
                    "whiteout {:?} names no file",
                    join(&parts)
                )));
            }
            let hidden = OsStr::from_bytes(hidden);
            self.remove_existing(&parent_dir, parent, hidden)?;
            let path = join(parent).join(hidden);
            fs::mknodat(
                &parent_dir,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                fs::makedev(0, 0),
            )
            .map_err(UnpackError::sys("create whiteout", &path))?;
            return Ok(());
        }

        let path = join(&parts);
        let created = |what| UnpackError::sys(what, &path);
        match kind {
            tar::EntryType::Directory => {
                let is_dir = fs::statat(&parent_dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory);
                if !is_dir {
                    self.remove_existing(&parent_dir, parent, name)?;
                    fs::mkdirat(&parent_dir, name.as_os_str(), Mode::from_raw_mode(0o700))
                        .map_err(created("create directory"))?;
                }
                set_owner_and_mode(&parent_dir, name, &meta, &path)?;
                let dir =
                    open_nofollow(&parent_dir, name, OFlags::RDONLY | OFlags::DIRECTORY, &path)?;
                set_xattrs(&dir, &meta, &path)?;
                self.dir_times.push((parts.clone(), meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.remove_existing(&parent_dir, parent, name)?;
                let fd = fs::openat(
                    &parent_dir,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(created("create file"))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(UnpackError::corrupt)?;
                fs::fchown(&file, Some(uid(meta.uid)), Some(gid(meta.gid)))
                    .map_err(created("set owner"))?;
                // After chown, which clears set-user-ID bits.
                fs::fchmod(&file, Mode::from_raw_mode(meta.mode)).map_err(created("set mode"))?;
                set_xattrs(&file, &meta, &path)?;
                fs::futimens(&file, &timestamps(meta.mtime)).map_err(created("set times"))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    UnpackError::Corrupt(format!("symlink {path:?} has no target"))
                })?;
                self.remove_existing(&parent_dir, parent, name)?;
                fs::symlinkat(OsStr::from_bytes(&target), &parent_dir, name.as_os_str())
                    .map_err(created("create symlink"))?;
                fs::chownat(
                    &parent_dir,
                    name.as_os_str(),
                    Some(uid(meta.uid)),
                    Some(gid(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(created("set owner"))?;
                set_times(&parent_dir, name, meta.mtime, &path)?;
            }
            tar::EntryType::Link => {
                let target_raw = entry.link_name_bytes().ok_or_else(|| {
                    UnpackError::Corrupt(format!("hardlink {path:?} has no target"))
                })?;
                let target = join(&clean(&target_raw));
                let target_handle = self
                    .root
                    .resolve_nofollow(&target)
                    .map_err(UnpackError::resolve(&target))?;
                self.remove_existing(&parent_dir, parent, name)?;
                fs::linkat(
                    &target_handle,
                    "",
                    &parent_dir,
                    name.as_os_str(),
                    AtFlags::EMPTY_PATH,
                )
                .map_err(created("create hardlink"))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header
                    .device_major()
                    .map_err(UnpackError::corrupt)?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(UnpackError::corrupt)?
                    .unwrap_or(0);
                self.remove_existing(&parent_dir, parent, name)?;
                fs::mknodat(
                    &parent_dir,
                    name.as_os_str(),
                    file_type,
                    Mode::empty(),
                    fs::makedev(major, minor),
                )
                .map_err(created("create device node"))?;
                set_owner_and_mode(&parent_dir, name, &meta, &path)?;
                set_times(&parent_dir, name, meta.mtime, &path)?;
            }
            // PAX and GNU long-name headers are consumed by the tar crate; nothing
            // else (sockets, volume labels) belongs in a layer.
            _ => {}
        }
        Ok(())
    }

    /// The directory `parent` inside the root, created if missing. The cached handle
    /// is dropped whenever an entry replaces that directory or one above it, so it
    /// always names what the path resolves to now.
    fn parent_dir(&mut self, parent: &[OsString]) -> Result<pathrs::Handle, UnpackError> {
        if let Some((cached, handle)) = &self.last_parent {
            if cached == parent {
                return handle
                    .try_clone()
                    .map_err(UnpackError::resolve(&join(parent)));
            }
        }
        let path = join(parent);
        let handle = self
            .root
            .mkdir_all(&path, &std::fs::Permissions::from_mode(0o755))
            .map_err(UnpackError::resolve(&path))?;
        let cached = handle.try_clone().map_err(UnpackError::resolve(&path))?;
        self.last_parent = Some((parent.to_vec(), cached));
        Ok(handle)
    }

    /// Forgets the cached parent if `parts` is it or one of its ancestors.
    fn invalidate_parent(&mut self, parts: &[OsString]) {
        if let Some((cached, _)) = &self.last_parent {
            if cached.starts_with(parts) {
                self.last_parent = None;
            }
        }
    }

    /// Removes whatever is at `parent/name` (a later entry replaces an earlier one).
    fn remove_existing(
        &mut self,
        parent_dir: &pathrs::Handle,
        parent: &[OsString],
        name: &OsStr,
    ) -> Result<(), UnpackError> {
        let path = join(parent).join(name);
        let mut replaced = parent.to_vec();
        replaced.push(name.to_owned());
        self.invalidate_parent(&replaced);
        match fs::unlinkat(parent_dir, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(rustix::io::Errno::ISDIR) => self
                .root
                .remove_all(&path)
                .map_err(UnpackError::resolve(&path)),
            Err(errno) => Err(UnpackError::sys("replace", &path)(errno)),
        }
    }

    fn set_root_metadata(&mut self, meta: &Metadata) -> Result<(), UnpackError> {
        let dir = File::open(&self.dest).map_err(UnpackError::io("open the layer directory"))?;
        let at = |what| UnpackError::sys(what, Path::new("."));
        fs::fchown(&dir, Some(uid(meta.uid)), Some(gid(meta.gid))).map_err(at("set owner"))?;
        fs::fchmod(&dir, Mode::from_raw_mode(meta.mode)).map_err(at("set mode"))?;
        set_xattrs(&dir, meta, Path::new("."))?;
        self.dir_times.push((Vec::new(), meta.mtime));
        Ok(())
    }

    fn finish(self) -> Result<(), UnpackError> {
        for (parts, mtime) in self.dir_times.iter().rev() {
            let path = join(parts);
            let dir = self
                .root
                .resolve_nofollow(&path)
                .and_then(|handle| handle.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY))
                .map_err(UnpackError::resolve(&path))?;
            fs::futimens(&dir, &timestamps(*mtime))
                .map_err(UnpackError::sys("set times", &path))?;
        }
        Ok(())
    }
}

fn open_nofollow(
    parent_dir: &pathrs::Handle,
    name: &OsStr,
    flags: OFlags,
    path: &Path,
) -> Result<File, UnpackError> {
    fs::openat(
        parent_dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(UnpackError::sys("open", path))
}

fn set_owner_and_mode(
    parent_dir: &pathrs::Handle,
    name: &OsStr,
    meta: &Metadata,
    path: &Path,
) -> Result<(), UnpackError> {
    fs::chownat(
        parent_dir,
        name,
        Some(uid(meta.uid)),
        Some(gid(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(UnpackError::sys("set owner", path))?;
    // The entry was just created by us and is not a symlink, so following is safe.
    fs::chmodat(
        parent_dir,
        name,
        Mode::from_raw_mode(meta.mode),
        AtFlags::empty(),
    )
    .map_err(UnpackError::sys("set mode", path))
}

fn set_times(
    parent_dir: &pathrs::Handle,
    name: &OsStr,
    mtime: u64,
    path: &Path,
) -> Result<(), UnpackError> {
    fs::utimensat(
        parent_dir,
        name,
        &timestamps(mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(UnpackError::sys("set times", path))
}

fn set_xattrs(file: &File, meta: &Metadata, path: &Path) -> Result<(), UnpackError> {
    for (name, value) in &meta.xattrs {
        match fs::fsetxattr(file, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(errno) => return Err(UnpackError::sys("set extended attribute", path)(errno)),
        }
    }
    Ok(())
}

fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let Some(extensions) = entry.pax_extensions().map_err(UnpackError::corrupt)? else {
        return Ok(Vec::new());
    };
    let mut xattrs = Vec::new();
    for extension in extensions {
        let extension = extension.map_err(UnpackError::corrupt)?;
        if let Ok(key) = extension.key() {
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
            }
        }
    }
    Ok(xattrs)
}

fn uid(raw: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(raw)
}

fn gid(raw: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(raw)
}

fn timestamps(mtime: u64) -> Timestamps {
    let time = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}
