//! What is on the host: wharf's containers, each described by the annotations in its
//! config.json and given a status from its records and /proc.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcontainer::container::Container;

use super::config::annotation;
use super::error::RuntimeError;
use super::libcontainer::{lock, LibcontainerRuntime};
use super::pidfd::Watched;
use super::records::{AddressRecord, ExitRecord, LayersRecord, ProcessRecord, Role, StartedRecord};
use super::{ContainerStatus, ObservedContainer};
use crate::image::Digest;
use crate::network::is_serving;
use crate::reaper::Reaper;

/// What does not change about a container once it is there to read: its
/// description (config.json's annotations) and the records written once.
#[derive(Debug, Clone)]
pub(super) struct Known {
    described: ObservedContainer,
    init: Option<Watched>,
    monitor: Option<Watched>,
    started: Option<StartedRecord>,
    address: Option<AddressRecord>,
}

/// Listings read containers on at most this many threads...
const MAX_LIST_THREADS: usize = 4;
/// ...one per this many containers.
const CONTAINERS_PER_LIST_THREAD: usize = 64;

/// How long a monitor may take to record an exit after the init ended: it reads what
/// is left in the pipes first (at most 2 s).
pub(super) const MONITOR_GRACE: Duration = Duration::from_secs(3);

impl LibcontainerRuntime {
    pub(super) fn list_blocking(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let entries = fs::read_dir(&self.containers).map_err(RuntimeError::io(&self.containers))?;
        let ids: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        // One wait for monitors still recording exits, however many there are (a
        // monitor stuck on a hung disk must not hold up each listing for long).
        let records_due = Instant::now() + MONITOR_GRACE;
        // Reading a thousand containers' records is most of `wharf status`: spread
        // over the CPUs (a few threads at most) once there are many.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_LIST_THREADS)
            .min(ids.len() / CONTAINERS_PER_LIST_THREAD + 1);
        let observed: Vec<Option<ObservedContainer>> = std::thread::scope(|scope| {
            let chunks = ids.chunks(ids.len().div_ceil(threads).max(1));
            let workers: Vec<_> = chunks
                .map(|chunk| {
                    scope.spawn(move || {
                        let observe = |id: &String| self.observe(id, records_due);
                        chunk.iter().map(observe).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| {
                    worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut found: Vec<ObservedContainer> = Vec::new();
        for (id, container) in ids.iter().zip(observed) {
            match container {
                Some(container) => found.push(container),
                None if self.is_abandoned(id) => {
                    if let Err(err) = self.cleanup(id, &Self::cgroups_path(id)) {
                        tracing::warn!(container = id.as_str(), "{}", crate::error_chain(&err));
                    }
                }
                None => {}
            }
        }
        let present: HashSet<&String> = ids.iter().collect();
        lock(&self.known).retain(|id, _| present.contains(id));
        found.sort_by(|a, b| (&a.service, a.slot, &a.id).cmp(&(&b.service, b.slot, &b.id)));
        Ok(found)
    }

    fn observe(&self, id: &str, records_due: Instant) -> Option<ObservedContainer> {
        let known = self.known(id)?;
        let mut container = known.described;
        let dir = self.container_dir(id);
        container.started_at = known.started.map(|started| started.at);
        container.pid = known.init.as_ref().and_then(Watched::pid_if_alive);
        container.status = match (&known.init, container.pid) {
            (None, _) => ContainerStatus::Unknown,
            (Some(_), Some(_)) if container.started_at.is_some() => ContainerStatus::Running,
            (Some(_), Some(_)) => ContainerStatus::Created,
            (Some(_), None) => {
                // Its monitor records the exit as soon as the output is read.
                self.wait_for_monitor(id, records_due.saturating_duration_since(Instant::now()));
                let exit = ExitRecord::read(&dir).ok().flatten();
                ContainerStatus::Exited {
                    code: exit.map(|exit| exit.code),
                    at: exit.map(|exit| exit.at),
                    oom_killed: exit.is_some_and(|exit| exit.oom_killed),
                }
            }
        };
        let monitored = known.monitor.as_ref().and_then(Watched::pid_if_alive);
        container.unmonitored = container.pid.is_some() && monitored.is_none();
        container.in_rotation = known
            .address
            .as_ref()
            .and_then(|record| record.service_key.as_deref())
            .is_some_and(|key| is_serving(key, id));
        container.address = known.address.map(|record| record.address);
        Some(container)
    }

    /// What is known of the container that does not change: read once (the
    /// records written once are read until they are there), then kept while the
    /// container exists. The agent lists at every reconcile; reading all of it
    /// again for each container made its reaction grow with their number.
    fn known(&self, id: &str) -> Option<Known> {
        // Not locked while reading: listings read containers side by side.
        let cached = lock(&self.known).get(id).cloned();
        let dir = self.container_dir(id);
        let mut known = match cached {
            Some(known) => known,
            None => Known {
                described: self.described(id)?,
                // Written before config.json, so final once that is there.
                address: AddressRecord::read(&dir).ok().flatten(),
                init: None,
                monitor: None,
                started: None,
            },
        };
        if known.init.is_none() {
            known.init = self.init_record(id).map(Watched::new);
        }
        if known.monitor.is_none() {
            known.monitor = self.monitor_record(id).map(Watched::new);
        }
        if known.started.is_none() {
            known.started = StartedRecord::read(&dir).ok().flatten();
        }
        for watched in [&mut known.init, &mut known.monitor].into_iter().flatten() {
            watched.refresh();
        }
        lock(&self.known).insert(id.to_owned(), known.clone());
        Some(known)
    }

    /// The container as its config.json describes it (status unknown, no process):
    /// None when it has no config.json yet or is not wharf's.
    fn described(&self, id: &str) -> Option<ObservedContainer> {
        let annotations = self.annotations(id).ok().flatten()?;
        let get = |key: &str| annotations.get(key).cloned();
        // Only containers carrying wharf's annotations are wharf's.
        let container = ObservedContainer {
            id: id.to_owned(),
            service: get(annotation::SERVICE)?,
            slot: get(annotation::SLOT)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            pid: None,
            status: ContainerStatus::Unknown,
            started_at: None,
            spec_hash: get(annotation::SPEC_HASH).unwrap_or_default(),
            image: get(annotation::IMAGE).unwrap_or_default(),
            image_digest: get(annotation::IMAGE_DIGEST).unwrap_or_default(),
            manifest: get(annotation::MANIFEST).map(PathBuf::from),
            manifest_dir: get(annotation::MANIFEST_DIR).map(PathBuf::from),
            spec: get(annotation::SPEC)
                .and_then(|json| serde_json::from_str(&json).ok())
                .map(Box::new),
            unmonitored: false,
            address: None,
            in_rotation: false,
            files: get(annotation::FILES)
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
        };
        Some(container)
    }

    /// The annotations in the container's config.json. Only they are read into
    /// memory: the rest (ten kilobytes, mostly the seccomp profile) is skipped, which
    /// matters when a thousand containers are listed.
    fn annotations(&self, id: &str) -> std::io::Result<Option<HashMap<String, String>>> {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            annotations: HashMap<String, String>,
        }
        let bytes = match fs::read(self.container_dir(id).join("config.json")) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok(serde_json::from_slice::<Config>(&bytes)
            .ok()
            .map(|config| config.annotations))
    }

    /// A bundle wharf began (it has a `creator` record) but never completed (no
    /// config.json), whose creator is gone: a wharf process killed mid-create.
    fn is_abandoned(&self, id: &str) -> bool {
        let dir = self.container_dir(id);
        let creator = ProcessRecord::read(&dir, Role::Creator).ok().flatten();
        creator.is_some_and(|creator| !dir.join("config.json").exists() && !creator.is_alive())
    }

    /// The layers (diff_ids) that containers' root filesystems are made of, so that
    /// `wharf image prune` keeps them even when no image name does.
    pub fn layers_in_use(&self) -> Vec<Digest> {
        let entries = fs::read_dir(&self.containers)
            .into_iter()
            .flatten()
            .flatten();
        entries
            .filter_map(|entry| LayersRecord::read(&entry.path()).ok().flatten())
            .flat_map(|layers| layers.diff_ids)
            .collect()
    }

    /// Whether all of the container's output has been written to its log and its exit
    /// recorded: its monitor has ended.
    pub fn output_complete(&self, id: &str) -> bool {
        !self.monitor_alive(id)
    }

    /// Whether the container's monitor runs (false without a readable record: there
    /// is none to wait for).
    fn monitor_alive(&self, id: &str) -> bool {
        self.monitor_record(id)
            .is_some_and(|monitor| monitor.is_alive())
    }

    /// The record of the container's monitor (none for a container of an older wharf,
    /// and a damaged record reads the same).
    pub(super) fn monitor_record(&self, id: &str) -> Option<ProcessRecord> {
        ProcessRecord::read(&self.container_dir(id), Role::Monitor)
            .ok()
            .flatten()
    }

    /// Waits up to `timeout` for the container's monitor to end; returns whether it
    /// has. A monitor this process started wakes the reaper; any other is polled.
    pub(super) fn wait_for_monitor(&self, id: &str, timeout: Duration) -> bool {
        let Some(monitor) = self.monitor_record(id) else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let since = self.created_at(id);
        while monitor.is_alive() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            let step = left.min(Duration::from_millis(10));
            if Reaper::global()
                .wait_for(monitor.pid, since, step)
                .is_some()
            {
                break;
            }
        }
        true
    }

    /// The container's init process, if it is still the one wharf started.
    pub(super) fn live_pid(&self, id: &str) -> Option<i32> {
        self.init_record(id)?.pid_if_alive()
    }

    /// The record of the container's init process: none until its build is complete
    /// (a damaged record reads the same).
    pub(super) fn init_record(&self, id: &str) -> Option<ProcessRecord> {
        ProcessRecord::read(&self.container_dir(id), Role::Init)
            .ok()
            .flatten()
    }

    /// A time before the container's process began: its config.json is written first.
    pub(super) fn created_at(&self, id: &str) -> SystemTime {
        fs::metadata(self.container_dir(id).join("config.json"))
            .and_then(|meta| meta.modified())
            .unwrap_or(UNIX_EPOCH)
    }

    /// Only directories whose config.json carries wharf's annotations are wharf's
    /// containers; anything else under `containers/` is never touched.
    pub(super) fn ensure_ours(&self, id: &str) -> Result<(), RuntimeError> {
        let annotations = self
            .annotations(id)
            .map_err(RuntimeError::io(self.container_dir(id).join("config.json")))?;
        if annotations.is_some_and(|annotations| annotations.contains_key(annotation::SERVICE)) {
            Ok(())
        } else {
            Err(RuntimeError::NotFound(id.to_owned()))
        }
    }

    pub(super) fn load(&self, id: &str) -> Result<Container, RuntimeError> {
        self.ensure_ours(id)?;
        Container::load(self.state.join(id)).map_err(|source| RuntimeError::Libcontainer {
            what: format!("container {id}"),
            action: "loading its state",
            source: Box::new(source),
        })
    }
}
