//! wharf's bridge network (`network: bridge`): the bridge `wharf0` with its subnet
//! (`subnet`: 10.77.0.0/16 by default) — containers' addresses in its lower half
//! (wharf's own first), services' virtual addresses in its upper half — one address
//! per container, a veth
//! pair from the bridge into the container's network namespace, egress NAT, and
//! services (`services`): published ports and service names spread over ready
//! replicas in the kernel. netavark, podman's network stack, is the model for the
//! bridge, kube-proxy's nftables mode for services; the kernel is spoken to over
//! netlink directly (`netlink`), nftables through one `nft -f -` transaction per change
//! (`nat`).
//!
//! A container's namespace is made by libcontainer at build; wharf connects it between
//! build and start (`attach`), so the network is there before the container's command
//! runs. The veth pair goes with the namespace when the container ends: a kill -9 at
//! any point leaks no interface. The bridge and its subnet are the host's, so
//! addresses are reserved host-wide (`ipam`), whatever wharf root a container belongs
//! to. A container's MAC is derived from its address, so that a replacement given the
//! same address is reached at once (no stale neighbour entry), and it announces itself
//! when its link comes up (arp_notify). The network is IPv4 only: IPv6 is off on the
//! bridge and in containers, so no router advertisement from a container is accepted.

mod ipam;
mod nat;
mod netlink;
mod netns;
mod services;
mod subnet;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use sha2::{Digest, Sha256};

pub use ipam::{release, reserve};
pub use netns::{bring_up_loopback, tcp_socket_in};
pub use services::{
    is_serving, leave_on_exit, register, restore, service_key, service_view, set_serving,
    unregister, Membership,
};
pub use subnet::Subnet;

use netlink::Rtnl;
use netns::in_namespace;

/// The bridge wharf's containers are connected to.
pub const BRIDGE: &str = "wharf0";

/// The container's side of its veth pair.
const CONTAINER_LINK: &str = "eth0";
/// The host's side of every container's veth pair begins with it.
const LINK_PREFIX: &str = "wh";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot set up the bridge {BRIDGE}: {0}")]
    Bridge(#[source] io::Error),
    #[error("cannot enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward): {0}")]
    Forwarding(#[source] io::Error),
    #[error("cannot install the fixed rules of table inet wharf: {0}")]
    Nat(String),
    #[error("cannot connect the container to {BRIDGE}: {0}")]
    Attach(#[source] io::Error),
    #[error(
        "no address left in {0}: every one is held by a container (exited ones too); remove \
         containers, or give wharf a larger subnet (--subnet)"
    )]
    Exhausted(String),
    #[error("cannot reserve an address ({}): {source}", path.display())]
    Reservation {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{BRIDGE} exists and is not a bridge: wharf will not use it; remove it (ip link del \
         {BRIDGE}) or rename it"
    )]
    NotABridge,
    #[error(
        "the host already routes {route} through {interface}, which overlaps wharf's subnet \
         {subnet}: wharf will not take it over; give wharf another subnet (--subnet or \
         WHARF_SUBNET, e.g. 172.30.0.0/16)"
    )]
    SubnetInUse {
        route: String,
        interface: String,
        subnet: Subnet,
    },
    #[error(
        "{BRIDGE} is set up with the subnet {bridge}, not {configured}: remove every \
         container on it (wharf down) and the bridge (ip link del {BRIDGE}) to change it, \
         or use {bridge}"
    )]
    SubnetChanged { bridge: Subnet, configured: Subnet },
    #[error(
        "{BRIDGE} already routes {route}, not wharf's {subnet}: an earlier wharf or another \
         program set it up; remove the containers on it and the bridge (ip link del \
         {BRIDGE})"
    )]
    BridgeInUse { route: String, subnet: Subnet },
    #[error("no service address left in {0}: every one is held by a service; remove services")]
    NoServiceAddress(String),
    #[error(
        "host port {port} is already published by service {owner}; publish another host \
         port, or remove that service first"
    )]
    PortPublished { port: String, owner: String },
    #[error(
        "host port {port} is already in use on this host by {owner}: wharf would take its \
         traffic away; stop that program or publish another host port"
    )]
    PortInUse { port: String, owner: String },
    #[error(
        "cannot publish {port}: the host has no such address (host_ip); use one of the \
         host's addresses, or leave host_ip out to publish on all of them"
    )]
    NotAHostAddress { port: String },
    #[error("cannot update the services' rules in table inet wharf: {0}")]
    Rules(String),
    #[error("cannot keep the service's records ({}): {source}", path.display())]
    Record {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The lowest address of the subnet's containers' half that is neither `used` nor the
/// gateway, network or broadcast address.
pub fn next_free(subnet: &Subnet, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let network = u32::from(subnet.gateway()) - 1;
    (2..subnet.half_size() - 1)
        .map(|host| Ipv4Addr::from(network + host))
        .find(|address| !used.contains(address))
}

/// Connects the container whose init is `pid` (container `id`) to the bridge with
/// `address`: its `eth0` is the peer of a veth on the bridge, with the address and a
/// default route through wharf; `lo` is up too.
pub fn attach(bridge: &Bridge, pid: i32, id: &str, address: Ipv4Addr) -> Result<(), NetworkError> {
    let Bridge {
        index: bridge,
        subnet,
    } = *bridge;
    // Opened once: the veth's peer and the set-up inside go to this very namespace,
    // even if the pid were reused meanwhile.
    let namespace = File::open(format!("/proc/{pid}/ns/net")).map_err(NetworkError::Attach)?;
    let host_link = host_link_name(id);
    let connect = || -> io::Result<()> {
        let mut rtnl = Rtnl::open()?;
        let mac = mac_of(address);
        rtnl.create_veth(&host_link, bridge, CONTAINER_LINK, mac, namespace.as_fd())?;
        let index = rtnl
            .link_index(&host_link)?
            .ok_or_else(|| io::Error::other(format!("{host_link} vanished once created")))?;
        // A container reaching itself through a published port comes back on its port.
        rtnl.set_hairpin(index)
    };
    connect().map_err(NetworkError::Attach)?;
    let inside = namespace.try_clone().map_err(NetworkError::Attach)?;
    in_namespace(inside, move || {
        // /proc/sys/net is the namespace of the thread that writes it.
        let conf =
            |family: &str, key: &str| format!("/proc/sys/net/{family}/conf/{CONTAINER_LINK}/{key}");
        std::fs::write(conf("ipv6", "disable_ipv6"), "1")?;
        // Announces the address when the link comes up: neighbours that knew it
        // under another MAC learn at once.
        std::fs::write(conf("ipv4", "arp_notify"), "1")?;
        let mut rtnl = Rtnl::open()?;
        for name in ["lo", CONTAINER_LINK] {
            let index = rtnl
                .link_index(name)?
                .ok_or_else(|| io::Error::other(format!("no {name} in the container")))?;
            if name == CONTAINER_LINK {
                rtnl.add_address(index, address, subnet.containers_prefix())?;
            }
            rtnl.set_up(index)?;
        }
        rtnl.add_default_route(subnet.gateway())
    })
    .map_err(NetworkError::Attach)
}

/// wharf's bridge, set up and checked (see `bridge`).
#[derive(Debug, Clone, Copy)]
pub struct Bridge {
    index: u32,
    subnet: Subnet,
}

/// wharf's bridge with this process's subnet: made if missing, after checking that
/// nothing else on the host has the name or routes the subnet, and that an existing
/// bridge has the same subnet. Done before anything of a new container's network is
/// reserved or written, so that a refused subnet changes nothing.
pub fn bridge() -> Result<Bridge, NetworkError> {
    let subnet = Subnet::current();
    let index = ensure_bridge(&subnet)?;
    Ok(Bridge { index, subnet })
}

/// A locally administered MAC made of the address (as Docker's are): the same
/// address always has the same MAC.
fn mac_of(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The bridge, made if missing (after checking that nothing else on the host has the
/// name or routes the subnet), with wharf's address, up, IPv6 off; IPv4 forwarding
/// and wharf's nftables rules in place. Returns the bridge's link index.
fn ensure_bridge(subnet: &Subnet) -> Result<u32, NetworkError> {
    let sysfs = std::path::Path::new("/sys/class/net").join(BRIDGE);
    let exists = sysfs.exists();
    if exists && !sysfs.join("bridge").is_dir() {
        return Err(NetworkError::NotABridge);
    }
    let routes = host_routes();
    match Subnet::recorded() {
        Some(bridge) if exists && bridge != *subnet => {
            return Err(NetworkError::SubnetChanged {
                bridge,
                configured: *subnet,
            })
        }
        Some(_) => {}
        // A bridge of an earlier wharf (or another program) with other addresses.
        None if exists => {
            if let Some(route) = routes
                .iter()
                .find(|route| route.interface == BRIDGE && route.network() != subnet.containers())
            {
                return Err(NetworkError::BridgeInUse {
                    route: route.network(),
                    subnet: *subnet,
                });
            }
        }
        None => {}
    }
    let overlapping = routes.iter().find(|route| {
        route.prefix > 0
            && route.interface != BRIDGE
            && subnet.overlaps(route.destination, route.prefix)
    });
    if let Some(route) = overlapping {
        return Err(NetworkError::SubnetInUse {
            route: route.network(),
            interface: route.interface.clone(),
            subnet: *subnet,
        });
    }
    subnet.record().map_err(NetworkError::Bridge)?;
    let bridge = || -> io::Result<u32> {
        let mut rtnl = Rtnl::open()?;
        rtnl.create_bridge(BRIDGE, mac_of(subnet.gateway()))?;
        let index = rtnl
            .link_index(BRIDGE)?
            .ok_or_else(|| io::Error::other("the bridge vanished once created"))?;
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6"),
            "1",
        )?;
        // The host's own 127.0.0.1:<published port> is DNATed to a container through
        // the bridge: the kernel routes 127/8 there only with this (on the bridge
        // alone; `nat` drops 127/8 arriving from anywhere but lo, CVE-2020-8558).
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"),
            "1",
        )?;
        rtnl.add_address(index, subnet.gateway(), subnet.containers_prefix())?;
        rtnl.set_up(index)?;
        Ok(index)
    };
    let index = bridge().map_err(NetworkError::Bridge)?;
    enable_forwarding().map_err(NetworkError::Forwarding)?;
    nat::ensure_rules(subnet).map_err(NetworkError::Nat)?;
    Ok(index)
}

/// A route of the host's main table (from /proc/net/route).
struct Route {
    interface: String,
    destination: u32,
    prefix: u8,
}

impl Route {
    /// "10.77.0.0/17"
    fn network(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.destination), self.prefix)
    }
}

fn host_routes() -> Vec<Route> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (interface, destination, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            // Hex in the kernel's byte order (little-endian here).
            let destination = u32::from_be(u32::from_str_radix(destination, 16).ok()?);
            let mask = u32::from_be(u32::from_str_radix(mask, 16).ok()?);
            Some(Route {
                interface: interface.to_string(),
                destination,
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// Containers reach beyond the host through it (routed, then masqueraded).
fn enable_forwarding() -> io::Result<()> {
    const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(FORWARDING)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(FORWARDING, "1")
}

/// Deletes the container's veth pair now, rather than when the kernel gets round
/// to destroying its network namespace (asynchronously, after its processes ended):
/// when `wharf down` returns, the links are gone.
pub fn remove_veth(id: &str) -> io::Result<()> {
    let mut rtnl = Rtnl::open()?;
    match rtnl.link_index(&host_link_name(id))? {
        Some(index) => rtnl.delete_link(index),
        None => Ok(()),
    }
}

/// The host side of a container's veth pair: `wh` and 13 hex digits of a hash of the
/// container id (interface names have at most 15 bytes; ids are longer).
fn host_link_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{LINK_PREFIX}{}", &hex[..13])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_given_lowest_first_and_never_twice() {
        let subnet = Subnet::DEFAULT;
        let mut used = BTreeSet::new();
        let first = next_free(&subnet, &used).expect("free");
        assert_eq!(first, Ipv4Addr::new(10, 77, 0, 2), "after the gateway");
        used.insert(first);
        used.insert(Ipv4Addr::new(10, 77, 0, 4));
        assert_eq!(next_free(&subnet, &used), Some(Ipv4Addr::new(10, 77, 0, 3)));
        // A removed container's address is given again.
        used.remove(&first);
        assert_eq!(next_free(&subnet, &used), Some(first));
    }

    #[test]
    fn containers_get_the_lower_half_of_the_subnet() {
        let subnet = Subnet::DEFAULT;
        let used: BTreeSet<Ipv4Addr> = (2..=0x7ffe)
            .map(|host| Ipv4Addr::from(u32::from(subnet.gateway()) - 1 + host))
            .collect();
        assert_eq!(used.last(), Some(&Ipv4Addr::new(10, 77, 127, 254)));
        assert_eq!(
            next_free(&subnet, &used),
            None,
            "32765 containers hold them all"
        );
    }

    #[test]
    fn a_container_mac_is_made_of_its_address() {
        assert_eq!(
            mac_of(Ipv4Addr::new(10, 77, 0, 7)),
            [0x02, 0x42, 10, 77, 0, 7]
        );
    }

    #[test]
    fn host_link_names_fit_the_kernel_limit_and_differ_by_container() {
        let a = host_link_name("web-0-1a2b3c");
        let b = host_link_name("web-0-1a2b3d");
        assert_eq!(a.len(), 15);
        assert_ne!(a, b);
        assert!(a.starts_with("wh"));
    }
}
