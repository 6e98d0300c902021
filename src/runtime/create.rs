//! Creating a container: its bundle (config.json), overlay root filesystem, /etc
//! files and volumes, and the build itself in a forked copy of this process, which
//! becomes the container's monitor; and starting it.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use pathrs::Root;

use super::cgroup::v1_hierarchies;
use super::config::{
    annotation, command_line, environment, runtime_config, HostFacts, MountSource,
};
use super::error::{CreateError, RuntimeError};
use super::files::put_files;
use super::forked::in_forked_copy_becoming;
use super::libcontainer::LibcontainerRuntime;
use super::monitor::MonitorCommand;
use super::proc::start_time;
use super::records::{AddressRecord, LayersRecord, ProcessRecord, Role, StartedRecord};
use super::users::resolve_user;
use super::CreateRequest;
use crate::bounded_read::read_regular_text;
use crate::image::{detach, mount_rootfs, ImageConfig, RootfsPaths};
use crate::manifest::{Network, ServiceSpec, VolumeKind};
use crate::network::{
    attach, bridge, bring_up_loopback, register, reserve, service_key, Membership,
};
use crate::process::libcontainer_lock;
use crate::reaper::Reaper;

impl LibcontainerRuntime {
    pub(super) fn create_blocking(&self, request: &CreateRequest) -> Result<String, RuntimeError> {
        let service = &request.service;
        let hostname = format!("{}-{}", service.name, request.slot);
        let id = format!("{hostname}-{}", crate::random_hex(3));
        let dir = self.container_dir(&id);
        let cgroups_path = Self::cgroups_path(&id);
        let what = format!("service {}, replica {}", service.name, request.slot);
        fs::create_dir(&dir).map_err(RuntimeError::io(&dir))?;
        // Who is creating it: a bundle whose creator died before it was complete is
        // removed by the next listing.
        ProcessRecord::of(std::process::id() as i32)
            .write(&dir, Role::Creator)
            .map_err(RuntimeError::io(&dir))?;
        match self.build(request, &id, &hostname, &dir, &cgroups_path) {
            Ok(()) => Ok(id),
            Err(error) => {
                if let Err(err) = self.cleanup(&id, &cgroups_path) {
                    tracing::warn!(container = id, "{}", crate::error_chain(&err));
                }
                Err(RuntimeError::Create { what, error })
            }
        }
    }

    /// Everything of a container after its `creator` record, up to its init process
    /// waiting to be started; the caller cleans up after a failure.
    fn build(
        &self,
        request: &CreateRequest,
        id: &str,
        hostname: &str,
        dir: &Path,
        cgroups_path: &str,
    ) -> Result<(), CreateError> {
        let service = &request.service;
        let image = &request.image;
        let layers = LayersRecord {
            diff_ids: image.config.rootfs.diff_ids.clone(),
        };
        layers.write(dir).map_err(CreateError::RecordLayers)?;
        let rootfs = mount_rootfs(&request.layers, dir)
            .map_err(CreateError::MountRootfs)?
            .rootfs;
        let image_user = image.config.config.as_ref().and_then(|c| c.user.clone());
        let user = resolve_user(&rootfs, service.user.as_deref().or(image_user.as_deref()))?;
        let args = command_line(service, &image.config).map_err(config_error)?;
        check_executable(&rootfs, &args[0], service, &image.config)?;
        let mounts = self.volume_sources(service, dir)?;
        let files = put_files(self.root(), request, dir, user)?;
        let etc_dir = dir.join("etc");
        // The bridge is checked before an address is reserved.
        let on_bridge = match service.network {
            Network::Bridge => Some((bridge()?, self.reserve_address(dir, &service.name)?)),
            Network::Host | Network::None => None,
        };
        let address = on_bridge.map(|(_, address)| address);
        write_etc_files(&etc_dir, hostname, service.network, address)
            .map_err(CreateError::EtcFiles)?;
        if let Some(address) = address {
            register(&Membership {
                root: self.root(),
                service: &service.name,
                id,
                address,
                ports: &service.ports,
                hosts: &etc_dir.join("hosts"),
            })?;
        }

        let host = HostFacts {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
            slot: request.slot,
            rootfs,
            user,
            mounts,
            files,
            etc_dir,
            nofile_hard: nofile_hard_limit(),
            cgroup_v1_hierarchies: v1_hierarchies(),
            cgroups_path: cgroups_path.to_owned(),
            annotations: annotations(request),
        };
        let config = runtime_config(service, &image.config, &host).map_err(config_error)?;
        let config_path = dir.join("config.json");
        // Root-only: env values taken from secrets are in it.
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config_path)
            .and_then(|mut file| {
                std::io::Write::write_all(
                    &mut file,
                    &serde_json::to_vec_pretty(&config).unwrap_or_default(),
                )
            });
        if let Err(error) = written {
            return Err(CreateError::WriteConfig {
                path: config_path,
                error,
            });
        }

        let pid = self.build_in_forked_copy(id, dir, service)?;
        match (service.network, on_bridge) {
            (Network::None, _) => bring_up_loopback(pid).map_err(CreateError::Loopback)?,
            (_, Some((bridge, address))) => attach(&bridge, pid, id, address)?,
            _ => {}
        }
        let started = start_time(pid).ok_or(CreateError::ExitedDuringCreation)?;
        let init = ProcessRecord {
            pid,
            start_time: started,
        };
        init.write(dir, Role::Init)
            .map_err(CreateError::RecordInit)?;
        // The container has its own copies of its mounts now. Left in this
        // namespace, every container's would make the mount table grow with their
        // number, and with it the cost of each later build (libcontainer reads the
        // whole table several times per container on cgroup v1).
        for mount in [RootfsPaths::under(dir).rootfs, dir.join("files")] {
            if let Err(err) = detach(&mount) {
                tracing::warn!("cannot unmount {}: {err}", mount.display());
            }
        }
        Ok(())
    }

    /// Builds the container from its bundle in a forked copy of this process (see
    /// `forked`), which then becomes the container's monitor (see `monitor`): the
    /// init process libcontainer starts is a child of the copy (a sibling of
    /// libcontainer's intermediate process), and stays its child across the exec.
    /// Records the init and the monitor; returns the init's pid.
    fn build_in_forked_copy(
        &self,
        id: &str,
        dir: &Path,
        service: &ServiceSpec,
    ) -> Result<i32, CreateError> {
        if !self.monitor.is_file() {
            return Err(CreateError::MonitorMissing(self.monitor.clone()));
        }
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(CreateError::Pipe);
        let ((out_read, out_write), (err_read, err_write)) = (pipe()?, pipe()?);
        let keep = [&out_read, &out_write, &err_read, &err_write].map(|fd| fd.as_raw_fd());
        // Made before the fork: the copy only execs it.
        let monitor = MonitorCommand::new(&self.monitor, dir, &Self::cgroups_path(id), id, service)
            .map_err(CreateError::MonitorArguments)?;
        let state = &self.state;
        let since = SystemTime::now();
        let build = move || {
            // A session of its own for the container and its monitor: Ctrl-C on the
            // wharf command that created them reaches neither.
            nix::unistd::setsid().map_err(|err| format!("cannot start a session: {err}"))?;
            let container = ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
                .with_stdout(out_write)
                .with_stderr(err_write)
                .with_root_path(state)
                .and_then(|builder| {
                    builder
                        .as_init(dir)
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
        };
        let answered = in_forked_copy_becoming(&keep, build, |init, answer| {
            monitor.exec(init, out_read, err_read, answer)
        })?;
        // The monitor's exit wakes an agent: it ends after recording the container's.
        Reaper::global().watch_container(answered.copy, since);
        ProcessRecord::of(answered.copy)
            .write(dir, Role::Monitor)
            .map_err(CreateError::RecordMonitor)?;
        Ok(answered.pid)
    }

    /// Reserves an address on wharf's bridge for the container in `dir` (host-wide, see
    /// `network`) and records it there, with the key of its service's records.
    fn reserve_address(&self, dir: &Path, service: &str) -> Result<Ipv4Addr, CreateError> {
        let address = reserve(dir)?;
        AddressRecord {
            address,
            service_key: Some(service_key(self.root(), service)),
        }
        .write(dir)
        .map_err(CreateError::RecordAddress)?;
        Ok(address)
    }

    /// Host directories for the service's volumes, in manifest order: named volumes
    /// under `volumes/`, anonymous ones in the container directory, bind sources
    /// checked to exist.
    fn volume_sources(
        &self,
        service: &ServiceSpec,
        dir: &Path,
    ) -> Result<Vec<MountSource>, CreateError> {
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
                        return Err(CreateError::BindSourceMissing {
                            path: source.clone(),
                            index,
                        });
                    }
                    MountSource::Dir(PathBuf::from(source))
                }
                (VolumeKind::Bind, _, None) => return Err(CreateError::NoBindSource(index)),
            };
            if let (MountSource::Dir(path), VolumeKind::Volume) = (&source, volume.kind) {
                create_volume_dir(path).map_err(|error| CreateError::CreateVolume {
                    path: path.clone(),
                    error,
                })?;
            }
            sources.push(source);
        }
        Ok(sources)
    }

    pub(super) fn start_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        let mut container = self.load(id)?;
        {
            let _one_at_a_time = libcontainer_lock();
            container
                .start()
                .map_err(|source| RuntimeError::Libcontainer {
                    what: format!("container {id}"),
                    action: "start",
                    source: Box::new(source),
                })?;
        }
        let dir = self.container_dir(id);
        let started = StartedRecord {
            at: SystemTime::now(),
        };
        started
            .write(&dir)
            .map_err(RuntimeError::io(dir.join(StartedRecord::FILE)))
    }
}

/// The annotations wharf writes into config.json: what `observe` reads back.
fn annotations(request: &CreateRequest) -> BTreeMap<String, String> {
    let service = &request.service;
    let image = &request.image;
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
    if !request.files.is_empty() {
        annotations.insert(
            annotation::FILES.to_owned(),
            serde_json::to_string(&request.files).unwrap_or_default(),
        );
    }
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
    annotations
}

/// Fails early, with a clear message, when the command is not in the image.
fn check_executable(
    rootfs: &Path,
    program: &str,
    service: &ServiceSpec,
    image: &ImageConfig,
) -> Result<(), CreateError> {
    // A program on a volume is not in the image: the container finds it once mounted.
    let on_a_volume = service
        .volumes
        .iter()
        .any(|volume| Path::new(program).starts_with(&volume.target));
    if on_a_volume {
        return Ok(());
    }
    let root = Root::open(rootfs).map_err(CreateError::OpenRootfs)?;
    let found = if program.contains('/') {
        root.resolve(program).is_ok()
    } else {
        let env = environment(service, image, 0, &BTreeMap::new());
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
        Err(CreateError::ExecutableNotFound(program.to_owned()))
    }
}

/// The manifest and the image do not make a valid container configuration.
fn config_error(error: RuntimeError) -> CreateError {
    CreateError::Config(Box::new(error))
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
fn write_etc_files(
    dir: &Path,
    hostname: &str,
    network: Network,
    address: Option<Ipv4Addr>,
) -> std::io::Result<()> {
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
    let own = address.map_or("127.0.1.1".to_owned(), |address| address.to_string());
    hosts.push_str(&format!("{own}\t{hostname}\n"));
    write_readable(dir.join("hosts"), hosts)?;
    write_readable(dir.join("resolv.conf"), resolv_conf(network))
}

/// The host's resolv.conf; in a network namespace of its own, a loopback name server
/// (systemd-resolved's 127.0.0.53) is the container's own loopback, so the servers
/// systemd-resolved uses are given instead when they are known.
fn resolv_conf(network: Network) -> String {
    let read = |path: &str| read_regular_text(Path::new(path), MAX_RESOLV_CONF).ok();
    let host = read("/etc/resolv.conf").unwrap_or_default();
    let loopback_only = host
        .lines()
        .filter_map(|line| line.strip_prefix("nameserver"))
        .all(|server| server.trim().starts_with("127."));
    if network == Network::Host || !loopback_only {
        return host;
    }
    read("/run/systemd/resolve/resolv.conf").unwrap_or(host)
}

/// A resolv.conf is a few lines (the host's; still read within a bound).
const MAX_RESOLV_CONF: u64 = 64 << 10;

fn nofile_hard_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}
