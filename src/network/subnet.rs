//! The subnet of wharf's bridge: 10.77.0.0/16 unless the host's network needs another
//! (`wharf --subnet`, `WHARF_SUBNET`). The default is clear of Docker's (172.17/16 and
//! its pools), podman's (10.88/16, then 10.89/16 and 10.90/15 for more networks) and
//! Kubernetes distributions' usual ranges. Its lower half holds the containers' addresses
//! (wharf's own, their gateway, first), its upper half the services' virtual
//! addresses, reached through the gateway.
//!
//! The bridge is the host's, so the subnet is too: the process that sets the bridge up
//! records it in `/run/wharf/subnet`, and every wharf process that was not told one
//! (a container's monitor, a `wharf status`) uses the recorded one. A process told
//! another one than the bridge has is refused, rather than mixing two subnets.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

const RECORD: &str = "/run/wharf/subnet";

/// An IPv4 subnet from /8 to /24: each half holds at least 126 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: u32,
    prefix: u8,
}

static CONFIGURED: OnceLock<Subnet> = OnceLock::new();

impl Subnet {
    pub const DEFAULT: Subnet = Subnet {
        network: u32::from_be_bytes([10, 77, 0, 0]),
        prefix: 16,
    };

    /// Sets this process's subnet (from the command line); the first call wins.
    pub fn configure(subnet: Subnet) {
        let _ = CONFIGURED.set(subnet);
    }

    /// This process's subnet: the one it was told, else the bridge's recorded one,
    /// else the default.
    pub fn current() -> Subnet {
        if let Some(subnet) = CONFIGURED.get() {
            return *subnet;
        }
        Self::recorded().unwrap_or(Self::DEFAULT)
    }

    /// The subnet the bridge was set up with.
    pub(super) fn recorded() -> Option<Subnet> {
        let text = std::fs::read_to_string(RECORD).ok()?;
        text.trim().parse().ok()
    }

    pub(super) fn record(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let path = Path::new(RECORD);
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        std::fs::write(path, format!("{self}\n"))
    }

    /// wharf's own address on the bridge: the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// The prefix of the containers' half, on the bridge's link.
    pub fn containers_prefix(&self) -> u8 {
        self.prefix + 1
    }

    /// "10.77.0.0/17"
    pub fn containers(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.network),
            self.containers_prefix()
        )
    }

    /// "10.77.128.0/17"
    pub fn services(&self) -> String {
        format!("{}/{}", self.services_start(), self.containers_prefix())
    }

    /// The first address of the services' half.
    pub fn services_start(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + self.half_size())
    }

    /// How many addresses each half has.
    pub fn half_size(&self) -> u32 {
        1 << (32 - u32::from(self.containers_prefix()))
    }

    /// Whether `address/prefix` and this subnet share addresses.
    pub fn overlaps(&self, address: u32, prefix: u8) -> bool {
        let common = prefix_mask(prefix.min(self.prefix));
        (address & common) == (self.network & common)
    }
}

pub(super) fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Subnet, String> {
        let (address, prefix) = text.split_once('/').ok_or_else(|| {
            format!("{text:?}: write the subnet as ADDRESS/PREFIX, e.g. 10.77.0.0/16")
        })?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| (8..=24).contains(prefix))
            .ok_or_else(|| {
                format!(
                    "{text:?}: the prefix must be 8 to 24 (containers and services each get half)"
                )
            })?;
        let network = u32::from(address);
        if network & !prefix_mask(prefix) != 0 {
            let start = Ipv4Addr::from(network & prefix_mask(prefix));
            return Err(format!(
                "{text:?}: the address is not the subnet's first; did you mean {start}/{prefix}?"
            ));
        }
        Ok(Subnet { network, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_subnet_is_split_between_containers_and_services() {
        let subnet = Subnet::DEFAULT;
        assert_eq!(subnet.to_string(), "10.77.0.0/16");
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(subnet.containers(), "10.77.0.0/17");
        assert_eq!(subnet.services(), "10.77.128.0/17");
    }

    #[test]
    fn a_subnet_is_read_from_the_usual_notation_and_bad_ones_say_why() {
        let subnet: Subnet = "172.30.0.0/24".parse().expect("a subnet");
        assert_eq!(subnet.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(subnet.services(), "172.30.0.128/25");
        assert!("172.30.0.5/24"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("172.30.0.0/24"));
        assert!("10.0.0.0/28"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("8 to 24"));
        assert!("10.0.0.0"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
    }

    #[test]
    fn overlapping_routes_are_recognised() {
        let subnet = Subnet::DEFAULT;
        assert!(subnet.overlaps(u32::from(Ipv4Addr::new(10, 77, 7, 0)), 24));
        assert!(subnet.overlaps(u32::from(Ipv4Addr::new(10, 0, 0, 0)), 8));
        assert!(!subnet.overlaps(u32::from(Ipv4Addr::new(10, 90, 0, 0)), 16));
    }
}
