//! wharf's nftables table, `inet wharf`: only it, never another table (Docker's,
//! firewalld's). Rules go in as one `nft -f -` transaction, as kube-proxy's nftables
//! mode does: atomic, and readable with `nft list table inet wharf`.
//!
//! The table's fixed part (`BASE`): egress NAT, forwarding, and the lookups of
//! services. A service has a chain `svc-<key>` that DNATs its virtual address to one
//! of its ready replicas, picked at random, and each published host port a chain
//! `port-<protocol>[-<host ip>]-<port>` that DNATs to a ready replica's container
//! port; the maps `services` (virtual address → chain), `published` and
//! `published-on` (protocol . port, or host address . protocol . port → chain) lead
//! there. A change of a service's replicas rewrites only its own chains, in one
//! transaction: connections under way keep their replica (conntrack), new ones go to
//! the replicas now listed. A service with no ready replica has empty chains:
//! its virtual address is refused, its host port left to the host (nothing listens:
//! refused too).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{Subnet, BRIDGE, LINK_PREFIX};
use crate::manifest::Protocol;
use crate::process::spawn_beside_containers;
use crate::reaper::Reaper;

/// How long one nft transaction may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// When this process last installed the rules: each `nft` run costs some 20 ms, so
/// they are put in place again only now and then (another program may have flushed
/// the ruleset meanwhile).
static INSTALLED_AT: Mutex<Option<Instant>> = Mutex::new(None);
const REINSTALL_AFTER: Duration = Duration::from_secs(60);

/// Installs the table's fixed part (see `base`).
pub(super) fn ensure_rules(subnet: &Subnet) -> Result<(), String> {
    let mut installed = INSTALLED_AT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if installed.is_some_and(|at| at.elapsed() < REINSTALL_AFTER) {
        return Ok(());
    }
    run_nft(&base(subnet))?;
    *installed = Some(Instant::now());
    Ok(())
}

/// Every services transaction carries the fixed part too: no separate run is due
/// for a while after one.
fn note_installed() {
    *INSTALLED_AT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
}

/// The fixed part of the table. Declaring the table, maps and chains creates them if
/// missing; the fixed chains are then rewritten whole, so that running this again
/// changes nothing (and services' chains and map elements stay).
///
/// - Egress NAT: containers' traffic leaving the host through another interface is
///   masqueraded behind the host's address, as Docker and podman do. Traffic DNATed
///   to a replica is masqueraded too when it comes from a container (a replica may be
///   reached through its own service: the reply must come back through the host) or
///   from the host's 127/8 (which cannot leave the loopback).
/// - DNAT: services' virtual addresses from containers and the host itself, never
///   from other hosts; published ports of the host's own addresses, from other hosts
///   and containers (prerouting) and from the host itself (output).
/// - Forwarding: the host forwards for its containers' connections (replies, and
///   what they start) and for DNATed traffic; a virtual address without a ready
///   replica is refused rather than routed on; nothing else is routed into the
///   bridge. (Another table's forward drop, Docker's or firewalld's, still applies:
///   an accept here cannot override it.)
/// - 127/8 arriving on any interface but lo is dropped: `route_localnet` on the
///   bridge must not let neighbours reach the host's loopback services
///   (CVE-2020-8558, as kube-proxy does).
/// - Table `bridge wharf`: a container sends only from its own MAC and address, on
///   its own port of the bridge (the set `bound`, one element per container): with
///   CAP_NET_RAW (in Docker's default set too) it could otherwise answer ARP for
///   another container's address, or send as it, and take its traffic. Only IPv4 and
///   ARP frames pass (the network is IPv4 only).
fn base(subnet: &Subnet) -> String {
    let containers = subnet.containers();
    let services = subnet.services();
    format!(
        "table inet wharf {{\n\
         \tmap services {{ type ipv4_addr : verdict; }}\n\
         \tmap published {{ type inet_proto . inet_service : verdict; }}\n\
         \tmap published-on {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
         \tchain egress {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept; }}\n\
         \tchain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         \tchain output {{ type nat hook output priority -100; policy accept; }}\n\
         \tchain output-filter {{ type filter hook output priority filter; policy accept; }}\n\
         \tchain localnet-guard {{ type filter hook prerouting priority raw; policy accept; }}\n\
         \tchain published-ports {{ }}\n\
         }}\n\
         flush chain inet wharf egress\n\
         add rule inet wharf egress ip saddr {containers} oifname != \"{BRIDGE}\" masquerade\n\
         add rule inet wharf egress ct status dnat ip saddr {subnet} oifname \"{BRIDGE}\" masquerade\n\
         add rule inet wharf egress ct status dnat ip saddr 127.0.0.0/8 masquerade\n\
         flush chain inet wharf forward\n\
         add rule inet wharf forward ct state established,related accept\n\
         add rule inet wharf forward ct status dnat accept\n\
         add rule inet wharf forward ip daddr {services} reject\n\
         add rule inet wharf forward iifname \"{BRIDGE}\" accept\n\
         add rule inet wharf forward oifname \"{BRIDGE}\" drop\n\
         flush chain inet wharf prerouting\n\
         add rule inet wharf prerouting iifname \"{BRIDGE}\" ip daddr vmap @services\n\
         add rule inet wharf prerouting fib daddr type local jump published-ports\n\
         flush chain inet wharf output\n\
         add rule inet wharf output ip daddr vmap @services\n\
         add rule inet wharf output fib daddr type local jump published-ports\n\
         flush chain inet wharf output-filter\n\
         add rule inet wharf output-filter ip daddr {services} reject\n\
         flush chain inet wharf localnet-guard\n\
         add rule inet wharf localnet-guard iifname != \"lo\" ip daddr 127.0.0.0/8 drop\n\
         flush chain inet wharf published-ports\n\
         add rule inet wharf published-ports ip daddr . meta l4proto . th dport vmap @published-on\n\
         add rule inet wharf published-ports meta l4proto . th dport vmap @published\n\
         table bridge wharf {{\n\
         \tset bound {{ type ifname . ether_addr . ipv4_addr; }}\n\
         \tchain guard {{ type filter hook prerouting priority -300; policy accept; }}\n\
         }}\n\
         flush chain bridge wharf guard\n\
         add rule bridge wharf guard iifname \"{LINK_PREFIX}*\" ether type ip iifname . ether saddr . ip saddr != @bound drop\n\
         add rule bridge wharf guard iifname \"{LINK_PREFIX}*\" ether type arp iifname . arp saddr ether . arp saddr ip != @bound drop\n\
         add rule bridge wharf guard iifname \"{LINK_PREFIX}*\" ether type != {{ ip, arp }} drop\n"
    )
}

/// A container's port on the bridge with the MAC and address it may send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Binding {
    pub link: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
}

impl Binding {
    fn element(&self) -> String {
        let mac: Vec<String> = self.mac.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "bridge wharf bound {{ \"{}\" . {} . {} }}",
            self.link,
            mac.join(":"),
            self.address
        )
    }
}

/// A host port a service publishes: on all the host's addresses, or on one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_ip: Option<Ipv4Addr>,
    pub port: u16,
}

impl HostPort {
    fn chain(&self) -> String {
        let protocol = self.protocol.name();
        match self.host_ip {
            Some(ip) => format!("port-{protocol}-{:08x}-{}", u32::from(ip), self.port),
            None => format!("port-{protocol}-{}", self.port),
        }
    }

    fn map_element(&self) -> String {
        let protocol = self.protocol.name();
        match self.host_ip {
            Some(ip) => format!("published-on {{ {ip} . {protocol} . {} ", self.port),
            None => format!("published {{ {protocol} . {} ", self.port),
        }
    }
}

impl std::fmt::Display for HostPort {
    /// "18080/tcp", "127.0.0.1:18080/tcp"
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(f, "{}/{}", self.port, self.protocol.name())
    }
}

/// What the kernel should do for one service now.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct ServiceRules {
    /// The service's key (see `services::service_key`).
    pub key: String,
    pub virtual_address: Option<Ipv4Addr>,
    /// Its ready replicas' addresses.
    pub ready: Vec<Ipv4Addr>,
    /// Each host port its replicas publish, with the ready replicas' (address,
    /// container port); a port with no ready replica is still held, empty.
    pub ports: BTreeMap<HostPort, Vec<(Ipv4Addr, u16)>>,
    /// Host ports it published before and no longer does.
    pub withdrawn: Vec<HostPort>,
    /// The service has no replica left: its address and chains go.
    pub gone: bool,
    /// New members' ports on the bridge, and those of members that went.
    pub bind: Vec<Binding>,
    pub unbind: Vec<Binding>,
}

/// The one transaction that makes the kernel match each service's `rules` (the fixed
/// part first, so that it works on a host whose ruleset was flushed).
pub(super) fn services_script(subnet: &Subnet, services: &[ServiceRules]) -> String {
    let mut script = base(subnet);
    for rules in services {
        add_service(&mut script, rules);
    }
    script
}

fn add_service(script: &mut String, rules: &ServiceRules) {
    for binding in &rules.bind {
        let _ = writeln!(script, "add element {}", binding.element());
    }
    for binding in &rules.unbind {
        let element = binding.element();
        let _ = writeln!(script, "add element {element}\ndelete element {element}");
    }
    let chain = format!("svc-{}", rules.key);
    // Declared first so that flushing and deleting never fail on a missing one.
    let _ = writeln!(script, "add chain inet wharf {chain}");
    let _ = writeln!(script, "flush chain inet wharf {chain}");
    for port in rules.ports.keys().chain(&rules.withdrawn) {
        let _ = writeln!(script, "add chain inet wharf {}", port.chain());
        let _ = writeln!(script, "flush chain inet wharf {}", port.chain());
    }
    // An element is added before it is deleted: deleting a missing one would fail
    // the transaction, and adding one already there (same verdict) changes nothing.
    let withdraw = |script: &mut String, port: &HostPort| {
        let (element, chain) = (port.map_element(), port.chain());
        let _ = writeln!(
            script,
            "add element inet wharf {element}: goto {chain} }}\n\
             delete element inet wharf {element}}}\n\
             delete chain inet wharf {chain}"
        );
    };
    if rules.gone {
        if let Some(address) = rules.virtual_address {
            let _ = writeln!(
                script,
                "add element inet wharf services {{ {address} : goto {chain} }}\n\
                 delete element inet wharf services {{ {address} }}"
            );
        }
        let _ = writeln!(script, "delete chain inet wharf {chain}");
        for port in rules.ports.keys().chain(&rules.withdrawn) {
            withdraw(script, port);
        }
        return;
    }
    if !rules.ready.is_empty() {
        let targets = spread(rules.ready.iter().map(ToString::to_string));
        let _ = writeln!(script, "add rule inet wharf {chain} dnat ip to {targets}");
    }
    if let Some(address) = rules.virtual_address {
        // `add` of an element already there with the same verdict changes nothing.
        let _ = writeln!(
            script,
            "add element inet wharf services {{ {address} : goto {chain} }}"
        );
    }
    for (port, ready) in &rules.ports {
        if !ready.is_empty() {
            let targets = spread(
                ready
                    .iter()
                    .map(|(address, port)| format!("{address} . {port}")),
            );
            let _ = writeln!(
                script,
                "add rule inet wharf {} meta l4proto {} dnat ip to {targets}",
                port.chain(),
                port.protocol.name()
            );
        }
        let _ = writeln!(
            script,
            "add element inet wharf {}: goto {} }}",
            port.map_element(),
            port.chain()
        );
    }
    for port in &rules.withdrawn {
        withdraw(script, port);
    }
}

/// `numgen random mod N map { 0 : a, 1 : b, ... }`: one of the targets per new
/// connection, each as likely.
fn spread(targets: impl ExactSizeIterator<Item = String>) -> String {
    let count = targets.len();
    let elements: Vec<String> = targets
        .enumerate()
        .map(|(index, target)| format!("{index} : {target}"))
        .collect();
    format!(
        "numgen random mod {count} map {{ {} }}",
        elements.join(", ")
    )
}

/// Applies services' rules in one transaction (see `services_script`).
pub(super) fn apply_services(services: &[ServiceRules]) -> Result<(), String> {
    run_nft(&services_script(&Subnet::current(), services))?;
    note_installed();
    Ok(())
}

/// Runs `nft -f -` with `ruleset` as one transaction. In a process that runs
/// containers, its exit status comes from the reaper (see `crate::process`). The
/// rules are read from an unnamed temporary file, not a pipe: a pipe's write end,
/// copied into a process libcontainer forks meanwhile (a container's init keeps what
/// it inherited until it starts), would keep nft waiting for the end of its input.
fn run_nft(ruleset: &str) -> Result<(), String> {
    let since = SystemTime::now();
    let rules = tempfile::tempfile()
        .and_then(|mut file| {
            file.write_all(ruleset.as_bytes())?;
            file.seek(SeekFrom::Start(0))?;
            Ok(file)
        })
        .map_err(|err| format!("cannot write the rules for nft: {err}"))?;
    let mut nft = spawn_beside_containers(
        Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::from(rules))
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(|err| format!("cannot run nft (is nftables installed?): {err}"))?;
    // Waited for first, so that a hung nft is bounded in time; what it said then
    // waits in the pipe (a few lines, far less than a pipe holds).
    match Reaper::global().wait_for(nft.id() as i32, since, NFT_TIMEOUT) {
        Some(exit) if exit.code == 0 => Ok(()),
        Some(exit) => {
            let mut complaint = String::new();
            if let Some(stderr) = nft.stderr.take() {
                let _ = stderr.take(64 * 1024).read_to_string(&mut complaint);
            }
            Err(format!(
                "nft exited with {}: {}",
                exit.code,
                complaint.trim()
            ))
        }
        None => {
            let _ = nft.kill();
            Err(format!(
                "nft did not finish within {}s",
                NFT_TIMEOUT.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServiceRules {
        let (a, b) = (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3));
        let port = HostPort {
            protocol: Protocol::Tcp,
            host_ip: None,
            port: 18080,
        };
        ServiceRules {
            key: "0123456789abcdef".into(),
            virtual_address: Some(Ipv4Addr::new(10, 77, 200, 1)),
            ready: vec![a, b],
            ports: BTreeMap::from([(port, vec![(a, 8080), (b, 8080)])]),
            ..ServiceRules::default()
        }
    }

    #[test]
    fn a_service_spreads_its_address_and_ports_over_its_ready_replicas() {
        let script = services_script(&Subnet::DEFAULT, &[web()]);
        assert!(script.contains(
            "add rule inet wharf svc-0123456789abcdef dnat ip to numgen random mod 2 map { 0 : 10.77.0.2, 1 : 10.77.0.3 }"
        ));
        assert!(script.contains(
            "add rule inet wharf port-tcp-18080 meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.77.0.2 . 8080, 1 : 10.77.0.3 . 8080 }"
        ));
        assert!(script.contains(
            "add element inet wharf services { 10.77.200.1 : goto svc-0123456789abcdef }"
        ));
        assert!(script
            .contains("add element inet wharf published { tcp . 18080 : goto port-tcp-18080 }"));
        // Its chains are rewritten whole, in the same transaction.
        assert!(script.contains("flush chain inet wharf svc-0123456789abcdef"));
    }

    #[test]
    fn a_service_without_ready_replicas_keeps_empty_chains_and_a_gone_one_loses_them() {
        let idle = ServiceRules {
            ready: Vec::new(),
            ports: web()
                .ports
                .into_keys()
                .map(|port| (port, Vec::new()))
                .collect(),
            ..web()
        };
        let script = services_script(&Subnet::DEFAULT, std::slice::from_ref(&idle));
        assert!(!script.contains("dnat ip to"), "{script}");
        assert!(script.contains("goto port-tcp-18080"));

        let gone = ServiceRules { gone: true, ..idle };
        let script = services_script(&Subnet::DEFAULT, &[gone]);
        assert!(script.contains("delete element inet wharf services { 10.77.200.1 }"));
        assert!(script.contains("delete chain inet wharf svc-0123456789abcdef"));
        assert!(script.contains("delete chain inet wharf port-tcp-18080"));
    }

    #[test]
    fn a_host_port_on_one_address_has_its_own_chain_and_map() {
        let port = HostPort {
            protocol: Protocol::Udp,
            host_ip: Some(Ipv4Addr::LOCALHOST),
            port: 53,
        };
        assert_eq!(port.to_string(), "127.0.0.1:53/udp");
        assert_eq!(port.chain(), "port-udp-7f000001-53");
        assert!(port
            .map_element()
            .starts_with("published-on { 127.0.0.1 . udp . 53"));
    }

    #[test]
    fn a_container_is_bound_to_its_port_mac_and_address() {
        let binding = Binding {
            link: "wh0123456789abc".into(),
            mac: [0x02, 0x42, 10, 77, 0, 2],
            address: Ipv4Addr::new(10, 77, 0, 2),
        };
        let rules = ServiceRules {
            unbind: vec![binding],
            ..web()
        };
        let script = services_script(&Subnet::DEFAULT, &[rules]);
        assert!(script.contains(
            "delete element bridge wharf bound { \"wh0123456789abc\" . 02:42:0a:4d:00:02 . 10.77.0.2 }"
        ));
    }
}
