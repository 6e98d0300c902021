//! The small text records wharf keeps in each container's directory, each a line of
//! space-separated fields (the format earlier versions wrote, so that the containers
//! they created are still read):
//! - `creator`, `init`, `monitor`: `<pid> <start time>` of the wharf process creating
//!   the container, of its init process and of its monitor ([`ProcessRecord`]);
//! - `started`: `<unix seconds>` when it was started ([`StartedRecord`]);
//! - `exit`: `<code> <unix seconds>[ oom-killed]`, written by the monitor when the init
//!   ended ([`ExitRecord`]);
//! - `layers`: the diff_ids its root filesystem is made of, one a line ([`LayersRecord`]);
//! - `stopping`: empty, once wharf asked it to stop or killed it ([`StopRequest`]);
//! - `address`: its address on wharf's bridge and its service's key there
//!   ([`AddressRecord`]).
//!
//! A missing record reads as `None` and a damaged one as an error; callers treat both
//! alike, as a bundle still being built has none of them yet.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::proc::{is_same_process, start_time};
use crate::image::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed record", path.display())]
    Malformed { path: PathBuf },
}

/// A process wharf may later need to find alive: pids are reused, so its start time
/// tells whether a live pid is still the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRecord {
    pub pid: i32,
    /// In clock ticks since boot, as /proc/<pid>/stat gives it.
    pub start_time: u64,
}

/// Which of a container's processes a `ProcessRecord` is of; each has its own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The wharf process creating the container: a bundle whose creator died before
    /// it was complete is removed by the next listing.
    Creator,
    /// The container's init process.
    Init,
    /// Its monitor, which ends after the container's last output and its exit record.
    Monitor,
}

impl Role {
    fn file(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Init => "init",
            Role::Monitor => "monitor",
        }
    }
}

impl ProcessRecord {
    /// `pid` as it is now; a process that has already ended gets start time 0, which
    /// no live process matches.
    pub fn of(pid: i32) -> Self {
        ProcessRecord {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the recorded process is alive and still the one recorded.
    pub fn is_alive(&self) -> bool {
        is_same_process(self.pid, self.start_time)
    }

    /// The pid, if the process is alive and still the one recorded.
    pub fn pid_if_alive(&self) -> Option<i32> {
        self.is_alive().then_some(self.pid)
    }

    pub fn read(dir: &Path, role: Role) -> Result<Option<Self>, RecordError> {
        read_record(dir.join(role.file()), |text| {
            let [pid, started] = fields::<2>(text)?;
            Some(ProcessRecord {
                pid: pid.parse().ok()?,
                start_time: started.parse().ok()?,
            })
        })
    }

    pub fn write(&self, dir: &Path, role: Role) -> io::Result<()> {
        let line = format!("{} {}\n", self.pid, self.start_time);
        fs::write(dir.join(role.file()), line)
    }
}

/// When the container was started, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedRecord {
    pub at: SystemTime,
}

impl StartedRecord {
    pub const FILE: &'static str = "started";

    pub fn read(dir: &Path) -> Result<Option<Self>, RecordError> {
        read_record(dir.join(Self::FILE), |text| {
            let [at] = fields::<1>(text)?;
            Some(StartedRecord {
                at: from_unix_seconds(at.parse().ok()?)?,
            })
        })
    }

    pub fn write(&self, dir: &Path) -> io::Result<()> {
        fs::write(dir.join(Self::FILE), format!("{}\n", unix_seconds(self.at)))
    }
}

/// How the container's init process ended, as its monitor saw it: its exit code (or
/// 128 + signal) and when, to the second, and whether the kernel's OOM killer ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    pub code: i32,
    pub at: SystemTime,
    pub oom_killed: bool,
}

impl ExitRecord {
    pub const FILE: &'static str = "exit";

    pub fn read(dir: &Path) -> Result<Option<Self>, RecordError> {
        read_record(dir.join(Self::FILE), |text| {
            let (code, at, oom_killed) = match text.split_whitespace().collect::<Vec<_>>()[..] {
                [code, at] => (code, at, false),
                [code, at, OOM_KILLED] => (code, at, true),
                _ => return None,
            };
            Some(ExitRecord {
                code: code.parse().ok()?,
                at: from_unix_seconds(at.parse().ok()?)?,
                oom_killed,
            })
        })
    }

    /// Written whole or not at all (a new file renamed over): a reader never sees
    /// half a record.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let mut line = format!("{} {}", self.code, unix_seconds(self.at));
        if self.oom_killed {
            line.push(' ');
            line.push_str(OOM_KILLED);
        }
        line.push('\n');
        let partial = dir.join(".exit.new");
        fs::write(&partial, line)?;
        fs::rename(partial, dir.join(Self::FILE))
    }
}

/// The container's address on wharf's bridge (`network: bridge`), held for as long as
/// its directory exists, and the key of its service's records there
/// (`network::service_key`). Containers of earlier versions have no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRecord {
    pub address: std::net::Ipv4Addr,
    pub service_key: Option<String>,
}

impl AddressRecord {
    pub const FILE: &'static str = "address";

    pub fn read(dir: &Path) -> Result<Option<Self>, RecordError> {
        read_record(dir.join(Self::FILE), |text| {
            let (address, service_key) = match fields::<2>(text) {
                Some([address, key]) => (address, Some(key.to_owned())),
                None => (fields::<1>(text)?[0], None),
            };
            let valid_key = service_key
                .as_deref()
                .is_none_or(|key| key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()));
            valid_key.then_some(AddressRecord {
                address: address.parse().ok()?,
                service_key,
            })
        })
    }

    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let line = match &self.service_key {
            Some(key) => format!("{} {key}\n", self.address),
            None => format!("{}\n", self.address),
        };
        fs::write(dir.join(Self::FILE), line)
    }
}

const OOM_KILLED: &str = "oom-killed";

/// wharf asked the container to stop (or killed it): its exit is not the OOM killer's
/// even when an earlier OOM kill in its cgroup is counted. An empty file.
pub struct StopRequest;

impl StopRequest {
    const FILE: &'static str = "stopping";

    pub fn write(dir: &Path) -> io::Result<()> {
        fs::write(dir.join(Self::FILE), "")
    }

    pub fn exists(dir: &Path) -> bool {
        dir.join(Self::FILE).exists()
    }
}

/// The layers (diff_ids, bottom first) the container's root filesystem is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayersRecord {
    pub diff_ids: Vec<Digest>,
}

impl LayersRecord {
    pub const FILE: &'static str = "layers";

    pub fn read(dir: &Path) -> Result<Option<Self>, RecordError> {
        read_record(dir.join(Self::FILE), |text| {
            let diff_ids = text.lines().map(|line| Digest::parse(line).ok());
            Some(LayersRecord {
                diff_ids: diff_ids.collect::<Option<Vec<_>>>()?,
            })
        })
    }

    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let lines: String = self.diff_ids.iter().map(|d| format!("{d}\n")).collect();
        fs::write(dir.join(Self::FILE), lines)
    }
}

/// Reads the record at `path`: None when there is none, an error when `decode` cannot
/// make sense of it.
fn read_record<R>(
    path: PathBuf,
    decode: impl FnOnce(&str) -> Option<R>,
) -> Result<Option<R>, RecordError> {
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Io { path, source }),
    };
    match decode(&text) {
        Some(record) => Ok(Some(record)),
        None => Err(RecordError::Malformed { path }),
    }
}

/// The `N` space-separated fields of a record's line; None for any other number.
fn fields<const N: usize>(text: &str) -> Option<[&str; N]> {
    text.split_whitespace().collect::<Vec<_>>().try_into().ok()
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// None for a time the system clock cannot represent (a damaged record).
fn from_unix_seconds(seconds: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn every_record_reads_back_what_was_written() {
        let dir = temp_dir();
        let dir = dir.path();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for role in [Role::Creator, Role::Init, Role::Monitor] {
            let record = ProcessRecord {
                pid: 4242,
                start_time: 987_654,
            };
            record.write(dir, role).expect("write");
            assert_eq!(ProcessRecord::read(dir, role).expect("read"), Some(record));
        }
        StartedRecord { at }.write(dir).expect("write");
        assert_eq!(
            StartedRecord::read(dir).expect("read"),
            Some(StartedRecord { at })
        );
        for oom_killed in [false, true] {
            let exit = ExitRecord {
                code: 137,
                at,
                oom_killed,
            };
            exit.write(dir).expect("write");
            assert_eq!(ExitRecord::read(dir).expect("read"), Some(exit));
        }
        let layers = LayersRecord {
            diff_ids: vec![Digest::of(b"bottom"), Digest::of(b"top")],
        };
        layers.write(dir).expect("write");
        assert_eq!(LayersRecord::read(dir).expect("read"), Some(layers));
    }

    #[test]
    fn records_written_by_earlier_versions_are_read() {
        let dir = temp_dir();
        let dir = dir.path();
        fs::write(dir.join("init"), "1234 5678\n").expect("write");
        fs::write(dir.join("exit"), "1 1700000000\n").expect("write");
        fs::write(dir.join("started"), "1700000000\n").expect("write");
        assert_eq!(
            ProcessRecord::read(dir, Role::Init).expect("read"),
            Some(ProcessRecord {
                pid: 1234,
                start_time: 5678
            })
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            ExitRecord::read(dir).expect("read"),
            Some(ExitRecord {
                code: 1,
                at,
                oom_killed: false
            })
        );
        assert_eq!(
            StartedRecord::read(dir).expect("read"),
            Some(StartedRecord { at })
        );
    }

    #[test]
    fn a_missing_record_is_none() {
        let dir = temp_dir();
        assert_eq!(
            ProcessRecord::read(dir.path(), Role::Monitor).expect("read"),
            None
        );
        assert_eq!(ExitRecord::read(dir.path()).expect("read"), None);
        assert_eq!(LayersRecord::read(dir.path()).expect("read"), None);
        // A container directory removed meanwhile reads the same.
        let gone = dir.path().join("gone");
        assert_eq!(StartedRecord::read(&gone).expect("read"), None);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let dir = temp_dir();
        let dir = dir.path();
        for text in [
            "",
            "\n",
            "1234",
            "1234 ",
            "1234 x",
            "x 5678",
            "1234 5678 9",
            "-1 -2",
            "99999999999999999999 1",
            "1234 99999999999999999999999",
        ] {
            fs::write(dir.join("init"), text).expect("write");
            assert!(
                matches!(
                    ProcessRecord::read(dir, Role::Init),
                    Err(RecordError::Malformed { .. })
                ),
                "{text:?}"
            );
            fs::write(dir.join("exit"), text).expect("write");
            assert!(ExitRecord::read(dir).is_err(), "{text:?}");
        }
        // A time past what the clock can hold.
        fs::write(dir.join("exit"), format!("1 {}\n", u64::MAX)).expect("write");
        assert!(ExitRecord::read(dir).is_err());
        fs::write(dir.join("started"), "yesterday\n").expect("write");
        assert!(StartedRecord::read(dir).is_err());
        fs::write(dir.join("layers"), "sha256:../../etc\n").expect("write");
        assert!(LayersRecord::read(dir).is_err());
        // Not text at all.
        fs::write(dir.join("monitor"), [0xff, 0xfe, b' ', b'1']).expect("write");
        assert!(ProcessRecord::read(dir, Role::Monitor).is_err());
        fs::write(dir.join("exit"), "137 1700000000 killed\n").expect("write");
        assert!(ExitRecord::read(dir).is_err());
    }

    #[test]
    fn a_record_of_this_process_finds_it_alive() {
        let me = std::process::id() as i32;
        assert!(ProcessRecord::of(me).is_alive());
        let reused = ProcessRecord {
            pid: me,
            start_time: ProcessRecord::of(me).start_time + 1,
        };
        assert!(!reused.is_alive(), "another start time is another process");
    }
}
