//! The OCI runtime config (config.json) for one container: a pure function of the
//! service spec, the image config and what the runtime resolved on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::error::RuntimeError;
use crate::image::ImageConfig;
use crate::manifest::{ByteSize, Network, ServiceSpec, VolumeKind};

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
}

/// Docker's default capability set.
const CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
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

/// ENOSYS, for `clone3`: its flags are in memory, out of seccomp's reach, so it is
/// refused as "not implemented" and glibc falls back to `clone`, as with Docker.
const ENOSYS: u32 = 38;

/// The seccomp profile: everything allowed but the denied syscalls and namespace
/// creation through `clone`/`clone3`.
fn seccomp_profile() -> Value {
    let mut rules = vec![
        json!({ "names": DENIED_SYSCALLS.as_slice(), "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }),
        json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }),
    ];
    // One rule per flag: a rule's conditions are ANDed, separate rules ORed. With the
    // flag as both mask and value, the rule reads "arg0 & flag == flag" whichever of
    // the two a runtime takes for the mask.
    rules.extend(CLONE_NAMESPACE_FLAGS.iter().map(|flag| {
        json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }]
        })
    }));
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": rules,
    })
}

/// The CFS period wharf uses; `cpus` becomes a quota of that many periods.
const CPU_PERIOD_US: u64 = 100_000;

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
    /// /etc/hosts, /etc/hostname and /etc/resolv.conf written for the container.
    pub etc_dir: PathBuf,
    /// The host's hard limit on open files (the container cannot go above it).
    pub nofile_hard: u64,
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

/// Image env overlaid by manifest env, plus WHARF_SERVICE and WHARF_REPLICA.
pub fn environment(service: &ServiceSpec, image: &ImageConfig, slot: u32) -> Vec<String> {
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
    env.extend(service.env.clone());
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

/// Builds config.json.
pub fn runtime_config(
    service: &ServiceSpec,
    image: &ImageConfig,
    host: &HostFacts,
) -> Result<Value, RuntimeError> {
    let capabilities: Vec<&str> = CAPABILITIES.to_vec();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if service.network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }
    let mut resources = json!({ "devices": device_rules() });
    if let Some(cpus) = service.resources.cpus {
        resources["cpu"] = json!({
            "quota": (cpus * CPU_PERIOD_US as f64).round() as i64,
            "period": CPU_PERIOD_US,
        });
    }
    if let Some(memory) = service.resources.memory {
        resources["memory"] = json!({ "limit": memory.bytes() });
    }
    if let Some(pids) = service.resources.pids {
        resources["pids"] = json!({ "limit": pids });
    }
    let annotations: BTreeMap<&str, &str> = host
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": host.user.uid, "gid": host.user.gid, "umask": 0o022 },
            "args": command_line(service, image)?,
            "env": environment(service, image, host.slot),
            "cwd": working_dir(service, image),
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": host.nofile_hard, "soft": 1024.min(host.nofile_hard) }
            ],
            "noNewPrivileges": true,
        },
        "root": { "path": host.rootfs, "readonly": false },
        "hostname": host.hostname,
        "mounts": mounts(service, host)?,
        "annotations": annotations,
        "linux": {
            "cgroupsPath": host.cgroups_path,
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ],
            "seccomp": seccomp_profile()
        }
    }))
}

/// Deny every device, then allow the ones every container gets (as runc and Docker do).
fn device_rules() -> Value {
    let allow = |major: i64, minor: Option<i64>| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    json!([
        {"allow": false, "access": "rwm"},
        allow(1, Some(3)),   // null
        allow(1, Some(5)),   // zero
        allow(1, Some(7)),   // full
        allow(1, Some(8)),   // random
        allow(1, Some(9)),   // urandom
        allow(5, Some(0)),   // tty
        allow(5, Some(2)),   // ptmx
        allow(136, None),    // pts
    ])
}

fn mounts(service: &ServiceSpec, host: &HostFacts) -> Result<Vec<Value>, RuntimeError> {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for file in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(bind(
            &host.etc_dir.join(file),
            &format!("/etc/{file}"),
            false,
        ));
    }
    if service.volumes.len() != host.mounts.len() {
        return Err(RuntimeError::Config(
            "internal error: one host source per volume expected".into(),
        ));
    }
    for (volume, source) in service.volumes.iter().zip(&host.mounts) {
        mounts.push(match (volume.kind, source) {
            (VolumeKind::Tmpfs, _) | (_, MountSource::Tmpfs) => {
                tmpfs(&volume.target, volume.size, volume.readonly)
            }
            (_, MountSource::Dir(dir)) => bind(dir, &volume.target, volume.readonly),
        });
    }
    Ok(mounts)
}

fn bind(source: &Path, target: &str, readonly: bool) -> Value {
    let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
    // `ro` alone covers only the top mount; `rro` makes every mount below the source
    // (a tmpfs or a USB disk mounted there later) read-only too.
    options.extend(if readonly {
        &["ro", "rro"][..]
    } else {
        &["rw"][..]
    });
    json!({"destination": target, "type": "bind", "source": source, "options": options})
}

fn tmpfs(target: &str, size: Option<ByteSize>, readonly: bool) -> Value {
    let mut options = vec![
        "nosuid".to_owned(),
        "nodev".to_owned(),
        "mode=1777".to_owned(),
    ];
    if let Some(size) = size {
        options.push(format!("size={}", size.bytes()));
    }
    if readonly {
        options.push("ro".into());
    }
    json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options})
}
