//! The OCI runtime config (config.json) for one container: a pure function of the
//! service spec, the image config and what the runtime resolved on the host.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder,
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use libcontainer::oci_spec::OciSpecError;
use serde_json::Value;

use super::error::RuntimeError;
use super::files::ContainerFiles;
use crate::image::ImageConfig;
use crate::manifest::{ByteSize, EnvValue, Network, ServiceSpec, VolumeKind};

/// Annotations wharf writes into every config.json: enough to rebuild what is
/// running after the agent restarts or the state database is lost.
pub mod annotation {
    pub const SERVICE: &str = "io.wharf.service";
    pub const SLOT: &str = "io.wharf.slot";
    pub const SPEC_HASH: &str = "io.wharf.spec-hash";
    pub const IMAGE: &str = "io.wharf.image";
    pub const IMAGE_DIGEST: &str = "io.wharf.image-digest";
    /// The manifest file the service came from, and its directory.
    pub const MANIFEST: &str = "io.wharf.manifest";
    pub const MANIFEST_DIR: &str = "io.wharf.manifest-dir";
    /// The normalised service spec, as JSON.
    pub const SPEC: &str = "io.wharf.spec";
    /// The config digests and secret versions (JSON), for a rollback.
    pub const FILES: &str = "io.wharf.files";
}

/// Docker's default capability set.
const CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Syscalls refused with EPERM: what Docker's default profile keeps from a container
/// without extra capabilities (kernel modules, kexec, reboot, keyrings, BPF,
/// namespaces, clock changes, tracing other processes...).
const DENIED_SYSCALLS: [&str; 44] = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "unshare",
];

/// The namespace flags of `clone(2)`: a container may create threads and processes,
/// not namespaces (a user namespace would give it a full capability set over new
/// namespaces: netfilter, mounts, the surface of many escapes). Docker's default
/// profile refuses the same flags.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// EPERM, for the denied syscalls and namespace flags.
const EPERM: u32 = 1;

/// ENOSYS, for `clone3`: its flags are in memory, out of seccomp's reach, so it is
/// refused as "not implemented" and glibc falls back to `clone`, as with Docker.
const ENOSYS: u32 = 38;

/// The OCI runtime spec version config.json declares.
const OCI_VERSION: &str = "1.0.2";

/// The container process's umask: files it creates are readable by others, as in
/// Docker (wharf's own 077 would make youki's mount points private).
const UMASK: u32 = 0o022;

/// The CFS period wharf uses; `cpus` becomes a quota of that many periods.
const CPU_PERIOD_US: u64 = 100_000;

/// Host files a container must not read (as runc and Docker mask them).
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Kernel interfaces a container may read but not write.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// /proc paths, and on cgroup v1 the memory file system at /sys/fs/cgroup and each
/// hierarchy in it.
fn readonly_paths(host: &HostFacts) -> Vec<String> {
    let v1 = &host.cgroup_v1_hierarchies;
    let cgroups = (!v1.is_empty()).then(|| "/sys/fs/cgroup".to_owned());
    let hierarchies = v1.iter().map(|name| format!("/sys/fs/cgroup/{name}"));
    strings(&READONLY_PATHS)
        .into_iter()
        .chain(cgroups)
        .chain(hierarchies)
        .collect()
}

/// The filesystems every container gets: destination, type, source, options.
const SYSTEM_MOUNTS: [(&str, &str, &str, &[&str]); 7] = [
    ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
    (
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    ),
    (
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ),
    (
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ),
    (
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ),
    (
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ),
];

/// What the runtime resolved on the host for one container.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub id: String,
    /// Hostname: `<service>-<slot>`.
    pub hostname: String,
    pub slot: u32,
    pub rootfs: PathBuf,
    pub user: ResolvedUser,
    pub mounts: Vec<MountSource>,
    /// Configs and secrets, and env values from secrets.
    pub files: ContainerFiles,
    /// /etc/hosts, /etc/hostname and /etc/resolv.conf written for the container.
    pub etc_dir: PathBuf,
    /// The host's hard limit on open files (the container cannot go above it).
    pub nofile_hard: u64,
    /// The host's cgroup v1 hierarchies (`cpu`, `pids`...), none on cgroup v2:
    /// made read-only in the container, as Docker's are (libcontainer mounts them
    /// writable, so the container could raise its own limits).
    pub cgroup_v1_hierarchies: Vec<String>,
    pub cgroups_path: String,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
}

/// Where each of the service's volumes comes from on the host, in manifest order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host directory (named or anonymous volume, or bind source).
    Dir(PathBuf),
    Tmpfs,
}

/// The process's command line: manifest `command`/`args` replace the image's
/// Entrypoint/Cmd as Docker does (a new entrypoint also drops the image's Cmd).
pub fn command_line(
    service: &ServiceSpec,
    image: &ImageConfig,
) -> Result<Vec<String>, RuntimeError> {
    let defaults = image.config.clone().unwrap_or_default();
    let entrypoint = service
        .command
        .clone()
        .or(defaults.entrypoint)
        .unwrap_or_default();
    let cmd = match (&service.args, &service.command) {
        (Some(args), _) => args.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => defaults.cmd.unwrap_or_default(),
    };
    let line: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if line.is_empty() {
        return Err(RuntimeError::Config(
            "the image defines neither Entrypoint nor Cmd; set `command` in the manifest".into(),
        ));
    }
    Ok(line)
}

/// Image env overlaid by manifest env (variables taken from secrets have their
/// values in `secret_env`), plus WHARF_SERVICE and WHARF_REPLICA.
pub fn environment(
    service: &ServiceSpec,
    image: &ImageConfig,
    slot: u32,
    secret_env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let image_env = image
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    for entry in image_env {
        let (key, value) = entry.split_once('=').unwrap_or((&entry, ""));
        env.insert(key.to_owned(), value.to_owned());
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for (name, value) in &service.env {
        let value = match value {
            EnvValue::Text(text) => Some(text),
            EnvValue::Secret { .. } => secret_env.get(name),
        };
        if let Some(value) = value {
            env.insert(name.clone(), value.clone());
        }
    }
    env.insert("WHARF_SERVICE".into(), service.name.clone());
    env.insert("WHARF_REPLICA".into(), slot.to_string());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The working directory: the manifest's, else the image's, else `/`.
pub fn working_dir(service: &ServiceSpec, image: &ImageConfig) -> String {
    service
        .workdir
        .clone()
        .or_else(|| image.config.as_ref().and_then(|c| c.working_dir.clone()))
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Builds config.json: the typed OCI runtime spec, as JSON.
pub fn runtime_config(
    service: &ServiceSpec,
    image: &ImageConfig,
    host: &HostFacts,
) -> Result<Value, RuntimeError> {
    let spec = runtime_spec(service, image, host)?;
    serde_json::to_value(&spec).map_err(|err| {
        RuntimeError::Config(format!("cannot serialize the OCI runtime spec: {err}"))
    })
}

/// The OCI runtime spec of one container. Every field wharf relies on is set
/// explicitly: oci-spec's builders fill unset fields from the types' `Default`,
/// which describes another container (a shell, hostname "youki", a network
/// namespace, inheritable and ambient capabilities...).
fn runtime_spec(
    service: &ServiceSpec,
    image: &ImageConfig,
    host: &HostFacts,
) -> Result<Spec, RuntimeError> {
    let user = UserBuilder::default()
        .uid(host.user.uid)
        .gid(host.user.gid)
        .umask(UMASK)
        .build()
        .map_err(invalid)?;
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(host.nofile_hard)
        .soft(host.nofile_hard.min(1024))
        .build()
        .map_err(invalid)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(command_line(service, image)?)
        .env(environment(
            service,
            image,
            host.slot,
            &host.files.secret_env,
        ))
        .cwd(working_dir(service, image))
        .capabilities(capabilities().map_err(invalid)?)
        .rlimits(vec![nofile])
        .no_new_privileges(true)
        .build()
        .map_err(invalid)?;
    let root = RootBuilder::default()
        .path(host.rootfs.as_path())
        .readonly(false)
        .build()
        .map_err(invalid)?;
    let linux = LinuxBuilder::default()
        .cgroups_path(host.cgroups_path.as_str())
        .namespaces(namespaces(service.network).map_err(invalid)?)
        .resources(resources(service)?)
        .masked_paths(strings(&MASKED_PATHS))
        .readonly_paths(readonly_paths(host))
        .seccomp(seccomp_profile().map_err(invalid)?)
        // Mount events of the host do not reach the container (as Docker), nor does
        // wharf's detaching its root filesystem from the host once it is built.
        .rootfs_propagation("private")
        .build()
        .map_err(invalid)?;
    let annotations: HashMap<String, String> = host
        .annotations
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    SpecBuilder::default()
        .version(OCI_VERSION)
        .process(process)
        .root(root)
        .hostname(host.hostname.as_str())
        .mounts(mounts(service, host)?)
        .annotations(annotations)
        .linux(linux)
        .build()
        .map_err(invalid)
}

/// A builder refused what wharf gave it.
fn invalid(err: OciSpecError) -> RuntimeError {
    RuntimeError::Config(format!("cannot build the OCI runtime spec: {err}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// The same set bounding, effective and permitted; no inheritable or ambient set.
fn capabilities() -> Result<LinuxCapabilities, OciSpecError> {
    let set: Capabilities = CAPABILITIES.into_iter().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()?;
    // Left unset, these two would come from `LinuxCapabilities::default()`, which
    // fills them (AUDIT_WRITE, KILL, NET_BIND_SERVICE).
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    Ok(capabilities)
}

/// Own pid, ipc, uts, mount and cgroup namespaces; a network namespace only for
/// `network: none` (`host` shares the host's). No user namespace: wharf runs as root.
fn namespaces(network: Network) -> Result<Vec<LinuxNamespace>, OciSpecError> {
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if network != Network::Host {
        kinds.push(LinuxNamespaceType::Network);
    }
    kinds
        .into_iter()
        .map(|kind| LinuxNamespaceBuilder::default().typ(kind).build())
        .collect()
}

/// The device allow-list and the manifest's limits; no limit where it sets none.
fn resources(service: &ServiceSpec) -> Result<LinuxResources, RuntimeError> {
    let limits = &service.resources;
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules().map_err(invalid)?);
    if let Some(cpus) = limits.cpus {
        let cpu = LinuxCpuBuilder::default()
            .quota((cpus * CPU_PERIOD_US as f64).round() as i64)
            .period(CPU_PERIOD_US)
            .build()
            .map_err(invalid)?;
        resources = resources.cpu(cpu);
    }
    if let Some(memory) = limits.memory {
        // The OCI type is signed.
        let limit = i64::try_from(memory.bytes()).map_err(|_| {
            RuntimeError::Config(format!(
                "memory limit of {} bytes is too large",
                memory.bytes()
            ))
        })?;
        let memory = LinuxMemoryBuilder::default()
            .limit(limit)
            .build()
            .map_err(invalid)?;
        resources = resources.memory(memory);
    }
    if let Some(pids) = limits.pids {
        let pids = LinuxPidsBuilder::default()
            .limit(i64::from(pids))
            .build()
            .map_err(invalid)?;
        resources = resources.pids(pids);
    }
    resources.build().map_err(invalid)
}

/// Deny every device, then allow the ones every container gets (as runc and Docker do).
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, OciSpecError> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    // A character device; no minor number means all of them.
    let allow = |major: i64, minor: Option<i64>| {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        let rule = match minor {
            Some(minor) => rule.minor(minor),
            None => rule,
        };
        rule.build()
    };
    Ok(vec![
        deny_all,
        allow(1, Some(3))?, // null
        allow(1, Some(5))?, // zero
        allow(1, Some(7))?, // full
        allow(1, Some(8))?, // random
        allow(1, Some(9))?, // urandom
        allow(5, Some(0))?, // tty
        allow(5, Some(2))?, // ptmx
        allow(136, None)?,  // pts
    ])
}

/// The seccomp profile: everything allowed but the denied syscalls and namespace
/// creation through `clone`/`clone3`.
fn seccomp_profile() -> Result<LinuxSeccomp, OciSpecError> {
    fn refuse(names: &[&str], errno: u32) -> LinuxSyscallBuilder {
        LinuxSyscallBuilder::default()
            .names(strings(names))
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno)
    }
    let mut rules = vec![
        refuse(&DENIED_SYSCALLS, EPERM).build()?,
        refuse(&["clone3"], ENOSYS).build()?,
    ];
    // One rule per flag: a rule's conditions are ANDed, separate rules ORed. With the
    // flag as both mask and value, the rule reads "arg0 & flag == flag" whichever of
    // the two a runtime takes for the mask.
    for flag in CLONE_NAMESPACE_FLAGS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0_usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?;
        rules.push(refuse(&["clone"], EPERM).args(vec![arg]).build()?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
            Arch::ScmpArchArm,
        ])
        .syscalls(rules)
        .build()
}

fn mounts(service: &ServiceSpec, host: &HostFacts) -> Result<Vec<Mount>, RuntimeError> {
    let mut mounts = SYSTEM_MOUNTS
        .iter()
        .map(|&(destination, kind, source, options)| {
            mount(destination, kind, Path::new(source), strings(options))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    // Read-only: wharf keeps them (service names are appended to hosts), and a
    // container writing them would fill the host's disk outside its own limits.
    for file in ["hosts", "hostname", "resolv.conf"] {
        let etc_file = bind(&host.etc_dir.join(file), &format!("/etc/{file}"), true);
        mounts.push(etc_file.map_err(invalid)?);
    }
    if service.volumes.len() != host.mounts.len() {
        return Err(RuntimeError::Config(
            "internal error: one host source per volume expected".into(),
        ));
    }
    for (volume, source) in service.volumes.iter().zip(&host.mounts) {
        let volume_mount = match (volume.kind, source) {
            (VolumeKind::Tmpfs, _) | (_, MountSource::Tmpfs) => {
                tmpfs(&volume.target, volume.size, volume.readonly)
            }
            (_, MountSource::Dir(dir)) => bind(dir, &volume.target, volume.readonly),
        };
        mounts.push(volume_mount.map_err(invalid)?);
    }
    // After the volumes: a config may be mounted at a path inside one.
    for (source, target) in &host.files.mounts {
        mounts.push(bind(source, target, true).map_err(invalid)?);
    }
    Ok(mounts)
}

fn mount(
    destination: &str,
    kind: &str,
    source: &Path,
    options: Vec<String>,
) -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options)
        .build()
}

fn bind(source: &Path, target: &str, readonly: bool) -> Result<Mount, OciSpecError> {
    let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
    // `ro` alone covers only the top mount; `rro` makes every mount below the source
    // (a tmpfs or a USB disk mounted there later) read-only too.
    options.extend(if readonly {
        &["ro", "rro"][..]
    } else {
        &["rw"][..]
    });
    mount(target, "bind", source, strings(&options))
}

fn tmpfs(target: &str, size: Option<ByteSize>, readonly: bool) -> Result<Mount, OciSpecError> {
    let mut options = strings(&["nosuid", "nodev", "mode=1777"]);
    if let Some(size) = size {
        options.push(format!("size={}", size.bytes()));
    }
    if readonly {
        options.push("ro".into());
    }
    mount(target, "tmpfs", Path::new("tmpfs"), options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;
    use serde_json::json;

    fn spec_from(extra: &str) -> ServiceSpec {
        let text = format!(
            "apiVersion: wharf/v1\nkind: Service\nname: web\nimage: reg.lan/web:1\n\
             command: [/bin/app]\n{extra}"
        );
        parse_manifest(Path::new("web.yaml"), text.as_bytes())
            .expect("valid manifest")
            .remove(0)
            .spec
    }

    fn host_facts(mounts: Vec<MountSource>) -> HostFacts {
        HostFacts {
            id: "web-1-abcdef".into(),
            hostname: "web-1".into(),
            slot: 1,
            rootfs: "/var/lib/wharf/containers/web-1-abcdef/rootfs".into(),
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
            },
            mounts,
            files: ContainerFiles::default(),
            etc_dir: "/var/lib/wharf/containers/web-1-abcdef/etc".into(),
            nofile_hard: 4096,
            cgroup_v1_hierarchies: Vec::new(),
            cgroups_path: "/wharf/web-1-abcdef".into(),
            annotations: BTreeMap::from([(annotation::SERVICE.to_owned(), "web".to_owned())]),
        }
    }

    /// Pins the JSON a runtime reads: OCI field names and values, and no defaults
    /// leaked from oci-spec's `Default` impls.
    #[test]
    fn config_json_has_the_oci_field_names_and_values() {
        let image: ImageConfig =
            serde_json::from_value(json!({ "rootfs": { "diff_ids": [] } })).expect("image config");
        let service = spec_from(
            "network: none\n\
             resources: {cpus: 0.5, memory: 64Mi, pids: 100}\n\
             volumes:\n\
             \x20 - {type: volume, name: data, target: /data, readonly: true}\n\
             \x20 - {type: tmpfs, target: /scratch, size: 1Mi}\n",
        );
        let host = host_facts(vec![
            MountSource::Dir("/var/lib/wharf/volumes/data".into()),
            MountSource::Tmpfs,
        ]);
        let config = runtime_config(&service, &image, &host).expect("config");

        assert_eq!(config["ociVersion"], "1.0.2");
        assert_eq!(config["hostname"], "web-1");
        assert!(config.get("domainname").is_none());
        assert_eq!(
            config["root"],
            json!({ "path": "/var/lib/wharf/containers/web-1-abcdef/rootfs", "readonly": false })
        );
        assert_eq!(config["annotations"][annotation::SERVICE], "web");
        assert_eq!(
            config["annotations"].as_object().map(|map| map.len()),
            Some(1)
        );

        let process = &config["process"];
        assert_eq!(process["terminal"], false);
        assert_eq!(process["args"], json!(["/bin/app"]));
        assert_eq!(process["cwd"], "/");
        assert_eq!(
            process["user"],
            json!({ "uid": 1000, "gid": 1000, "umask": 0o022 })
        );
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(
            process["rlimits"],
            json!([{ "type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024 }])
        );
        let capabilities = &process["capabilities"];
        let mut expected = vec![
            "CAP_AUDIT_WRITE",
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_MKNOD",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_RAW",
            "CAP_SETFCAP",
            "CAP_SETGID",
            "CAP_SETPCAP",
            "CAP_SETUID",
            "CAP_SYS_CHROOT",
        ];
        expected.sort_unstable();
        for set in ["bounding", "effective", "permitted"] {
            // A set: its order in the JSON is not meaningful.
            let mut names: Vec<&str> = capabilities[set]
                .as_array()
                .expect(set)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            names.sort_unstable();
            assert_eq!(names, expected, "{set}");
        }
        assert!(capabilities.get("inheritable").is_none());
        assert!(capabilities.get("ambient").is_none());

        let mounts = config["mounts"].as_array().expect("mounts");
        assert_eq!(mounts.len(), SYSTEM_MOUNTS.len() + 3 + 2);
        assert_eq!(
            mounts[0],
            json!({ "destination": "/proc", "type": "proc", "source": "proc",
                    "options": ["nosuid", "noexec", "nodev"] })
        );
        assert_eq!(
            mounts[SYSTEM_MOUNTS.len()],
            json!({ "destination": "/etc/hosts", "type": "bind",
                    "source": "/var/lib/wharf/containers/web-1-abcdef/etc/hosts",
                    "options": ["rbind", "rprivate", "nosuid", "nodev", "ro", "rro"] })
        );
        assert_eq!(
            mounts[mounts.len() - 2],
            json!({ "destination": "/data", "type": "bind",
                    "source": "/var/lib/wharf/volumes/data",
                    "options": ["rbind", "rprivate", "nosuid", "nodev", "ro", "rro"] })
        );
        assert_eq!(
            mounts[mounts.len() - 1],
            json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777", "size=1048576"] })
        );

        let linux = &config["linux"];
        assert_eq!(linux["cgroupsPath"], "/wharf/web-1-abcdef");
        assert_eq!(
            linux["namespaces"],
            json!([{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                   { "type": "mount" }, { "type": "cgroup" }, { "type": "network" }])
        );
        let resources = &linux["resources"];
        assert_eq!(
            resources["cpu"],
            json!({ "quota": 50_000, "period": 100_000 })
        );
        assert_eq!(resources["memory"], json!({ "limit": 64 * 1024 * 1024 }));
        assert_eq!(resources["pids"], json!({ "limit": 100 }));
        let devices = resources["devices"].as_array().expect("devices");
        assert_eq!(devices.len(), 9);
        assert_eq!(devices[0], json!({ "allow": false, "access": "rwm" }));
        assert_eq!(
            devices[1],
            json!({ "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" })
        );
        assert_eq!(
            devices[8],
            json!({ "allow": true, "type": "c", "major": 136, "access": "rwm" })
        );
        assert_eq!(linux["maskedPaths"], json!(MASKED_PATHS));
        assert_eq!(linux["readonlyPaths"], json!(READONLY_PATHS));

        let seccomp = &linux["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(
            seccomp["architectures"],
            json!([
                "SCMP_ARCH_X86_64",
                "SCMP_ARCH_X86",
                "SCMP_ARCH_X32",
                "SCMP_ARCH_AARCH64",
                "SCMP_ARCH_ARM"
            ])
        );
        let syscalls = seccomp["syscalls"].as_array().expect("syscalls");
        assert_eq!(syscalls.len(), 2 + CLONE_NAMESPACE_FLAGS.len());
        assert_eq!(
            syscalls[0],
            json!({ "names": DENIED_SYSCALLS.as_slice(), "action": "SCMP_ACT_ERRNO", "errnoRet": 1 })
        );
        assert_eq!(
            syscalls[1],
            json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 })
        );
        for (rule, flag) in syscalls[2..].iter().zip(CLONE_NAMESPACE_FLAGS) {
            assert_eq!(
                *rule,
                json!({ "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                        "args": [{ "index": 0, "value": flag, "valueTwo": flag,
                                   "op": "SCMP_CMP_MASKED_EQ" }] })
            );
        }

        // What libcontainer does with the file: read it back as a Spec.
        let read_back: Spec = serde_json::from_value(config).expect("a valid OCI spec");
        assert_eq!(read_back.hostname().as_deref(), Some("web-1"));

        // `host` network: the container stays in the host's namespace.
        let on_host = spec_from("network: host\n");
        let config = runtime_config(&on_host, &image, &host_facts(Vec::new())).expect("config");
        let namespaces = config["linux"]["namespaces"]
            .as_array()
            .expect("namespaces");
        assert!(!namespaces.contains(&json!({ "type": "network" })));
        assert_eq!(namespaces.len(), 5);
        assert!(config["linux"]["resources"].get("cpu").is_none());
    }
}
