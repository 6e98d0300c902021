//! Unpacking a layer tar into its own directory, safely.
//!
//! Whatever the archive says, nothing is written outside the directory: paths are
//! cleaned lexically (`..` cannot climb above the root, absolute paths become
//! relative), parent directories are resolved by pathrs inside the root (a symlink
//! `etc -> /etc` planted by an earlier entry resolves to `<root>/etc`), the last
//! component is never followed (existing entries are replaced, files are created
//! with O_EXCL|O_NOFOLLOW) and hardlink targets are resolved inside the root too.
//! OCI whiteouts become overlayfs whiteouts so that layers stack with overlayfs.
//!
//! Nor can a layer take more of the host than it should: its size and entry count
//! are bounded ([`LayerLimits`]), the holes of sparse files stay holes, device nodes
//! are not created, and extended attributes that act on the host are refused.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pathrs::flags::OpenFlags;
use pathrs::Root;
use rustix::fs::{self as fs, AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::digest::{Digest, HashingReader};
use super::error::{StoreError, UnpackError};
use super::oci::Compression;
use super::tar_guard::ExtensionGuard;
use crate::manifest::ByteSize;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Set on a layer directory by wharf: the digests of the blobs known to unpack to it.
/// Root-only (trusted.*), and no image can set it (see [`keep_xattr`]).
const BLOBS_XATTR: &str = "trusted.wharf.blobs";
/// Room for about fifty digests; when full, the list starts again.
const BLOBS_XATTR_MAX: usize = 4096;

/// How often, in bytes written, unpacking checks that the free space reserve is left:
/// an estimate made before cannot know what a layer of zeros unpacks to.
pub const SPACE_CHECK_EVERY: u64 = 32 << 20;

/// The environment variable that sets [`LayerLimits::max_size`] (e.g. `200Gi`).
pub const MAX_LAYER_SIZE_ENV: &str = "WHARF_MAX_LAYER_SIZE";

/// Bounds on what one layer may take of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLimits {
    /// Sum of the sizes of a layer's entries. A sparse file counts with its
    /// apparent size: its holes take no disk, but they are read (as zeros) all the
    /// same, so this bounds the time spent as well as the disk used.
    pub max_size: u64,
    /// Entries of any kind: a million empty files cost inodes and time, not bytes.
    pub max_entries: u64,
    /// Free space the store's filesystem keeps after a layer: a layer is not
    /// started unless this much plus an estimate of its unpacked size is free, and
    /// stops when less is left (checked every [`SPACE_CHECK_EVERY`] bytes written).
    pub min_free: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits {
            max_size: 64 << 30,
            max_entries: 1_000_000,
            min_free: 128 << 20,
        }
    }
}

impl LayerLimits {
    /// The defaults, with the size limit from [`MAX_LAYER_SIZE_ENV`] when it is set.
    pub fn from_env() -> Result<Self, StoreError> {
        let mut limits = LayerLimits::default();
        let text = std::env::var_os(MAX_LAYER_SIZE_ENV).unwrap_or_default();
        if !text.is_empty() {
            limits.max_size = text
                .to_string_lossy()
                .parse::<ByteSize>()
                .map_err(|message| StoreError::InvalidSetting {
                    name: MAX_LAYER_SIZE_ENV,
                    message,
                })?
                .bytes();
        }
        Ok(limits)
    }
}

/// Unpacks the layer blob at `blob` into the empty directory `dest` and checks that
/// the uncompressed stream has the digest `diff_id`, within the default limits.
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
) -> Result<(), UnpackError> {
    unpack_layer_limited(blob, compression, diff_id, dest, &LayerLimits::default())
}

/// Like [`unpack_layer`], refusing a layer beyond `limits`.
pub fn unpack_layer_limited(
    blob: &Path,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<(), UnpackError> {
    let file = File::open(blob).map_err(UnpackError::io("open the layer blob"))?;
    unpack_layer_from(file, compression, diff_id, dest, limits)
}

/// Like [`unpack_layer_limited`], reading the blob from `blob` (e.g. while it
/// downloads). When the disk fills, the error says so and where.
pub fn unpack_layer_from(
    blob: impl Read,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<(), UnpackError> {
    extract_all(blob, compression, diff_id, dest, limits).map_err(|err| {
        if is_disk_full(&err) {
            UnpackError::DiskFull {
                dir: dest.to_owned(),
                source: Box::new(err),
            }
        } else {
            err
        }
    })
}

fn extract_all(
    blob: impl Read,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
    limits: &LayerLimits,
) -> Result<(), UnpackError> {
    let mut hashing = HashingReader::new(decompress(blob, compression)?);
    let mut extractor = Extractor::new(dest, limits.min_free)?;
    let mut archive = tar::Archive::new(ExtensionGuard::new(&mut hashing));
    let (mut entries, mut size) = (0u64, 0u64);
    for entry in archive.entries().map_err(UnpackError::corrupt)? {
        let mut entry = entry.map_err(UnpackError::corrupt)?;
        // Counted before anything is written, so a refused layer never gets past
        // its limits on disk.
        entries += 1;
        size = size.saturating_add(entry.size());
        if entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        if size > limits.max_size {
            return Err(UnpackError::TooLarge {
                limit: ByteSize::from_bytes(limits.max_size),
            });
        }
        extractor.extract(&mut entry)?;
    }
    extractor.finish()?;
    check_diff_id(hashing, diff_id)
}

/// Checks that the layer blob at `blob` decompresses to `diff_id`, without
/// unpacking it: a layer unpacked from another blob stands for this one only then.
pub fn verify_layer(
    blob: &Path,
    compression: Compression,
    diff_id: &Digest,
) -> Result<(), UnpackError> {
    let file = File::open(blob).map_err(UnpackError::io("open the layer blob"))?;
    check_diff_id(HashingReader::new(decompress(file, compression)?), diff_id)
}

fn decompress<'a>(
    blob: impl Read + 'a,
    compression: Compression,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let buffered = BufReader::with_capacity(256 * 1024, blob);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(buffered)
                .map_err(|err| UnpackError::Corrupt(format!("zstd: {err}")))?,
        ),
    })
}

/// Reads what is left of the uncompressed stream and compares its digest.
fn check_diff_id<R: Read>(hashing: HashingReader<R>, diff_id: &Digest) -> Result<(), UnpackError> {
    let actual = hashing.finish().map_err(UnpackError::corrupt)?;
    if actual != *diff_id {
        return Err(UnpackError::DiffIdMismatch {
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

/// Whether the layer directory `layer` was recorded as unpacked from `blob` (or
/// from a blob verified to unpack to the same content).
pub fn unpacked_from(layer: &Path, blob: &Digest) -> bool {
    read_blobs(layer).lines().any(|line| line == blob.as_str())
}

/// Records that the layer directory `layer` holds what `blob` unpacks to. A
/// filesystem without extended attributes records nothing: the blob is then
/// verified again each time, which is slower but as safe.
pub fn record_blob(layer: &Path, blob: &Digest) -> Result<(), UnpackError> {
    let mut blobs = read_blobs(layer);
    if blobs.len() + blob.as_str().len() + 1 > BLOBS_XATTR_MAX {
        blobs.clear();
    }
    blobs.push_str(blob.as_str());
    blobs.push('\n');
    let dir = File::open(layer).map_err(UnpackError::io("open the layer directory"))?;
    match fs::fsetxattr(&dir, BLOBS_XATTR, blobs.as_bytes(), XattrFlags::empty()) {
        Ok(()) | Err(Errno::OPNOTSUPP) => Ok(()),
        Err(errno) => Err(UnpackError::sys("record the blob of", layer)(errno)),
    }
}

/// The recorded blob digests, one a line; empty when none are (or they cannot be read).
fn read_blobs(layer: &Path) -> String {
    let mut buffer = [0u8; BLOBS_XATTR_MAX];
    match fs::getxattr(layer, BLOBS_XATTR, &mut buffer[..]) {
        Ok(len) => String::from_utf8_lossy(&buffer[..len]).into_owned(),
        Err(_) => String::new(),
    }
}

/// Whether the disk (or the quota) filled up, whatever was being written.
fn is_disk_full(err: &UnpackError) -> bool {
    let errno = match err {
        UnpackError::Io { source, .. } | UnpackError::Sys { source, .. } => source.raw_os_error(),
        UnpackError::Resolve { source, .. } => match source.kind() {
            pathrs::error::ErrorKind::OsError(errno) => errno,
            _ => None,
        },
        _ => None,
    };
    errno.is_some_and(|errno| {
        errno == Errno::NOSPC.raw_os_error() || errno == Errno::DQUOT.raw_os_error()
    })
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
    /// File data passes through here, allocated once per layer.
    buffer: Vec<u8>,
    space: SpaceWatch,
}

/// Checks the free space left on the layer's disk as data is written.
struct SpaceWatch {
    dir: PathBuf,
    reserve: u64,
    unchecked: u64,
}

impl SpaceWatch {
    fn wrote(&mut self, bytes: u64) -> Result<(), UnpackError> {
        self.unchecked += bytes;
        if self.unchecked < SPACE_CHECK_EVERY {
            return Ok(());
        }
        self.unchecked = 0;
        let stat =
            fs::statvfs(&self.dir).map_err(UnpackError::sys("check the free space", &self.dir))?;
        // f_bavail: what is left to anyone but root; root's reserved blocks stay the host's.
        if stat.f_bavail.saturating_mul(stat.f_frsize) < self.reserve {
            return Err(UnpackError::ReserveReached {
                dir: self.dir.clone(),
                reserve: ByteSize::from_bytes(self.reserve),
            });
        }
        Ok(())
    }
}

impl Extractor {
    fn new(dest: &Path, reserve: u64) -> Result<Self, UnpackError> {
        let root = Root::open(dest).map_err(UnpackError::resolve(dest))?;
        Ok(Extractor {
            dest: dest.to_owned(),
            root,
            dir_times: Vec::new(),
            last_parent: None,
            buffer: vec![0; COPY_BUFFER],
            space: SpaceWatch {
                dir: dest.to_owned(),
                reserve,
                unchecked: 0,
            },
        })
    }

    fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let parts = clean(&entry.path_bytes());
        let path = join(&parts);
        let xattrs = pax_xattrs(entry, &path)?;
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
                    "whiteout {path:?} names no file"
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
                write_content(
                    entry,
                    &mut file,
                    kind.is_gnu_sparse(),
                    &path,
                    &mut self.buffer,
                    &mut self.space,
                )?;
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
            // Device nodes are not created: containers get /dev from a tmpfs and
            // their root filesystem is mounted nodev, so in a layer they would only
            // give host users a way to a device.
            tar::EntryType::Char | tar::EntryType::Block => {}
            tar::EntryType::Fifo => {
                // A FIFO has no device numbers; Python's tarfile leaves the fields
                // empty, which is why they are not read.
                self.remove_existing(&parent_dir, parent, name)?;
                fs::mknodat(
                    &parent_dir,
                    name.as_os_str(),
                    FileType::Fifo,
                    Mode::empty(),
                    fs::makedev(0, 0),
                )
                .map_err(created("create FIFO"))?;
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
        // Directories the archive does not list (their entries may come later, or
        // never) are made 0755, as Docker makes them: wharf's umask (077) must not make
        // them private inside the image, where they would hide a lower layer's mode.
        let missing: Vec<PathBuf> = match self.root.resolve(&path) {
            Ok(_) => Vec::new(),
            Err(_) => (1..=parent.len())
                .map(|depth| join(&parent[..depth]))
                .filter(|prefix| self.root.resolve(prefix).is_err())
                .collect(),
        };
        let handle = self
            .root
            .mkdir_all(&path, &std::fs::Permissions::from_mode(0o755))
            .map_err(UnpackError::resolve(&path))?;
        for dir in &missing {
            let opened = self
                .root
                .resolve(dir)
                .and_then(|dir| dir.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY))
                .map_err(UnpackError::resolve(dir))?;
            fs::fchmod(&opened, Mode::from_raw_mode(0o755))
                .map_err(UnpackError::sys("set mode", dir))?;
        }
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

/// Bytes read from an entry at a time: a multiple of [`HOLE_BLOCK`], so that every
/// block but a file's last starts at a multiple of it.
const COPY_BUFFER: usize = 256 * 1024;
/// The unit in which a sparse file's zeros become holes: a filesystem block.
const HOLE_BLOCK: usize = 4096;
static ZERO_BLOCK: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Copies an entry's data into `file`. The tar crate hands a sparse file's holes
/// over as zeros: for a sparse entry, all-zero blocks are skipped with a seek
/// instead of written, so holes stay holes (a 120-byte layer cannot become 1 GiB
/// of disk). Read errors mean a corrupt layer; write errors name the file.
fn write_content(
    data: &mut impl Read,
    file: &mut File,
    sparse: bool,
    path: &Path,
    buffer: &mut [u8],
    space: &mut SpaceWatch,
) -> Result<(), UnpackError> {
    let write_error = |source| UnpackError::Sys {
        what: "write",
        path: path.to_owned(),
        source,
    };
    let mut length = 0u64;
    loop {
        let filled = fill(data, buffer).map_err(UnpackError::corrupt)?;
        if filled == 0 {
            break;
        }
        length += filled as u64;
        let mut rest = &buffer[..filled];
        while !rest.is_empty() {
            let holes = if sparse { run(rest, true) } else { 0 };
            let written = if holes > 0 {
                rest = &rest[holes..];
                file.seek(SeekFrom::Current(holes as i64)).map(drop)
            } else {
                let data_len = if sparse { run(rest, false) } else { rest.len() };
                let (block, after) = rest.split_at(data_len);
                rest = after;
                space.wrote(block.len() as u64)?;
                file.write_all(block)
            };
            written.map_err(write_error)?;
        }
    }
    if sparse {
        // A file that ends in a hole has not reached its length yet.
        file.set_len(length).map_err(write_error)?;
    }
    Ok(())
}

/// Reads until `buffer` is full or the data ends; returns the bytes read.
fn fill(data: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match data.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Bytes at the start of `bytes` in whole blocks (the last may be short) that are
/// all zeros (`zeros`) or that each hold data (`!zeros`).
fn run(bytes: &[u8], zeros: bool) -> usize {
    bytes
        .chunks(HOLE_BLOCK)
        .take_while(|block| (**block == ZERO_BLOCK[..block.len()]) == zeros)
        .map(<[u8]>::len)
        .sum()
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

/// The extended attributes an entry's PAX header asks for, those wharf applies.
fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let Some(extensions) = entry.pax_extensions().map_err(UnpackError::corrupt)? else {
        return Ok(Vec::new());
    };
    let mut xattrs = Vec::new();
    for extension in extensions {
        let extension = extension.map_err(UnpackError::corrupt)?;
        if let Ok(key) = extension.key() {
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if keep_xattr(name, path)? {
                    xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(xattrs)
}

/// Whether an image's extended attribute is applied. `trusted.*` (overlayfs
/// redirects and opaque markers, wharf's own records) and `security.*` (SELinux
/// labels, IMA/EVM) act on the host and refuse the layer. `security.capability` is
/// dropped instead: containers always run with no_new_privs, so file capabilities
/// grant nothing inside, while on host paths they are only a risk.
fn keep_xattr(name: &str, path: &Path) -> Result<bool, UnpackError> {
    if name == "security.capability" {
        return Ok(false);
    }
    if name.starts_with("trusted.") || name.starts_with("security.") {
        return Err(UnpackError::ForbiddenXattr {
            path: path.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(true)
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
