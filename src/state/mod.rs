//! The state database (`<root>/state.redb`): what was last applied for each service,
//! an apply history, restart counts and a bounded event log. The host's containers
//! stay the truth about what runs; this is history and what was applied.
//!
//! One process writes at a time (apply holds the reconcile lock); any number of
//! others open it read-only meanwhile (redb's `ConcurrencyMode::SingleWriter`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use redb::{
    Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::health::Verdict;
use crate::manifest::{Service, ServiceSpec};

const APPLIED: TableDefinition<&str, &str> = TableDefinition::new("applied");
const HISTORY: TableDefinition<u64, &str> = TableDefinition::new("history");
const RESTARTS: TableDefinition<&str, u64> = TableDefinition::new("restarts");
const EVENTS: TableDefinition<u64, &str> = TableDefinition::new("events");
/// When the agent will next restart a crash-looping replica (Unix seconds), by slot.
const NEXT_RESTART: TableDefinition<&str, u64> = TableDefinition::new("next-restart");

/// The agent's latest health verdict of each checked container (JSON), by id.
const HEALTH: TableDefinition<&str, &str> = TableDefinition::new("health");
/// Rollouts the agent stopped and holds back (JSON `StoppedRollout`), by service.
const STOPPED_ROLLOUTS: TableDefinition<&str, &str> = TableDefinition::new("stopped-rollouts");

/// The event log keeps this many entries, dropping the oldest.
pub const MAX_EVENTS: u64 = 10_000;

/// Why the state database could not be opened or written. Each names the file; the
/// cause is the error's source, so `crate::error_chain` prints the path, then why.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// redb failed: opening, a transaction, a table or a commit.
    #[error("state database {}", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// The file is no database redb can read (truncated, overwritten): readers report
    /// it, the next writer moves it aside.
    #[error(
        "state database {} is damaged, so history and events cannot be read (the next `wharf apply` or agent moves it aside and starts a new one)",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// A record could not be written as JSON.
    #[error("cannot encode {what} for the state database {}", path.display())]
    Encode {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The damaged file could not be moved aside to start a new one.
    #[error("cannot move the damaged state database {} aside", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a write transaction failed, before `StateStore::write` adds the path.
#[derive(Debug)]
enum Failure {
    Database(redb::Error),
    Encode(&'static str, serde_json::Error),
}

impl Failure {
    fn at(self, path: &Path) -> StateError {
        let path = path.to_owned();
        match self {
            Failure::Database(source) => StateError::Database { path, source },
            Failure::Encode(what, source) => StateError::Encode { path, what, source },
        }
    }
}

impl From<redb::Error> for Failure {
    fn from(err: redb::Error) -> Self {
        Failure::Database(err)
    }
}

// Each redb operation has its own error type, all convertible to `redb::Error`: one
// impl each lets `?` work on any of them inside a write. (A blanket impl over
// `Into<redb::Error>` could overlap with `From<Failure> for Failure` for coherence.)
macro_rules! database_failure {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for Failure {
            fn from(err: $error) -> Self {
                Failure::Database(err.into())
            }
        })*
    };
}

database_failure!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
);

/// `value` as JSON; `what` names it if it cannot be encoded.
fn encode(what: &'static str, value: &impl Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|err| Failure::Encode(what, err))
}

/// What the last apply set for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub spec: ServiceSpec,
    pub spec_hash: String,
    pub manifest: PathBuf,
    pub generation: u64,
}

/// One apply, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyRecord {
    pub generation: u64,
    /// RFC 3339.
    pub time: String,
    pub dir: PathBuf,
    /// e.g. "2 created, 1 replaced; 1 failed".
    pub summary: String,
}

/// A rollout the agent stopped (a new replica failed) and will not try again until the
/// manifest changes or, for `pull: always`, the tag moves again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoppedRollout {
    /// RFC 3339.
    pub time: String,
    /// The replica whose replacement failed.
    pub replica: u32,
    pub cause: String,
    /// What the rollout was moving to: the spec hash and, for `pull: always`, the
    /// image digest. Containers running it mean the record is out of date.
    pub spec_hash: String,
    pub image_digest: Option<String>,
}

impl StoppedRollout {
    pub fn new(replica: u32, cause: &str, spec_hash: &str, image_digest: Option<&str>) -> Self {
        StoppedRollout {
            time: now(),
            replica,
            cause: cause.to_owned(),
            spec_hash: spec_hash.to_owned(),
            image_digest: image_digest.map(str::to_owned),
        }
    }

    /// Whether the stopped rollout was moving to exactly this target.
    pub fn is_towards(&self, spec_hash: &str, image_digest: Option<&str>) -> bool {
        self.spec_hash == spec_hash && self.image_digest.as_deref() == image_digest
    }

    /// Whether a container runs what the rollout was moving to (then the record is out
    /// of date: a later apply got there).
    pub fn reached_by(&self, spec_hash: &str, image_digest: &str) -> bool {
        self.spec_hash == spec_hash
            && self
                .image_digest
                .as_deref()
                .is_none_or(|target| target == image_digest)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: String,
    pub message: String,
}

pub struct StateStore {
    db: Database,
    path: PathBuf,
    /// Set when opening found the file damaged and started a new one: what happened.
    recovered: Option<String>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl StateStore {
    /// Opens (creating) the database for writing. A damaged file (truncated, or not a
    /// database) is moved aside with a timestamp and a new one started, with an event
    /// saying so: wharf's history is lost, but the host's containers are the truth and
    /// nothing else depends on it.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        let path = root.join("state.redb");
        let create = |path: &Path| -> Result<Database, redb::Error> {
            let db = Builder::new()
                .set_concurrency_mode(ConcurrencyMode::SingleWriter)
                .create(path)?;
            check_readable(&db.begin_read()?)?;
            Ok(db)
        };
        let damage = match create(&path) {
            Ok(db) => {
                return Ok(StateStore {
                    db,
                    path,
                    recovered: None,
                })
            }
            Err(err) if is_damage(&err) => err,
            Err(source) => return Err(StateError::Database { path, source }),
        };
        let stamp: String = now().chars().filter(char::is_ascii_alphanumeric).collect();
        let aside = path.with_file_name(format!("state.redb.damaged-{stamp}"));
        std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        let note = format!(
            "state database {} was damaged ({damage}); moved it to {} and started a new one (earlier history and events are in that file)",
            path.display(),
            aside.display()
        );
        let db = create(&path).map_err(|source| StateError::Database {
            path: path.clone(),
            source,
        })?;
        let store = StateStore {
            db,
            path,
            recovered: None,
        };
        store.log_events(std::slice::from_ref(&note))?;
        Ok(StateStore {
            recovered: Some(note),
            ..store
        })
    }

    /// What opening did when it found the file damaged, for the caller to say.
    pub fn recovered(&self) -> Option<&str> {
        self.recovered.as_deref()
    }

    /// Runs `body` in one write transaction and commits it. Any failure drops the
    /// transaction uncommitted (redb aborts it) and is reported with this file's path.
    fn write<T>(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, Failure>,
    ) -> Result<T, StateError> {
        let run = || -> Result<T, Failure> {
            let txn = self.db.begin_write()?;
            let value = body(&txn)?;
            txn.commit()?;
            Ok(value)
        };
        run().map_err(|failure| failure.at(&self.path))
    }

    /// Records an apply: the new generation, what each service is now applied as, the
    /// services it removed, and one event per step. Returns the generation. A service
    /// applied or removed has no stopped rollout any more (an agent that still holds
    /// one back publishes it again).
    pub fn record_apply(
        &self,
        dir: &Path,
        applied: &[Service],
        removed: &[String],
        restarted: &[String],
        summary: &str,
        events: &[String],
    ) -> Result<u64, StateError> {
        self.write(|txn| {
            let generation = {
                let mut history = txn.open_table(HISTORY)?;
                let generation = history.last()?.map_or(1, |(key, _)| key.value() + 1);
                let record = ApplyRecord {
                    generation,
                    time: now(),
                    dir: dir.to_owned(),
                    summary: summary.to_owned(),
                };
                let json = encode("an apply record", &record)?;
                history.insert(generation, json.as_str())?;
                generation
            };
            {
                let mut table = txn.open_table(APPLIED)?;
                for service in applied {
                    let entry = Applied {
                        spec: service.spec.clone(),
                        spec_hash: service.hash.to_string(),
                        manifest: service.file.clone(),
                        generation,
                    };
                    let json = encode("an applied service", &entry)?;
                    table.insert(service.name(), json.as_str())?;
                }
                for name in removed {
                    table.remove(name.as_str())?;
                }
            }
            {
                let mut table = txn.open_table(STOPPED_ROLLOUTS)?;
                let names = applied.iter().map(Service::name);
                for name in names.chain(removed.iter().map(String::as_str)) {
                    table.remove(name)?;
                }
            }
            {
                let mut restarts = txn.open_table(RESTARTS)?;
                for slot in restarted {
                    let count = restarts.get(slot.as_str())?.map_or(0, |v| v.value());
                    restarts.insert(slot.as_str(), count + 1)?;
                }
            }
            append_events(txn, events)?;
            Ok(generation)
        })
    }

    /// Records when replica `slot` ("web/0") will next be restarted (None: not waiting).
    pub fn set_next_restart(&self, slot: &str, at: Option<SystemTime>) -> Result<(), StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(NEXT_RESTART)?;
            match at {
                Some(at) => {
                    let seconds = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    table.insert(slot, seconds)?;
                }
                None => {
                    table.remove(slot)?;
                }
            }
            Ok(())
        })
    }

    /// Replaces the recorded health verdicts with `verdicts` (by container id).
    pub fn set_health(&self, verdicts: &BTreeMap<String, Verdict>) -> Result<(), StateError> {
        self.replace_all(HEALTH, verdicts)
    }

    /// Replaces the recorded stopped rollouts with `rollouts` (by service).
    pub fn set_stopped_rollouts(
        &self,
        rollouts: &BTreeMap<String, StoppedRollout>,
    ) -> Result<(), StateError> {
        self.replace_all(STOPPED_ROLLOUTS, rollouts)
    }

    /// Replaces the whole content of a table of JSON values.
    fn replace_all<T: Serialize>(
        &self,
        definition: TableDefinition<&str, &str>,
        entries: &BTreeMap<String, T>,
    ) -> Result<(), StateError> {
        self.write(|txn| {
            txn.delete_table(definition)?;
            let mut table = txn.open_table(definition)?;
            for (key, value) in entries {
                let json = serde_json::to_string(value).unwrap_or_default();
                table.insert(key.as_str(), json.as_str())?;
            }
            Ok(())
        })
    }

    /// Adds entries to the event log.
    pub fn log_events(&self, events: &[String]) -> Result<(), StateError> {
        self.write(|txn| Ok(append_events(txn, events)?))
    }

    /// Forgets services (after `wharf down`), with an event each after `removals`
    /// (what happened to each container).
    pub fn forget(&self, services: &[String], removals: &[String]) -> Result<(), StateError> {
        let mut events = removals.to_vec();
        events.extend(services.iter().map(|s| format!("took down {s}")));
        self.write(|txn| {
            for definition in [APPLIED, STOPPED_ROLLOUTS] {
                let mut table = txn.open_table(definition)?;
                for name in services {
                    table.remove(name.as_str())?;
                }
            }
            append_events(txn, &events)?;
            Ok(())
        })
    }
}

fn append_events(txn: &redb::WriteTransaction, events: &[String]) -> Result<(), redb::Error> {
    let mut table = txn.open_table(EVENTS)?;
    let first = table.last()?.map_or(0, |(key, _)| key.value() + 1);
    let time = now();
    for (key, message) in (first..).zip(events) {
        let json = serde_json::to_string(&Event {
            time: time.clone(),
            message: message.clone(),
        })
        .unwrap_or_default();
        table.insert(key, json.as_str())?;
    }
    while table.len()? > MAX_EVENTS {
        table.pop_first()?;
    }
    Ok(())
}

/// Whether opening failed because the file is no database redb can read (truncated,
/// overwritten), as opposed to busy or unreadable.
fn is_damage(err: &redb::Error) -> bool {
    match err {
        // A read-only open of a file that needs repair.
        redb::Error::RepairAborted | redb::Error::Corrupted(_) => true,
        redb::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        _ => false,
    }
}

/// Reads the root, first and last entries of every table: a truncated or overwritten
/// file fails here rather than showing as an empty history. (Cheap: one path down
/// each tree, not a scan.)
fn check_readable(txn: &redb::ReadTransaction) -> Result<(), redb::Error> {
    fn ends<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &redb::ReadTransaction,
        table: TableDefinition<'_, K, V>,
    ) -> Result<(), redb::Error> {
        match txn.open_table(table) {
            Ok(table) => {
                table.len()?;
                table.first()?;
                table.last()?;
                Ok(())
            }
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
    ends(txn, APPLIED)?;
    ends(txn, HISTORY)?;
    ends(txn, RESTARTS)?;
    ends(txn, EVENTS)?;
    ends(txn, NEXT_RESTART)?;
    ends(txn, HEALTH)?;
    ends(txn, STOPPED_ROLLOUTS)?;
    ends(txn, TAG_CHECKS_FAILING)?;
    Ok(())
}

/// A read-only view, usable while another process writes.
pub struct StateView {
    db: redb::ReadOnlyDatabase,
}

impl StateView {
    /// None when no apply has created the database yet (or it is busy being
    /// created); an error when the file is damaged, which readers must say.
    pub fn open(root: &Path) -> Result<Option<Self>, StateError> {
        let path = root.join("state.redb");
        if !path.exists() {
            return Ok(None);
        }
        let open = || -> Result<redb::ReadOnlyDatabase, redb::Error> {
            let db = Builder::new()
                .set_concurrency_mode(ConcurrencyMode::SingleWriter)
                .open_read_only(&path)?;
            check_readable(&db.begin_read()?)?;
            Ok(db)
        };
        match open() {
            Ok(db) => Ok(Some(StateView { db })),
            Err(source) if is_damage(&source) => Err(StateError::Damaged { path, source }),
            Err(_) => Ok(None),
        }
    }

    fn read<T>(&self, table: TableDefinition<'_, impl redb::Key + 'static, &'static str>) -> Vec<T>
    where
        T: serde::de::DeserializeOwned,
    {
        let Ok(txn) = self.db.begin_read() else {
            return Vec::new();
        };
        let Ok(table) = txn.open_table(table) else {
            return Vec::new();
        };
        let Ok(rows) = table.iter() else {
            return Vec::new();
        };
        rows.flatten()
            .filter_map(|(_, value)| serde_json::from_str(value.value()).ok())
            .collect()
    }

    pub fn applied(&self) -> Vec<Applied> {
        self.read(APPLIED)
    }

    pub fn history(&self) -> Vec<ApplyRecord> {
        self.read(HISTORY)
    }

    /// When apply `generation` was recorded (to the second), if it is in the history.
    pub fn apply_time(&self, generation: u64) -> Option<SystemTime> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(HISTORY).ok()?;
        let json = table.get(generation).ok()??;
        let record: ApplyRecord = serde_json::from_str(json.value()).ok()?;
        humantime::parse_rfc3339(&record.time).ok()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events_after(None)
            .into_iter()
            .map(|(_, event)| event)
            .collect()
    }

    /// Events numbered after `after` (all when None), with their numbers; numbers
    /// keep growing when the oldest events are dropped.
    pub fn events_after(&self, after: Option<u64>) -> Vec<(u64, Event)> {
        let Ok(txn) = self.db.begin_read() else {
            return Vec::new();
        };
        let Ok(table) = txn.open_table(EVENTS) else {
            return Vec::new();
        };
        let first = after.map_or(0, |n| n + 1);
        let Ok(rows) = table.range(first..) else {
            return Vec::new();
        };
        rows.flatten()
            .filter_map(|(key, value)| {
                let event = serde_json::from_str(value.value()).ok()?;
                Some((key.value(), event))
            })
            .collect()
    }

    /// When the agent will next restart replica `slot`, if it is holding one back.
    pub fn next_restart(&self, slot: &str) -> Option<SystemTime> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(NEXT_RESTART).ok()?;
        let seconds = table.get(slot).ok()??.value();
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
    }

    /// The agent's latest health verdict for container `id`, if it checks it.
    pub fn health(&self, id: &str) -> Option<Verdict> {
        self.entry(HEALTH, id)
    }

    /// The rollout of `service` the agent stopped and holds back, if any.
    pub fn stopped_rollout(&self, service: &str) -> Option<StoppedRollout> {
        self.entry(STOPPED_ROLLOUTS, service)
    }

    fn entry<T: serde::de::DeserializeOwned>(
        &self,
        definition: TableDefinition<&str, &str>,
        key: &str,
    ) -> Option<T> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(definition).ok()?;
        let json = table.get(key).ok()??;
        serde_json::from_str(json.value()).ok()
    }

    /// Restarts of replica `slot` ("web/0") recorded so far.
    pub fn restarts(&self, slot: &str) -> u64 {
        self.db
            .begin_read()
            .ok()
            .and_then(|txn| txn.open_table(RESTARTS).ok())
            .and_then(|table| table.get(slot).ok().flatten().map(|v| v.value()))
            .unwrap_or(0)
    }
}

/// Services whose `pull: always` tag the agent cannot check (JSON `TagCheckFailing`),
/// by service.
const TAG_CHECKS_FAILING: TableDefinition<&str, &str> = TableDefinition::new("tag-checks-failing");

/// The agent cannot ask a service's registry what its `pull: always` tag resolves to
/// (the containers keep running what they run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagCheckFailing {
    pub registry: String,
    /// RFC 3339: the first failed attempt.
    pub since: String,
    /// Failed attempts so far.
    pub attempts: u64,
    /// What the last attempt failed with.
    pub error: String,
}

impl StateStore {
    /// Replaces the recorded failing tag checks with `failing` (by service).
    pub fn set_tag_checks_failing(
        &self,
        failing: &BTreeMap<String, TagCheckFailing>,
    ) -> Result<(), StateError> {
        self.replace_all(TAG_CHECKS_FAILING, failing)
    }
}

impl StateView {
    /// Why the agent cannot check the tag of `service` now, if it cannot.
    pub fn tag_check_failing(&self, service: &str) -> Option<TagCheckFailing> {
        self.entry(TAG_CHECKS_FAILING, service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn service(name: &str) -> Service {
        let text = format!("apiVersion: wharf/v1\nkind: Service\nname: {name}\nimage: busybox\n");
        parse_manifest(Path::new("/srv/m/s.yaml"), text.as_bytes())
            .expect("valid")
            .remove(0)
    }

    #[test]
    fn a_damaged_database_is_reported_then_moved_aside_and_started_anew() {
        let root = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(root.path()).expect("open");
        store.log_events(&["applied web".into()]).expect("log");
        drop(store);
        let path = root.path().join("state.redb");
        let size = std::fs::metadata(&path).expect("stat").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open file");
        file.set_len(size / 3).expect("truncate");

        // Readers say what is wrong and where instead of showing an empty history.
        let err = StateView::open(root.path()).err().expect("reported");
        assert!(err.to_string().contains("state.redb"), "{err}");
        assert!(err.to_string().contains("damaged"), "{err}");
        // The cause is kept as the source: the chain names the file, then why, once.
        let cause = std::error::Error::source(&err)
            .expect("a cause")
            .to_string();
        let chain = crate::error_chain(&err);
        assert!(chain.ends_with(&format!("one): {cause}")), "{chain}");
        assert_eq!(chain.matches(&cause).count(), 1, "{chain}");

        // The next writer keeps the damaged file for inspection and starts again.
        let store = StateStore::open(root.path()).expect("recovered");
        assert!(store
            .recovered()
            .is_some_and(|note| note.contains("moved it to")));
        drop(store);
        let view = StateView::open(root.path())
            .expect("readable")
            .expect("exists");
        let events = view.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            events[0].message.contains("was damaged"),
            "{}",
            events[0].message
        );
        let aside: Vec<String> = std::fs::read_dir(root.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("state.redb.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(
            events[0].message.contains(&aside[0]),
            "{}",
            events[0].message
        );
    }

    #[test]
    fn a_stopped_rollout_names_the_exact_target_and_is_out_of_date_once_a_container_runs_it() {
        // pull: always: the spec hash and the digest the tag moved to.
        let moved = StoppedRollout::new(0, "unhealthy", "h2", Some("sha256:new"));
        assert!(moved.is_towards("h2", Some("sha256:new")));
        assert!(
            !moved.is_towards("h2", Some("sha256:newer")),
            "the tag moved again"
        );
        assert!(
            !moved.is_towards("h3", Some("sha256:new")),
            "the manifest changed"
        );
        assert!(
            !moved.reached_by("h2", "sha256:old"),
            "the rolled-back replica"
        );
        assert!(moved.reached_by("h2", "sha256:new"));

        // Any other policy: the spec hash alone.
        let edited = StoppedRollout::new(1, "exited 1", "h2", None);
        assert!(edited.is_towards("h2", None));
        assert!(!edited.is_towards("h2", Some("sha256:new")));
        assert!(edited.reached_by("h2", "sha256:whatever"));
        assert!(!edited.reached_by("h1", "sha256:whatever"));
    }

    #[test]
    fn applies_are_numbered_and_readable_while_the_writer_is_open() {
        let root = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(root.path()).expect("open");
        let dir = Path::new("/srv/m");
        let first = store
            .record_apply(
                dir,
                &[service("web"), service("db")],
                &[],
                &[],
                "2 created",
                &["create web/0".into()],
            )
            .expect("record");
        let second = store
            .record_apply(
                dir,
                &[service("web")],
                &["db".into()],
                &["web/0".into()],
                "1 restarted",
                &[],
            )
            .expect("record");
        assert_eq!((first, second), (1, 2));

        // Another reader, while the writer is still open.
        let view = StateView::open(root.path())
            .expect("readable")
            .expect("read-only view");
        let applied = view.applied();
        assert_eq!(applied.len(), 1);
        assert_eq!(
            (applied[0].spec.name.as_str(), applied[0].generation),
            ("web", 2)
        );
        assert_eq!(
            view.history()
                .iter()
                .map(|h| h.summary.as_str())
                .collect::<Vec<_>>(),
            ["2 created", "1 restarted"]
        );
        assert_eq!(view.restarts("web/0"), 1);
        assert_eq!(view.events()[0].message, "create web/0");
        drop(store);
    }

    #[test]
    fn the_event_log_is_bounded() {
        let root = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(root.path()).expect("open");
        let many: Vec<String> = (0..MAX_EVENTS + 5).map(|i| format!("event {i}")).collect();
        store
            .record_apply(Path::new("/m"), &[], &[], &[], "", &many)
            .expect("record");
        let events = StateView::open(root.path())
            .expect("readable")
            .expect("view")
            .events();
        assert_eq!(events.len() as u64, MAX_EVENTS);
        assert_eq!(events[0].message, "event 5");

        // A follower of the full log still sees exactly what comes next.
        let view = StateView::open(root.path())
            .expect("readable")
            .expect("view");
        let last = view.events_after(None).last().map(|(n, _)| *n);
        drop(view);
        store.log_events(&["next".into()]).expect("log");
        let view = StateView::open(root.path())
            .expect("readable")
            .expect("view");
        let new: Vec<String> = view
            .events_after(last)
            .into_iter()
            .map(|(_, e)| e.message)
            .collect();
        assert_eq!(new, ["next"]);
    }

    #[test]
    fn failing_tag_checks_are_replaced_as_a_whole_and_readable_by_service() {
        let root = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(root.path()).expect("open");
        let failing = TagCheckFailing {
            registry: "127.0.0.1:5000".into(),
            since: "2024-01-01T00:00:00Z".into(),
            attempts: 3,
            error: "connection refused".into(),
        };
        let both = BTreeMap::from([
            ("web".to_owned(), failing.clone()),
            ("api".to_owned(), failing.clone()),
        ]);
        store.set_tag_checks_failing(&both).expect("record");
        let view = StateView::open(root.path())
            .expect("readable")
            .expect("view");
        assert_eq!(view.tag_check_failing("web"), Some(failing));
        assert_eq!(view.tag_check_failing("db"), None);
        drop(view);

        // The registry is back: nothing is failing any more.
        store
            .set_tag_checks_failing(&BTreeMap::new())
            .expect("record");
        let view = StateView::open(root.path())
            .expect("readable")
            .expect("view");
        assert_eq!(view.tag_check_failing("web"), None);
        assert_eq!(view.tag_check_failing("api"), None);
    }
}
