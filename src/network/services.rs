//! Services on the bridge: each has a stable virtual address (its name in every
//! container's /etc/hosts of the same wharf root) and the host ports it publishes;
//! both lead to its ready replicas only (see `nat`).
//!
//! The bridge and the host's ports belong to the host, not to one wharf root, so the
//! records are host-wide, under `/run/wharf/services/<key>/` (emptied at boot, with
//! the kernel's rules): `service.json` (root, name, virtual address, the host ports
//! in the kernel now) and `members/<container id>` (its address, ports, hosts file,
//! whether it is in rotation). Every change happens under one lock and ends with one
//! nftables transaction for that service, computed from its members: any wharf
//! process (apply, the agent, a container's monitor when it exits) may make it, and
//! the last one writes what is true. A member whose container directory is gone (a
//! wharf killed while removing it) counts for nothing: its rules and binding go.
//! `restore` puts every service back in one transaction, after another program
//! flushed the ruleset.
//!
//! Names: a virtual address per service, written into the hosts files rather than
//! served by a resolver (podman's aardvark-dns): nothing runs for it, lookups work
//! with or without the agent, and the address stays the same across scaling,
//! restarts and updates; a service created later is appended to the hosts files of
//! the root's containers. A removed service's line stays in the files of containers
//! that knew it; its address then refuses connections.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::nat::{self, Binding, HostPort, ServiceRules};
use super::{host_link_name, mac_of, NetworkError, Subnet};
use crate::bounded_read::read_regular_text;
use crate::lockfile::FileLock;
use crate::manifest::{PortSpec, Protocol};

const SERVICES: &str = "/run/wharf/services";
const RECORD: &str = "service.json";
const MEMBERS: &str = "members";
/// Records are wharf's own, root-only; a damaged one is still read within bounds.
const MAX_RECORD: u64 = 256 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct ServiceRecord {
    root: PathBuf,
    name: String,
    address: Ipv4Addr,
    /// The host ports in the kernel now, withdrawn once no member publishes them.
    installed: Vec<HostPort>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Member {
    /// The container's /etc/hosts, on the host's side.
    hosts: PathBuf,
    address: Ipv4Addr,
    ports: Vec<PortSpec>,
    /// In rotation: it gets new connections.
    serving: bool,
}

impl Member {
    /// Its container directory (the hosts file's grandparent) is gone: a wharf was
    /// killed while removing it.
    fn is_stale(&self) -> bool {
        !self
            .hosts
            .parent()
            .and_then(Path::parent)
            .is_some_and(Path::exists)
    }
}

/// A container joining its service's members (see `register`).
pub struct Membership<'a> {
    /// The wharf root it belongs to: names are shared within a root.
    pub root: &'a Path,
    pub service: &'a str,
    pub id: &'a str,
    pub address: Ipv4Addr,
    pub ports: &'a [PortSpec],
    /// Its /etc/hosts on the host's side, written already: the services' names are
    /// appended.
    pub hosts: &'a Path,
}

/// The service `service` of the wharf root `root`, host-wide: 16 hex digits.
pub fn service_key(root: &Path, service: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(root.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    hasher.update(service.as_bytes());
    hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Makes a new container a member of its service (out of rotation until
/// `set_serving`): gives the service its virtual address if it is new (and names it
/// in the hosts files of its root's containers), refuses host ports that another
/// service publishes or a program of the host listens on, and names the root's
/// services in the container's hosts file.
pub fn register(member: &Membership<'_>) -> Result<(), NetworkError> {
    Registry::host().register(member)
}

/// Puts a member in rotation or takes it out, and makes the kernel match; returns
/// whether it was in rotation. A container that is no member (not on the bridge, or
/// removed) is left alone.
pub fn set_serving(key: &str, id: &str, serving: bool) -> Result<bool, NetworkError> {
    Registry::host().set_serving(key, id, serving)
}

/// Takes a container that ended out of rotation (its monitor calls this).
pub fn leave_on_exit(key: &str, id: &str) {
    if let Err(err) = set_serving(key, id, false) {
        tracing::warn!(
            container = id,
            "cannot take the container out of rotation: {err}"
        );
    }
}

/// Removes a container from its service's members; the service's rules and address
/// go with its last member.
pub fn unregister(key: &str, id: &str) -> Result<(), NetworkError> {
    Registry::host().unregister(key, id)
}

/// Puts wharf's rules for every service and container back (see `Registry::restore`),
/// at most once a minute in one process (each costs an nft run of all services).
pub fn restore() -> Result<(), NetworkError> {
    static RESTORED_AT: Mutex<Option<Instant>> = Mutex::new(None);
    let mut restored = RESTORED_AT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if restored.is_some_and(|at| at.elapsed() < RESTORE_EVERY) {
        return Ok(());
    }
    // A wharf told another subnet than the bridge's must not rewrite the rules
    // with it (its creations are refused for the same reason).
    let configured = Subnet::current();
    if let Some(bridge) = Subnet::recorded().filter(|bridge| *bridge != configured) {
        return Err(NetworkError::SubnetChanged { bridge, configured });
    }
    Registry::host().restore()?;
    *restored = Some(Instant::now());
    Ok(())
}

const RESTORE_EVERY: Duration = Duration::from_secs(60);

/// Service `service` of root `root` on the bridge: its virtual address and the host
/// ports it publishes ("18080/tcp"), when it has containers there.
pub fn service_view(root: &Path, service: &str) -> Option<(Ipv4Addr, Vec<String>)> {
    let key = service_key(root, service);
    let record: ServiceRecord = read_json(&Registry::host().dir.join(key).join(RECORD))?;
    let ports = record.installed.iter().map(ToString::to_string).collect();
    Some((record.address, ports))
}

/// Whether the container is in rotation.
pub fn is_serving(key: &str, id: &str) -> bool {
    Registry::host()
        .member(key, id)
        .is_some_and(|member| member.serving)
}

struct Registry {
    dir: PathBuf,
}

/// One service's rules as its records say, and what to tidy once the kernel has them.
struct Change {
    key: String,
    record: ServiceRecord,
    members: BTreeMap<String, Member>,
    /// Members whose container is gone.
    stale: Vec<String>,
    rules: ServiceRules,
}

impl Registry {
    fn host() -> Registry {
        Registry {
            dir: PathBuf::from(SERVICES),
        }
    }

    fn lock(&self) -> Result<FileLock, NetworkError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(record_error(&self.dir))?;
        let lock = self.dir.with_extension("lock");
        FileLock::acquire(&lock).map_err(record_error(&lock))
    }

    fn register(&self, new: &Membership<'_>) -> Result<(), NetworkError> {
        let _one_at_a_time = self.lock()?;
        let key = service_key(new.root, new.service);
        // A member whose container was removed by a killed wharf still has rules
        // leading to its address, which the new container may have been given.
        for stale in self.with_stale_members() {
            self.sync(&stale, None, None)?;
        }
        let services = self.all();
        for port in new.ports {
            let owner = services.iter().find(|(other, _, members)| {
                *other != key
                    && members
                        .values()
                        .any(|member| member.ports.iter().any(|p| p.overlaps(port)))
            });
            if let Some((_, record, _)) = owner {
                return Err(NetworkError::PortPublished {
                    port: host_port(port).to_string(),
                    owner: format!("{} (wharf root {})", record.name, record.root.display()),
                });
            }
            check_unbound(&host_port(port))?;
        }
        let existing = services.iter().find(|(other, ..)| *other == key);
        let address = match existing {
            Some((_, record, _)) => record.address,
            None => {
                let used = services
                    .iter()
                    .map(|(_, record, _)| record.address)
                    .collect();
                let subnet = Subnet::current();
                let address = free_service_address(&subnet, &used, &key)
                    .ok_or_else(|| NetworkError::NoServiceAddress(subnet.services()))?;
                let record = ServiceRecord {
                    root: new.root.to_owned(),
                    name: new.service.to_owned(),
                    address,
                    installed: Vec::new(),
                };
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(self.members_dir(&key))
                    .map_err(record_error(&self.members_dir(&key)))?;
                self.write_record(&key, &record)?;
                // Containers of the root made earlier learn the new name.
                let line = hosts_line(new.service, address);
                for (_, record, members) in &services {
                    if record.root == new.root {
                        for member in members.values() {
                            let _ = append(&member.hosts, &line);
                        }
                    }
                }
                address
            }
        };
        let mut names: String = services
            .iter()
            .filter(|(other, record, _)| record.root == new.root && *other != key)
            .map(|(_, record, _)| hosts_line(&record.name, record.address))
            .collect();
        names.push_str(&hosts_line(new.service, address));
        append(new.hosts, &names).map_err(record_error(new.hosts))?;
        let member = Member {
            hosts: new.hosts.to_owned(),
            address: new.address,
            ports: new.ports.to_vec(),
            serving: false,
        };
        self.write_member(&key, new.id, &member)?;
        // Its host ports are held from now on (empty until a replica is ready), and
        // its port on the bridge bound to its address before it runs.
        self.sync(&key, Some(binding(new.id, new.address)), None)
    }

    fn set_serving(&self, key: &str, id: &str, serving: bool) -> Result<bool, NetworkError> {
        let _one_at_a_time = self.lock()?;
        let Some(mut member) = self.member(key, id) else {
            return Ok(false);
        };
        let was = member.serving;
        if was != serving {
            member.serving = serving;
            self.write_member(key, id, &member)?;
            self.sync(key, None, None)?;
        }
        Ok(was)
    }

    fn unregister(&self, key: &str, id: &str) -> Result<(), NetworkError> {
        let _one_at_a_time = self.lock()?;
        let Some(member) = self.member(key, id) else {
            return Ok(());
        };
        let path = self.members_dir(key).join(id);
        fs::remove_file(&path).map_err(record_error(&path))?;
        self.sync(key, None, Some(binding(id, member.address)))
    }

    /// Makes the kernel's rules for service `key` match its members, with a new
    /// member's port bound or a removed one's unbound (lock held).
    fn sync(
        &self,
        key: &str,
        bind: Option<Binding>,
        unbind: Option<Binding>,
    ) -> Result<(), NetworkError> {
        let Some(mut change) = self.change_of(key) else {
            return Ok(());
        };
        change.rules.bind.extend(bind);
        change.rules.unbind.extend(unbind);
        nat::apply_services(std::slice::from_ref(&change.rules)).map_err(NetworkError::Rules)?;
        self.settle(change)
    }

    /// Puts every service's rules and every member's binding back in one
    /// transaction: after another program flushed the ruleset (`systemctl restart
    /// nftables`), nothing of wharf's would work, and containers would send nothing.
    fn restore(&self) -> Result<(), NetworkError> {
        let _one_at_a_time = self.lock()?;
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut changes: Vec<Change> = entries
            .flatten()
            .filter_map(|entry| self.change_of(entry.file_name().to_str()?))
            .collect();
        for change in &mut changes {
            let bindings = change.members.iter().map(|(id, m)| binding(id, m.address));
            change.rules.bind.extend(bindings);
        }
        let rules: Vec<ServiceRules> = changes.iter().map(|c| c.rules.clone()).collect();
        nat::apply_services(&rules).map_err(NetworkError::Rules)?;
        changes
            .into_iter()
            .try_for_each(|change| self.settle(change))
    }

    /// What the kernel should have for service `key` now, from its records; members
    /// whose container is gone are unbound.
    fn change_of(&self, key: &str) -> Option<Change> {
        let record = read_json::<ServiceRecord>(&self.dir.join(key).join(RECORD))?;
        let (members, stale) = self.members_and_stale(key);
        let mut rules = ServiceRules {
            key: key.to_owned(),
            virtual_address: Some(record.address),
            gone: members.is_empty(),
            ..ServiceRules::default()
        };
        for (id, member) in &stale {
            rules.unbind.push(binding(id, member.address));
        }
        for member in members.values() {
            if member.serving {
                rules.ready.push(member.address);
            }
            for port in &member.ports {
                let ready = rules.ports.entry(host_port(port)).or_default();
                if member.serving {
                    ready.push((member.address, port.container));
                }
            }
        }
        rules.ready.sort();
        rules.withdrawn = record
            .installed
            .iter()
            .filter(|port| !rules.ports.contains_key(port))
            .copied()
            .collect();
        Some(Change {
            key: key.to_owned(),
            record,
            members,
            stale: stale.into_iter().map(|(id, _)| id).collect(),
            rules,
        })
    }

    /// Brings the records in line with a change the kernel took: stale members
    /// forgotten, a service without members removed, the host ports now installed.
    fn settle(&self, change: Change) -> Result<(), NetworkError> {
        let Change {
            key,
            mut record,
            stale,
            rules,
            ..
        } = change;
        for id in &stale {
            let _ = fs::remove_file(self.members_dir(&key).join(id));
        }
        if rules.gone {
            let dir = self.dir.join(&key);
            return fs::remove_dir_all(&dir).map_err(record_error(&dir));
        }
        record.installed = rules.ports.into_keys().collect();
        self.write_record(&key, &record)
    }

    /// Every service's key, record and live members.
    fn all(&self) -> Vec<(String, ServiceRecord, BTreeMap<String, Member>)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let key = entry.file_name().into_string().ok()?;
                let record = read_json(&entry.path().join(RECORD))?;
                let members = self.members(&key);
                Some((key, record, members))
            })
            .collect()
    }

    /// The services with a member whose container is gone.
    fn with_stale_members(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|key| !self.members_and_stale(key).1.is_empty())
            .collect()
    }

    /// The live members of service `key`.
    fn members(&self, key: &str) -> BTreeMap<String, Member> {
        self.members_and_stale(key).0
    }

    /// The members of service `key`: live ones, and those whose container is gone.
    fn members_and_stale(&self, key: &str) -> (BTreeMap<String, Member>, Vec<(String, Member)>) {
        let (mut members, mut stale) = (BTreeMap::new(), Vec::new());
        let Ok(entries) = fs::read_dir(self.members_dir(key)) else {
            return (members, stale);
        };
        for entry in entries.flatten() {
            let (Ok(id), Some(member)) = (
                entry.file_name().into_string(),
                read_json::<Member>(&entry.path()),
            ) else {
                continue;
            };
            if member.is_stale() {
                stale.push((id, member));
            } else {
                members.insert(id, member);
            }
        }
        (members, stale)
    }

    fn member(&self, key: &str, id: &str) -> Option<Member> {
        read_json(&self.members_dir(key).join(id))
    }

    fn members_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key).join(MEMBERS)
    }

    fn write_record(&self, key: &str, record: &ServiceRecord) -> Result<(), NetworkError> {
        write_json(&self.dir.join(key).join(RECORD), record)
    }

    fn write_member(&self, key: &str, id: &str, member: &Member) -> Result<(), NetworkError> {
        write_json(&self.members_dir(key).join(id), member)
    }
}

/// Container `id`'s port on the bridge, bound to its address and the MAC made of it.
fn binding(id: &str, address: Ipv4Addr) -> Binding {
    Binding {
        link: host_link_name(id),
        mac: mac_of(address),
        address,
    }
}

fn host_port(port: &PortSpec) -> HostPort {
    HostPort {
        protocol: port.protocol,
        host_ip: port.host_ip,
        port: port.host,
    }
}

fn hosts_line(name: &str, address: Ipv4Addr) -> String {
    format!("{address}\t{name}\n")
}

/// Appends in one write: a process reading the file sees the line whole or not at
/// all. The file is bind-mounted into a container: it is written in place, never
/// replaced.
fn append(path: &Path, text: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .append(true)
        // Written by wharf under a root-only directory; still never through a link.
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?
        .write_all(text.as_bytes())
}

/// The service's virtual address: the first free one from a place given by its key,
/// so that a service keeps its address as long as it exists and names rarely move
/// to another service's old address.
fn free_service_address(subnet: &Subnet, used: &BTreeSet<Ipv4Addr>, key: &str) -> Option<Ipv4Addr> {
    let count = subnet.half_size();
    let start = u32::from_str_radix(key.get(..8)?, 16).ok()? % count;
    let first = u32::from(subnet.services_start());
    (0..count)
        .map(|step| (start + step) % count)
        // Not the half's first and last addresses: they look like a network's.
        .filter(|host| *host != 0 && *host != count - 1)
        .map(|host| Ipv4Addr::from(first + host))
        .find(|address| !used.contains(address))
}

/// Refuses a host port some program of the host listens on: DNAT would take its
/// connections away without a word.
fn check_unbound(port: &HostPort) -> Result<(), NetworkError> {
    let address = SocketAddrV4::new(port.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port.port);
    let bound = match port.protocol {
        Protocol::Tcp => TcpListener::bind(address).err(),
        Protocol::Udp => UdpSocket::bind(address).err(),
    };
    match bound {
        Some(err) if err.kind() == io::ErrorKind::AddrInUse => Err(NetworkError::PortInUse {
            port: port.to_string(),
            owner: owner_of(port).unwrap_or_else(|| "another program".into()),
        }),
        Some(err) if err.kind() == io::ErrorKind::AddrNotAvailable => {
            Err(NetworkError::NotAHostAddress {
                port: port.to_string(),
            })
        }
        // Other errors are not the port's.
        _ => Ok(()),
    }
}

/// "nginx (pid 812)": the program holding the port, found through the socket's inode
/// in /proc/net and the processes' descriptors (bounded: a host may have many).
fn owner_of(port: &HostPort) -> Option<String> {
    const MAX_DESCRIPTORS: usize = 200_000;
    let tables: &[&str] = match port.protocol {
        Protocol::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Protocol::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let inodes: BTreeSet<String> = tables
        .iter()
        .filter_map(|table| read_regular_text(Path::new(table), 16 << 20).ok())
        .flat_map(|table| socket_inodes(&table, port.port, port.protocol))
        .collect();
    let wanted: BTreeSet<String> = inodes
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    let mut seen = 0;
    for process in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(descriptors) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            seen += 1;
            if seen > MAX_DESCRIPTORS {
                return None;
            }
            let Ok(target) = fs::read_link(descriptor.path()) else {
                continue;
            };
            if wanted.contains(target.to_string_lossy().as_ref()) {
                let name = read_regular_text(&process.path().join("comm"), 64).unwrap_or_default();
                return Some(format!("{} (pid {pid})", name.trim()));
            }
        }
    }
    None
}

/// The inodes of sockets on local port `port` in a /proc/net table that listen
/// (TCP) or are bound (UDP).
fn socket_inodes(table: &str, port: u16, protocol: Protocol) -> Vec<String> {
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let listening = match protocol {
                Protocol::Tcp => *state == "0A",
                Protocol::Udp => true,
            };
            (local.ends_with(&port) && listening).then(|| inode.to_string())
        })
        .collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&read_regular_text(path, MAX_RECORD).ok()?).ok()
}

/// Written whole (temporary file, then rename), root-only.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), NetworkError> {
    let temporary = path.with_extension("tmp");
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            // Plain data with string keys: serializing cannot fail.
            file.write_all(&serde_json::to_vec(value).unwrap_or_default())
        })
        .and_then(|()| fs::rename(&temporary, path));
    written.map_err(record_error(path))
}

fn record_error(path: &Path) -> impl FnOnce(io::Error) -> NetworkError {
    let path = path.to_owned();
    move |source| NetworkError::Record { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_key_depends_on_the_root_and_the_name() {
        let key = service_key(Path::new("/var/lib/wharf"), "web");
        assert_eq!(key.len(), 16);
        assert_eq!(key, service_key(Path::new("/var/lib/wharf"), "web"));
        assert_ne!(key, service_key(Path::new("/srv/wharf"), "web"));
        assert_ne!(key, service_key(Path::new("/var/lib/wharf"), "api"));
    }

    #[test]
    fn service_addresses_are_in_the_upper_half_and_never_given_twice() {
        let key = service_key(Path::new("/root"), "web");
        let subnet = Subnet::DEFAULT;
        let first = free_service_address(&subnet, &BTreeSet::new(), &key).expect("free");
        assert!(first >= Ipv4Addr::new(10, 77, 128, 1) && first <= Ipv4Addr::new(10, 77, 255, 254));
        // The same key finds the same place: a service keeps its address.
        assert_eq!(
            free_service_address(&subnet, &BTreeSet::new(), &key),
            Some(first)
        );
        let used = BTreeSet::from([first]);
        let second = free_service_address(&subnet, &used, &key).expect("free");
        assert_ne!(second, first);
    }

    #[test]
    fn listening_sockets_are_found_by_port_in_proc_net() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                     \x20  0: 00000000:46A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n\
                     \x20  1: 0100007F:46A0 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        assert_eq!(socket_inodes(table, 18080, Protocol::Tcp), vec!["4242"]);
        assert!(socket_inodes(table, 18081, Protocol::Tcp).is_empty());
    }
}
