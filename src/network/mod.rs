//! wharf's bridge network (`network: bridge`): the bridge `wharf0` with the subnet
//! 10.89.0.0/24 (wharf's own address 10.89.0.1), one address per container, a veth pair
//! from the bridge into the container's network namespace, and egress NAT. netavark,
//! podman's network stack, is the model; the kernel is spoken to over netlink directly
//! (`netlink`), nftables through one `nft -f -` transaction (`nat`).
//!
//! A container's namespace is made by libcontainer at build; wharf connects it between
//! build and start (`attach`), so the network is there before the container's command
//! runs. The veth pair goes with the namespace when the container ends: a kill -9 at
//! any point leaks no interface. Addresses are the host's truth: each container
//! directory records its own (`runtime`'s `address` record), so an address is free
//! again once its container is removed.

mod nat;
mod netlink;
mod netns;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use sha2::{Digest, Sha256};

pub use netns::{bring_up_loopback, tcp_socket_in};

use netlink::Rtnl;
use netns::in_network_namespace;

/// The bridge wharf's containers are connected to.
pub const BRIDGE: &str = "wharf0";
/// wharf's address on the bridge: the containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
pub const PREFIX_LEN: u8 = 24;
/// The container's side of its veth pair.
const CONTAINER_LINK: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot set up the bridge {BRIDGE}: {0}")]
    Bridge(#[source] io::Error),
    #[error("cannot enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward): {0}")]
    Forwarding(#[source] io::Error),
    #[error("cannot install the egress NAT rule of table inet wharf: {0}; is nftables installed?")]
    Nat(String),
    #[error("cannot connect the container to {BRIDGE}: {0}")]
    Attach(#[source] io::Error),
    #[error(
        "no address left in {GATEWAY}/{PREFIX_LEN}: every one is held by a container (exited \
         ones too); remove containers"
    )]
    Exhausted,
}

/// The lowest address of the subnet that is neither `used` nor the gateway, network
/// or broadcast address.
pub fn next_free(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let network = u32::from(GATEWAY) & (u32::MAX << (32 - PREFIX_LEN));
    let hosts = 1u32 << (32 - PREFIX_LEN);
    (2..hosts - 1)
        .map(|host| Ipv4Addr::from(network + host))
        .find(|address| !used.contains(address))
}

/// Connects the container whose init is `pid` (container `id`) to the bridge with
/// `address`: its `eth0` is the peer of a veth on the bridge, with the address and a
/// default route through wharf; `lo` is up too.
pub fn attach(pid: i32, id: &str, address: Ipv4Addr) -> Result<(), NetworkError> {
    let bridge = ensure_bridge()?;
    let namespace = File::open(format!("/proc/{pid}/ns/net")).map_err(NetworkError::Attach)?;
    let host_link = host_link_name(id);
    let connect = || -> io::Result<()> {
        let mut rtnl = Rtnl::open()?;
        rtnl.create_veth(&host_link, bridge, CONTAINER_LINK, namespace.as_fd())?;
        let index = rtnl
            .link_index(&host_link)?
            .ok_or_else(|| io::Error::other(format!("{host_link} vanished once created")))?;
        // A container reaching itself through a published port comes back on its port.
        rtnl.set_hairpin(index)
    };
    connect().map_err(NetworkError::Attach)?;
    in_network_namespace(pid, move || {
        let mut rtnl = Rtnl::open()?;
        for name in ["lo", CONTAINER_LINK] {
            let index = rtnl
                .link_index(name)?
                .ok_or_else(|| io::Error::other(format!("no {name} in the container")))?;
            rtnl.set_up(index)?;
            if name == CONTAINER_LINK {
                rtnl.add_address(index, address, PREFIX_LEN)?;
            }
        }
        rtnl.add_default_route(GATEWAY)
    })
    .map_err(NetworkError::Attach)
}

/// The bridge, made if missing, with wharf's address, up; IPv4 forwarding and the
/// egress NAT rule in place. Returns the bridge's link index.
fn ensure_bridge() -> Result<u32, NetworkError> {
    let bridge = || -> io::Result<u32> {
        let mut rtnl = Rtnl::open()?;
        rtnl.create_bridge(BRIDGE)?;
        let index = rtnl
            .link_index(BRIDGE)?
            .ok_or_else(|| io::Error::other("the bridge vanished once created"))?;
        rtnl.add_address(index, GATEWAY, PREFIX_LEN)?;
        rtnl.set_up(index)?;
        Ok(index)
    };
    let index = bridge().map_err(NetworkError::Bridge)?;
    enable_forwarding().map_err(NetworkError::Forwarding)?;
    nat::ensure_egress().map_err(NetworkError::Nat)?;
    Ok(index)
}

/// Containers reach beyond the host through it (routed, then masqueraded).
fn enable_forwarding() -> io::Result<()> {
    const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(FORWARDING)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(FORWARDING, "1")
}

/// The host side of a container's veth pair: `wh` and 13 hex digits of a hash of the
/// container id (interface names have at most 15 bytes; ids are longer).
fn host_link_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("wh{}", &hex[..13])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_given_lowest_first_and_never_twice() {
        let mut used = BTreeSet::new();
        let first = next_free(&used).expect("free");
        assert_eq!(first, Ipv4Addr::new(10, 89, 0, 2), "after the gateway");
        used.insert(first);
        used.insert(Ipv4Addr::new(10, 89, 0, 4));
        assert_eq!(next_free(&used), Some(Ipv4Addr::new(10, 89, 0, 3)));
        // A removed container's address is given again.
        used.remove(&first);
        assert_eq!(next_free(&used), Some(first));
    }

    #[test]
    fn a_full_subnet_has_no_address_left() {
        let used: BTreeSet<Ipv4Addr> = (2..=254).map(|h| Ipv4Addr::new(10, 89, 0, h)).collect();
        assert_eq!(next_free(&used), None, "253 containers hold them all");
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
