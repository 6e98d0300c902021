//! The runtime on youki's libcontainer.
//!
//! Layout under the wharf root:
//! - `containers/<id>/`: the bundle (config.json), the overlay rootfs with its upper
//!   and work dirs, `etc/` (hosts, hostname, resolv.conf), anonymous volumes,
//!   `output.log` (stdout and stderr, timestamped by the log shim), `init` and `shim`
//!   (pid and start time of the container's process and of its log shim), `started`,
//!   `exit` (code and time, once seen);
//! - `state/<id>/`: libcontainer's state;
//! - `volumes/<name>/`: named volumes, kept when containers go.
//!
//! Container ids are `<service>-<slot>-<6 hex>`, so a replacement can exist beside
//! the container it replaces; the hostname is `<service>-<slot>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use pathrs::Root;

use super::config::{annotation, command_line, runtime_config, HostFacts, MountSource};
use super::error::RuntimeError;
use super::forked::in_forked_copy;
use super::logs::Logs;
use super::netns::bring_up_loopback;
use super::process::{is_our_exited_child, is_same_process, start_time};
use super::reaper::Reaper;
use super::users::resolve_user;
use super::{ContainerStatus, CreateRequest, ObservedContainer, Runtime};
use crate::image::{mount_rootfs, unmount_rootfs};
use crate::manifest::{Network, ServiceSpec, VolumeKind};

/// libcontainer's work (builds run in a forked copy, see `forked`) must not race other
/// process spawning, whose locks a fork would copy while held: one at a time.
static LIBCONTAINER: Mutex<()> = Mutex::new(());

/// Spawns a helper process in a process that runs containers: never during one of
/// libcontainer's forks, and known to the reaper, which collects its exit status
/// (callers must not wait for it).
pub fn spawn_beside_containers(command: &mut Command) -> std::io::Result<std::process::Child> {
    let _one_at_a_time = lock(&LIBCONTAINER);
    let child = command.spawn();
    Reaper::global().children_spawned();
    child
}

/// Runs a wharf helper subcommand beside containers (`spawn_beside_containers`) and
/// returns its answer: a JSON `Result<T, String>` on its stdout, since its exit status
/// cannot be waited for here.
pub fn ask_helper<T: serde::de::DeserializeOwned>(command: &mut Command) -> Result<T, String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = spawn_beside_containers(command)
        .map_err(|err| format!("cannot run {:?}: {err}", command.get_program()))?;
    let mut answer = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut answer).map_err(|err| {
            format!(
                "cannot read the answer of {:?}: {err}",
                command.get_program()
            )
        })?;
    }
    serde_json::from_str::<Result<T, String>>(&answer)
        .map_err(|err| format!("{:?} answered {answer:?}: {err}", command.get_program()))?
}

/// How long an exec's output may still arrive after its process ended.
const EXEC_OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How long a killed container may take to disappear.
const KILL_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct LibcontainerRuntime {
    containers: PathBuf,
    state: PathBuf,
    volumes: PathBuf,
    /// The wharf executable, run as `wharf log-shim` to collect each container's output.
    log_shim: PathBuf,
    /// What each container's config.json says of it (never changed after creation),
    /// read once rather than at every listing: the agent lists at every reconcile.
    described: Arc<Mutex<HashMap<String, ObservedContainer>>>,
}

/// What `exec` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl LibcontainerRuntime {
    /// Opens the runtime under `root`; `wharf_executable` is run as `wharf log-shim`
    /// beside each container to timestamp its output.
    pub fn open(root: &Path, wharf_executable: &Path) -> Result<Self, RuntimeError> {
        fs::create_dir_all(root).map_err(RuntimeError::io(root))?;
        let root = root.canonicalize().map_err(RuntimeError::io(root))?;
        let runtime = LibcontainerRuntime {
            containers: root.join("containers"),
            state: root.join("state"),
            volumes: root.join("volumes"),
            log_shim: wharf_executable.to_owned(),
            described: Arc::default(),
        };
        for dir in [&runtime.containers, &runtime.state, &runtime.volumes] {
            fs::create_dir_all(dir).map_err(RuntimeError::io(dir))?;
        }
        Ok(runtime)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers.join(id)
    }

    pub fn logs(&self, id: &str) -> Logs {
        Logs::new(self.container_dir(id).join("output.log"))
    }

    /// The cgroup of a container (under every controller, for cgroup v1).
    pub fn cgroups_path(id: &str) -> String {
        format!("/wharf/{id}")
    }

    /// The layers (diff_ids) that containers' root filesystems are made of, so that
    /// `wharf image prune` keeps them even when no image name does.
    pub fn layers_in_use(&self) -> Vec<crate::image::Digest> {
        let entries = fs::read_dir(&self.containers)
            .into_iter()
            .flatten()
            .flatten();
        entries
            .filter_map(|entry| fs::read_to_string(entry.path().join("layers")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| crate::image::Digest::parse(line).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The named volume directory for `name`.
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes.join(name)
    }

    fn create_blocking(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let service = &request.service;
        let hostname = format!("{}-{}", service.name, request.slot);
        let id = format!("{hostname}-{}", random_suffix());
        let dir = self.container_dir(&id);
        let cgroups_path = Self::cgroups_path(&id);
        let what = format!("service {}, replica {}", service.name, request.slot);
        fs::create_dir(&dir).map_err(RuntimeError::io(&dir))?;
        // Who is creating it: a bundle whose creator died before it was complete is
        // removed by the next listing.
        let me = std::process::id() as i32;
        let creator = format!("{me} {}\n", start_time(me).unwrap_or(0));
        fs::write(dir.join("creator"), creator).map_err(RuntimeError::io(&dir))?;
        match self.build(request, &id, &hostname, &dir, &cgroups_path) {
            Ok(()) => Ok(id),
            Err(message) => {
                self.cleanup(&id, &cgroups_path);
                Err(RuntimeError::Container { what, message })
            }
        }
    }

    fn build(
        &self,
        request: &CreateRequest,
        id: &str,
        hostname: &str,
        dir: &Path,
        cgroups_path: &str,
    ) -> Result<(), String> {
        let service = &request.service;
        let image = &request.image;
        let diff_ids: String = image
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        fs::write(dir.join("layers"), diff_ids)
            .map_err(|err| format!("cannot record the layers: {err}"))?;
        let rootfs = mount_rootfs(&request.layers, dir)
            .map_err(|err| format!("cannot mount the root filesystem: {err}"))?
            .rootfs;
        let image_user = image.config.config.as_ref().and_then(|c| c.user.clone());
        let user = resolve_user(&rootfs, service.user.as_deref().or(image_user.as_deref()))?;
        let args = command_line(service, &image.config).map_err(|err| err.to_string())?;
        check_executable(&rootfs, &args[0], service, &image.config)?;
        let mounts = self.volume_sources(service, dir)?;
        let etc_dir = dir.join("etc");
        write_etc_files(&etc_dir, hostname, service.network)
            .map_err(|err| format!("cannot write /etc files: {err}"))?;

        let mut annotations = BTreeMap::from([
            (annotation::SERVICE.to_owned(), service.name.clone()),
            (annotation::SLOT.to_owned(), request.slot.to_string()),
            (
                annotation::SPEC_HASH.to_owned(),
                request.spec_hash.to_string(),
            ),
            (annotation::IMAGE.to_owned(), image.name.clone()),
            (
                annotation::IMAGE_DIGEST.to_owned(),
                image.digest().to_string(),
            ),
            (
                annotation::SPEC.to_owned(),
                serde_json::to_string(service).unwrap_or_default(),
            ),
        ]);
        if let Some(manifest) = &request.manifest {
            annotations.insert(
                annotation::MANIFEST.to_owned(),
                manifest.display().to_string(),
            );
            if let Some(parent) = manifest.parent() {
                annotations.insert(
                    annotation::MANIFEST_DIR.to_owned(),
                    parent.display().to_string(),
                );
            }
        }
        let host = HostFacts {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
            slot: request.slot,
            rootfs,
            user,
            mounts,
            etc_dir,
            nofile_hard: nofile_hard_limit(),
            cgroups_path: cgroups_path.to_owned(),
            annotations,
        };
        let config =
            runtime_config(service, &image.config, &host).map_err(|err| err.to_string())?;
        let config_path = dir.join("config.json");
        fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(|err| format!("cannot write {}: {err}", config_path.display()))?;

        let pid = {
            let _one_at_a_time = lock(&LIBCONTAINER);
            // Spawned under the same lock: a fork by libcontainer while another thread
            // is inside Command::spawn (which holds std's environment lock) leaves a
            // child that deadlocks on that lock.
            let (stdout, stderr) = self.start_log_shim(dir)?;
            let state = &self.state;
            let since = SystemTime::now();
            let pid = in_forked_copy(move || {
                let container = ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
                    .with_stdout(stdout)
                    .with_stderr(stderr)
                    .with_root_path(state)
                    .and_then(|builder| {
                        builder
                            .as_init(dir)
                            .as_sibling(true)
                            .with_systemd(false)
                            .with_detach(true)
                            .build()
                    })
                    .map_err(|err| {
                        format!("cannot create the container: {}", crate::error_chain(&err))
                    })?;
                container
                    .pid()
                    .map(|pid| pid.as_raw())
                    .ok_or_else(|| "libcontainer reported no process for the new container".into())
            })?;
            Reaper::global().watch_container(pid, since);
            pid
        };
        if service.network == Network::None {
            bring_up_loopback(pid).map_err(|err| format!("cannot bring up loopback: {err}"))?;
        }
        let started = start_time(pid).ok_or("the container's process exited during creation")?;
        fs::write(dir.join("init"), format!("{pid} {started}\n"))
            .map_err(|err| format!("cannot record the init process: {err}"))?;
        Ok(())
    }

    /// Starts the log shim for a container; returns the write ends of its stdout and
    /// stderr pipes. The shim reads the container's stdout on its fd 0 and stderr on
    /// its fd 1, and ends when both close. It runs in its own process group, so that
    /// Ctrl-C on the wharf command that created the container does not end it.
    fn start_log_shim(&self, dir: &Path) -> Result<(OwnedFd, OwnedFd), String> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|err| format!("cannot create a pipe: {err}"))
        };
        let ((out_read, out_write), (err_read, err_write)) = (pipe()?, pipe()?);
        let shim = Command::new(&self.log_shim)
            .arg("log-shim")
            .arg(dir.join("output.log"))
            .stdin(Stdio::from(out_read))
            .stdout(Stdio::from(err_read))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|err| {
                format!(
                    "cannot start the log shim {}: {err}",
                    self.log_shim.display()
                )
            })?;
        let record = format!(
            "{} {}\n",
            shim.id(),
            start_time(shim.id() as i32).unwrap_or(0)
        );
        fs::write(dir.join("shim"), record)
            .map_err(|err| format!("cannot record the log shim: {err}"))?;
        Ok((out_write, err_write))
    }

    /// Whether all of the container's output has been written to its log: its log
    /// shim has ended (it ends after the container's last output).
    pub fn output_complete(&self, id: &str) -> bool {
        let record = fs::read_to_string(self.container_dir(id).join("shim")).unwrap_or_default();
        let mut parts = record.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(pid)), Some(Ok(started))) => !is_same_process(pid as i32, started),
            _ => true,
        }
    }

    /// Host directories for the service's volumes, in manifest order: named volumes
    /// under `volumes/`, anonymous ones in the container directory, bind sources
    /// checked to exist.
    fn volume_sources(
        &self,
        service: &ServiceSpec,
        dir: &Path,
    ) -> Result<Vec<MountSource>, String> {
        let mut sources = Vec::new();
        for (index, volume) in service.volumes.iter().enumerate() {
            let source = match (volume.kind, &volume.name, &volume.source) {
                (VolumeKind::Tmpfs, _, _) => MountSource::Tmpfs,
                (VolumeKind::Volume, Some(name), _) => MountSource::Dir(self.volume_dir(name)),
                (VolumeKind::Volume, None, _) => {
                    MountSource::Dir(dir.join("volumes").join(index.to_string()))
                }
                (VolumeKind::Bind, _, Some(source)) => {
                    if !Path::new(source).exists() {
                        return Err(format!(
                            "bind source {source} does not exist (volumes[{index}]); create it or fix `source`"
                        ));
                    }
                    MountSource::Dir(PathBuf::from(source))
                }
                (VolumeKind::Bind, _, None) => {
                    return Err(format!("volumes[{index}] has no source"))
                }
            };
            if let (MountSource::Dir(path), VolumeKind::Volume) = (&source, volume.kind) {
                create_volume_dir(path)
                    .map_err(|err| format!("cannot create volume {}: {err}", path.display()))?;
            }
            sources.push(source);
        }
        Ok(sources)
    }

    /// Removes everything a container had on the host, whatever state it is in.
    fn cleanup(&self, id: &str, cgroups_path: &str) {
        lock(&self.described).remove(id);
        if let Ok(mut container) = Container::load(self.state.join(id)) {
            let _one_at_a_time = lock(&LIBCONTAINER);
            let _ = container.delete(true);
        }
        remove_cgroup_leaf(cgroups_path);
        let dir = self.container_dir(id);
        let _ = unmount_rootfs(&dir);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(self.state.join(id));
    }

    /// A bundle wharf began (it has a `creator` record) but never completed (no
    /// config.json), whose creator is gone: a wharf process killed mid-create.
    fn is_abandoned(&self, id: &str) -> bool {
        let dir = self.container_dir(id);
        let creator = fs::read_to_string(dir.join("creator"))
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace();
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            });
        match creator {
            Some((pid, started)) => {
                !dir.join("config.json").exists() && !is_same_process(pid, started)
            }
            None => false,
        }
    }

    /// The container's init process, if it is still the one wharf started.
    fn live_pid(&self, id: &str) -> Option<i32> {
        let (pid, started) = self.init_record(id)?;
        is_same_process(pid, started).then_some(pid)
    }

    /// A time before the container's process began: its config.json is written first.
    fn created_at(&self, id: &str) -> SystemTime {
        fs::metadata(self.container_dir(id).join("config.json"))
            .and_then(|meta| meta.modified())
            .unwrap_or(UNIX_EPOCH)
    }

    fn init_record(&self, id: &str) -> Option<(i32, u64)> {
        let text = fs::read_to_string(self.container_dir(id).join("init")).ok()?;
        let mut parts = text.split_whitespace();
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }

    /// Only directories whose config.json carries wharf's annotations are wharf's
    /// containers; anything else under `containers/` is never touched.
    fn ensure_ours(&self, id: &str) -> Result<(), RuntimeError> {
        let ours = fs::read(self.container_dir(id).join("config.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|config| config["annotations"][annotation::SERVICE].is_string());
        if ours {
            Ok(())
        } else {
            Err(RuntimeError::NotFound(id.to_owned()))
        }
    }

    fn load(&self, id: &str) -> Result<Container, RuntimeError> {
        self.ensure_ours(id)?;
        Container::load(self.state.join(id)).map_err(|source| RuntimeError::Libcontainer {
            what: format!("container {id}"),
            action: "loading its state",
            source: Box::new(source),
        })
    }

    fn start_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        let mut container = self.load(id)?;
        {
            let _one_at_a_time = lock(&LIBCONTAINER);
            container
                .start()
                .map_err(|source| RuntimeError::Libcontainer {
                    what: format!("container {id}"),
                    action: "start",
                    source: Box::new(source),
                })?;
        }
        let now = unix_seconds(SystemTime::now());
        let path = self.container_dir(id).join("started");
        fs::write(&path, format!("{now}\n")).map_err(RuntimeError::io(path))
    }

    /// Signals the container's init process. Every container has its own pid
    /// namespace, so SIGKILL to its init ends all of its processes. (Signalling from
    /// /proc-checked pids also avoids libcontainer's status bookkeeping, which marks a
    /// container stopped as soon as any signal was sent.)
    fn kill_blocking(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.ensure_ours(id)?;
        let Some(pid) = self.live_pid(id) else {
            return Ok(());
        };
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(errno) => Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: format!("cannot send {signal}: {errno}"),
            }),
        }
    }

    /// Waits until the container's process is gone; returns whether it went in time.
    fn wait_gone(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Some((pid, _)) = self.init_record(id) else {
            return true;
        };
        let since = self.created_at(id);
        while self.live_pid(id).is_some() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            // A child of ours wakes the reaper; a container created by another
            // process is polled.
            if Reaper::global()
                .wait_for(pid, since, left.min(Duration::from_millis(20)))
                .is_some()
            {
                break;
            }
        }
        self.record_exit(id);
        true
    }

    fn stop_blocking(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.kill_blocking(id, signal)?;
        if self.wait_gone(id, timeout) {
            return Ok(());
        }
        self.kill_blocking(id, Signal::SIGKILL)?;
        if self.wait_gone(id, KILL_GRACE) {
            Ok(())
        } else {
            Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: format!("still running {}s after SIGKILL", KILL_GRACE.as_secs()),
            })
        }
    }

    fn remove_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        self.ensure_ours(id)?;
        if self.live_pid(id).is_some() {
            self.kill_blocking(id, Signal::SIGKILL)?;
            self.wait_gone(id, KILL_GRACE);
        }
        self.cleanup(id, &Self::cgroups_path(id));
        Ok(())
    }

    /// Records the exit code if this process saw the exit (it is the parent).
    fn record_exit(&self, id: &str) {
        let path = self.container_dir(id).join("exit");
        if path.exists() {
            return;
        }
        if let Some((pid, started)) = self.init_record(id) {
            // A zombie of ours is being reaped right now: wait for its status.
            let since = self.created_at(id);
            let exit = if is_our_exited_child(pid, started) {
                Reaper::global().wait_for(pid, since, Duration::from_secs(1))
            } else {
                Reaper::global().exit_of(pid, since)
            };
            if let Some(exit) = exit {
                let _ = fs::write(&path, format!("{} {}\n", exit.code, unix_seconds(exit.at)));
            }
        }
    }

    fn observe(&self, id: &str) -> Option<ObservedContainer> {
        let mut container = self.described(id)?;
        let read = |name: &str| fs::read_to_string(self.container_dir(id).join(name)).ok();
        container.started_at = read("started")
            .and_then(|t| t.trim().parse().ok())
            .map(from_unix_seconds);
        container.pid = self.live_pid(id);
        container.status = match (self.init_record(id), container.pid) {
            (None, _) => ContainerStatus::Unknown,
            (Some(_), Some(_)) if container.started_at.is_some() => ContainerStatus::Running,
            (Some(_), Some(_)) => ContainerStatus::Created,
            (Some(_), None) => {
                self.record_exit(id);
                let exit = read("exit");
                let mut parts = exit.as_deref().unwrap_or("").split_whitespace();
                ContainerStatus::Exited {
                    code: parts.next().and_then(|c| c.parse().ok()),
                    at: parts
                        .next()
                        .and_then(|t| t.parse().ok())
                        .map(from_unix_seconds),
                }
            }
        };
        Some(container)
    }

    /// The container as its config.json describes it (status unknown, no process):
    /// None when it has no config.json yet or is not wharf's.
    fn described(&self, id: &str) -> Option<ObservedContainer> {
        if let Some(known) = lock(&self.described).get(id) {
            return Some(known.clone());
        }
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(self.container_dir(id).join("config.json")).ok()?)
                .ok()?;
        let annotations = config.get("annotations")?;
        let get = |key: &str| {
            annotations
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
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
        };
        lock(&self.described).insert(id.to_owned(), container.clone());
        Some(container)
    }

    fn list_blocking(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let entries = fs::read_dir(&self.containers).map_err(RuntimeError::io(&self.containers))?;
        let mut found: Vec<ObservedContainer> = Vec::new();
        let mut present = HashSet::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            match self.observe(&id) {
                Some(container) => found.push(container),
                None if self.is_abandoned(&id) => self.cleanup(&id, &Self::cgroups_path(&id)),
                None => {}
            }
            present.insert(id);
        }
        lock(&self.described).retain(|id, _| present.contains(id));
        found.sort_by(|a, b| (&a.service, a.slot, &a.id).cmp(&(&b.service, b.slot, &b.id)));
        Ok(found)
    }

    /// Runs `args` inside a running container and returns its exit code and output.
    /// After `timeout` the process is killed and the exec fails.
    pub fn exec_blocking(
        &self,
        id: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        self.ensure_ours(id)?;
        if self.live_pid(id).is_none() {
            return Err(RuntimeError::Container {
                what: format!("container {id}"),
                message: "is not running".into(),
            });
        }
        let what = format!("container {id}");
        // Close-on-exec, or a container forked meanwhile (by another thread) would
        // keep the write ends open for its whole life and the readers would never end.
        let pipe =
            || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::io("pipe")(e.into()));
        let ((out_read, out_write), (err_read, err_write)) = (pipe()?, pipe()?);
        let since = SystemTime::now();
        let pid = {
            let _one_at_a_time = lock(&LIBCONTAINER);
            let state = &self.state;
            in_forked_copy(move || {
                ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
                    .with_stdout(out_write)
                    .with_stderr(err_write)
                    .with_root_path(state)
                    .and_then(|builder| {
                        builder
                            .as_tenant()
                            .as_sibling(true)
                            .with_container_args(args.to_vec())
                            .with_detach(true)
                            .build()
                    })
                    .map(|pid| pid.as_raw())
                    .map_err(|err| crate::error_chain(&err))
            })
            .map_err(|message| RuntimeError::Container {
                what: what.clone(),
                message: format!("cannot exec: {message}"),
            })?
        };
        let read_all = |fd: std::os::fd::OwnedFd| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = File::from(fd).read_to_end(&mut bytes);
                let _ = sender.send(bytes);
            });
            receiver
        };
        let (stdout, stderr) = (read_all(out_read), read_all(err_read));
        // A process the command left behind may hold the pipes: its output is not waited for.
        let output = |receiver: std::sync::mpsc::Receiver<Vec<u8>>| {
            receiver.recv_timeout(EXEC_OUTPUT_GRACE).unwrap_or_default()
        };
        let limit = timeout.unwrap_or(Duration::from_secs(24 * 3600));
        let exit = Reaper::global().wait_for(pid, since, limit);
        if exit.is_none() {
            // The readers are left to finish on their own: a child of the killed
            // process may still hold the pipes.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            Reaper::global().wait_for(pid, since, Duration::from_secs(5));
            return Err(RuntimeError::Container {
                what,
                message: format!(
                    "`{}` timed out after {}",
                    args.join(" "),
                    humantime::format_duration(limit)
                ),
            });
        }
        Ok(ExecOutput {
            code: exit.map_or(-1, |e| e.code),
            stdout: output(stdout),
            stderr: output(stderr),
        })
    }
}

impl Runtime for LibcontainerRuntime {
    async fn create(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let (runtime, request) = (self.clone(), request.clone());
        blocking(move || runtime.create_blocking(&request)).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.start_blocking(&id)).await
    }

    async fn stop(&self, id: &str, signal: Signal, timeout: Duration) -> Result<(), RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.stop_blocking(&id, signal, timeout)).await
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.kill_blocking(&id, signal)).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let (runtime, id) = (self.clone(), id.to_owned());
        blocking(move || runtime.remove_blocking(&id)).await
    }

    async fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let runtime = self.clone();
        blocking(move || runtime.list_blocking()).await
    }

    async fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let (runtime, id, args) = (self.clone(), id.to_owned(), args.to_vec());
        blocking(move || runtime.exec_blocking(&id, &args, Some(timeout))).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| RuntimeError::Config(format!("runtime task failed: {err}")))?
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fails early, with a clear message, when the command is not in the image.
fn check_executable(
    rootfs: &Path,
    program: &str,
    service: &ServiceSpec,
    image: &crate::image::ImageConfig,
) -> Result<(), String> {
    // A program on a volume is not in the image: the container finds it once mounted.
    let on_a_volume = service
        .volumes
        .iter()
        .any(|volume| Path::new(program).starts_with(&volume.target));
    if on_a_volume {
        return Ok(());
    }
    let root =
        Root::open(rootfs).map_err(|err| format!("cannot open the root filesystem: {err}"))?;
    let found = if program.contains('/') {
        root.resolve(program).is_ok()
    } else {
        let env = super::config::environment(service, image, 0);
        let path = env
            .iter()
            .find_map(|entry| entry.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_owned();
        path.split(':')
            .any(|dir| root.resolve(Path::new(dir).join(program)).is_ok())
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "executable \"{program}\" not found in the image; check `command` or the image's entrypoint"
        ))
    }
}

/// A new volume's root is 0755, as Docker's are: the container decides who may write
/// in it (the host side stays private: the volumes directory is 0700). An existing
/// volume keeps the mode its containers gave it.
fn create_volume_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf are bind-mounted into the
/// container, where every user must read them: 0644, though their directory is not.
fn write_etc_files(dir: &Path, hostname: &str, network: Network) -> std::io::Result<()> {
    fn write_readable(path: PathBuf, content: String) -> std::io::Result<()> {
        fs::write(&path, content)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
    }
    fs::create_dir_all(dir)?;
    write_readable(dir.join("hostname"), format!("{hostname}\n"))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if network == Network::Host {
        // The host's own names stay resolvable, as they are on the host.
        if let Ok(host_hosts) = fs::read_to_string("/etc/hosts") {
            hosts = host_hosts;
        }
    }
    hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    write_readable(dir.join("hosts"), hosts)?;
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write_readable(dir.join("resolv.conf"), resolv)
}

/// Removes `<cgroup root>/<controller>/<path>` (v1) and `<cgroup root>/<path>` (v2)
/// where a failed build left them.
fn remove_cgroup_leaf(cgroups_path: &str) {
    let relative = cgroups_path.trim_start_matches('/');
    let mut candidates = vec![Path::new("/sys/fs/cgroup").join(relative)];
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        candidates.extend(controllers.flatten().map(|c| c.path().join(relative)));
    }
    for dir in candidates {
        if dir.is_dir() {
            let _ = fs::remove_dir(&dir);
        }
    }
}

fn nofile_hard_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 3];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = [nanos as u8, (nanos >> 8) as u8, std::process::id() as u8];
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix_seconds(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}
